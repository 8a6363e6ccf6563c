//! What a worker reads of the task log: the attempts assigned to it and the cancellations,
//! not the whole life of every task. A worker that folded every `submitted`, `started` and
//! `completed` of the realm decoded and verified four events per task per worker; these
//! folds follow one event type each (the consumer filters by verb on the server). The
//! coordinator carries small work in the assignment itself; for the rest the worker fetches
//! the few other events an assignment needs ([`work_for`]).
//!
//! Both folds are pure and run the same live and on replay.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::events::{AssignedWork, TaskAssigned, TaskCancelled, TaskSubmitted};
use murmur_subjects::{
    Domain, EventLog, EventType, LogError, Payload, Plane, Projection, Refusal, StartAt, Subject,
    SubjectFilter, Token, VerifiedEvent,
};
use serde::{Deserialize, Serialize};

use crate::tasks::{TaskBook, TaskProjection};
use murmur_subjects::roles::Role;

/// One attempt assigned to the agent, as its `task.assigned` event says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Task id (its aggregate token).
    pub task: String,
    /// Attempt number.
    pub attempt: u32,
    /// When the lease ends (stored time + lease).
    pub lease_until: DateTime<Utc>,
    /// Stream sequence of the assignment: the worker's `started` expects nothing stored on
    /// the task after it, so an assignment that was expired, cancelled or superseded
    /// meanwhile is never started.
    pub sequence: u64,
    /// The assignment event's id (the cause of `started`).
    pub event_id: String,
    /// The task's correlation id (kept by every event of the task).
    pub correlation_id: String,
    /// The work the assignment carries; `None`: read it with [`work_for`].
    #[serde(default)]
    pub work: Option<AssignedWork>,
}

/// The attempts assigned to one agent whose lease had not ended by the log's latest
/// assignment, by stream sequence (so a worker reads what is new with a range).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignments {
    /// By stream sequence of the assignment.
    pub by_sequence: BTreeMap<u64, Assignment>,
    /// Log time of the last pass that dropped ended leases.
    pruned_at: Option<DateTime<Utc>>,
}

/// How often (in log time) ended leases are dropped from [`Assignments`].
const PRUNE_EVERY: Duration = Duration::seconds(1);

/// Folds `task.assigned` events for one agent. Assignments count only from an identity
/// holding the coordinator role at their position, as in [`TaskProjection`].
#[derive(Debug, Clone)]
pub struct AssignmentProjection {
    /// Realm.
    pub realm: Token,
    /// The agent whose assignments are kept (public key).
    pub agent: String,
}

impl Projection for AssignmentProjection {
    type State = Assignments;

    fn name(&self) -> &str {
        "assignments"
    }

    fn filter(&self) -> SubjectFilter {
        EventType::of::<TaskAssigned>().filter(Some(&self.realm))
    }

    fn recipient(&self) -> Option<&str> {
        Some(&self.agent)
    }

    fn apply(&self, state: &mut Assignments, event: &VerifiedEvent) -> Result<(), Refusal> {
        if !event.roles.contains(Role::Coordinator) {
            return Err(Refusal(format!("{} is not a coordinator", event.emitter())));
        }
        let p: TaskAssigned = event.payload().map_err(|e| Refusal(e.to_string()))?;
        let at = event
            .stored_at
            .or(event.record.time)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // A lease that ended by the log's own clock is of no use to start: without this a
        // worker restarting on a long history would find every attempt it ever ran.
        if state.pruned_at.is_none_or(|t| at - t >= PRUNE_EVERY) {
            state.by_sequence.retain(|_, a| a.lease_until > at);
            state.pruned_at = Some(at);
        }
        if p.agent != self.agent {
            return Ok(());
        }
        let sequence = event.stream_sequence.unwrap_or_default();
        state.by_sequence.insert(
            sequence,
            Assignment {
                task: event.subject.aggregate().as_str().to_string(),
                attempt: p.attempt,
                lease_until: at
                    + Duration::milliseconds(i64::try_from(p.lease_ms).unwrap_or(i64::MAX / 2)),
                sequence,
                event_id: event.record.id.clone(),
                correlation_id: event
                    .record
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| event.record.id.clone()),
                work: p.work,
            },
        );
        Ok(())
    }
}

