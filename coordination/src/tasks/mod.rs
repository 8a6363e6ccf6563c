//! The task lifecycle as a projection, and the coordinator's decisions as a pure function.
//!
//! ```text
//! submitted → assigned → started → completed
//!                 │          │
//!                 └──────────┴─→ failed | lease_expired → (attempts left) pending again
//!                                                       → (none left)   dead_lettered
//! any non-final state → cancelled
//! ```
//!
//! Time comes only from the log (each event's stored timestamp) and from the `now` the caller
//! passes to [`decide`]; nothing here reads a clock. Completion is idempotent: a second
//! `completed`, or a result from an agent whose attempt is no longer current (its lease was
//! lost), is refused by the fold and never changes the state.

mod decide;
mod fold;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::routing::Requirements;

pub use decide::{Command, decide};
pub use fold::{TaskEvent, TaskProjection, TaskRefusal};

/// Attempts before dead-lettering when the submission does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Lease per attempt when the submission does not say.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Backoff before attempt `n + 1` after attempt `n` failed: 200 ms · 2^(n-1), at most 30 s.
pub fn backoff(failed_attempt: u32) -> Duration {
    let ms = 200u64.saturating_mul(1 << failed_attempt.saturating_sub(1).min(8));
    Duration::milliseconds(ms.min(30_000) as i64)
}

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// Waiting for an agent (first attempt, or a retry once `not_before` has passed).
    Pending {
        /// Earliest time of the next assignment.
        not_before: DateTime<Utc>,
    },
    /// Leased to an agent.
    Assigned {
        /// Agent public key.
        agent: String,
        /// Lease end.
        lease_until: DateTime<Utc>,
        /// Whether the agent reported it started.
        started: bool,
    },
    /// Done.
    Completed {
        /// Agent that completed it.
        agent: String,
    },
    /// Out of attempts.
    DeadLettered,
    /// Cancelled.
    Cancelled,
}

impl TaskState {
    /// Whether no further event changes it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Completed { .. } | TaskState::DeadLettered | TaskState::Cancelled
        )
    }

    /// The names of the final states (see [`TaskState::name`]).
    pub const FINAL_NAMES: [&'static str; 3] = ["completed", "dead_lettered", "cancelled"];

    /// Every name [`TaskState::name`] gives, in lifecycle order.
    pub const NAMES: [&'static str; 6] = [
        "pending",
        "assigned",
        "running",
        "completed",
        "dead_lettered",
        "cancelled",
    ];

    /// Short name for listings.
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Pending { .. } => "pending",
            TaskState::Assigned { started: false, .. } => "assigned",
            TaskState::Assigned { started: true, .. } => "running",
            TaskState::Completed { .. } => "completed",
            TaskState::DeadLettered => "dead_lettered",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Submitter (verified emitter of `task.submitted`).
    pub submitter: String,
    /// What it needs.
    pub requirements: Requirements,
    /// Priority, higher first.
    pub priority: u8,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Lease per attempt, ms.
    pub lease_ms: u64,
    /// Current attempt (0 before the first assignment).
    pub attempt: u32,
    /// Reason of each failed attempt.
    pub failures: Vec<String>,
    /// State.
    pub state: TaskState,
    /// Stream sequence of the submission (FIFO order within a priority).
    pub submitted_sequence: u64,
    /// Stream sequence of the last event (for optimistic concurrency).
    pub last_sequence: u64,
    /// The task's input.
    pub input: serde_json::Value,
    /// Correlation id of the submission (kept by every event of the task).
    pub correlation_id: String,
    /// Id of the last event (the causation of the next one).
    pub last_event_id: String,
    /// Tasks that must complete first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Fail (true) rather than cancel (false) when a dependency fails.
    #[serde(default)]
    pub fail_with_dependency: bool,
    /// Output of the completed attempt.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// Who sent the prompt the task answers, as its submitter (an agent-protocol gateway)
    /// attests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<murmur_subjects::agent_sender::PromptSender>,
    /// Questions the running attempts asked the submitter, in order, with their answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<TaskQuestion>,
}

/// A question an attempt asked the task's submitter (`task.question_asked`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskQuestion {
    /// Its id.
    pub id: String,
    /// The attempt that asked.
    pub attempt: u32,
    /// What was asked.
    pub prompt: String,
    /// When it was stored: the attempt's lease stands still while the question is open.
    pub asked_at: DateTime<Utc>,
    /// The submitter's answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// All tasks by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskBook {
    /// Tasks by id.
    pub tasks: BTreeMap<String, Task>,
    /// Ids of the tasks that are not final, kept by the projection so the scheduler and
    /// status do not scan the whole history on every tick.
    #[serde(default)]
    open: BTreeSet<String>,
    /// Tasks per final state (final states are terminal, so these only grow).
    #[serde(default)]
    final_counts: BTreeMap<String, usize>,
    /// Pending tasks without dependencies and with attempts left, by priority, submitter
    /// and (submission sequence, id): the scheduler walks these only as far as free slots
    /// reach, so a backlog of thousands costs a tick little more than an empty one.
    #[serde(default)]
    queue: BTreeMap<u8, BTreeMap<String, BTreeSet<(u64, String)>>>,
    /// Pending tasks the scheduler looks at on every decision, free slot or not: graph
    /// children (a parent may have failed) and tasks out of attempts. By (submission
    /// sequence, id).
    #[serde(default)]
    held: BTreeSet<(u64, String)>,
    /// Tasks holding a lease (assigned or running), by id.
    #[serde(default)]
    leased: BTreeSet<String>,
    /// Which version of the indexes above is maintained (0: none — a book built by hand or
    /// read from a checkpoint written before them; they are rebuilt on the next event).
    #[serde(default)]
    index_version: u8,
}

