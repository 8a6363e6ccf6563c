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

/// One stream as one node's replica holds it (the node's `/jsz` answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplicaState {
    /// Messages held.
    pub messages: u64,
    /// First sequence held.
    pub first_seq: u64,
    /// Last sequence held.
    pub last_seq: u64,
}

/// Every stream's replicas on every node, once nothing writes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaCheck {
    /// Per stream, node by node (`None`: that node holds no replica of it).
    pub streams: BTreeMap<String, Vec<Option<ReplicaState>>>,
    /// Per stream, how many replicas its configuration asks for (the most any node names).
    pub wanted: BTreeMap<String, usize>,
    /// Streams whose replicas still differ, or with fewer replicas than asked for, after the
    /// wait.
    pub differing: Vec<String>,
    /// Seconds waited for the replicas to agree.
    pub waited_s: f64,
    /// The history stream read message by message through each node as its leader: how
    /// many messages each held.
    pub history_read: Vec<String>,
    /// Nodes whose copy of the history stream differs from the first read (subject,
    /// headers, payload or stored time of any sequence), or that could not be read.
    pub history_differing: Vec<String>,
}

/// The streams whose replicas differ in what they hold, or that have fewer replicas than
/// their configuration asks for.
pub fn differing_replicas(
    streams: &BTreeMap<String, Vec<Option<ReplicaState>>>,
    wanted: &BTreeMap<String, usize>,
) -> Vec<String> {
    streams
        .iter()
        .filter(|(name, replicas)| {
            let held: BTreeSet<_> = replicas
                .iter()
                .flatten()
                .map(|r| (r.messages, r.first_seq, r.last_seq))
                .collect();
            let holders = replicas.iter().flatten().count();
            held.len() > 1 || holders < wanted.get(*name).copied().unwrap_or(1)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// One node's copy of a stream as read through it: each sequence's digest (`None`: not
/// held), or why it could not be read.
pub type StreamCopy = (usize, Result<Vec<Option<u64>>, String>);

/// Each copy against the first one read: what was read, and every copy that differs (how
/// many sequences, the first of them) or could not be read.
pub fn compare_copies(copies: &[StreamCopy]) -> (Vec<String>, Vec<String>) {
    let mut read = Vec::new();
    let mut differing = Vec::new();
    let reference = copies
        .iter()
        .find_map(|(node, copy)| copy.as_ref().ok().map(|c| (*node, c)));
    for (node, copy) in copies {
        match copy {
            Err(why) => differing.push(format!("n{}: not read ({why})", node + 1)),
            Ok(copy) => {
                read.push(format!(
                    "n{}: {} messages",
                    node + 1,
                    copy.iter().flatten().count()
                ));
                if let Some((first, reference)) = reference {
                    let differ: Vec<usize> = (0..copy.len().max(reference.len()))
                        .filter(|i| copy.get(*i) != reference.get(*i))
                        .collect();
                    if let Some(at) = differ.first() {
                        differing.push(format!(
                            "n{}: {} sequences differ from n{} (first: {})",
                            node + 1,
                            differ.len(),
                            first + 1,
                            at + 1
                        ));
                    }
                }
            }
        }
    }
    (read, differing)
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

    #[test]
    fn replicas_that_differ_or_are_missing_are_named() {
        let r = |messages, last_seq| {
            Some(ReplicaState {
                messages,
                first_seq: 1,
                last_seq,
            })
        };
        let streams: BTreeMap<String, Vec<Option<ReplicaState>>> = [
            ("agree".to_string(), vec![r(5, 5), r(5, 5), r(5, 5)]),
            ("behind".to_string(), vec![r(5, 5), r(4, 4), r(5, 5)]),
            ("missing".to_string(), vec![r(5, 5), None, r(5, 5)]),
            ("single".to_string(), vec![None, r(2, 2), None]),
        ]
        .into();
        let wanted = [
            ("agree".to_string(), 3),
            ("behind".to_string(), 3),
            ("missing".to_string(), 3),
            ("single".to_string(), 1),
        ]
        .into();
        assert_eq!(differing_replicas(&streams, &wanted), ["behind", "missing"]);
    }

    #[test]
    fn copies_that_differ_or_could_not_be_read_are_named() {
        let copies = vec![
            (0, Ok(vec![Some(1), Some(2), Some(3)])),
            (1, Ok(vec![Some(1), Some(2), Some(3)])),
            (2, Ok(vec![Some(1), Some(9), None, Some(4)])),
            (1, Err("no lead".to_string())),
        ];
        let (read, differing) = compare_copies(&copies);
        assert_eq!(read, ["n1: 3 messages", "n2: 3 messages", "n3: 3 messages"]);
        assert_eq!(
            differing,
            [
                "n3: 3 sequences differ from n1 (first: 2)",
                "n2: not read (no lead)"
            ]
        );
    }
}
