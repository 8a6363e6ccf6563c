//! The task fold: every stored task event applied to the [`TaskBook`], refusals typed.

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::events::{
    TaskAssigned, TaskCancelled, TaskCompleted, TaskDeadLettered, TaskFailed, TaskLeaseExpired,
    TaskProgress, TaskQuestionAnswered, TaskQuestionAsked, TaskStarted, TaskSubmitted,
};
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Domain, Payload, Plane, Projection, Refusal, Subject, SubjectFilter, Token, VerifiedEvent,
};

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

/// A task event, decoded once from its stored form.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// `task.submitted`.
    Submitted(TaskSubmitted),
    /// `task.assigned` (a coordinator's decision).
    Assigned(TaskAssigned),
    /// `task.started`.
    Started(TaskStarted),
    /// `task.completed`.
    Completed(TaskCompleted),
    /// `task.failed`.
    Failed(TaskFailed),
    /// `task.lease_expired` (a coordinator's decision).
    LeaseExpired(TaskLeaseExpired),
    /// `task.dead_lettered` (a coordinator's decision).
    DeadLettered(TaskDeadLettered),
    /// `task.cancelled`.
    Cancelled(TaskCancelled),
    /// `task.progress`: on the live plane, never stored; reported by watchers, not folded.
    Progress(TaskProgress),
    /// `task.question_asked` (by the agent holding the attempt).
    QuestionAsked(TaskQuestionAsked),
    /// `task.question_answered` (by the submitter).
    QuestionAnswered(TaskQuestionAnswered),
}

impl TaskEvent {
    /// Decodes `event` by its type; `UnknownType` for a type outside the task domain.
    pub fn decode(event: &VerifiedEvent) -> Result<Self, TaskRefusal> {
        let bad = |e: murmur_subjects::payload::PayloadError| TaskRefusal::Payload(e.to_string());
        Ok(match event.record.ty.as_str() {
            TaskSubmitted::TYPE => Self::Submitted(event.payload().map_err(bad)?),
            TaskAssigned::TYPE => Self::Assigned(event.payload().map_err(bad)?),
            TaskStarted::TYPE => Self::Started(event.payload().map_err(bad)?),
            TaskCompleted::TYPE => Self::Completed(event.payload().map_err(bad)?),
            TaskFailed::TYPE => Self::Failed(event.payload().map_err(bad)?),
            TaskLeaseExpired::TYPE => Self::LeaseExpired(event.payload().map_err(bad)?),
            TaskDeadLettered::TYPE => Self::DeadLettered(event.payload().map_err(bad)?),
            TaskCancelled::TYPE => Self::Cancelled(event.payload().map_err(bad)?),
            TaskProgress::TYPE => Self::Progress(event.payload().map_err(bad)?),
            TaskQuestionAsked::TYPE => Self::QuestionAsked(event.payload().map_err(bad)?),
            TaskQuestionAnswered::TYPE => Self::QuestionAnswered(event.payload().map_err(bad)?),
            other => return Err(TaskRefusal::UnknownType(other.to_string())),
        })
    }
}

/// Why the task fold refused an event; the state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskRefusal {
    /// The payload does not decode as its type.
    #[error("{0}")]
    Payload(String),
    /// A type the task domain does not declare.
    #[error("{0} is not a task event")]
    UnknownType(String),
    /// A second submission of the same id.
    #[error("task {0} already exists")]
    AlreadyExists(String),
    /// The capability asked for is not a valid one.
    #[error("{0}")]
    Capability(String),
    /// An event for a task never submitted.
    #[error("unknown task {0}")]
    UnknownTask(String),
    /// The task has ended.
    #[error("task {task} is already {state}")]
    Ended {
        /// The task.
        task: String,
        /// Its final state.
        state: &'static str,
    },
    /// A decision from a key without the coordinator role at that position.
    #[error("{emitter} did not hold the coordinator role at {sequence}")]
    NotCoordinator {
        /// Who wrote it.
        emitter: String,
        /// Where.
        sequence: u64,
    },
    /// An assignment while the task is not pending, or for the wrong attempt.
    #[error("task {task} cannot take attempt {attempt} now")]
    AttemptOutOfTurn {
        /// The task.
        task: String,
        /// The attempt the assignment names.
        attempt: u32,
    },
    /// A report from an agent that does not hold the current attempt.
    #[error("result for attempt {attempt} from {from} but attempt {current} is held by {holder:?}")]
    NotHolder {
        /// The attempt it reports.
        attempt: u32,
        /// Who reported.
        from: String,
        /// The current attempt.
        current: u32,
        /// Who holds it.
        holder: Option<String>,
    },
    /// A lease expiry for an attempt that is not the current one.
    #[error("lease expiry for an attempt that is not current")]
    StaleLeaseExpiry,
    /// Progress is reported on the live plane, never folded.
    #[error("progress is not part of the log")]
    NotStored,
    /// A question id the task already has.
    #[error("task {task} already has a question {question}")]
    QuestionExists {
        /// The task.
        task: String,
        /// The question.
        question: String,
    },
    /// An answer from someone but the task's submitter.
    #[error("only the task's submitter {submitter} answers its questions, not {from}")]
    NotSubmitter {
        /// Who answered.
        from: String,
        /// The submitter.
        submitter: String,
    },
    /// An answer to a question the task does not have, or has answered.
    #[error("task {task} has no open question {question}")]
    NoOpenQuestion {
        /// The task.
        task: String,
        /// The question.
        question: String,
    },
}

impl From<TaskRefusal> for Refusal {
    fn from(r: TaskRefusal) -> Self {
        Refusal(r.to_string())
    }
}

