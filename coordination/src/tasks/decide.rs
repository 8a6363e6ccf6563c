//! The coordinator's decisions as a pure function of the book, the candidates and `now`.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};

use super::*;
use crate::routing::{self, Candidate};

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
pub(super) type ReadyTasks<'a> = Box<dyn Iterator<Item = (&'a String, &'a Task)> + 'a>;

/// One submitter's ready tasks at one priority, in submission order: the plain ones read
/// lazily from the book's queue, merged with the graph children whose parents are done.
#[derive(Default)]
pub(super) struct SubmitterQueue<'a> {
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
            // An attempt waiting for its submitter's answer keeps its lease until answered.
            let waiting = t
                .questions
                .iter()
                .any(|q| q.attempt == t.attempt && q.answer.is_none());
            if *lease_until <= now && !waiting {
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
        match gate(book, id, t) {
            Gate::Ready => {}
            Gate::Waiting => continue,
            Gate::Settle(command) => {
                commands.push(command);
                continue;
            }
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
    // The agents with a free slot, their queue depth counting what this round gave them:
    // made once and kept up to date, not cloned for every task routed.
    let mut free: Vec<Candidate> = if any_free {
        candidates
            .iter()
            .filter(|c| has_free_slot(c, &in_flight_per_agent))
            .map(|c| {
                let mut c = c.clone();
                c.queue_depth += in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0);
                c
            })
            .collect()
    } else {
        Vec::new()
    };
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
                    if let Some(at) = free.iter().position(|f| f.id == agent_id) {
                        if has_free_slot(c, &in_flight_per_agent) {
                            free[at].queue_depth += 1;
                        } else {
                            free.remove(at);
                        }
                    }
                }
                *in_flight_per_submitter.entry(next).or_default() += 1;
            }
        }
    }
    commands
}

/// What a task that is due says before it can be routed.
#[derive(Debug)]
pub(super) enum Gate {
    /// Route it.
    Ready,
    /// A dependency has not completed yet (or not been submitted: graph tasks arrive one by
    /// one).
    Waiting,
    /// It ends without running: a failed dependency (by its policy) or no attempts left.
    Settle(Command),
}

/// Task graphs wait for every dependency, and a failed one takes the task down by policy;
/// a task without attempts left is dead-lettered with its failures.
pub(super) fn gate(book: &TaskBook, id: &str, t: &Task) -> Gate {
    let mut waiting = false;
    let mut failed_parent = None;
    for dep in &t.depends_on {
        match book.tasks.get(dep).map(|d| &d.state) {
            Some(TaskState::Completed { .. }) => {}
            Some(TaskState::DeadLettered | TaskState::Cancelled) => failed_parent = Some(dep),
            _ => waiting = true,
        }
    }
    if let Some(dep) = failed_parent {
        let reason = format!("dependency {dep} did not complete");
        return Gate::Settle(if t.fail_with_dependency {
            Command::DeadLetter {
                task: id.to_string(),
                reasons: vec![reason],
                expected: t.last_sequence,
            }
        } else {
            Command::Cancel {
                task: id.to_string(),
                reason,
                expected: t.last_sequence,
            }
        });
    }
    if waiting {
        return Gate::Waiting;
    }
    if t.attempt >= t.max_attempts {
        return Gate::Settle(Command::DeadLetter {
            task: id.to_string(),
            reasons: t.failures.clone(),
            expected: t.last_sequence,
        });
    }
    Gate::Ready
}
