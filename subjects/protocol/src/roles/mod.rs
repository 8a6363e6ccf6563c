//! Roles and what each may do, declared once next to the subjects.
//!
//! Every participant holds a role. Each declared event type names the roles that may emit
//! it ([`crate::Payload::EMITTED_BY`]); the request/reply endpoints below name who serves and
//! who calls them; the JetStream resources name who reads and who writes them. From these
//! declarations [`permissions`] derives what the NATS server enforces for each role (the
//! scoped signing key templates of `murmur up`'s accounts), and the folds use the same
//! declarations for decisions ([`crate::Payload::ROLE_CHECKED`]): authority is enforced by
//! the server and again by the log. No permission subject is written by hand anywhere else.
//!
//! Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

mod matrix;
mod permissions;
mod resources;
#[cfg(test)]
mod tests;

pub use matrix::*;
pub use permissions::*;
pub use resources::*;

/// A participant's role in a realm.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Administers the realm: everything, including stream configuration, purges and
    /// granting roles.
    Operator,
    /// Assigns tasks, expires leases, dead-letters tasks.
    Coordinator,
    /// Decides proposals from the votes in the log.
    Tallier,
    /// Dead-letters what the log holds but no fold can accept.
    Auditor,
    /// Records agents offline when their heartbeats stop, and resumed when heard again.
    Monitor,
    /// Runs tasks of any capability.
    Worker,
    /// Turns workspaces into task graphs and submits them.
    Planner,
    /// Compiles workspaces (a task runner).
    Compiler,
    /// Runs test binaries (a task runner).
    Executor,
    /// Runs tool tasks (`tool.fs`); never submits tasks, so it cannot reach a language model.
    Tool,
    /// Runs language-model tasks; never submits tasks (so it executes no tool) and never
    /// writes knowledge (memory is read-only for it).
    Inference,
    /// Holds knowledge replicas: answers queries and sync, records snapshots.
    Memory,
    /// Casts votes on proposals.
    Voter,
    /// A person or program using the platform: submits tasks, opens proposals, writes
    /// knowledge.
    Submitter,
    /// Reads the log, the live plane and `$SRV`; writes nothing.
    Observer,
    /// Runs the assistant's requests (`assistant.ask`) as plans of other agents' tasks:
    /// submits tasks, opens approval proposals, writes the assistant's memory; runs no tool
    /// and no model itself. Declared last, so the role bits of the others stay put.
    Orchestrator,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 16] = [
        Role::Operator,
        Role::Coordinator,
        Role::Tallier,
        Role::Auditor,
        Role::Monitor,
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
        Role::Memory,
        Role::Voter,
        Role::Submitter,
        Role::Observer,
        Role::Orchestrator,
    ];

    /// The roles that join as agents (manifest, heartbeats, `$SRV` discovery).
    pub const AGENTS: &'static [Role] = &[
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
        Role::Memory,
        Role::Voter,
        Role::Orchestrator,
    ];

    /// The roles that run tasks: they are assigned work and report its results.
    pub const TASK_RUNNERS: &'static [Role] = &[
        Role::Worker,
        Role::Planner,
        Role::Compiler,
        Role::Executor,
        Role::Tool,
        Role::Inference,
        Role::Memory,
        Role::Orchestrator,
    ];

    /// The role's name, as on the command line and in credentials.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Coordinator => "coordinator",
            Role::Tallier => "tallier",
            Role::Auditor => "auditor",
            Role::Monitor => "monitor",
            Role::Worker => "worker",
            Role::Planner => "planner",
            Role::Compiler => "compiler",
            Role::Executor => "executor",
            Role::Tool => "tool",
            Role::Inference => "inference",
            Role::Memory => "memory",
            Role::Voter => "voter",
            Role::Submitter => "submitter",
            Role::Observer => "observer",
            Role::Orchestrator => "orchestrator",
        }
    }

    /// One line on what the role is for.
    pub const fn description(self) -> &'static str {
        match self {
            Role::Operator => "administers the realm: streams, purges, roles, everything",
            Role::Coordinator => "assigns tasks, expires leases, dead-letters tasks",
            Role::Tallier => "decides proposals from the votes in the log",
            Role::Auditor => "dead-letters what no fold can accept",
            Role::Monitor => "records agents offline and resumed",
            Role::Worker => "runs tasks of any capability",
            Role::Planner => "turns workspaces into task graphs and submits them",
            Role::Compiler => "compiles workspaces",
            Role::Executor => "runs test binaries",
            Role::Tool => "runs tool tasks; submits none (no model access)",
            Role::Inference => "runs model tasks; submits none (no tools), writes no knowledge",
            Role::Memory => "holds knowledge replicas, answers queries, sync and recall tasks",
            Role::Voter => "casts votes on proposals",
            Role::Submitter => "submits tasks, opens proposals, writes knowledge",
            Role::Observer => "reads the log, the live plane and $SRV; writes nothing",
            Role::Orchestrator => {
                "runs assistant requests as plans: submits steps, opens approvals, writes memory"
            }
        }
    }

    /// Whether the folds judge some decision by this role (a type with
    /// [`crate::Payload::ROLE_CHECKED`] names it): then a participant needs the role granted
    /// in the log, not only in its credentials, for its decisions to count.
    pub fn decides(self) -> bool {
        Catalog::standard()
            .iter()
            .any(|t| t.role_checked && t.emitted_by.contains(&self))
    }

    /// Whether the role joins as an agent.
    pub fn is_agent(self) -> bool {
        Role::AGENTS.contains(&self)
    }

    /// Whether the role runs tasks.
    pub fn runs_tasks(self) -> bool {
        Role::TASK_RUNNERS.contains(&self)
    }

    /// The role an agent of `kind` (`murmur agent run KIND`) runs as: the kinds named
    /// after a role map to it, any other kind is a generic worker.
    pub fn for_agent_kind(kind: &str) -> Role {
        match kind {
            "planner" => Role::Planner,
            "compiler" => Role::Compiler,
            "executor" => Role::Executor,
            "tool" => Role::Tool,
            "inference" => Role::Inference,
            "memory" => Role::Memory,
            "voter" => Role::Voter,
            "orchestrator" => Role::Orchestrator,
            _ => Role::Worker,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; roles: {roles}", roles = Role::ALL.map(Role::as_str).join(", "))]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(40).collect()))
    }
}

/// A set of roles (what one identity holds at one log position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleSet(u32);

impl RoleSet {
    /// No role.
    pub const EMPTY: RoleSet = RoleSet(0);

    /// The set holding `roles`.
    pub fn of(roles: &[Role]) -> Self {
        roles.iter().fold(Self::EMPTY, |s, r| s.with(*r))
    }

    /// This set plus `role`.
    pub fn with(self, role: Role) -> Self {
        RoleSet(self.0 | (1 << role as u32))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & (1 << role as u32) != 0
    }

    /// Whether any of `roles` is in the set.
    pub fn any_of(self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.contains(*r))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no role");
        }
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}