pub(super) fn coordinator(event: &VerifiedEvent) -> Result<(), TaskRefusal> {
    if event.roles.contains(Role::Coordinator) {
        Ok(())
    } else {
        Err(TaskRefusal::NotCoordinator {
            emitter: event.emitter().to_string(),
            sequence: event.stream_sequence.unwrap_or(0),
        })
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
        let result = TaskEvent::decode(event).and_then(|e| self.apply_event(book, event, e));
        book.reindex(event.subject.aggregate().as_str());
        Ok(result?)
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
    pub(super) fn apply_event(
        &self,
        book: &mut TaskBook,
        event: &VerifiedEvent,
        decoded: TaskEvent,
    ) -> Result<(), TaskRefusal> {
        let id = event.subject.aggregate().as_str();
        let seq = event.stream_sequence.unwrap_or(0);
        let at = stored(event);
        if let TaskEvent::Submitted(p) = decoded {
            if book.tasks.contains_key(id) {
                return Err(TaskRefusal::AlreadyExists(id.to_string()));
            }
            routing::validate_capability(&p.capability).map_err(TaskRefusal::Capability)?;
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
                    sender: p.sender,
                    questions: Vec::new(),
                },
            );
            return Ok(());
        }
        let task = book
            .tasks
            .get_mut(id)
            .ok_or_else(|| TaskRefusal::UnknownTask(id.to_string()))?;
        if task.state.is_final() {
            return Err(TaskRefusal::Ended {
                task: id.to_string(),
                state: task.state.name(),
            });
        }
        let current_holder = match &task.state {
            TaskState::Assigned { agent, .. } => Some(agent.clone()),
            _ => None,
        };
        let from_holder = |attempt: u32| -> Result<(), TaskRefusal> {
            if current_holder.as_deref() != Some(event.emitter()) || attempt != task.attempt {
                Err(TaskRefusal::NotHolder {
                    attempt,
                    from: event.emitter().to_string(),
                    current: task.attempt,
                    holder: current_holder.clone(),
                })
            } else {
                Ok(())
            }
        };
        match decoded {
            TaskEvent::Submitted(_) => unreachable!("handled above"),
            TaskEvent::Assigned(p) => {
                coordinator(event)?;
                if !matches!(task.state, TaskState::Pending { .. }) || p.attempt != task.attempt + 1
                {
                    return Err(TaskRefusal::AttemptOutOfTurn {
                        task: id.to_string(),
                        attempt: p.attempt,
                    });
                }
                task.attempt = p.attempt;
                task.state = TaskState::Assigned {
                    agent: p.agent,
                    lease_until: at + Duration::milliseconds(p.lease_ms as i64),
                    started: false,
                };
            }
            TaskEvent::Started(p) => {
                from_holder(p.attempt)?;
                if let TaskState::Assigned { started, .. } = &mut task.state {
                    *started = true;
                }
            }
            TaskEvent::Completed(p) => {
                from_holder(p.attempt)?;
                task.state = TaskState::Completed {
                    agent: event.emitter().to_string(),
                };
                task.output = Some(p.output);
            }
            TaskEvent::Failed(p) => {
                from_holder(p.attempt)?;
                after_failure(task, p.reason, at);
            }
            TaskEvent::LeaseExpired(p) => {
                coordinator(event)?;
                if current_holder.as_deref() != Some(p.agent.as_str()) || p.attempt != task.attempt
                {
                    return Err(TaskRefusal::StaleLeaseExpiry);
                }
                after_failure(task, format!("lease expired on {}", p.agent), at);
            }
            TaskEvent::DeadLettered(p) => {
                coordinator(event)?;
                if task.failures.is_empty() {
                    task.failures = p.reasons;
                }
                task.state = TaskState::DeadLettered;
            }
            TaskEvent::Cancelled(TaskCancelled { .. }) => {
                if event.emitter() != task.submitter {
                    coordinator(event)?;
                }
                task.state = TaskState::Cancelled;
            }
            TaskEvent::Progress(_) => return Err(TaskRefusal::NotStored),
            TaskEvent::QuestionAsked(p) => {
                from_holder(p.attempt)?;
                if task.questions.iter().any(|q| q.id == p.question) {
                    return Err(TaskRefusal::QuestionExists {
                        task: id.to_string(),
                        question: p.question,
                    });
                }
                task.questions.push(TaskQuestion {
                    id: p.question,
                    attempt: p.attempt,
                    prompt: p.prompt,
                    asked_at: at,
                    answer: None,
                });
            }
            TaskEvent::QuestionAnswered(p) => {
                if event.emitter() != task.submitter {
                    return Err(TaskRefusal::NotSubmitter {
                        from: event.emitter().to_string(),
                        submitter: task.submitter.clone(),
                    });
                }
                let open = task
                    .questions
                    .iter_mut()
                    .find(|q| q.id == p.question && q.answer.is_none())
                    .ok_or_else(|| TaskRefusal::NoOpenQuestion {
                        task: id.to_string(),
                        question: p.question.clone(),
                    })?;
                open.answer = Some(p.answer);
                // The lease stood still while the attempt waited for the answer.
                let (asked_at, attempt) = (open.asked_at, open.attempt);
                if let TaskState::Assigned { lease_until, .. } = &mut task.state
                    && attempt == task.attempt
                    && at > asked_at
                {
                    *lease_until += at - asked_at;
                }
            }
        }
        task.last_sequence = seq;
        task.last_event_id = event.record.id.clone();
        Ok(())
    }
}
