//! The checker's pure part: what the clients saw acknowledged, against what the log holds.
//! No I/O: the run hands it the acknowledgements it recorded and the log as read back.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One write a client saw acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The event id (`Nats-Msg-Id`).
    pub id: String,
    /// The stream sequence the acknowledgement named.
    pub sequence: u64,
}

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stored {
    /// Stream sequence.
    pub sequence: u64,
    /// Event id.
    pub id: String,
    /// NATS subject.
    pub subject: String,
    /// The event it names as its cause, if any.
    pub causation: Option<String>,
    /// Its emitter's `time` minus the log's stored time, in milliseconds (what a skewed
    /// clock shows as).
    pub clock_offset_ms: i64,
    /// When the log stored it (the server's clock), milliseconds since the Unix epoch.
    pub stored_at_ms: i64,
}

/// The median and 99th percentile of `values` (nearest rank), or `None` when empty.
pub fn p50_p99(mut values: Vec<f64>) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank =
        |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Some((rank(0.50), rank(0.99)))
}

/// What the log says about the acknowledged writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogCheck {
    /// Writes acknowledged to clients.
    pub acked: usize,
    /// Acknowledged writes the log does not hold: lost.
    pub lost: Vec<String>,
    /// Event ids the log holds more than once (a re-send the server's duplicate window no
    /// longer caught, or an acknowledgement lost and the write repeated).
    pub duplicated: Vec<String>,
    /// Acknowledged writes found at a sequence other than the one their acknowledgement
    /// named (an acknowledgement the cluster later rolled back and stored again elsewhere).
    pub moved: Vec<String>,
    /// Events stored before the event they name as their cause: per-subject (and causal)
    /// order broken.
    pub before_their_cause: Vec<String>,
    /// Subjects whose events are not in increasing sequence order as read back.
    pub out_of_order_subjects: Vec<String>,
}

impl LogCheck {
    /// Whether nothing was lost, duplicated, moved or reordered.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.moved.is_empty()
            && self.before_their_cause.is_empty()
            && self.out_of_order_subjects.is_empty()
    }
}

/// Checks `acked` against `log` (in the order it was read back).
pub fn check_log(acked: &[Acked], log: &[Stored]) -> LogCheck {
    let mut first_at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen_twice = BTreeSet::new();
    let mut last_on_subject: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out_of_order = BTreeSet::new();
    for s in log {
        match first_at.entry(s.id.as_str()) {
            std::collections::btree_map::Entry::Occupied(_) => {
                seen_twice.insert(s.id.clone());
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(s.sequence);
            }
        }
        let last = last_on_subject.entry(s.subject.as_str()).or_insert(0);
        if s.sequence <= *last {
            out_of_order.insert(s.subject.clone());
        }
        *last = s.sequence;
    }
    let mut before_their_cause = Vec::new();
    for s in log {
        if let Some(cause) = &s.causation
            && cause != &s.id
            && let Some(cause_at) = first_at.get(cause.as_str())
            && *cause_at > s.sequence
        {
            before_their_cause.push(s.id.clone());
        }
    }
    let mut check = LogCheck {
        acked: acked.len(),
        duplicated: seen_twice.into_iter().collect(),
        before_their_cause,
        out_of_order_subjects: out_of_order.into_iter().collect(),
        ..LogCheck::default()
    };
    for a in acked {
        match first_at.get(a.id.as_str()) {
            None => check.lost.push(a.id.clone()),
            Some(at) if *at != a.sequence => check.moved.push(a.id.clone()),
            Some(_) => {}
        }
    }
    check
}

/// The JSON paths (under `root`) where `a` and `b` differ, with both values when they are
/// leaves; objects are compared key by key, arrays element by element.
pub fn differences(a: &serde_json::Value, b: &serde_json::Value, root: &str) -> Vec<String> {
    use serde_json::Value;
    let mut out = Vec::new();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = format!("{root}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => out.extend(differences(l, r, &path)),
                    (l, r) => out.push(format!("{path}: {} ≠ {}", short(l), short(r))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                out.extend(differences(l, r, &format!("{root}[{i}]")));
            }
        }
        (l, r) if l != r => out.push(format!("{root}: {} ≠ {}", short(Some(l)), short(Some(r)))),
        _ => {}
    }
    out
}

fn short(v: Option<&serde_json::Value>) -> String {
    let text = v.map_or("absent".to_string(), ToString::to_string);
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sequence: u64, id: &str, subject: &str, causation: Option<&str>) -> Stored {
        Stored {
            sequence,
            id: id.into(),
            subject: subject.into(),
            causation: causation.map(Into::into),
            clock_offset_ms: 0,
            stored_at_ms: 0,
        }
    }

    fn acked(id: &str, sequence: u64) -> Acked {
        Acked {
            id: id.into(),
            sequence,
        }
    }

    #[test]
    fn differences_name_the_paths_that_differ() {
        let a = serde_json::json!({"tasks": {"t1": {"state": "completed"}, "t2": 1}, "n": [1, 2]});
        let b = serde_json::json!({"tasks": {"t1": {"state": "pending"}}, "n": [1, 3]});
        assert_eq!(
            differences(&a, &b, "c"),
            [
                "c.n[1]: 2 ≠ 3",
                "c.tasks.t1.state: \"completed\" ≠ \"pending\"",
                "c.tasks.t2: 1 ≠ absent"
            ]
        );
        assert!(differences(&a, &a, "c").is_empty());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(p50_p99(vec![]), None);
        assert_eq!(p50_p99(vec![7.0]), Some((7.0, 7.0)));
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(p50_p99(hundred), Some((50.0, 99.0)));
    }

    #[test]
    fn a_log_holding_every_acknowledged_write_once_in_order_is_clean() {
        let log = [
            stored(1, "a", "t.1", None),
            stored(2, "b", "t.1", Some("a")),
            stored(3, "c", "t.2", None),
        ];
        let check = check_log(&[acked("a", 1), acked("c", 3)], &log);
        assert!(check.clean(), "{check:?}");
        assert_eq!(check.acked, 2);
    }

    #[test]
    fn lost_duplicated_moved_and_reordered_writes_are_each_named() {
        let log = [
            stored(1, "b", "t.1", Some("a")), // stored before its cause
            stored(2, "a", "t.1", None),
            stored(3, "c", "t.2", None),
            stored(4, "c", "t.2", None), // stored twice
            stored(6, "e", "t.3", None),
            stored(5, "f", "t.3", None), // read back out of order
        ];
        let check = check_log(
            &[acked("a", 2), acked("c", 3), acked("d", 4), acked("e", 7)],
            &log,
        );
        assert_eq!(check.lost, ["d"]);
        assert_eq!(check.duplicated, ["c"]);
        assert_eq!(check.moved, ["e"]);
        assert_eq!(check.before_their_cause, ["b"]);
        assert_eq!(check.out_of_order_subjects, ["t.3"]);
        assert!(!check.clean());
    }
}