/// Who asked to cancel each task: task id → emitters of its `task.cancelled` events, and
/// the tasks a coordinator cancelled. A worker honours a cancellation from the task's
/// submitter or a coordinator (the same rule as [`TaskProjection`]); it learns the
/// submitter when it fetches the work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cancellations {
    /// Task id → emitters.
    pub by_task: BTreeMap<String, BTreeSet<String>>,
    /// Tasks cancelled by an identity holding the coordinator role then.
    pub by_coordinator: BTreeSet<String>,
}

impl Cancellations {
    /// Whether `task` (submitted by `submitter`) has a cancellation that counts.
    pub fn cancelled(&self, task: &str, submitter: &str) -> bool {
        self.by_coordinator.contains(task)
            || self
                .by_task
                .get(task)
                .is_some_and(|who| who.contains(submitter))
    }
}

/// Folds `task.cancelled` events of a realm.
#[derive(Debug, Clone)]
pub struct CancellationProjection {
    /// Realm.
    pub realm: Token,
}

impl Projection for CancellationProjection {
    type State = Cancellations;

    fn name(&self) -> &str {
        "cancellations"
    }

    fn filter(&self) -> SubjectFilter {
        EventType::of::<TaskCancelled>().filter(Some(&self.realm))
    }

    fn apply(&self, state: &mut Cancellations, event: &VerifiedEvent) -> Result<(), Refusal> {
        let _: TaskCancelled = event.payload().map_err(|e| Refusal(e.to_string()))?;
        let task = event.subject.aggregate().as_str().to_string();
        if event.roles.contains(Role::Coordinator) {
            state.by_coordinator.insert(task.clone());
        }
        state
            .by_task
            .entry(task)
            .or_default()
            .insert(event.emitter().to_string());
        Ok(())
    }
}

/// What a worker needs to run an assignment, read from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The task (always present) and, for a task with dependencies, its parents, folded
    /// exactly as [`TaskProjection`] folds them.
    pub book: TaskBook,
    /// The task's submitter (whose cancellation counts).
    pub submitter: String,
}

/// Reads what an assignment needs. The usual case costs one request to the stream leader:
/// the task's first `submitted` event, checked by the same fold as everywhere. A task with
/// dependencies (whose parents' outputs go to the handler), or a first submission the fold
/// refuses, is read in full instead: the task's and its parents' events through
/// [`TaskProjection`], so a forged event on a parent's subject never feeds a child.
pub async fn work_for(
    log: &EventLog,
    projection: &TaskProjection,
    task: &str,
) -> Result<Option<Work>, LogError> {
    let token = Token::new(task).map_err(|e| LogError::Consumer(e.into()))?;
    let subject = EventType::of::<TaskSubmitted>().subject(&projection.realm, &token);
    if let Some(first) = log.first_event(subject.as_str()).await? {
        let mut book = TaskBook::default();
        if first.record.ty == TaskSubmitted::TYPE
            && projection.apply(&mut book, &first).is_ok()
            && let Some(t) = book.tasks.get(task)
            && t.depends_on.is_empty()
        {
            let submitter = t.submitter.clone();
            return Ok(Some(Work { book, submitter }));
        }
    }
    let mut book = TaskBook::default();
    let mut roles = murmur_subjects::grants::RoleBook::default();
    murmur_subjects::projection::read_roles(log, &mut roles, None).await?;
    fold_task(log, projection, &roles, &mut book, task).await?;
    let Some(t) = book.tasks.get(task) else {
        return Ok(None);
    };
    let submitter = t.submitter.clone();
    for dep in t.depends_on.clone() {
        fold_task(log, projection, &roles, &mut book, &dep).await?;
    }
    Ok(Some(Work { book, submitter }))
}

