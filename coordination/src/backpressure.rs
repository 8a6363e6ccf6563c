//! Backpressure for a submitter: at most a chosen number of its own tasks unfinished at once,
//! so a burst waits at the submitter instead of queueing in the log, where every task behind
//! it would wait too (submit → complete grows with the queue, not with the work). With a
//! latency target the number steers itself ([`LatencyTarget`]): fewer open tasks when they
//! take longer than the target, more while they do not.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::submit::SubmitError;
use murmur_subjects::events::{TaskCancelled, TaskCompleted, TaskDeadLettered, TaskSubmitted};
use murmur_subjects::log::PendingAppend;
use murmur_subjects::{
    Domain, Draft, EventLog, EventType, LogError, Plane, Projection, Projector, Refusal,
    SealedEvent, SubjectFilter, Token, VerifiedEvent,
};

/// Acknowledgements a window keeps in flight before it waits for the oldest.
const ACKS_IN_FLIGHT: usize = 256;

/// What the log has shown a window since it last looked, in log order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Seen {
    /// One of the window's own submissions, stored at that time (steered windows only).
    Submitted(String, Option<DateTime<Utc>>),
    /// A task's end (completed, dead-lettered, cancelled), stored at that time.
    Ended(String, Option<DateTime<Utc>>),
}

/// The tasks whose end the log has shown, and, for a steered window, its own submissions:
/// both with the server's stored time, so that a task's time from one to the other comes
/// from one clock, whenever the window reads it.
#[derive(Debug, Clone)]
struct EndedTasks {
    realm: Token,
    /// The window's identity, when it is steered.
    steered_for: Option<String>,
}

impl Projection for EndedTasks {
    type State = Vec<Seen>;

    fn name(&self) -> &str {
        "submit-window"
    }

    fn filter(&self) -> SubjectFilter {
        self.filters().remove(0)
    }

    fn filters(&self) -> Vec<SubjectFilter> {
        let submitted = self
            .steered_for
            .as_ref()
            .map(|_| EventType::of::<TaskSubmitted>());
        [
            EventType::of::<TaskCompleted>(),
            EventType::of::<TaskDeadLettered>(),
            EventType::of::<TaskCancelled>(),
        ]
        .into_iter()
        .chain(submitted)
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

    fn apply(&self, state: &mut Vec<Seen>, event: &VerifiedEvent) -> Result<(), Refusal> {
        let id = event.subject.aggregate().as_str().to_string();
        if event.record.ty == <TaskSubmitted as murmur_subjects::Payload>::TYPE {
            if self.steered_for.as_deref() == Some(event.emitter()) {
                state.push(Seen::Submitted(id, event.stored_at));
            }
        } else {
            state.push(Seen::Ended(id, event.stored_at));
        }
        Ok(())
    }
}

/// How many tasks a window may keep open, steered by how long they take from submission to
/// their end: additive increase, multiplicative decrease, as TCP steers its congestion
/// window, with a task over the target in place of a lost packet.
///
/// - A task that ended within the target while the window was full adds `1 / limit`: one
///   more open task per window's worth of such ends.
/// - A task over the target takes a fifth off, once: the tasks open at that moment were
///   submitted under the old limit, so their ends are not held against the new one.
///
/// Pure: it is given each task's time and the tasks still open, and keeps no clock.
#[derive(Debug, Clone)]
pub struct LatencyTarget {
    target: Duration,
    most: usize,
    limit: f64,
    ends: u64,
    /// The ends after which a task over the target lowers the limit again.
    lowered_until: u64,
}

impl LatencyTarget {
    /// Tasks kept within `target` from submission to end, with at most `most` open (at
    /// least 1); the limit starts at `most`.
    pub fn new(target: Duration, most: usize) -> Self {
        let most = most.max(1);
        Self {
            target,
            most,
            limit: most as f64,
            ends: 0,
            lowered_until: 0,
        }
    }

    /// How many tasks may be open now (at least 1).
    pub fn limit(&self) -> usize {
        (self.limit as usize).clamp(1, self.most)
    }

