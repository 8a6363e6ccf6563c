//! Running assigned tasks: an agent follows the attempts leased to it, reports `started`,
//! runs its handler, and reports `completed` or `failed` for that attempt. `started` expects
//! nothing stored on the task since the assignment and a result nothing since that
//! `started`, so the server refuses to start a superseded attempt or to store a result from
//! a lease that was lost: a slow worker never completes a task twice. An agent becomes a
//! worker with [`EventHandlers::tasks`](crate::handlers::EventHandlers::tasks) and a
//! [`Handler`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use murmur_coordination::assignments::{
    Assignment, AssignmentProjection, CancellationProjection, work_for,
};
use murmur_coordination::tasks::TaskProjection;
use murmur_subjects::Payload as _;
use murmur_subjects::events::{
    TaskAssigned, TaskCancelled, TaskCompleted, TaskFailed, TaskProgress, TaskStarted,
};
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, EventLog, Projector, Token};

use crate::runtime::{Agent, AgentError};

/// What a handler returns: the output, or the tool's error message.
pub type TaskResult = Result<serde_json::Value, String>;

/// The attempt a handler runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id (its aggregate token).
    pub task: String,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Correlation id of the task's workflow; events a handler writes keep it.
    pub correlation_id: String,
    /// Id of this attempt's `task.started` event: the cause of anything the handler writes.
    pub started_id: String,
    /// The task's input, or for a task with dependencies
    /// `{"input": ..., "parents": {id: output, ...}}`.
    pub input: serde_json::Value,
    /// The capability the task asked for (an agent offering several dispatches on it);
    /// empty when the assignment came from a coordinator that did not carry it.
    pub capability: String,
    /// Where the handler reports how far it has come.
    pub progress: Progress,
    /// Where the handler asks the task's submitter something it needs to go on.
    pub questions: crate::questions::Questions,
    /// The running agent's counters (`$SRV.STATS`, `murmur status`, Prometheus), for
    /// handlers that count what they do (an inference handler's tokens).
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

/// Shortest time between two `task.progress` events of one attempt.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Reports how far an attempt has come as `task.progress` events on the live plane (core
/// NATS, signed, never stored), for `murmur task watch` and other watchers. Cheap to call
/// often and from any thread: reports replace each other, and the latest one is published
/// at most every [`PROGRESS_INTERVAL`] (and once more after the attempt ends, if it is
/// newer than the last one sent). Progress that is lost costs nothing: the log keeps the
/// lifecycle and the result.
#[derive(Clone)]
pub struct Progress {
    attempt: u32,
    sink: Option<Arc<ProgressSink>>,
}

/// Where an attempt's reports go. The task that publishes them starts with the first report,
/// so the many attempts that report nothing cost no task.
struct ProgressSink {
    runtime: tokio::runtime::Handle,
    log: EventLog,
    task: Token,
    correlation: String,
    cause: String,
    latest: std::sync::OnceLock<tokio::sync::watch::Sender<Option<TaskProgress>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("attempt", &self.attempt)
            .field("publishing", &self.sink.is_some())
            .finish()
    }
}

impl Progress {
    /// A reporter that publishes nothing: for handlers run outside a worker (tests, tools).
    pub fn disabled() -> Self {
        Self {
            attempt: 0,
            sink: None,
        }
    }

    /// Publishes the attempt's reports (from the first one on) until every clone of the
    /// reporter is dropped. Call it inside the runtime that is to publish them.
    fn publishing(
        log: EventLog,
        task: Token,
        attempt: u32,
        correlation: String,
        cause: String,
    ) -> Self {
        Self {
            attempt,
            sink: Some(Arc::new(ProgressSink {
                runtime: tokio::runtime::Handle::current(),
                log,
                task,
                correlation,
                cause,
                latest: std::sync::OnceLock::new(),
            })),
        }
    }

