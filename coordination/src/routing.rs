//! Choosing an agent for a task. Pure: plain data in, a decision out.
//!
//! ## The score
//!
//! An agent is **eligible** when it is online, offers the required capability, carries every
//! required label with the required value, is not in lame-duck mode, handles task
//! assignments (unless it declared no event types at all), and has at least the required
//! cores, memory and VRAM. Among eligible agents the highest score wins:
//!
//! ```text
//! score = 0.35 · free_cores_ratio      (cores not used by current load / cores offered, 0..1)
//!       + 0.20 · free_memory_ratio     (1 - required memory / offered memory, 0..1)
//!       + 0.15 · free_vram_ratio       (same for VRAM; 1 when the task needs none)
//!       + 0.20 · queue_ratio           (1 / (1 + queue depth))
//!       + 0.10 · affinity              (1 when the agent is the task's preferred agent)
//! ```
//!
//! Ties break by agent id (lexicographic), so the same inputs always give the same choice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a task needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Capability, e.g. `compiler.rust`.
    pub capability: String,
    /// Labels the agent must carry with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Minimum cores.
    #[serde(default)]
    pub min_cores: u32,
    /// Minimum memory, MiB.
    #[serde(default)]
    pub min_memory_mib: u64,
    /// Minimum accelerator memory, MiB.
    #[serde(default)]
    pub min_vram_mib: u64,
    /// Preferred agent (e.g. the one holding the inputs).
    #[serde(default)]
    pub affinity: Option<String>,
}

/// An agent as routing sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Public key.
    pub id: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Cores offered.
    pub cores: u32,
    /// Memory offered, MiB.
    pub memory_mib: u64,
    /// VRAM offered, MiB.
    pub vram_mib: u64,
    /// Current load, 0.0 ..= 1.0 per core.
    pub load: f32,
    /// Tasks queued locally.
    pub queue_depth: u32,
    /// Tasks it runs at once: [`crate::tasks::decide`] gives it at most this many attempts in
    /// flight (0 counts as 1).
    pub slots: u32,
    /// Declared the event types it handles without `dev.murmur.task.assigned`: it runs no
    /// tasks, so none is assigned to it.
    pub declines_tasks: bool,
    /// Online (not offline or left).
    pub online: bool,
    /// Refuses new work.
    pub lame_duck: bool,
}

/// Why an agent is not eligible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// Offline or left.
    Offline,
    /// In lame-duck mode.
    LameDuck,
    /// Handles no task assignments (its manifest's `handles`).
    DeclinesTasks,
    /// Lacks the capability.
    MissingCapability,
    /// A label is missing or has another value.
    LabelMismatch(String),
    /// Not enough cores, memory or VRAM.
    TooSmall(&'static str),
}

/// The score of `c` for `req`, or why it cannot take the task.
pub fn score(req: &Requirements, c: &Candidate) -> Result<f64, Ineligible> {
    if !c.online {
        return Err(Ineligible::Offline);
    }
    if c.lame_duck {
        return Err(Ineligible::LameDuck);
    }
    if c.declines_tasks {
        return Err(Ineligible::DeclinesTasks);
    }
    if !c.capabilities.iter().any(|cap| cap == &req.capability) {
        return Err(Ineligible::MissingCapability);
    }
    for (k, v) in &req.labels {
        if c.labels.get(k) != Some(v) {
            return Err(Ineligible::LabelMismatch(k.clone()));
        }
    }
    if c.cores < req.min_cores {
        return Err(Ineligible::TooSmall("cores"));
    }
    if c.memory_mib < req.min_memory_mib {
        return Err(Ineligible::TooSmall("memory"));
    }
    if c.vram_mib < req.min_vram_mib {
        return Err(Ineligible::TooSmall("vram"));
    }
    let free_cores = if c.cores == 0 {
        0.0
    } else {
        (1.0 - f64::from(c.load.clamp(0.0, 1.0))).clamp(0.0, 1.0)
    };
    let ratio = |need: u64, have: u64| {
        if need == 0 {
            1.0
        } else if have == 0 {
            0.0
        } else {
            (1.0 - need as f64 / have as f64).clamp(0.0, 1.0)
        }
    };
    let free_memory = ratio(req.min_memory_mib, c.memory_mib);
    let free_vram = ratio(req.min_vram_mib, c.vram_mib);
    let queue = 1.0 / (1.0 + f64::from(c.queue_depth));
    let affinity = if req.affinity.as_deref() == Some(c.id.as_str()) {
        1.0
    } else {
        0.0
    };
    Ok(0.35 * free_cores + 0.20 * free_memory + 0.15 * free_vram + 0.20 * queue + 0.10 * affinity)
}