    /// A task ended `took` after its submission; `open` tasks are still unfinished.
    pub fn ended(&mut self, took: Duration, open: usize) {
        self.ends += 1;
        if took > self.target {
            if self.ends > self.lowered_until {
                self.limit = (self.limit * 0.8).max(1.0);
                self.lowered_until = self.ends + open as u64;
            }
        } else if open + 1 >= self.limit() {
            self.limit = (self.limit + 1.0 / self.limit).min(self.most as f64);
        }
    }
}

/// Submits tasks with at most `limit` of its own unfinished at once: [`SubmitWindow::submit`]
/// waits while the window is full, reading task ends from the log as they are stored.
/// Submissions are pipelined; [`SubmitWindow::flush`] waits for every acknowledgement.
pub struct SubmitWindow {
    log: EventLog,
    ended: Projector<EndedTasks>,
    /// This window's unfinished tasks, with when the log stored each (steered windows, once
    /// read).
    open: HashMap<String, Option<DateTime<Utc>>>,
    limit: usize,
    steer: Option<LatencyTarget>,
    acks: VecDeque<PendingAppend>,
    waited: Duration,
}

impl std::fmt::Debug for SubmitWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitWindow")
            .field("limit", &self.limit())
            .field("steer", &self.steer)
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
                steered_for: None,
            },
        )
        .starting_after(last);
        Ok(Self {
            log,
            ended,
            open: HashMap::new(),
            limit: limit.max(1),
            steer: None,
            acks: VecDeque::new(),
            waited: Duration::ZERO,
        })
    }

    /// Steers the limit to keep each task's submit → end within `target`
    /// ([`LatencyTarget`]); the window's limit becomes the most it allows. For a submitter
    /// that offers more than the workers can take: a fixed window holds `limit / rate` of
    /// queueing whatever the rate, so the limit that keeps 2 workers within 50 ms lets 32,
    /// each task costing more, take several times that.
    /// Given before the first submission: the window then reads its own submissions from
    /// the log too, and times each task by the server's stored times. To tell its own from
    /// other submitters' it decodes every submission in the realm (a few µs each).
    pub fn with_latency_target(mut self, target: Duration) -> Self {
        self.steer = Some(LatencyTarget::new(target, self.limit));
        self.ended = Projector::new(
            self.log.clone(),
            EndedTasks {
                realm: self.log.realm().clone(),
                steered_for: Some(self.log.identity().public_key().to_string()),
            },
        )
        .starting_after(self.ended.position());
        self
    }

    /// How many tasks may be open now: the fixed limit, or the steered one.
    pub fn limit(&self) -> usize {
        self.steer.as_ref().map_or(self.limit, LatencyTarget::limit)
    }

    /// Submits `task` as `id` once fewer than the limit of this window's tasks are
    /// unfinished. Signed on its own: a submitter with many tasks at hand gives them to
    /// [`SubmitWindow::submit_many`].
    pub async fn submit(&mut self, id: Token, task: &TaskSubmitted) -> Result<(), SubmitError> {
        let draft = Draft::new(id.clone(), task)?;
        self.room().await?;
        let sealed = self.log.seal(draft);
        self.send(id, &sealed).await?;
        Ok(())
    }

    /// Submits `tasks` in order, each once the window has room for it, as
    /// [`SubmitWindow::submit`] does; the tasks that fit in the window at once share one
    /// batch signature. A single signature costs the submitter about 20 µs to make and
    /// each reading process about 40 µs to check, a batch's share a few µs each. Returns
    /// how many were submitted; on an error, every task before the one that failed was.
    pub async fn submit_many(
        &mut self,
        tasks: impl IntoIterator<Item = (Token, TaskSubmitted)>,
    ) -> Result<usize, SubmitError> {
        let mut tasks = tasks.into_iter().peekable();
        let mut submitted = 0;
        while tasks.peek().is_some() {
            let room = self.room().await?;
            let mut ids = Vec::with_capacity(room);
            let mut drafts = Vec::with_capacity(room);
            let mut unfit = None;
            for (id, task) in tasks.by_ref().take(room) {
                match Draft::new(id.clone(), &task) {
                    Ok(draft) => {
                        drafts.push(draft);
                        ids.push(id);
                    }
                    Err(e) => {
                        unfit = Some(e);
                        break;
                    }
                }
            }
            for (id, sealed) in ids.into_iter().zip(self.log.seal_many(drafts)) {
                self.send(id, &sealed).await?;
                submitted += 1;
            }
            if let Some(e) = unfit {
                return Err(e.into());
            }
        }
        Ok(submitted)
    }

    /// Waits until fewer than the limit of this window's tasks are unfinished; returns
    /// how many more may be submitted now.
    async fn room(&mut self) -> Result<usize, LogError> {
        let started = Instant::now();
        self.take_ended();
        while self.open.len() >= self.limit() {
            self.ended.poll(Duration::from_millis(20)).await?;
            self.take_ended();
        }
        self.waited += started.elapsed();
        Ok(self.limit() - self.open.len())
    }

    /// Appends one sealed submission, keeping at most [`ACKS_IN_FLIGHT`] acknowledgements
    /// outstanding.
    async fn send(&mut self, id: Token, sealed: &SealedEvent) -> Result<(), LogError> {
        self.acks.push_back(self.log.append_sealed(sealed).await?);
        self.open.insert(id.as_str().to_string(), None);
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
        for seen in self.ended.take_state() {
            match seen {
                Seen::Submitted(id, at) => {
                    if let Some(stored) = self.open.get_mut(&id) {
                        *stored = at;
                    }
                }
                Seen::Ended(id, ended_at) => {
                    let Some(submitted_at) = self.open.remove(&id) else {
                        continue;
                    };
                    if let (Some(steer), Some(from), Some(to)) =
                        (self.steer.as_mut(), submitted_at, ended_at)
                    {
                        let took = (to - from).to_std().unwrap_or_default();
                        steer.ended(took, self.open.len());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(50);
    const FAST: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_millis(80);

    #[test]
    fn a_task_over_the_target_takes_a_fifth_off_once_per_window_in_flight() {
        let mut steer = LatencyTarget::new(TARGET, 100);
        steer.ended(SLOW, 99);
        assert_eq!(steer.limit(), 80);
        // The 99 still open were submitted under the old limit: their ends lower nothing.
        for open in (0..99).rev() {
            steer.ended(SLOW, open);
        }
        assert_eq!(steer.limit(), 80);
        steer.ended(SLOW, 79);
        assert_eq!(steer.limit(), 64);
    }

    #[test]
    fn tasks_within_the_target_raise_a_full_window_by_one_per_window() {
        let mut steer = LatencyTarget::new(TARGET, 100);
        steer.ended(SLOW, 99);
        assert_eq!(steer.limit(), 80);
        // Full: 79 others open at each end.
        for _ in 0..80 {
            steer.ended(FAST, 79);
        }
        assert_eq!(steer.limit(), 80, "just under one more: {steer:?}");
        steer.ended(FAST, 79);
        assert_eq!(steer.limit(), 81);
    }

    #[test]
    fn a_window_that_is_not_full_is_not_raised_and_none_passes_the_most() {
        let mut steer = LatencyTarget::new(TARGET, 10);
        for _ in 0..1000 {
            steer.ended(FAST, 9);
        }
        assert_eq!(steer.limit(), 10, "never above the most");
        steer.ended(SLOW, 9);
        let lowered = steer.limit();
        for _ in 0..1000 {
            steer.ended(FAST, 2);
        }
        assert_eq!(steer.limit(), lowered, "half empty: no reason to raise it");
    }

    #[test]
    fn the_limit_never_falls_below_one() {
        let mut steer = LatencyTarget::new(TARGET, 4);
        for _ in 0..100 {
            steer.ended(SLOW, 0);
        }
        assert_eq!(steer.limit(), 1);
    }
}
