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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::events::{
    TaskAssigned, TaskCancelled, TaskCompleted, TaskDeadLettered, TaskFailed, TaskLeaseExpired,
    TaskStarted, TaskSubmitted,
};
use murmur_subjects::projection::{Projection, Refusal};
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Payload, Plane, Subject, SubjectFilter, Token, VerifiedEvent};
use serde::{Deserialize, Serialize};

use crate::routing::{self, Candidate, Requirements};

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

/// The task projection for one realm. Coordinator decisions (`assigned`, `lease_expired`,
/// `dead_lettered`, a cancellation by anyone but the submitter) count only from an identity
/// holding the coordinator role at the event's position ([`VerifiedEvent::roles`], set by
/// the projector from the realm's grants).
#[derive(Debug, Clone)]
pub struct TaskProjection {
    /// Realm.
    pub realm: Token,
}

fn stored(event: &VerifiedEvent) -> DateTime<Utc> {
    event
        .stored_at
        .or(event.record.time)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn coordinator(event: &VerifiedEvent) -> Result<(), Refusal> {
    if event.roles.contains(Role::Coordinator) {
        Ok(())
    } else {
        Err(Refusal(format!(
            "{} did not hold the coordinator role at {}",
            event.emitter(),
            event.stream_sequence.unwrap_or(0)
        )))
    }
}

fn after_failure(task: &mut Task, reason: String, at: DateTime<Utc>) {
    task.failures.push(reason);
    task.state = TaskState::Pending {
        not_before: at + backoff(task.attempt),
    };
}

impl Projection for TaskProjection {
    type State = TaskBook;

    fn name(&self) -> &str {
        "tasks"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt)
            .realm(self.realm.clone())
            .domain(Domain::Task)
    }

    fn apply(&self, book: &mut TaskBook, event: &VerifiedEvent) -> Result<(), Refusal> {
        let result = self.apply_event(book, event);
        book.reindex(event.subject.aggregate().as_str());
        result
    }

    /// A task's expected sequence follows every message stored on its subjects, accepted
    /// or not: the server counts them all.
    fn observe(&self, book: &mut TaskBook, subject: &Subject, sequence: u64) {
        if subject.domain() == Domain::Task
            && subject.realm() == &self.realm
            && let Some(task) = book.tasks.get_mut(subject.aggregate().as_str())
        {
            task.last_sequence = task.last_sequence.max(sequence);
        }
    }
}

impl TaskProjection {
    fn apply_event(&self, book: &mut TaskBook, event: &VerifiedEvent) -> Result<(), Refusal> {
        let id = event.subject.aggregate().as_str();
        let seq = event.stream_sequence.unwrap_or(0);
        let at = stored(event);
        let bad = |e: murmur_subjects::payload::PayloadError| Refusal(e.to_string());
        if event.record.ty == TaskSubmitted::TYPE {
            let p: TaskSubmitted = event.payload().map_err(bad)?;
            if book.tasks.contains_key(id) {
                return Err(Refusal(format!("task {id} already exists")));
            }
            routing::validate_capability(&p.capability).map_err(Refusal)?;
            book.tasks.insert(
                id.to_string(),
                Task {
                    submitter: event.emitter().to_string(),
                    requirements: Requirements {
                        capability: p.capability,
                        labels: p.labels,
                        ..Requirements::default()
                    },
                    priority: p.priority,
                    max_attempts: p.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
                    lease_ms: p.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
                    attempt: 0,
                    failures: Vec::new(),
                    state: TaskState::Pending { not_before: at },
                    submitted_sequence: seq,
                    last_sequence: seq,
                    input: p.input,
                    correlation_id: event
                        .record
                        .correlation_id
                        .clone()
                        .unwrap_or_else(|| event.record.id.clone()),
                    last_event_id: event.record.id.clone(),
                    depends_on: p.depends_on,
                    fail_with_dependency: p.on_dependency_failure.as_deref() == Some("fail"),
                    output: None,
                },
            );
            return Ok(());
        }
        let task = book
            .tasks
            .get_mut(id)
            .ok_or_else(|| Refusal(format!("unknown task {id}")))?;
        if task.state.is_final() {
            return Err(Refusal(format!(
                "task {id} is already {}",
                task.state.name()
            )));
        }
        let current_holder = match &task.state {
            TaskState::Assigned { agent, .. } => Some(agent.clone()),
            _ => None,
        };
        let from_holder = |attempt: u32| -> Result<(), Refusal> {
            if current_holder.as_deref() != Some(event.emitter()) || attempt != task.attempt {
                Err(Refusal(format!(
                    "result for attempt {attempt} from {} but attempt {} is held by {:?}",
                    event.emitter(),
                    task.attempt,
                    current_holder
                )))
            } else {
                Ok(())
            }
        };
        match event.record.ty.as_str() {
            TaskAssigned::TYPE => {
                coordinator(event)?;
                let p: TaskAssigned = event.payload().map_err(bad)?;
                if !matches!(task.state, TaskState::Pending { .. }) || p.attempt != task.attempt + 1
                {
                    return Err(Refusal(format!(
                        "task {id} cannot take attempt {} now",
                        p.attempt
                    )));
                }
                task.attempt = p.attempt;
                task.state = TaskState::Assigned {
                    agent: p.agent,
                    lease_until: at + Duration::milliseconds(p.lease_ms as i64),
                    started: false,
                };
            }
            TaskStarted::TYPE => {
                let p: TaskStarted = event.payload().map_err(bad)?;
                from_holder(p.attempt)?;
                if let TaskState::Assigned { started, .. } = &mut task.state {
                    *started = true;
                }
            }
            TaskCompleted::TYPE => {
                let p: TaskCompleted = event.payload().map_err(bad)?;
                from_holder(p.attempt)?;
                task.state = TaskState::Completed {
                    agent: event.emitter().to_string(),
                };
                task.output = Some(p.output);
            }
            TaskFailed::TYPE => {
                let p: TaskFailed = event.payload().map_err(bad)?;
                from_holder(p.attempt)?;
                after_failure(task, p.reason, at);
            }
            TaskLeaseExpired::TYPE => {
                coordinator(event)?;
                let p: TaskLeaseExpired = event.payload().map_err(bad)?;
                if current_holder.as_deref() != Some(p.agent.as_str()) || p.attempt != task.attempt
                {
                    return Err(Refusal(
                        "lease expiry for an attempt that is not current".into(),
                    ));
                }
                after_failure(task, format!("lease expired on {}", p.agent), at);
            }
            TaskDeadLettered::TYPE => {
                coordinator(event)?;
                let p: TaskDeadLettered = event.payload().map_err(bad)?;
                if task.failures.is_empty() {
                    task.failures = p.reasons;
                }
                task.state = TaskState::DeadLettered;
            }
            TaskCancelled::TYPE => {
                let _: TaskCancelled = event.payload().map_err(bad)?;
                if event.emitter() != task.submitter {
                    coordinator(event)?;
                }
                task.state = TaskState::Cancelled;
            }
            _ => return Ok(()),
        }
        task.last_sequence = seq;
        task.last_event_id = event.record.id.clone();
        Ok(())
    }
}

