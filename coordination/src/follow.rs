//! One task from submission to its end, for a caller that waits for the answer (the agent
//! protocol gateway, the MCP server): [`TaskRun::submit`] writes `task.submitted` and
//! follows only that task's events (the task fold over its own aggregate) and its running
//! attempt's progress on the live plane; [`TaskRun::next`] yields each progress report from
//! the agent holding the attempt, then the task as it ended.

use std::time::Duration;

use futures::StreamExt as _;
use murmur_subjects::events::{TaskProgress, TaskQuestionAnswered, TaskSubmitted};
use murmur_subjects::log::Expected;
use murmur_subjects::{
    Draft, EventLog, EventType, LogError, Projection, Projector, Refusal, Subject, SubjectFilter,
    Token, VerifiedEvent,
};

use crate::tasks::{Task, TaskBook, TaskProjection, TaskState};

/// The task fold over one task's aggregate only.
#[derive(Debug, Clone)]
pub struct OneTask {
    tasks: TaskProjection,
    id: Token,
}

impl OneTask {
    /// The fold of task `id` in `realm`.
    pub fn new(realm: Token, id: Token) -> Self {
        Self {
            tasks: TaskProjection { realm },
            id,
        }
    }
}

impl Projection for OneTask {
    type State = TaskBook;

    fn name(&self) -> &str {
        "one-task"
    }

    fn filter(&self) -> SubjectFilter {
        self.tasks.filter().aggregate(self.id.clone())
    }

    fn apply(&self, state: &mut TaskBook, event: &VerifiedEvent) -> Result<(), Refusal> {
        self.tasks.apply(state, event)
    }

    fn observe(&self, state: &mut TaskBook, subject: &Subject, sequence: u64) {
        self.tasks.observe(state, subject, sequence);
    }
}

/// Why following a task stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The log could not be written or read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The live plane could not be subscribed.
    #[error("subscribing to the task's progress: {0}")]
    Subscribe(String),
    /// The task had not ended by the deadline.
    #[error("task {task} did not end within {after:?}")]
    TimedOut {
        /// The task.
        task: String,
        /// How long it was given.
        after: Duration,
    },
}

/// What happened next to a followed task.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The agent holding the attempt reported progress (signature verified, holder from
    /// the log).
    Progress(TaskProgress),
    /// The attempt asked the submitter a question (from the log: asked by the holder).
    Question(crate::tasks::TaskQuestion),
    /// The task ended (completed, dead-lettered or cancelled).
    Ended(Box<Task>),
}

/// One submitted task, followed until it ends.
pub struct TaskRun {
    id: String,
    token: Token,
    log: EventLog,
    view: Projector<OneTask>,
    progress: async_nats::Subscriber,
    timeout: Duration,
    deadline: tokio::time::Instant,
    /// Questions already handed out by [`TaskRun::next`].
    questions: usize,
}

impl TaskRun {
    /// Writes `submitted` as task `id` (expecting no events on it) as `log`'s identity and
    /// starts following it; [`TaskRun::next`] fails after `timeout`.
    pub async fn submit(
        log: &EventLog,
        id: Token,
        submitted: &TaskSubmitted,
        timeout: Duration,
    ) -> Result<Self, FollowError> {
        // Subscribed before the task exists, so no progress is missed.
        let subject = EventType::of::<TaskProgress>().subject(log.realm(), &id);
        let progress = log
            .client()
            .subscribe(subject.to_string())
            .await
            .map_err(|e| FollowError::Subscribe(e.to_string()))?;
        let draft = Draft::new(id.clone(), submitted).map_err(LogError::from)?;
        log.append_expected(draft, Expected::NoEvents).await?;
        Ok(Self {
            token: id.clone(),
            id: id.as_str().to_string(),
            log: log.clone(),
            view: Projector::new(log.clone(), OneTask::new(log.realm().clone(), id)),
            progress,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            questions: 0,
        })
    }

    /// Answers the attempt's question `question` as the submitter.
    pub async fn answer(&mut self, question: &str, answer: &str) -> Result<(), FollowError> {
        let draft = Draft::new(
            self.token.clone(),
            &TaskQuestionAnswered {
                question: question.to_string(),
                answer: answer.to_string(),
            },
        )
        .map_err(LogError::from)?;
        self.log.append(draft).await?;
        Ok(())
    }

    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next progress report from the attempt's holder, or the task once it ended.
    pub async fn next(&mut self) -> Result<RunEvent, FollowError> {
        loop {
            if let Some(task) = self.view.state().tasks.get(&self.id) {
                if let Some(question) = task.questions.get(self.questions) {
                    self.questions += 1;
                    if question.answer.is_none() && !task.state.is_final() {
                        return Ok(RunEvent::Question(question.clone()));
                    }
                    continue;
                }
                if task.state.is_final() {
                    return Ok(RunEvent::Ended(Box::new(task.clone())));
                }
            }
            if tokio::time::Instant::now() >= self.deadline {
                return Err(FollowError::TimedOut {
                    task: self.id.clone(),
                    after: self.timeout,
                });
            }
            tokio::select! {
                polled = self.view.poll(Duration::from_millis(100)) => { polled?; }
                Some(message) = self.progress.next() => {
                    let Ok(event) = self.log.codec().decode(
                        message.subject.as_str(),
                        message.headers.as_ref(),
                        &message.payload,
                    ) else {
                        continue;
                    };
                    let holder = match self.view.state().tasks.get(&self.id).map(|t| &t.state) {
                        Some(TaskState::Assigned { agent, .. }) => Some(agent.as_str()),
                        _ => None,
                    };
                    if holder == Some(event.emitter())
                        && let Ok(progress) = event.payload::<TaskProgress>()
                    {
                        return Ok(RunEvent::Progress(progress));
                    }
                }
            }
        }
    }
}