/// The best eligible candidate, ties broken by id; `None` when nobody can take the task.
pub fn choose<'a>(req: &Requirements, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter_map(|c| score(req, c).ok().map(|s| (s, c)))
        .max_by(|(sa, a), (sb, b)| sa.total_cmp(sb).then_with(|| b.id.cmp(&a.id)))
        .map(|(_, c)| c)
}

/// Parses a capability name: dot-separated tokens of `[a-z0-9_-]`, e.g. `compiler.rust`.
pub fn validate_capability(capability: &str) -> Result<(), String> {
    let ok = !capability.is_empty()
        && capability.len() <= 128
        && capability.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid capability {capability:?}: use dot-separated lowercase tokens like compiler.rust"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, caps: &[&str]) -> Candidate {
        Candidate {
            id: id.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            cores: 4,
            memory_mib: 8192,
            online: true,
            ..Candidate::default()
        }
    }

    fn req(cap: &str) -> Requirements {
        Requirements {
            capability: cap.into(),
            ..Requirements::default()
        }
    }

    #[test]
    fn capability_and_labels_must_match() {
        let a = agent("a", &["compiler.rust"]);
        assert_eq!(
            score(&req("executor.test"), &a),
            Err(Ineligible::MissingCapability)
        );
        let mut r = req("compiler.rust");
        r.labels.insert("zone".into(), "eu".into());
        assert_eq!(score(&r, &a), Err(Ineligible::LabelMismatch("zone".into())));
        let mut b = a.clone();
        b.labels.insert("zone".into(), "eu".into());
        assert!(score(&r, &b).is_ok());
    }

    #[test]
    fn an_agent_that_handles_no_assignments_is_never_chosen() {
        let declines = Candidate {
            declines_tasks: true,
            cores: 64,
            ..agent("big", &["x"])
        };
        assert_eq!(score(&req("x"), &declines), Err(Ineligible::DeclinesTasks));
        let small = agent("small", &["x"]);
        assert_eq!(
            choose(&req("x"), &[declines, small]).map(|c| c.id.as_str()),
            Some("small")
        );
    }

    #[test]
    fn offline_lame_duck_and_small_agents_are_skipped() {
        let mut a = agent("a", &["x"]);
        a.online = false;
        assert_eq!(score(&req("x"), &a), Err(Ineligible::Offline));
        let mut b = agent("b", &["x"]);
        b.lame_duck = true;
        assert_eq!(score(&req("x"), &b), Err(Ineligible::LameDuck));
        let mut r = req("x");
        r.min_vram_mib = 1024;
        assert_eq!(
            score(&r, &agent("c", &["x"])),
            Err(Ineligible::TooSmall("vram"))
        );
        assert_eq!(choose(&r, &[agent("c", &["x"])]), None);
    }

    #[test]
    fn prefers_free_capacity_then_short_queues_then_affinity() {
        let mut busy = agent("a", &["x"]);
        busy.load = 0.9;
        let idle = agent("b", &["x"]);
        assert_eq!(
            choose(&req("x"), &[busy.clone(), idle.clone()]).map(|c| c.id.as_str()),
            Some("b")
        );
        let mut queued = agent("b", &["x"]);
        queued.queue_depth = 10;
        let empty = agent("c", &["x"]);
        assert_eq!(
            choose(&req("x"), &[queued, empty.clone()]).map(|c| c.id.as_str()),
            Some("c")
        );
        let mut r = req("x");
        r.affinity = Some("d".into());
        let d = agent("d", &["x"]);
        assert_eq!(choose(&r, &[empty, d]).map(|c| c.id.as_str()), Some("d"));
    }

    #[test]
    fn ties_break_by_id_deterministically() {
        let a = agent("zeta", &["x"]);
        let b = agent("alpha", &["x"]);
        assert_eq!(
            choose(&req("x"), &[a.clone(), b.clone()]).map(|c| c.id.as_str()),
            Some("alpha")
        );
        assert_eq!(
            choose(&req("x"), &[b, a]).map(|c| c.id.as_str()),
            Some("alpha")
        );
    }

    #[test]
    fn capability_syntax_is_checked() {
        assert!(validate_capability("compiler.rust").is_ok());
        assert!(validate_capability("llm.generate-v2").is_ok());
        for bad in ["", "Compiler", "a..b", "a b", ".x", "x."] {
            assert!(validate_capability(bad).is_err(), "{bad}");
        }
    }
}