/// What a coordinator should write next. Each command names the task's last sequence, for
/// the optimistic-concurrency write, and yields a deterministic event id.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Lease the next attempt to an agent.
    Assign {
        /// Task id.
        task: String,
        /// Agent public key.
        agent: String,
        /// Attempt number.
        attempt: u32,
        /// Lease length.
        lease_ms: u64,
        /// Expected last sequence of the task.
        expected: u64,
    },
    /// The current attempt's lease ran out.
    ExpireLease {
        /// Task id.
        task: String,
        /// Agent that held it.
        agent: String,
        /// Attempt.
        attempt: u32,
        /// Expected last sequence.
        expected: u64,
    },
    /// A dependency failed and the policy is to cancel.
    Cancel {
        /// Task id.
        task: String,
        /// Why.
        reason: String,
        /// Expected last sequence.
        expected: u64,
    },
    /// No attempts left (or, by policy, a dependency failed).
    DeadLetter {
        /// Task id.
        task: String,
        /// All failure reasons.
        reasons: Vec<String>,
        /// Expected last sequence.
        expected: u64,
    },
}

impl Command {
    /// A deterministic event id, so coordinators deciding the same thing write one event.
    pub fn event_id(&self) -> String {
        match self {
            Command::Assign { task, attempt, .. } => format!("{task}.assign.{attempt}"),
            Command::ExpireLease { task, attempt, .. } => format!("{task}.expire.{attempt}"),
            Command::DeadLetter { task, .. } => format!("{task}.dead_letter"),
            Command::Cancel { task, .. } => format!("{task}.cancel"),
        }
    }
}

/// Ready tasks read lazily, in submission order.
type ReadyTasks<'a> = Box<dyn Iterator<Item = (&'a String, &'a Task)> + 'a>;

/// One submitter's ready tasks at one priority, in submission order: the plain ones read
/// lazily from the book's queue, merged with the graph children whose parents are done.
#[derive(Default)]
struct SubmitterQueue<'a> {
    plain: Option<std::iter::Peekable<ReadyTasks<'a>>>,
    held: VecDeque<(&'a String, &'a Task)>,
}

impl<'a> SubmitterQueue<'a> {
    fn is_empty(&mut self) -> bool {
        self.held.is_empty() && self.plain.as_mut().is_none_or(|p| p.peek().is_none())
    }

    fn pop(&mut self) -> Option<(&'a String, &'a Task)> {
        let order = |(id, t): &(&'a String, &'a Task)| (t.submitted_sequence, *id);
        let plain = self.plain.as_mut().and_then(|p| p.peek().map(order));
        match (plain, self.held.front().map(order)) {
            (Some(p), Some(h)) if h < p => self.held.pop_front(),
            (Some(_), _) => self.plain.as_mut().and_then(Iterator::next),
            (None, _) => self.held.pop_front(),
        }
    }
}

