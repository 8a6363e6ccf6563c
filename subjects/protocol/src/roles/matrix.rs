//! The role matrix (`murmur subjects --roles`): every subject or API pattern and who may use it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::*;
use crate::catalog::Catalog;

/// One row of the role matrix: a subject or API pattern and, per role, whether it may
/// publish and subscribe.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// The subject pattern (`{self}`: the participant's own key).
    pub subject: String,
    /// Per role: `"pub"`, `"sub"` or `"pub+sub"`.
    pub roles: BTreeMap<Role, &'static str>,
}

/// The whole matrix: every subject or API pattern any non-operator role may use, with who
/// may publish and subscribe it (the operator may do everything), plus which roles may
/// answer requests.
#[derive(Debug, Clone, Serialize)]
pub struct RoleMatrix {
    /// Rows, sorted by subject.
    pub rows: Vec<MatrixRow>,
    /// Roles that may reply to requests they received.
    pub responders: Vec<Role>,
    /// One line per role.
    pub roles: BTreeMap<Role, &'static str>,
}

impl RoleMatrix {
    /// The matrix for realm pattern `realm` (e.g. `{realm}`).
    pub fn derive(realm: &str, names: &ResourceNames) -> Self {
        let mut rows: BTreeMap<String, BTreeMap<Role, (bool, bool)>> = BTreeMap::new();
        let mut responders = Vec::new();
        for role in Role::ALL {
            let p = permissions_in(Catalog::standard(), role, realm, names);
            if p.responses {
                responders.push(role);
            }
            if role == Role::Operator {
                continue;
            }
            for s in &p.publish {
                rows.entry(s.replace(SELF_KEY, "{self}"))
                    .or_default()
                    .entry(role)
                    .or_default()
                    .0 = true;
            }
            for s in &p.subscribe {
                rows.entry(s.replace(SELF_KEY, "{self}"))
                    .or_default()
                    .entry(role)
                    .or_default()
                    .1 = true;
            }
        }
        let rows = rows
            .into_iter()
            .map(|(subject, roles)| MatrixRow {
                subject,
                roles: roles
                    .into_iter()
                    .map(|(r, access)| {
                        (
                            r,
                            match access {
                                (true, true) => "pub+sub",
                                (true, false) => "pub",
                                _ => "sub",
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        Self {
            rows,
            responders,
            roles: Role::ALL
                .map(|r| (r, r.description()))
                .into_iter()
                .collect(),
        }
    }

    /// The matrix as a table: one row per subject or API pattern, one column per role
    /// (`P` publish, `S` subscribe, `PS` both, `.` neither; the operator's column is all
    /// `PS`), after a legend of the roles.
    pub fn text(&self) -> String {
        let mut out = String::from("roles:\n");
        for (role, what) in &self.roles {
            out.push_str(&format!(
                "  {:<4} {:<12} {what}\n",
                abbreviation(*role),
                role.as_str()
            ));
        }
        out.push_str(&format!(
            "may reply to requests they receive (once each, within {} s): {}\n\n",
            super::RESPONSE_WINDOW_SECS,
            self.responders
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let width = self.rows.iter().map(|r| r.subject.len()).max().unwrap_or(0);
        out.push_str(&format!(
            "{:<width$}",
            "subject or API (P publish, S subscribe)"
        ));
        for role in Role::ALL {
            out.push_str(&format!(" {:>4}", abbreviation(role)));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("{:<width$}", row.subject));
            for role in Role::ALL {
                let cell = if role == Role::Operator {
                    "PS"
                } else {
                    match row.roles.get(&role).copied() {
                        Some("pub+sub") => "PS",
                        Some("pub") => "P",
                        Some("sub") => "S",
                        _ => ".",
                    }
                };
                out.push_str(&format!(" {cell:>4}"));
            }
            out.push('\n');
        }
        out
    }
}

/// The role's column heading in [`RoleMatrix::text`].
fn abbreviation(role: Role) -> &'static str {
    match role {
        Role::Operator => "oper",
        Role::Coordinator => "coor",
        Role::Tallier => "tall",
        Role::Auditor => "audi",
        Role::Monitor => "moni",
        Role::Worker => "work",
        Role::Planner => "plan",
        Role::Compiler => "comp",
        Role::Executor => "exec",
        Role::Tool => "tool",
        Role::Inference => "infr",
        Role::Memory => "memo",
        Role::Voter => "vote",
        Role::Submitter => "subm",
        Role::Observer => "obsv",
        Role::Orchestrator => "orch",
    }
}