    /// Reports `done` of `total` units (either may be unknown) and a message: what the
    /// attempt is doing, or its partial output.
    pub fn report(&self, done: Option<u64>, total: Option<u64>, message: Option<String>) {
        let Some(sink) = &self.sink else { return };
        let latest = sink.latest.get_or_init(|| {
            let (tx, rx) = tokio::sync::watch::channel(None);
            sink.runtime.spawn(publish_progress(
                rx,
                sink.log.clone(),
                sink.task.clone(),
                sink.correlation.clone(),
                sink.cause.clone(),
            ));
            tx
        });
        latest.send_replace(Some(TaskProgress {
            attempt: self.attempt,
            done,
            total,
            message,
        }));
    }
}

/// Publishes the latest report whenever there is a newer one, at most every
/// [`PROGRESS_INTERVAL`], until the reporter is gone. The report still unsent when it goes
/// (an attempt's last, often its whole output) is published at once, not an interval later:
/// by then the attempt's result is on its way and the agent may be leaving.
async fn publish_progress(
    mut latest: tokio::sync::watch::Receiver<Option<TaskProgress>>,
    log: EventLog,
    task: Token,
    correlation: String,
    cause: String,
) {
    let publish = |report: Option<TaskProgress>| {
        let log = log.clone();
        let task = task.clone();
        let (correlation, cause) = (correlation.clone(), cause.clone());
        async move {
            let Some(report) = report else { return };
            let sent = match Draft::new(task.clone(), &report) {
                Ok(draft) => log
                    .publish_live(draft.caused_by_ids(correlation, cause, None))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = sent {
                tracing::debug!(task = %task, error = %e, "progress not published");
            }
        }
    };
    if latest.changed().await.is_err() {
        return;
    }
    loop {
        let report = latest.borrow_and_update().clone();
        publish(report).await;
        let throttle = tokio::time::sleep(PROGRESS_INTERVAL);
        tokio::pin!(throttle);
        let mut newer = false;
        let reporter_gone = loop {
            tokio::select! {
                _ = &mut throttle => break false,
                changed = latest.changed() => match changed {
                    Ok(()) => newer = true,
                    Err(_) => break true,
                },
            }
        };
        if reporter_gone {
            if newer {
                let last = latest.borrow().clone();
                publish(last).await;
            }
            return;
        }
        if !newer && latest.changed().await.is_err() {
            return;
        }
    }
}

/// Runs one attempt.
pub type Handler =
    Arc<dyn Fn(TaskContext) -> Pin<Box<dyn Future<Output = TaskResult> + Send>> + Send + Sync>;

/// Wraps an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// Counts an attempt as cancelled when its future is dropped before it reported.
struct CancelGuard {
    metrics: Arc<crate::metrics::AgentMetrics>,
    reported: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.reported {
            self.metrics.attempt_ended(None);
        }
    }
}

/// How long a worker keeps re-sending an event through a failover before giving up.
const PATIENCE: Duration = Duration::from_secs(120);

/// Result writes a worker keeps in flight at once. Results that finish while these are
/// acknowledged wait and go out together in the next write, under one signature: writing
/// each result as soon as it finished made a burst of no-op tasks cost one signature per
/// result (6,595 writes for 20,000 results, most of them of one), which every reader of the
/// results then verified once each.
const REPORTS_IN_FLIGHT: usize = 2;

struct Finished {
    task: String,
    attempt: u32,
    /// Where this worker's `started` was stored (or, after questions, their last answer):
    /// the report expects nothing after it, so a result from a lease that expired (or a
    /// task cancelled) meanwhile is never stored.
    position: Arc<std::sync::atomic::AtomicU64>,
    correlation: String,
    cause: String,
    result: TaskResult,
}