/// Decides what to write at `now`, given the tasks and the candidate agents.
///
/// - A lease past its end is expired (the task goes back to pending, or dead-letters).
/// - A pending task out of attempts is dead-lettered with every reason.
/// - Pending tasks are assigned by **priority, then fair share between submitters, then
///   submission order**: within each priority level, submitters take turns (the submitter
///   with the fewest tasks in flight goes first), so a flood from one submitter cannot
///   starve another. Each agent takes at most its [`Candidate::slots`] tasks at once.
/// - A task no agent can take stays pending (visible as such) until one joins.
///
/// Cost: the leases in flight, the held graph children, and the queue only as far as the
/// free slots reach — not every open task.
pub fn decide(book: &TaskBook, candidates: &[Candidate], now: DateTime<Utc>) -> Vec<Command> {
    let book = book.indexed();
    let book: &TaskBook = &book;
    let mut commands = Vec::new();
    let mut in_flight_per_agent: BTreeMap<&str, u32> = BTreeMap::new();
    let mut in_flight_per_submitter: BTreeMap<&str, u32> = BTreeMap::new();
    let ready_at =
        |t: &Task| matches!(t.state, TaskState::Pending { not_before } if not_before <= now);
    for (id, t) in book
        .leased
        .iter()
        .filter_map(|id| book.tasks.get_key_value(id))
    {
        if let TaskState::Assigned {
            agent, lease_until, ..
        } = &t.state
        {
            if *lease_until <= now {
                commands.push(Command::ExpireLease {
                    task: id.clone(),
                    agent: agent.clone(),
                    attempt: t.attempt,
                    expected: t.last_sequence,
                });
            } else {
                *in_flight_per_agent.entry(agent.as_str()).or_default() += 1;
                *in_flight_per_submitter
                    .entry(t.submitter.as_str())
                    .or_default() += 1;
            }
        }
    }
    let mut by_priority: BTreeMap<std::cmp::Reverse<u8>, BTreeMap<&str, SubmitterQueue<'_>>> =
        BTreeMap::new();
    // Graph children and spent tasks, in submission order.
    for (id, t) in book
        .held
        .iter()
        .filter_map(|(_, id)| book.tasks.get_key_value(id))
    {
        if !ready_at(t) {
            continue;
        }
        // Task graphs: wait for every dependency; a failed one takes this task down by policy.
        let mut waiting = false;
        let mut failed_parent = None;
        for dep in &t.depends_on {
            match book.tasks.get(dep).map(|d| &d.state) {
                Some(TaskState::Completed { .. }) => {}
                Some(TaskState::DeadLettered | TaskState::Cancelled) => failed_parent = Some(dep),
                // Not finished yet, or not submitted yet (graph tasks arrive one by one).
                _ => waiting = true,
            }
        }
        if let Some(dep) = failed_parent {
            let reason = format!("dependency {dep} did not complete");
            commands.push(if t.fail_with_dependency {
                Command::DeadLetter {
                    task: id.clone(),
                    reasons: vec![reason],
                    expected: t.last_sequence,
                }
            } else {
                Command::Cancel {
                    task: id.clone(),
                    reason,
                    expected: t.last_sequence,
                }
            });
            continue;
        }
        if waiting {
            continue;
        }
        if t.attempt >= t.max_attempts {
            commands.push(Command::DeadLetter {
                task: id.clone(),
                reasons: t.failures.clone(),
                expected: t.last_sequence,
            });
            continue;
        }
        by_priority
            .entry(std::cmp::Reverse(t.priority))
            .or_default()
            .entry(t.submitter.as_str())
            .or_default()
            .held
            .push_back((id, t));
    }
    // With every slot taken the queue is not even opened: nobody is free to take from it.
    let has_free_slot = |c: &Candidate, in_flight: &BTreeMap<&str, u32>| {
        in_flight.get(c.id.as_str()).copied().unwrap_or(0) < c.slots.max(1)
    };
    let any_free = candidates
        .iter()
        .any(|c| has_free_slot(c, &in_flight_per_agent));
    if any_free {
        for (priority, by_submitter) in &book.queue {
            for (submitter, tasks) in by_submitter {
                let plain: ReadyTasks<'_> = Box::new(
                    tasks
                        .iter()
                        .filter_map(|(_, id)| book.tasks.get_key_value(id))
                        .filter(move |(_, t)| ready_at(t)),
                );
                by_priority
                    .entry(std::cmp::Reverse(*priority))
                    .or_default()
                    .entry(submitter.as_str())
                    .or_default()
                    .plain = Some(plain.peekable());
            }
        }
    }
    for (_, mut submitters) in by_priority {
        loop {
            // The submitter with the fewest tasks in flight goes next (ties: by key).
            let mut next: Option<(u32, &str)> = None;
            for (s, queue) in submitters.iter_mut() {
                if queue.is_empty() {
                    continue;
                }
                let key = (in_flight_per_submitter.get(s).copied().unwrap_or(0), *s);
                if next.is_none_or(|n| key < n) {
                    next = Some(key);
                }
            }
            let Some((_, next)) = next else {
                break;
            };
            let Some((id, t)) = submitters.get_mut(next).and_then(SubmitterQueue::pop) else {
                break;
            };
            let free: Vec<Candidate> = candidates
                .iter()
                .filter(|c| has_free_slot(c, &in_flight_per_agent))
                .map(|c| {
                    let mut c = c.clone();
                    c.queue_depth += in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0);
                    c
                })
                .collect();
            if free.is_empty() {
                // Every slot is taken: the rest waits for the next decision.
                break;
            }
            // Nobody able to take it now: it stays pending until an agent can.
            if let Some(agent) = routing::choose(&t.requirements, &free) {
                let agent_id = agent.id.clone();
                commands.push(Command::Assign {
                    task: id.clone(),
                    agent: agent_id.clone(),
                    attempt: t.attempt + 1,
                    lease_ms: t.lease_ms,
                    expected: t.last_sequence,
                });
                if let Some(c) = candidates.iter().find(|c| c.id == agent_id) {
                    *in_flight_per_agent.entry(c.id.as_str()).or_default() += 1;
                }
                *in_flight_per_submitter.entry(next).or_default() += 1;
            }
        }
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn task(submitter: &str, cap: &str, priority: u8, seq: u64, at: DateTime<Utc>) -> Task {
        Task {
            submitter: submitter.into(),
            requirements: Requirements {
                capability: cap.into(),
                ..Requirements::default()
            },
            priority,
            max_attempts: 3,
            lease_ms: 1_000,
            attempt: 0,
            failures: vec![],
            state: TaskState::Pending { not_before: at },
            submitted_sequence: seq,
            last_sequence: seq,
            input: serde_json::Value::Null,
            correlation_id: format!("c{seq}"),
            last_event_id: format!("e{seq}"),
            depends_on: vec![],
            fail_with_dependency: false,
            output: None,
        }
    }

    /// A task of submitter `s` in its first attempt, started on `agent` until `lease_until`.
    fn leased(agent: &str, lease_until: DateTime<Utc>, seq: u64, at: DateTime<Utc>) -> Task {
        let mut t = task("s", "x", 0, seq, at);
        t.attempt = 1;
        t.state = TaskState::Assigned {
            agent: agent.into(),
            lease_until,
            started: true,
        };
        t
    }

    fn agent(id: &str, cap: &str) -> Candidate {
        Candidate {
            id: id.into(),
            capabilities: vec![cap.into()],
            cores: 2,
            memory_mib: 1024,
            online: true,
            ..Candidate::default()
        }
    }

    #[test]
    fn a_flood_from_one_submitter_does_not_starve_another() {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = TaskBook::default();
        for i in 0..100 {
            book.tasks
                .insert(format!("a{i:03}"), task("alice", "x", 0, i, now));
        }
        book.tasks
            .insert("b000".into(), task("bob", "x", 0, 1_000, now));
        let agents = [agent("w1", "x"), agent("w2", "x")];
        let cmds = decide(&book, &agents, now);
        let assigned: Vec<&str> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::Assign { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(assigned.len(), 2, "one slot per agent");
        assert!(
            assigned.contains(&"b000"),
            "bob gets one of the first two slots: {assigned:?}"
        );
    }

    #[test]
    fn each_agent_takes_as_many_tasks_as_its_slots() {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = TaskBook::default();
        for i in 0..10 {
            book.tasks
                .insert(format!("t{i:02}"), task("s", "x", 0, i, now));
        }
        // One of the big agent's three slots is already taken.
        book.tasks.insert(
            "running".into(),
            leased("big", t("2026-01-01T00:05:00Z"), 100, now),
        );
        let agents = [
            Candidate {
                slots: 3,
                ..agent("big", "x")
            },
            agent("small", "x"),
        ];
        let cmds = decide(&book, &agents, now);
        let mut per_agent: BTreeMap<&str, u32> = BTreeMap::new();
        for c in &cmds {
            if let Command::Assign { agent, .. } = c {
                *per_agent.entry(agent.as_str()).or_default() += 1;
            }
        }
        assert_eq!(
            per_agent,
            BTreeMap::from([("big", 2), ("small", 1)]),
            "{cmds:?}"
        );
    }

    #[test]
    fn priority_first_then_fifo() {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = TaskBook::default();
        book.tasks.insert("low".into(), task("s", "x", 0, 1, now));
        book.tasks.insert("high".into(), task("s", "x", 9, 2, now));
        let cmds = decide(&book, &[agent("w", "x")], now);
        assert!(matches!(&cmds[..], [Command::Assign { task, .. }] if task == "high"));
    }

    #[test]
    fn expired_leases_and_exhausted_tasks() {
        let now = t("2026-01-01T00:00:10Z");
        let mut book = TaskBook::default();
        book.tasks.insert(
            "held".into(),
            leased("w", t("2026-01-01T00:00:05Z"), 1, now),
        );
        let mut spent = task("s", "x", 0, 2, now);
        spent.attempt = 3;
        spent.failures = vec!["a".into(), "b".into(), "c".into()];
        book.tasks.insert("spent".into(), spent);
        let cmds = decide(&book, &[], now);
        assert!(cmds.contains(&Command::ExpireLease {
            task: "held".into(),
            agent: "w".into(),
            attempt: 1,
            expected: 1
        }));
        assert!(cmds.contains(&Command::DeadLetter {
            task: "spent".into(),
            reasons: vec!["a".into(), "b".into(), "c".into()],
            expected: 2
        }));
    }

    #[test]
    fn no_capable_agent_leaves_the_task_pending_and_backoff_is_respected() {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = TaskBook::default();
        book.tasks
            .insert("gpu".into(), task("s", "llm.generate", 0, 1, now));
        let mut retry = task("s", "x", 0, 2, now);
        retry.attempt = 1;
        retry.state = TaskState::Pending {
            not_before: now + backoff(1),
        };
        book.tasks.insert("retry".into(), retry);
        let agents = [agent("w", "x")];
        assert!(decide(&book, &agents, now).is_empty());
        let later = now + backoff(1);
        let cmds = decide(&book, &agents, later);
        assert!(matches!(&cmds[..], [Command::Assign { task, attempt: 2, .. }] if task == "retry"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::milliseconds(200));
        assert_eq!(backoff(2), Duration::milliseconds(400));
        assert_eq!(backoff(30), Duration::milliseconds(30_000));
    }

    #[test]
    fn command_ids_are_deterministic() {
        let c = Command::Assign {
            task: "t1".into(),
            agent: "w".into(),
            attempt: 2,
            lease_ms: 1,
            expected: 5,
        };
        assert_eq!(c.event_id(), "t1.assign.2");
    }

    mod fold {
        use super::*;
        use crate::test_log::Log;
        use murmur_subjects::Identity;

        #[test]
        fn lifecycle_with_retry_and_idempotent_completion() {
            let (submitter, coord, w1, w2) = (
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
            );
            let proj = TaskProjection {
                realm: Token::new("r").expect("token"),
            };
            let mut log = Log::new();
            log.grant(&coord, Role::Coordinator);
            let mut book = TaskBook::default();
            let submitted = TaskSubmitted {
                capability: "x".into(),
                max_attempts: Some(2),
                lease_ms: Some(1_000),
                ..Default::default()
            };
            proj.apply(&mut book, &log.event(&submitter, "t1", &submitted, 0))
                .expect("submitted");
            assert_eq!(
                book.open_tasks()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
                ["t1"],
                "a submitted task is open"
            );
            // Only a coordinator may assign.
            let assign1 = TaskAssigned {
                agent: w1.public_key().into(),
                attempt: 1,
                lease_ms: 1_000,
                work: None,
            };
            assert!(
                proj.apply(&mut book, &log.event(&w1, "t1", &assign1, 1))
                    .is_err()
            );
            proj.apply(&mut book, &log.event(&coord, "t1", &assign1, 1))
                .expect("assigned");
            assert_eq!(book.tasks["t1"].state.name(), "assigned");
            // w1 goes silent: the lease expires, w2 gets attempt 2.
            let expired = TaskLeaseExpired {
                attempt: 1,
                agent: w1.public_key().into(),
            };
            proj.apply(&mut book, &log.event(&coord, "t1", &expired, 2_000))
                .expect("expired");
            assert_eq!(book.tasks["t1"].state.name(), "pending");
            let assign2 = TaskAssigned {
                agent: w2.public_key().into(),
                attempt: 2,
                lease_ms: 1_000,
                work: None,
            };
            proj.apply(&mut book, &log.event(&coord, "t1", &assign2, 2_500))
                .expect("assigned again");
            // A late result from w1's lost lease is refused.
            let late = TaskCompleted {
                output: serde_json::json!("late"),
                attempt: 1,
            };
            assert!(
                proj.apply(&mut book, &log.event(&w1, "t1", &late, 2_600))
                    .is_err()
            );
            let done = TaskCompleted {
                output: serde_json::json!("ok"),
                attempt: 2,
            };
            proj.apply(&mut book, &log.event(&w2, "t1", &done, 2_700))
                .expect("completed");
            assert_eq!(
                book.open_tasks().count(),
                0,
                "a completed task is no longer open"
            );
            assert_eq!(
                book.tasks["t1"].state,
                TaskState::Completed {
                    agent: w2.public_key().into()
                }
            );
            // A duplicate completion never produces a second "completed".
            let before = book.clone();
            assert!(
                proj.apply(&mut book, &log.event(&w2, "t1", &done, 2_800))
                    .is_err()
            );
            assert_eq!(book, before);
            assert_eq!(
                book.tasks["t1"].failures,
                vec![format!("lease expired on {}", w1.public_key())]
            );
        }

        #[test]
        fn failing_task_is_dead_lettered_with_every_reason() {
            let (submitter, coord, w) = (
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
            );
            let proj = TaskProjection {
                realm: Token::new("r").expect("token"),
            };
            let mut log = Log::new();
            log.grant(&coord, Role::Coordinator);
            let mut book = TaskBook::default();
            let submitted = TaskSubmitted {
                capability: "x".into(),
                max_attempts: Some(2),
                ..Default::default()
            };
            proj.apply(&mut book, &log.event(&submitter, "t", &submitted, 0))
                .expect("submitted");
            let mut now_ms = 0;
            for attempt in 1..=2 {
                now_ms += 1_000;
                let a = TaskAssigned {
                    agent: w.public_key().into(),
                    attempt,
                    lease_ms: 10_000,
                    work: None,
                };
                proj.apply(&mut book, &log.event(&coord, "t", &a, now_ms))
                    .expect("assigned");
                let f = TaskFailed {
                    reason: format!("boom {attempt}"),
                    attempt,
                };
                proj.apply(&mut book, &log.event(&w, "t", &f, now_ms + 10))
                    .expect("failed");
            }
            let later = log.start + Duration::seconds(60);
            let cmds = decide(&book, &[], later);
            let Some(Command::DeadLetter { reasons, .. }) = cmds.first() else {
                panic!("{cmds:?}")
            };
            assert_eq!(reasons, &vec!["boom 1".to_string(), "boom 2".to_string()]);
            proj.apply(
                &mut book,
                &log.event(
                    &coord,
                    "t",
                    &TaskDeadLettered {
                        reasons: reasons.clone(),
                    },
                    60_000,
                ),
            )
            .expect("dead-lettered");
            assert_eq!(book.tasks["t"].state, TaskState::DeadLettered);
        }

        /// A random walk over one realm's task events: 20 tasks from two submitters at two
        /// priorities, some graph children, a capability nobody has, and every other event
        /// (assignments, starts, completions, failures, cancellations, expiries) often from
        /// the wrong party or for the wrong attempt, so refusals are walked too. Calls
        /// `after_each(step, book, stored time, the two workers' keys)` after every event is
        /// folded.
        fn random_walk(
            steps: i64,
            mut after_each: impl FnMut(i64, &TaskBook, DateTime<Utc>, [&str; 2]),
        ) {
            let (alice, bob, coord, w1, w2) = (
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
                Identity::generate(),
            );
            let proj = TaskProjection {
                realm: Token::new("r").expect("token"),
            };
            let mut log = Log::new();
            log.grant(&coord, Role::Coordinator);
            let mut book = TaskBook::default();
            let mut rng = 0x9e37_79b9_u64;
            let mut next = |n: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % n
            };
            let workers = [&w1, &w2];
            for step in 0..steps {
                let n = next(20);
                let task = format!("t{n:02}");
                let attempt = book.tasks.get(&task).map_or(1, |t| t.attempt.max(1));
                // Mostly the attempt's holder, sometimes a stranger (refused).
                let holder = book.tasks.get(&task).and_then(|t| match &t.state {
                    TaskState::Assigned { agent, .. } => {
                        workers.into_iter().find(|w| w.public_key() == agent)
                    }
                    _ => None,
                });
                let w = match holder {
                    Some(h) if next(4) != 0 => h,
                    _ => workers[next(2) as usize],
                };
                let at = step * 50;
                let event = match next(9) {
                    0 | 1 => log.event(
                        if next(3) == 0 { &bob } else { &alice },
                        &task,
                        &TaskSubmitted {
                            capability: if next(6) == 0 { "y" } else { "x" }.into(),
                            priority: if next(3) == 0 { 5 } else { 0 },
                            max_attempts: Some(2),
                            lease_ms: Some(1_000),
                            depends_on: if n > 0 && next(3) == 0 {
                                vec![format!("t{:02}", next(n))]
                            } else {
                                vec![]
                            },
                            on_dependency_failure: (next(2) == 0).then(|| "fail".into()),
                            ..Default::default()
                        },
                        at,
                    ),
                    2 | 3 => log.event(
                        &coord,
                        &task,
                        &TaskAssigned {
                            agent: w.public_key().into(),
                            attempt: attempt + u32::from(next(2) == 0),
                            lease_ms: 1_000,
                            work: None,
                        },
                        at,
                    ),
                    4 => log.event(w, &task, &TaskStarted { attempt }, at),
                    5 => log.event(
                        w,
                        &task,
                        &TaskCompleted {
                            output: serde_json::json!(step),
                            attempt,
                        },
                        at,
                    ),
                    6 => log.event(
                        w,
                        &task,
                        &TaskFailed {
                            reason: "no".into(),
                            attempt,
                        },
                        at,
                    ),
                    7 => log.event(
                        &coord,
                        &task,
                        &TaskCancelled {
                            reason: "enough".into(),
                        },
                        at,
                    ),
                    _ => log.event(
                        &coord,
                        &task,
                        &TaskLeaseExpired {
                            attempt,
                            agent: w.public_key().into(),
                        },
                        at,
                    ),
                };
                let _ = proj.apply(&mut book, &event);
                after_each(
                    step,
                    &book,
                    log.start + Duration::milliseconds(at),
                    [w1.public_key(), w2.public_key()],
                );
            }
        }

        /// The same tasks with no indexes: what a full scan of every task says.
        fn unindexed(book: &TaskBook) -> TaskBook {
            TaskBook {
                tasks: book.tasks.clone(),
                ..TaskBook::default()
            }
        }

        /// The indexes a projection keeps (open tasks, final counts) say the same as a scan of
        /// every task, after every event, refused or not.
        #[test]
        fn indexes_agree_with_a_full_scan() {
            let mut seen = BTreeSet::new();
            random_walk(400, |step, book, _, _| {
                let scanned = unindexed(book);
                assert_eq!(book.counts(), scanned.counts(), "step {step}");
                for name in TaskState::NAMES {
                    assert_eq!(book.count(name), scanned.count(name), "{name} at {step}");
                }
                seen.extend(book.counts().into_keys());
                let open: Vec<&String> = book.open_tasks().map(|(id, _)| id).collect();
                let scan: Vec<&String> = scanned.open_tasks().map(|(id, _)| id).collect();
                assert_eq!(open, scan, "step {step}");
            });
            assert!(
                seen.len() >= 5,
                "the walk went through most states: {seen:?}"
            );
        }

        /// The scheduler as it was before its indexes: every open task scanned on every
        /// decision. The oracle for the indexed one.
        fn decide_by_scan(
            book: &TaskBook,
            candidates: &[Candidate],
            now: DateTime<Utc>,
        ) -> Vec<Command> {
            let mut commands = Vec::new();
            let mut in_flight_per_agent: BTreeMap<&str, u32> = BTreeMap::new();
            let mut in_flight_per_submitter: BTreeMap<&str, u32> = BTreeMap::new();
            // One pass over the open tasks: leases in flight, and the tasks ready to go.
            let mut ready: Vec<(&String, &Task)> = Vec::new();
            for (id, t) in book.open_tasks() {
                match &t.state {
                    TaskState::Assigned {
                        agent, lease_until, ..
                    } => {
                        if *lease_until <= now {
                            commands.push(Command::ExpireLease {
                                task: id.clone(),
                                agent: agent.clone(),
                                attempt: t.attempt,
                                expected: t.last_sequence,
                            });
                        } else {
                            *in_flight_per_agent.entry(agent.as_str()).or_default() += 1;
                            *in_flight_per_submitter
                                .entry(t.submitter.as_str())
                                .or_default() += 1;
                        }
                    }
                    TaskState::Pending { not_before } if *not_before <= now => ready.push((id, t)),
                    _ => {}
                }
            }
            // With every slot taken, only dependency and attempt checks can still decide anything:
            // a backlog of plain tasks is not queued up just to find nobody free.
            let any_free = candidates.iter().any(|c| {
                in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0) < c.slots.max(1)
            });
            // Ready tasks grouped by priority (high first), then by submitter in FIFO order.
            #[allow(clippy::type_complexity)]
            let mut by_priority: BTreeMap<
                std::cmp::Reverse<u8>,
                BTreeMap<&str, VecDeque<(&String, &Task)>>,
            > = BTreeMap::new();
            ready.sort_by_key(|(_, t)| t.submitted_sequence);
            for (id, t) in ready {
                if !any_free && t.depends_on.is_empty() && t.attempt < t.max_attempts {
                    continue;
                }
                // Task graphs: wait for every dependency; a failed one takes this task down by policy.
                let mut waiting = false;
                let mut failed_parent = None;
                for dep in &t.depends_on {
                    match book.tasks.get(dep).map(|d| &d.state) {
                        Some(TaskState::Completed { .. }) => {}
                        Some(TaskState::DeadLettered | TaskState::Cancelled) => {
                            failed_parent = Some(dep)
                        }
                        // Not finished yet, or not submitted yet (graph tasks arrive one by one).
                        _ => waiting = true,
                    }
                }
                if let Some(dep) = failed_parent {
                    let reason = format!("dependency {dep} did not complete");
                    commands.push(if t.fail_with_dependency {
                        Command::DeadLetter {
                            task: id.clone(),
                            reasons: vec![reason],
                            expected: t.last_sequence,
                        }
                    } else {
                        Command::Cancel {
                            task: id.clone(),
                            reason,
                            expected: t.last_sequence,
                        }
                    });
                    continue;
                }
                if waiting {
                    continue;
                }
                if t.attempt >= t.max_attempts {
                    commands.push(Command::DeadLetter {
                        task: id.clone(),
                        reasons: t.failures.clone(),
                        expected: t.last_sequence,
                    });
                    continue;
                }
                by_priority
                    .entry(std::cmp::Reverse(t.priority))
                    .or_default()
                    .entry(t.submitter.as_str())
                    .or_default()
                    .push_back((id, t));
            }
            for (_, mut submitters) in by_priority {
                // The submitter with the fewest tasks in flight goes next (ties: by key).
                while let Some(next) = submitters
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .min_by_key(|(s, _)| {
                        (in_flight_per_submitter.get(*s).copied().unwrap_or(0), **s)
                    })
                    .map(|(s, _)| *s)
                {
                    let Some((id, t)) = submitters.get_mut(next).and_then(VecDeque::pop_front)
                    else {
                        break;
                    };
                    let free: Vec<Candidate> = candidates
                        .iter()
                        .filter(|c| {
                            in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0)
                                < c.slots.max(1)
                        })
                        .map(|c| {
                            let mut c = c.clone();
                            c.queue_depth +=
                                in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0);
                            c
                        })
                        .collect();
                    if free.is_empty() {
                        // Every slot is taken: the rest waits for the next decision.
                        break;
                    }
                    // Nobody able to take it now: it stays pending until an agent can.
                    if let Some(agent) = routing::choose(&t.requirements, &free) {
                        let agent_id = agent.id.clone();
                        commands.push(Command::Assign {
                            task: id.clone(),
                            agent: agent_id.clone(),
                            attempt: t.attempt + 1,
                            lease_ms: t.lease_ms,
                            expected: t.last_sequence,
                        });
                        if let Some(c) = candidates.iter().find(|c| c.id == agent_id) {
                            *in_flight_per_agent.entry(c.id.as_str()).or_default() += 1;
                        }
                        *in_flight_per_submitter.entry(next).or_default() += 1;
                    }
                }
            }
            commands
        }

        /// Decisions read from the book's incremental indexes (the queue walked only as far
        /// as free slots reach) equal the full scan's, command for command, after every
        /// event of the random walk, at several moments and slot counts (the two agents'
        /// equal or not).
        #[test]
        fn decisions_from_the_indexes_equal_a_scan_of_every_task() {
            let (mut assigns, mut other_commands) = (0, 0);
            random_walk(600, |step, book, at, [w1, w2]| {
                let scanned = unindexed(book);
                for (later_ms, slots) in
                    [(0, [1, 1]), (300, [2, 1]), (1_500, [0, 3]), (5_000, [8, 8])]
                {
                    let candidates = [
                        Candidate {
                            slots: slots[0],
                            ..super::agent(w1, "x")
                        },
                        Candidate {
                            slots: slots[1],
                            ..super::agent(w2, "x")
                        },
                    ];
                    let now = at + Duration::milliseconds(later_ms);
                    let indexed = decide(book, &candidates, now);
                    let scan = decide_by_scan(&scanned, &candidates, now);
                    assert_eq!(
                        indexed, scan,
                        "step {step}, +{later_ms} ms, slots {slots:?}"
                    );
                    for c in &indexed {
                        match c {
                            Command::Assign { .. } => assigns += 1,
                            _ => other_commands += 1,
                        }
                    }
                }
            });
            assert!(
                assigns > 100 && other_commands > 100,
                "the walk exercised the scheduler: {assigns} assignments, {other_commands} other commands"
            );
        }

        #[test]
        fn bad_capability_syntax_is_refused() {
            let s = Identity::generate();
            let proj = TaskProjection {
                realm: Token::new("r").expect("token"),
            };
            let mut log = Log::new();
            let mut book = TaskBook::default();
            let bad = TaskSubmitted {
                capability: "Not A Capability".into(),
                ..Default::default()
            };
            assert!(proj.apply(&mut book, &log.event(&s, "t", &bad, 0)).is_err());
            assert!(book.tasks.is_empty());
        }
    }

    #[test]
    fn graph_children_wait_for_parents_and_follow_the_failure_policy() {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = TaskBook::default();
        let parent = task("s", "x", 0, 1, now);
        let mut child = task("s", "x", 0, 2, now);
        child.depends_on = vec!["parent".into()];
        book.tasks.insert("parent".into(), parent);
        book.tasks.insert("child".into(), child.clone());
        let agents = [agent("w", "x"), agent("v", "x")];
        let cmds = decide(&book, &agents, now);
        assert!(
            matches!(&cmds[..], [Command::Assign { task, .. }] if task == "parent"),
            "{cmds:?}"
        );
        book.tasks.get_mut("parent").expect("parent").state =
            TaskState::Completed { agent: "w".into() };
        let cmds = decide(&book, &agents, now);
        assert!(
            matches!(&cmds[..], [Command::Assign { task, .. }] if task == "child"),
            "{cmds:?}"
        );
        book.tasks.get_mut("parent").expect("parent").state = TaskState::DeadLettered;
        let cmds = decide(&book, &agents, now);
        assert!(
            matches!(&cmds[..], [Command::Cancel { task, .. }] if task == "child"),
            "{cmds:?}"
        );
        book.tasks
            .get_mut("child")
            .expect("child")
            .fail_with_dependency = true;
        let cmds = decide(&book, &agents, now);
        assert!(
            matches!(&cmds[..], [Command::DeadLetter { task, .. }] if task == "child"),
            "{cmds:?}"
        );
    }
}
