//! Backpressure for a submitter: at most a chosen number of its own tasks unfinished at once,
//! so a burst waits at the submitter instead of queueing in the log, where every task behind
//! it would wait too (submit → complete grows with the queue, not with the work).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::submit::SubmitError;
use murmur_subjects::events::{TaskCancelled, TaskCompleted, TaskDeadLettered, TaskSubmitted};
use murmur_subjects::log::PendingAppend;
use murmur_subjects::{
    Domain, Draft, EventLog, EventType, LogError, Plane, Projection, Projector, Refusal,
    SubjectFilter, Token, VerifiedEvent,
};

/// Acknowledgements a window keeps in flight before it waits for the oldest.
const ACKS_IN_FLIGHT: usize = 256;

/// The tasks whose end (completed, dead-lettered, cancelled) the log has shown since the
/// window last looked: ids in log order.
#[derive(Debug, Clone)]
struct EndedTasks {
    realm: Token,
}

impl Projection for EndedTasks {
    type State = Vec<String>;

    fn name(&self) -> &str {
        "submit-window"
    }

    fn filter(&self) -> SubjectFilter {
        self.filters().remove(0)
    }

    fn filters(&self) -> Vec<SubjectFilter> {
        [
            EventType::of::<TaskCompleted>(),
            EventType::of::<TaskDeadLettered>(),
            EventType::of::<TaskCancelled>(),
        ]
        .iter()
        .map(|ty| ty.filter(Some(&self.realm)))
        .collect()
    }

    /// The whole task domain: a submitter at its window's limit follows task ends live,
    /// and three verb filters would stall the server on a stream of many task subjects.
    fn live_filter(&self) -> Option<SubjectFilter> {
        Some(
            SubjectFilter::plane(Plane::Evt)
                .realm(self.realm.clone())
                .domain(Domain::Task),
        )
    }

    fn apply(&self, state: &mut Vec<String>, event: &VerifiedEvent) -> Result<(), Refusal> {
        state.push(event.subject.aggregate().as_str().to_string());
        Ok(())
    }
}

/// Submits tasks with at most `limit` of its own unfinished at once: [`SubmitWindow::submit`]
/// waits while the window is full, reading task ends from the log as they are stored.
/// Submissions are pipelined; [`SubmitWindow::flush`] waits for every acknowledgement.
pub struct SubmitWindow {
    log: EventLog,
    ended: Projector<EndedTasks>,
    open: HashSet<String>,
    limit: usize,
    acks: VecDeque<PendingAppend>,
    waited: Duration,
}

impl std::fmt::Debug for SubmitWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitWindow")
            .field("limit", &self.limit)
            .field("open", &self.open.len())
            .field("acks_in_flight", &self.acks.len())
            .finish_non_exhaustive()
    }
}

impl SubmitWindow {
    /// A window of `limit` (at least 1) tasks for the participant `log` signs for; only task
    /// ends stored from now on are read.
    pub async fn new(log: EventLog, limit: usize) -> Result<Self, LogError> {
        let last = log.last_sequence(&log.config().history_stream).await?;
        let ended = Projector::new(
            log.clone(),
            EndedTasks {
                realm: log.realm().clone(),
            },
        )
        .starting_after(last);
        Ok(Self {
            log,
            ended,
            open: HashSet::new(),
            limit: limit.max(1),
            acks: VecDeque::new(),
            waited: Duration::ZERO,
        })
    }

    /// Submits `task` as `id` once fewer than the limit of this window's tasks are
    /// unfinished.
    pub async fn submit(&mut self, id: Token, task: &TaskSubmitted) -> Result<(), SubmitError> {
        let draft = Draft::new(id.clone(), task)?;
        let started = tokio::time::Instant::now();
        self.take_ended();
        while self.open.len() >= self.limit {
            self.ended.poll(Duration::from_millis(20)).await?;
            self.take_ended();
        }
        self.waited += started.elapsed();
        let sealed = self.log.seal(draft);
        self.acks.push_back(self.log.append_sealed(&sealed).await?);
        self.open.insert(id.as_str().to_string());
        while self.acks.len() > ACKS_IN_FLIGHT {
            if let Some(ack) = self.acks.pop_front() {
                ack.wait().await?;
            }
        }
        Ok(())
    }

    /// Waits for every submission's acknowledgement.
    pub async fn flush(&mut self) -> Result<(), LogError> {
        while let Some(ack) = self.acks.pop_front() {
            ack.wait().await?;
        }
        Ok(())
    }

    /// This window's tasks submitted and not yet seen to end.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// How long submissions waited for room so far: the backpressure felt.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    fn take_ended(&mut self) {
        for id in self.ended.take_state() {
            self.open.remove(&id);
        }
    }
}