/// An attempt running here: its task handle and whose cancellation counts besides a
/// coordinator's. Dropping it stops the handler (a tokio `JoinHandle` alone would let the
/// task run on, detached): so does dropping the worker's future, and an attempt replaced
/// by a newer one of the same task.
struct Running {
    handle: tokio::task::JoinHandle<()>,
    submitter: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The event types a worker handles, for its manifest's `handles`: its assignments and the
/// realm's cancellations.
pub(crate) fn handled_types() -> Vec<String> {
    vec![TaskAssigned::TYPE.into(), TaskCancelled::TYPE.into()]
}

/// Runs the worker loop until `shutdown`, then drains; returns how many attempts it
/// completed. Only assignments from an identity holding the coordinator role count.
///
/// Draining: when `shutdown` resolves the agent enters lame duck (it starts no new attempt,
/// and its next heartbeat tells the coordinators), and the attempts already running get up
/// to `drain_grace` to finish and report. Those still running then are stopped (a handler's
/// child process with `kill_on_drop` too); their leases expire and the coordinator assigns
/// them again.
///
/// The worker follows only its own assignments and the realm's cancellations (see
/// [`murmur_coordination::assignments`]); for each new assignment it takes the work the
/// assignment carries or fetches it,
/// writes `started` expecting nothing stored on the task since the assignment (so an
/// attempt expired, cancelled or superseded meanwhile is never started), runs the handler
/// and reports with the expected sequence of its own `started`.
pub(crate) async fn run_worker(
    agent: &Agent,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
    drain_grace: Duration,
) -> Result<u64, AgentError> {
    let log: EventLog = agent.log().clone();
    let me = agent.id().to_string();
    let realm = log.realm().clone();
    let tasks = TaskProjection {
        realm: realm.clone(),
    };
    let mut assignments = Projector::new(
        log.clone(),
        AssignmentProjection {
            realm: realm.clone(),
            agent: me.clone(),
        },
    );
    let mut cancellations = Projector::new(log.clone(), CancellationProjection { realm });
    // Assignments up to this stream sequence have been looked at.
    let mut seen_upto = 0;
    // Assignments whose work could not be fetched yet (the log was unreachable).
    let mut retry: Vec<Assignment> = Vec::new();
    // Attempts running here, so a cancellation can stop them.
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // Large outputs go to the Object Store; without one they fail the attempt, never the
    // worker.
    let store = match crate::artifacts::ArtifactStore::open(&log).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no artifact store: outputs over {OFFLOAD_BYTES} bytes will fail");
            None
        }
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    // Writes waiting for their acks. The loop never waits for an ack itself: it goes on
    // reading assignments and results while the server stores the last batch, so a burst is
    // not paced by one round trip per batch (at peak, assignments waited ~190 ms here for
    // the loop to come back to them).
    let mut writing: tokio::task::JoinSet<Result<Written, AgentError>> =
        tokio::task::JoinSet::new();
    let mut completed = 0;
    let mut reports_in_flight = 0;
    // Set when `shutdown` resolved: the end of the drain.
    let mut draining_until: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if let Some(until) = draining_until {
            // Drained: no handler runs, no result waits to be written, no write is in flight.
            if running.values().all(|r| r.handle.is_finished())
                && done_rx.is_empty()
                && writing.is_empty()
            {
                break;
            }
            if tokio::time::Instant::now() >= until {
                let stopped: Vec<&String> = running
                    .iter()
                    .filter(|(_, r)| !r.handle.is_finished())
                    .map(|(task, _)| task)
                    .collect();
                tracing::warn!(
                    ?stopped,
                    "drain grace over: stopping the attempts still running"
                );
                for r in running.values() {
                    r.handle.abort();
                }
                break;
            }
        }
        tokio::select! {
            _ = &mut shutdown, if draining_until.is_none() => {
                agent.enter_lame_duck();
                draining_until = Some(tokio::time::Instant::now() + drain_grace);
                tracing::info!(
                    running = running.values().filter(|r| !r.handle.is_finished()).count(),
                    "draining: no new attempts; waiting for the running ones"
                );
            }
            _ = tokio::time::sleep_until(draining_until.unwrap_or_else(tokio::time::Instant::now)), if draining_until.is_some() => {}
            Some(written) = writing.join_next() => {
                match flatten(written)? {
                    Written::Reported(stored) => {
                        completed += stored;
                        reports_in_flight -= 1;
                    }
                    Written::Started(batch) => {
                        start_handlers(agent, &handler, &store, &done_tx, &mut running, batch);
                    }
                }
            }
            finished = done_rx.recv(), if reports_in_flight < REPORTS_IN_FLIGHT => {
                let Some(first) = finished else { break };
                // Report every result that is ready in one batch-signed, pipelined write.
                let mut batch = vec![first];
                while let Ok(more) = done_rx.try_recv() {
                    batch.push(more);
                }
                let (metrics, log) = (agent.metrics().clone(), log.clone());
                reports_in_flight += 1;
                writing.spawn(async move { report(&metrics, &log, batch).await.map(Written::Reported) });
            }
            polled = assignments.poll(Duration::from_millis(100)) => {
                let polled = match polled {
                    Ok(_) => cancellations.poll(Duration::ZERO).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = polled {
                    // A node lost or a leader election: the projectors reconnect on the
                    // next poll.
                    e.wait_out_if_transient("task log", Duration::from_millis(250)).await?;
                    continue;
                }
                running.retain(|task, r| {
                    let cancelled = cancellations.state().cancelled(task, &r.submitter);
                    if cancelled {
                        // Dropping the handler's future stops it; a handler that runs a
                        // child process with kill_on_drop stops the process too.
                        r.handle.abort();
                        tracing::info!(task, "cancelled: attempt stopped");
                    }
                    !cancelled && !r.handle.is_finished()
                });
                if agent.is_lame_duck() {
                    continue;
                }
                let mut fresh = std::mem::take(&mut retry);
                fresh.extend(
                    assignments
                        .state()
                        .by_sequence
                        .range(seen_upto + 1..)
                        .map(|(_, a)| a.clone()),
                );
                seen_upto = seen_upto.max(assignments.position());
                if fresh.is_empty() {
                    continue;
                }
                // Work the assignment carries is ready; the rest is fetched at once
                // (requests pipeline on the connection).
                let mut ready = Vec::with_capacity(fresh.len());
                let mut to_fetch = Vec::new();
                for mut a in fresh {
                    match a.work.take() {
                        Some(work) => ready.push(Ready {
                            input: work.input,
                            submitter: work.submitter,
                            capability: work.capability,
                            assignment: a,
                        }),
                        None => to_fetch.push(a),
                    }
                }
                let works = futures::future::join_all(
                    to_fetch.iter().map(|a| work_for(&log, &tasks, &a.task)),
                )
                .await;
                for (a, work) in to_fetch.into_iter().zip(works) {
                    match work {
                        Ok(Some(w)) => {
                            let task = w.book.tasks.get(&a.task);
                            ready.push(Ready {
                                input: task.map(|t| w.book.handler_input(t)).unwrap_or_default(),
                                capability: task.map(|t| t.requirements.capability.clone()).unwrap_or_default(),
                                submitter: w.submitter,
                                assignment: a,
                            });
                        }
                        Ok(None) => tracing::warn!(
                            task = %a.task,
                            "assigned a task the log has no valid submission for: not started"
                        ),
                        Err(e) if e.is_transient() => {
                            tracing::warn!(task = %a.task, error = %e, "fetching the work failed; trying again");
                            retry.push(a);
                        }
                        Err(e) => tracing::warn!(task = %a.task, error = %e, "the work cannot be read: not started"),
                    }
                }
                if ready.is_empty() {
                    continue;
                }
                let mut drafts = Vec::with_capacity(ready.len());
                for Ready { assignment: a, .. } in &ready {
                    drafts.push(
                        Draft::new(Token::new(a.task.as_str())?, &TaskStarted { attempt: a.attempt })?
                            .caused_by_ids(a.correlation_id.clone(), a.event_id.clone(), None),
                    );
                }
                let log = log.clone();
                writing.spawn(async move {
                    let writes: Vec<_> = log
                        .seal_many(drafts)
                        .into_iter()
                        .zip(&ready)
                        .map(|(sealed, r)| (sealed, Expected::LastSequence(r.assignment.sequence)))
                        .collect();
                    let write_began = tokio::time::Instant::now();
                    let stored = log.append_expected_patiently(&writes, PATIENCE).await?;
                    tracing::debug!(
                        assignments = writes.len(),
                        start_us = write_began.elapsed().as_micros() as u64,
                        "assignments started"
                    );
                    Ok(Written::Started(StartedBatch { ready, writes, stored }))
                });
            }
        }
        // Heartbeats carry the queue depth, which routing weighs.
        agent.set_queue_depth(agent.metrics().running());
    }
    // Let the writes already sent settle: a result sent before the grace ran out is still
    // stored. (After a full drain there are none; `started` writes landing now are not run.)
    while let Some(written) = writing.join_next().await {
        if let Written::Reported(stored) = flatten(written)? {
            completed += stored;
        }
    }
    // Results that finished while two result writes were in flight as the grace ran out:
    // their attempts ended, so report them too rather than let the leases expire and the
    // work run again elsewhere.
    let mut late = Vec::new();
    while let Ok(finished) = done_rx.try_recv() {
        late.push(finished);
    }
    if !late.is_empty() {
        completed += report(agent.metrics(), &log, late).await?;
    }
    Ok(completed)
}