/// The current [`TaskBook`] index layout.
const INDEX_VERSION: u8 = 3;

impl TaskBook {
    /// What a handler receives for `task`: its input, or for a task with dependencies
    /// `{"input": ..., "parents": {id: output, ...}}` — the parents' result references as
    /// this book holds them.
    pub fn handler_input(&self, task: &Task) -> serde_json::Value {
        if task.depends_on.is_empty() {
            return task.input.clone();
        }
        let parents: serde_json::Map<String, serde_json::Value> = task
            .depends_on
            .iter()
            .map(|d| {
                let output = self
                    .tasks
                    .get(d)
                    .and_then(|p| p.output.clone())
                    .unwrap_or(serde_json::Value::Null);
                (d.clone(), output)
            })
            .collect();
        serde_json::json!({ "input": task.input, "parents": parents })
    }

    /// Tasks that are not final (pending, assigned, running), by id.
    pub fn open_tasks(&self) -> Box<dyn Iterator<Item = (&String, &Task)> + '_> {
        if self.index_version == INDEX_VERSION {
            Box::new(
                self.open
                    .iter()
                    .filter_map(|id| self.tasks.get_key_value(id)),
            )
        } else {
            Box::new(self.tasks.iter().filter(|(_, t)| !t.state.is_final()))
        }
    }

    /// This book with its indexes current: itself, or (built by hand, or from an old
    /// checkpoint) a copy with them rebuilt.
    fn indexed(&self) -> std::borrow::Cow<'_, TaskBook> {
        if self.index_version == INDEX_VERSION {
            std::borrow::Cow::Borrowed(self)
        } else {
            let mut book = self.clone();
            book.rebuild_indexes();
            std::borrow::Cow::Owned(book)
        }
    }

    fn rebuild_indexes(&mut self) {
        self.open.clear();
        self.final_counts.clear();
        self.queue.clear();
        self.held.clear();
        self.leased.clear();
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.index_one(&id, true);
        }
        self.index_version = INDEX_VERSION;
    }

    /// Updates the indexes after an event about `id`.
    fn reindex(&mut self, id: &str) {
        if self.index_version != INDEX_VERSION {
            self.rebuild_indexes();
            return;
        }
        // A final state is counted once, on the transition from open; an event refused on a
        // task already final leaves it as it was.
        let was_open = self.open.contains(id);
        self.index_one(id, was_open);
    }

    /// Puts `id` where its state says, counting it when final and `count_if_final`.
    fn index_one(&mut self, id: &str, count_if_final: bool) {
        self.leased.remove(id);
        let Some(t) = self.tasks.get(id) else {
            self.open.remove(id);
            return;
        };
        // Out of the scheduler's places first (priority, submitter and submission sequence
        // never change, so the old place is known), then into the one its state says.
        let key = (t.submitted_sequence, id.to_string());
        self.held.remove(&key);
        if let Some(by_submitter) = self.queue.get_mut(&t.priority) {
            if let Some(tasks) = by_submitter.get_mut(&t.submitter) {
                tasks.remove(&key);
                if tasks.is_empty() {
                    by_submitter.remove(&t.submitter);
                }
            }
            if by_submitter.is_empty() {
                self.queue.remove(&t.priority);
            }
        }
        match t.state {
            TaskState::Pending { .. } if t.depends_on.is_empty() && t.attempt < t.max_attempts => {
                self.queue
                    .entry(t.priority)
                    .or_default()
                    .entry(t.submitter.clone())
                    .or_default()
                    .insert(key);
            }
            TaskState::Pending { .. } => {
                self.held.insert(key);
            }
            TaskState::Assigned { .. } => {
                self.leased.insert(id.to_string());
            }
            _ => {}
        }
        if t.state.is_final() {
            if count_if_final {
                *self
                    .final_counts
                    .entry(t.state.name().to_string())
                    .or_insert(0) += 1;
            }
            self.open.remove(id);
        } else {
            self.open.insert(id.to_string());
        }
    }

    /// Tasks per state name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        if self.index_version == INDEX_VERSION {
            for (_, t) in self.open_tasks() {
                *out.entry(t.state.name()).or_insert(0) += 1;
            }
            for name in TaskState::FINAL_NAMES {
                if let Some(n) = self.final_counts.get(name).filter(|n| **n > 0) {
                    out.insert(name, *n);
                }
            }
        } else {
            for t in self.tasks.values() {
                *out.entry(t.state.name()).or_insert(0) += 1;
            }
        }
        out
    }

    /// How many tasks are in the state called `name` (see [`TaskState::name`]); a final state
    /// costs nothing to count, an open one a pass over the open tasks.
    pub fn count(&self, name: &str) -> usize {
        if self.index_version == INDEX_VERSION {
            if let Some(n) = self.final_counts.get(name) {
                return *n;
            }
            if TaskState::FINAL_NAMES.contains(&name) {
                return 0;
            }
            return self
                .open_tasks()
                .filter(|(_, t)| t.state.name() == name)
                .count();
        }
        self.tasks
            .values()
            .filter(|t| t.state.name() == name)
            .count()
    }
}
