//! Questions a running attempt asks its task's submitter — the Synadia Agent Protocol's
//! mid-stream `query`, as events in the log: `task.question_asked` by the agent holding the
//! attempt, `task.question_answered` by the submitter, both on the task's aggregate.
//!
//! Both move the task's last stored sequence, which the attempt's result is written against
//! (expected last subject sequence): [`Questions`] shares the position it reached with the
//! worker, so a result after a question is still accepted, and one after a lease expiry or
//! a cancellation still is not.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use murmur_subjects::events::{TaskQuestionAnswered, TaskQuestionAsked};
use murmur_subjects::log::Expected;
use murmur_subjects::{
    Domain, Draft, EventLog, EventType, LogError, Plane, StartAt, SubjectFilter, Token,
};

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuestionError {
    /// This attempt cannot ask (a context made for a test, or a task id that is no token).
    #[error("this attempt cannot ask questions")]
    Disabled,
    /// The question could not be stored: the task moved on (lease expired, cancelled) or
    /// the log failed.
    #[error("the question was not stored: {0}")]
    NotAsked(LogError),
    /// Reading for the answer failed.
    #[error("reading the answer: {0}")]
    Log(#[from] LogError),
    /// Listening for the answer failed.
    #[error("listening for the answer: {0}")]
    Listen(String),
    /// No answer from the submitter in time.
    #[error("no answer to question {question} within {waited:?}")]
    NoAnswer {
        /// The question's id.
        question: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// What an attempt asks with; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Questions {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    log: EventLog,
    task: Token,
    attempt: u32,
    submitter: String,
    correlation: String,
    cause: String,
    /// The task's last stored sequence this attempt knows of (its `started`, then its
    /// questions and their answers).
    position: Arc<AtomicU64>,
}

impl Questions {
    /// A context that cannot ask (tests, handlers run outside a worker).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Questions of attempt `attempt` of `task`, submitted by `submitter`; `position` starts
    /// at the attempt's `started` and is where the worker writes the result against.
    pub(crate) fn new(
        log: EventLog,
        task: Token,
        attempt: u32,
        submitter: String,
        (correlation, cause): (String, String),
        position: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                log,
                task,
                attempt,
                submitter,
                correlation,
                cause,
                position,
            })),
        }
    }

    /// Asks the task's submitter `prompt` and waits up to `timeout` for the answer.
    pub async fn ask(&self, prompt: &str, timeout: Duration) -> Result<String, QuestionError> {
        let inner = self.inner.as_ref().ok_or(QuestionError::Disabled)?;
        let log = &inner.log;
        let question = format!("q-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        // Listening first, so an answer stored right after the question wakes it.
        let answered = EventType::of::<TaskQuestionAnswered>().subject(log.realm(), &inner.task);
        let mut wake = log
            .client()
            .subscribe(answered.to_string())
            .await
            .map_err(|e| QuestionError::Listen(e.to_string()))?;
        let asked = TaskQuestionAsked {
            attempt: inner.attempt,
            question: question.clone(),
            prompt: prompt.to_string(),
        };
        let draft = Draft::new(inner.task.clone(), &asked)
            .map_err(|e| QuestionError::Listen(e.to_string()))?
            .caused_by_ids(inner.correlation.clone(), inner.cause.clone(), None);
        let expected = Expected::LastSequence(inner.position.load(Ordering::SeqCst));
        let (_, stored) = log
            .append_expected(draft, expected)
            .await
            .map_err(QuestionError::NotAsked)?;
        inner.position.fetch_max(stored.sequence, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((sequence, answer)) = inner.answer(&question, stored.sequence).await? {
                inner.position.fetch_max(sequence, Ordering::SeqCst);
                return Ok(answer);
            }
            match tokio::time::timeout_at(deadline, wake.next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Err(QuestionError::Listen("subscription ended".into())),
                Err(_) => {
                    // One last look: the answer may have been stored as time ran out.
                    if let Some((sequence, answer)) =
                        inner.answer(&question, stored.sequence).await?
                    {
                        inner.position.fetch_max(sequence, Ordering::SeqCst);
                        return Ok(answer);
                    }
                    return Err(QuestionError::NoAnswer {
                        question,
                        waited: timeout,
                    });
                }
            }
        }
    }
}

impl Inner {
    /// The submitter's answer to `question` stored after `after`, with its sequence.
    async fn answer(&self, question: &str, after: u64) -> Result<Option<(u64, String)>, LogError> {
        let filter = SubjectFilter::plane(Plane::Evt)
            .realm(self.log.realm().clone())
            .domain(Domain::Task)
            .aggregate(self.task.clone());
        let mut stored = Vec::new();
        self.log
            .read(&filter, StartAt::Sequence(after + 1), None, |m| {
                stored.push(m);
                ControlFlow::Continue(())
            })
            .await?;
        for m in stored {
            let Ok(event) = self
                .log
                .decode_stored(&m.message, m.sequence, Some(m.stored_at))
            else {
                continue;
            };
            // Questions and answers (anyone's, counted or not) leave the attempt where it
            // was; a lease expiry or a cancellation does not, so the result is refused then.
            let ty = event.record.ty.as_str();
            if ty == <TaskQuestionAsked as murmur_subjects::Payload>::TYPE
                || ty == <TaskQuestionAnswered as murmur_subjects::Payload>::TYPE
            {
                self.position.fetch_max(m.sequence, Ordering::SeqCst);
            }
            // The fold counts an answer only from the submitter; so does the asker.
            if event.emitter() != self.submitter {
                continue;
            }
            if let Ok(answer) = event.payload::<TaskQuestionAnswered>()
                && answer.question == question
            {
                return Ok(Some((m.sequence, answer.answer)));
            }
        }
        Ok(None)
    }
}