/// What a write in flight became.
enum Written {
    /// A batch of `started` writes, to run the attempts that were stored.
    Started(StartedBatch),
    /// Results stored.
    Reported(u64),
}

/// An assignment with what its handler needs.
struct Ready {
    assignment: Assignment,
    input: serde_json::Value,
    submitter: String,
    capability: String,
}

/// Assignments with their input and submitter, the `started` writes for them, and what the
/// server answered to each.
struct StartedBatch {
    ready: Vec<Ready>,
    writes: Vec<(murmur_subjects::SealedEvent, Expected)>,
    stored: Vec<Result<murmur_subjects::log::Appended, murmur_subjects::LogError>>,
}

fn flatten(
    joined: Result<Result<Written, AgentError>, tokio::task::JoinError>,
) -> Result<Written, AgentError> {
    joined.map_err(|e| AgentError::WriteStopped(e.to_string()))?
}

/// Runs the attempts whose `started` was stored, each in its own task (recorded in
/// `running`, so a cancellation can stop it), reporting to `done_tx` when it ends.
fn start_handlers(
    agent: &Agent,
    handler: &Handler,
    store: &Option<crate::artifacts::ArtifactStore>,
    done_tx: &tokio::sync::mpsc::UnboundedSender<Finished>,
    running: &mut BTreeMap<String, Running>,
    batch: StartedBatch,
) {
    let StartedBatch {
        ready,
        writes,
        stored,
    } = batch;
    for ((ready, (started, _)), stored) in ready.into_iter().zip(writes).zip(stored) {
        let Ready {
            assignment: a,
            input,
            submitter,
            capability,
        } = ready;
        let started_sequence = match stored {
            Ok(appended) => appended.sequence,
            Err(e) => {
                tracing::info!(
                    task = %a.task,
                    attempt = a.attempt,
                    error = %e,
                    "the task moved on since this assignment (lease expired, cancelled or reassigned): not started"
                );
                continue;
            }
        };
        agent.metrics().attempt_started();
        let progress = match Token::new(a.task.as_str()) {
            Ok(token) => Progress::publishing(
                agent.log().clone(),
                token,
                a.attempt,
                a.correlation_id.clone(),
                started.record.id.clone(),
            ),
            Err(_) => Progress::disabled(),
        };
        let position = Arc::new(std::sync::atomic::AtomicU64::new(started_sequence));
        let questions = match Token::new(a.task.as_str()) {
            Ok(token) => crate::questions::Questions::new(
                agent.log().clone(),
                token,
                a.attempt,
                submitter.clone(),
                (a.correlation_id.clone(), started.record.id.clone()),
                position.clone(),
            ),
            Err(_) => crate::questions::Questions::disabled(),
        };
        let run = handler(TaskContext {
            task: a.task.clone(),
            attempt: a.attempt,
            correlation_id: a.correlation_id.clone(),
            started_id: started.record.id.clone(),
            input,
            capability,
            progress,
            questions,
            metrics: agent.metrics().clone(),
        });
        let tx = done_tx.clone();
        let guard = CancelGuard {
            metrics: agent.metrics().clone(),
            reported: false,
        };
        let store = store.clone();
        let (task, attempt, correlation) = (a.task.clone(), a.attempt, a.correlation_id);
        let handle = tokio::spawn(async move {
            let mut guard = guard; // moved in whole, so dropping the future drops it
            let result = offload_large_output(run.await, store.as_ref()).await;
            // No await point between these two: an abort either drops the
            // attempt before it reports (counted as cancelled) or not at all.
            guard.reported = true;
            let _ = tx.send(Finished {
                task,
                attempt,
                position,
                correlation,
                cause: started.record.id,
                result,
            });
        });
        running.insert(a.task, Running { handle, submitter });
    }
}