/// Folds every stored event of one task into `book`, each judged with the grants in
/// `roles` at its position.
async fn fold_task(
    log: &EventLog,
    projection: &TaskProjection,
    roles: &murmur_subjects::grants::RoleBook,
    book: &mut TaskBook,
    task: &str,
) -> Result<(), LogError> {
    let token = Token::new(task).map_err(|e| LogError::Consumer(e.into()))?;
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(projection.realm.clone())
        .domain(Domain::Task)
        .aggregate(token);
    log.read(&filter, StartAt::Beginning, None, |stored| {
        if let Ok(subject) = Subject::parse(stored.message.subject.as_str()) {
            projection.observe(book, &subject, stored.sequence);
        }
        if let Ok(mut event) =
            log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at))
        {
            // A refused event is refused here as in every other fold of the task.
            let _ = roles
                .admit(&mut event)
                .and_then(|()| projection.apply(book, &event));
        }
        std::ops::ControlFlow::Continue(())
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::Log;
    use murmur_subjects::Identity;

    fn assigned(agent: &Identity, attempt: u32, lease_ms: u64) -> TaskAssigned {
        TaskAssigned {
            agent: agent.public_key().into(),
            attempt,
            lease_ms,
            work: None,
        }
    }

    #[test]
    fn keeps_this_agents_assignments_from_coordinators_and_drops_ended_leases() {
        let (coord, stranger, me, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = AssignmentProjection {
            realm: Token::new("r").expect("token"),
            agent: me.public_key().into(),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut state = Assignments::default();
        proj.apply(
            &mut state,
            &log.event(&coord, "t1", &assigned(&me, 1, 5_000), 0),
        )
        .expect("mine");
        proj.apply(
            &mut state,
            &log.event(&coord, "t2", &assigned(&other, 1, 5_000), 10),
        )
        .expect("someone else's: accepted, not kept");
        assert!(
            proj.apply(
                &mut state,
                &log.event(&stranger, "t3", &assigned(&me, 1, 5_000), 20)
            )
            .is_err(),
            "only a coordinator assigns"
        );
        let kept: Vec<(&u64, &str, u32)> = state
            .by_sequence
            .iter()
            .map(|(s, a)| (s, a.task.as_str(), a.attempt))
            .collect();
        assert_eq!(kept, vec![(&1, "t1", 1)]);
        let first = &state.by_sequence[&1];
        assert_eq!(first.lease_until, log.start + Duration::milliseconds(5_000));
        assert!(!first.event_id.is_empty() && !first.correlation_id.is_empty());
        assert_eq!(first.work, None, "nothing carried: the worker reads it");

        // A later attempt of the same task comes with its own sequence; once the log's time
        // passes t1's lease, t1 is dropped.
        proj.apply(
            &mut state,
            &log.event(&coord, "t1", &assign_again(&me), 6_000),
        )
        .expect("attempt 2");
        let tasks: Vec<(u64, u32)> = state
            .by_sequence
            .values()
            .map(|a| (a.sequence, a.attempt))
            .collect();
        assert_eq!(tasks, vec![(4, 2)], "attempt 1's lease ended at 5 s");
        assert_eq!(
            state.by_sequence[&4].work,
            assign_again(&me).work,
            "the carried work is kept"
        );
    }

    fn assign_again(me: &Identity) -> TaskAssigned {
        TaskAssigned {
            work: Some(AssignedWork {
                input: serde_json::json!({"n": 2}),
                submitter: "alice".into(),
                capability: "test.run".into(),
            }),
            ..assigned(me, 2, 60_000)
        }
    }

    #[test]
    fn cancellations_count_from_the_submitter_or_a_coordinator() {
        let (submitter, coord, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = CancellationProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut state = Cancellations::default();
        let cancel = TaskCancelled {
            reason: "enough".into(),
        };
        proj.apply(&mut state, &log.event(&stranger, "t1", &cancel, 0))
            .expect("recorded");
        assert!(!state.cancelled("t1", submitter.public_key()));
        proj.apply(&mut state, &log.event(&submitter, "t1", &cancel, 1))
            .expect("recorded");
        assert!(state.cancelled("t1", submitter.public_key()));
        proj.apply(&mut state, &log.event(&coord, "t2", &cancel, 2))
            .expect("recorded");
        assert!(state.cancelled("t2", submitter.public_key()));
        assert!(!state.cancelled("t3", submitter.public_key()));
    }
}
