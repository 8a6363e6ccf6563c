//! The task fold: every stored task event applied to the [`TaskBook`], refusals typed.

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::events::{
    TaskAssigned, TaskCancelled, TaskCompleted, TaskDeadLettered, TaskFailed, TaskLeaseExpired,
    TaskStarted, TaskSubmitted,
};
use murmur_subjects::projection::{Projection, Refusal};
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Payload, Plane, Subject, SubjectFilter, Token, VerifiedEvent};

use super::*;
use crate::routing::{self, Requirements};

/// The task projection for one realm. Coordinator decisions (`assigned`, `lease_expired`,
/// `dead_lettered`, a cancellation by anyone but the submitter) count only from an identity
/// holding the coordinator role at the event's position ([`VerifiedEvent::roles`], set by
/// the projector from the realm's grants).
#[derive(Debug, Clone)]
pub struct TaskProjection {
    /// Realm.
    pub realm: Token,
}

pub(super) fn stored(event: &VerifiedEvent) -> DateTime<Utc> {
    event
        .stored_at
        .or(event.record.time)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(super) fn coordinator(event: &VerifiedEvent) -> Result<(), Refusal> {
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

pub(super) fn after_failure(task: &mut Task, reason: String, at: DateTime<Utc>) {
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