/// Writes the results of finished attempts; returns how many were stored.
async fn report(
    metrics: &crate::metrics::AgentMetrics,
    log: &EventLog,
    batch: Vec<Finished>,
) -> Result<u64, AgentError> {
    let mut drafts = Vec::with_capacity(batch.len());
    let mut expected = Vec::with_capacity(batch.len());
    for f in batch {
        expected.push(Expected::LastSequence(
            f.position.load(std::sync::atomic::Ordering::SeqCst),
        ));
        metrics.attempt_ended(Some(f.result.is_ok()));
        let aggregate = Token::new(f.task.as_str())?;
        let draft = match f.result {
            Ok(output) => Draft::new(
                aggregate,
                &TaskCompleted {
                    output,
                    attempt: f.attempt,
                },
            )?,
            Err(reason) => Draft::new(
                aggregate,
                &TaskFailed {
                    reason,
                    attempt: f.attempt,
                },
            )?,
        };
        drafts.push(draft.caused_by_ids(f.correlation, f.cause, None));
    }
    let writes: Vec<_> = log.seal_many(drafts).into_iter().zip(expected).collect();
    tracing::debug!(results = writes.len(), "reporting results");
    let mut stored = 0;
    for ((sealed, _), written) in writes
        .iter()
        .zip(log.append_expected_patiently(&writes, PATIENCE).await?)
    {
        match written {
            Ok(_) => stored += 1,
            Err(e) => tracing::info!(
                task = %sealed.subject.aggregate(),
                error = %e,
                "the task moved on after this attempt started (lease expired or cancelled): result not stored"
            ),
        }
    }
    Ok(stored)
}

/// Outputs larger than this (as JSON) are stored in the Object Store and replaced by
/// `{"artifact": ArtifactRef, "offloaded": true}`; events stay small.
pub const OFFLOAD_BYTES: usize = 64 * 1024;

async fn offload_large_output(
    result: TaskResult,
    store: Option<&crate::artifacts::ArtifactStore>,
) -> TaskResult {
    let output = result?;
    let bytes = serde_json::to_vec(&output).map_err(|e| format!("output: {e}"))?;
    if bytes.len() <= OFFLOAD_BYTES {
        return Ok(output);
    }
    let Some(store) = store else {
        return Err(format!(
            "output of {} bytes is over {OFFLOAD_BYTES} and no artifact store is available",
            bytes.len()
        ));
    };
    let artifact = store
        .put("output.json", &bytes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "artifact": artifact, "offloaded": true }))
}
