//! The coordinator worker: follows agents and tasks live, asks [`crate::tasks::decide`] what
//! to do, and writes the decisions with optimistic concurrency and deterministic ids, so
//! several coordinators can run at once: the server deduplicates identical decisions and a
//! conflicting one is refused (and re-decided on the next tick from the fresh state).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use murmur_subjects::events::{
    AssignedWork, TaskAssigned, TaskCancelled, TaskDeadLettered, TaskLeaseExpired,
};
use murmur_subjects::log::{Appended, Expected};
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Domain, Draft, EventLog, LogError, Plane, Projection, Projector, Refusal, SealedEvent, Subject,
    SubjectFilter, Token, VerifiedEvent,
};
use serde::{Deserialize, Serialize};

use crate::registry::{AgentStatus, Registry, RegistryProjection};
use crate::routing::Candidate;
use crate::tasks::{Command, Task, TaskBook, TaskProjection, decide};
use murmur_subjects::clock::Clock;

/// Registry and tasks together: what a coordinator decides from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorView {
    /// Agents.
    pub registry: Registry,
    /// Tasks.
    pub tasks: TaskBook,
}

/// Folds agent and task events of one realm into a [`CoordinatorView`].
#[derive(Debug, Clone)]
pub struct CoordinatorProjection {
    registry: RegistryProjection,
    tasks: TaskProjection,
}

impl CoordinatorProjection {
    /// For `realm`; coordinator decisions count from holders of the coordinator role.
    pub fn new(realm: Token) -> Self {
        Self {
            registry: RegistryProjection {
                realm: realm.clone(),
            },
            tasks: TaskProjection { realm },
        }
    }
}

impl Projection for CoordinatorProjection {
    type State = CoordinatorView;

    fn name(&self) -> &str {
        "coordinator"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.registry.realm.clone())
    }

    fn apply(&self, state: &mut CoordinatorView, event: &VerifiedEvent) -> Result<(), Refusal> {
        match event.subject.domain() {
            Domain::Agent => self.registry.apply(&mut state.registry, event),
            Domain::Task => self.tasks.apply(&mut state.tasks, event),
            Domain::Sys | Domain::Proposal | Domain::Space | Domain::Knowledge | Domain::Role => {
                Ok(())
            }
        }
    }

    fn observe(&self, state: &mut CoordinatorView, subject: &Subject, sequence: u64) {
        self.tasks.observe(&mut state.tasks, subject, sequence);
    }
}

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often it decides when nothing new arrives (leases ending, backoffs passing).
    pub tick: Duration,
    /// After new events it decides at most this often, so events arriving together are
    /// decided (and written) together.
    pub batch_window: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            batch_window: Duration::from_millis(2),
        }
    }
}

/// Online agents as routing candidates.
pub fn candidates(registry: &Registry) -> Vec<Candidate> {
    registry
        .agents
        .iter()
        .filter(|(_, a)| a.status == AgentStatus::Online)
        .map(|(id, a)| Candidate {
            id: id.clone(),
            capabilities: a.capabilities.iter().cloned().collect(),
            labels: a.labels.clone(),
            cores: a.hardware.cores,
            memory_mib: a.hardware.memory_mib,
            vram_mib: a.hardware.vram_mib,
            load: a.load,
            queue_depth: a.queue_depth,
            slots: a.slots,
            declines_tasks: !a.takes_tasks(),
            online: true,
            lame_duck: a.lame_duck,
        })
        .collect()
}

/// The event a command writes, with its deterministic id and lineage.
fn draft_for(
    view: &CoordinatorView,
    command: &Command,
) -> Result<Option<(Draft, Expected)>, LogError> {
    let (task_id, expected) = match command {
        Command::Assign { task, expected, .. }
        | Command::ExpireLease { task, expected, .. }
        | Command::Cancel { task, expected, .. }
        | Command::DeadLetter { task, expected, .. } => (task, *expected),
    };
    let Some(task) = view.tasks.tasks.get(task_id) else {
        return Ok(None);
    };
    let aggregate = Token::new(task_id.as_str()).map_err(|e| LogError::Consumer(e.into()))?;
    let draft = match command {
        Command::Assign {
            agent,
            attempt,
            lease_ms,
            ..
        } => Draft::new(
            aggregate,
            &TaskAssigned {
                agent: agent.clone(),
                attempt: *attempt,
                lease_ms: *lease_ms,
                work: carried_work(&view.tasks, task),
            },
        )?,
        Command::ExpireLease { agent, attempt, .. } => Draft::new(
            aggregate,
            &TaskLeaseExpired {
                attempt: *attempt,
                agent: agent.clone(),
            },
        )?,
        Command::Cancel { reason, .. } => Draft::new(
            aggregate,
            &TaskCancelled {
                reason: reason.clone(),
            },
        )?,
        Command::DeadLetter { reasons, .. } => Draft::new(
            aggregate,
            &TaskDeadLettered {
                reasons: reasons.clone(),
            },
        )?,
    }
    .with_id(command.event_id())
    .caused_by_ids(
        task.correlation_id.clone(),
        task.last_event_id.clone(),
        None,
    );
    Ok(Some((draft, Expected::LastSequence(expected))))
}

/// Inputs up to this size (as JSON) travel with the assignment; a larger one the worker
/// reads from the log, so the log does not hold it once per attempt.
pub const CARRIED_INPUT_BYTES: usize = 8 * 1024;

/// The work an assignment carries: the handler's input as this coordinator's fold holds it,
/// when it is small. Saves the worker a read of the submission (and for a graph child, of
/// its parents) per attempt.
fn carried_work(book: &TaskBook, task: &Task) -> Option<AssignedWork> {
    let input = book.handler_input(task);
    // Fails as soon as the limit is passed: a large input is not serialised whole just to
    // learn that it stays behind.
    serde_json::to_writer(&mut SizeLimit(CARRIED_INPUT_BYTES), &input).ok()?;
    Some(AssignedWork {
        input,
        submitter: task.submitter.clone(),
        capability: task.requirements.capability.clone(),
    })
}

/// Accepts up to this many bytes written to it, then fails (a JSON size check that neither
/// builds the string nor walks past the limit).
struct SizeLimit(usize);

impl std::io::Write for SizeLimit {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self
            .0
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over the limit"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What writing one tick's decisions did.
#[derive(Debug, Default, Clone)]
struct Executed {
    written: u64,
    /// Decisions the server had already stored (a repeat of an earlier write).
    duplicates: u64,
    conflicts: u64,
    /// The highest stream sequence a write of this tick was stored at.
    last_sequence: u64,
    /// The last conflict's aggregate filter and expected sequence (for diagnostics).
    last_conflict: Option<(String, u64, String)>,
}

/// Writes the commands batch-signed and pipelined.
async fn execute(
    log: &EventLog,
    view: &CoordinatorView,
    commands: &[Command],
) -> Result<Executed, LogError> {
    let mut writes = Vec::with_capacity(commands.len());
    for command in commands {
        if let Some(w) = draft_for(view, command)? {
            writes.push(w);
        }
    }
    let mut done = Executed::default();
    // Sent through the log's window, so a round of more decisions than the connection has
    // ack permits (a burst onto many slots) is never stuck on them. No re-sends: a round
    // that fails is decided again next tick.
    let writes: Vec<(SealedEvent, Expected)> = {
        let (drafts, expected): (Vec<Draft>, Vec<Expected>) = writes.into_iter().unzip();
        log.seal_many(drafts).into_iter().zip(expected).collect()
    };
    for ack in log
        .append_expected_patiently(&writes, Duration::ZERO)
        .await?
    {
        done.settle(ack)?;
    }
    Ok(done)
}

impl Executed {
    /// Counts one write's outcome; an error other than a conflict ends the round.
    fn settle(&mut self, ack: Result<Appended, LogError>) -> Result<(), LogError> {
        match ack {
            Ok(appended) => {
                self.last_sequence = self.last_sequence.max(appended.sequence);
                if appended.duplicate {
                    self.duplicates += 1;
                } else {
                    self.written += 1;
                }
            }
            // Another coordinator (or the worker) moved the task first: decide again next tick.
            Err(LogError::Conflict {
                filter,
                expected,
                server,
            }) => {
                tracing::debug!(%filter, expected, %server, "decision conflict");
                self.conflicts += 1;
                self.last_conflict = Some((filter, expected, server));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Rounds in a row whose writes all conflicted while the projection read nothing new, after
/// which the coordinator replays the log instead of trusting its view.
const DIVERGED_AFTER: u32 = 20;

/// How long a coordinator waits to read its own last decisions back before deciding anyway.
const OWN_WRITES_PATIENCE: Duration = Duration::from_secs(2);

/// Logs, at warn, when this service's identity does not hold `role` in its realm as of the
/// projector's position: its decisions would be refused by every fold (its own included),
/// so it would write, be refused, and decide again.
pub fn warn_without_role(roles: &murmur_subjects::grants::RoleBook, log: &EventLog, role: Role) {
    let held = roles.roles_at(
        log.realm().as_str(),
        log.identity().public_key(),
        u64::MAX,
        None,
    );
    if !held.contains(role) {
        tracing::warn!(
            identity = log.identity().public_key(),
            realm = %log.realm(),
            "this identity does not hold the {role} role in the log, so its decisions will not count; the realm's operator grants it with `murmur roles grant {} --role {role}` (or issues it {role} credentials with `murmur creds issue --role {role}`)",
            log.identity().public_key()
        );
    }
}

/// Runs a coordinator until `shutdown`; returns how many decisions it wrote.
pub async fn run_coordinator(
    log: EventLog,
    clock: Arc<dyn Clock>,
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogError> {
    let mut projector =
        Projector::new(log.clone(), CoordinatorProjection::new(log.realm().clone()));
    tokio::pin!(shutdown);
    if !projector
        .catch_up_patiently("task log", config.tick, shutdown.as_mut())
        .await?
    {
        return Ok(0);
    }
    warn_without_role(projector.roles(), &log, Role::Coordinator);
    let mut rounds = Rounds {
        written: 0,
        conflicted: 0,
        diverged_after: DIVERGED_AFTER,
        conflicted_at: projector.position(),
        own_writes_at: 0,
    };
    let mut last_decided = tokio::time::Instant::now() - config.tick;
    // Events read since the last decision.
    let mut news = true;
    loop {
        // Read its own writes before deciding again: a view without the last decisions
        // would decide them again, and re-sending hundreds of deduplicated decisions each
        // round is what once limited throughput. Bounded, so a view that cannot get there (a
        // failover mid-read) still decides; repeats are harmless, only wasteful.
        let awaiting_own_writes = projector.position() < rounds.own_writes_at
            && last_decided.elapsed() < OWN_WRITES_PATIENCE;
        // Decide after new events, at most once per batch window (a burst is decided in
        // batches, not one event at a time), and at least once per tick.
        let due = last_decided
            + if news {
                config.batch_window
            } else {
                config.tick
            };
        let now = tokio::time::Instant::now();
        if !awaiting_own_writes && now >= due {
            last_decided = now;
            news = false;
            decide_and_write(&log, &mut projector, clock.as_ref(), &mut rounds).await?;
            continue;
        }
        // Wait for events until the decision is due (a poll returns once it has caught up).
        let window = if awaiting_own_writes {
            config.tick
        } else {
            due - now
        };
        tokio::select! {
            _ = &mut shutdown => break,
            polled = projector.poll(window) => match polled {
                Ok(read) => news |= read > 0,
                Err(e) if e.is_transient() => {
                    // A node lost or a leader election: reconnect on the next poll.
                    tracing::warn!(error = %e, "log unavailable; retrying");
                    tokio::time::sleep(config.tick).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(rounds.written)
}

/// What the coordinator carries from one decision round to the next.
struct Rounds {
    /// Decisions written so far.
    written: u64,
    /// Rounds in a row whose writes all conflicted while nothing new was read.
    conflicted: u32,
    /// After how many such rounds the log is replayed.
    diverged_after: u32,
    /// The projection's position when the conflicts began.
    conflicted_at: u64,
    /// The last sequence this coordinator's own decisions were stored at.
    own_writes_at: u64,
}

/// One round: decide from the view and write the decisions; replay the log when every
/// decision has conflicted for too long with nothing new arriving.
async fn decide_and_write(
    log: &EventLog,
    projector: &mut Projector<CoordinatorProjection>,
    clock: &dyn Clock,
    rounds: &mut Rounds,
) -> Result<(), LogError> {
    let view = projector.state();
    let commands = decide(&view.tasks, &candidates(&view.registry), clock.now());
    tracing::trace!(
        position = projector.position(),
        commands = commands.len(),
        tasks = view.tasks.tasks.len(),
        "coordinator round"
    );
    if commands.is_empty() {
        return Ok(());
    }
    let done = match execute(log, view, &commands).await {
        Ok(done) => done,
        // Decisions have deterministic ids and expected sequences: the next round decides
        // again and the server dedupes what did get through.
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "writing decisions failed; deciding again");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    rounds.written += done.written;
    rounds.own_writes_at = done.last_sequence;
    tracing::debug!(
        commands = commands.len(),
        written = done.written,
        duplicates = done.duplicates,
        conflicts = done.conflicts,
        "decisions written"
    );
    if done.conflicts > 0 && done.written == 0 && projector.position() == rounds.conflicted_at {
        rounds.conflicted += 1;
    } else {
        rounds.conflicted = 0;
        rounds.conflicted_at = projector.position();
    }
    if rounds.conflicted < rounds.diverged_after {
        return Ok(());
    }
    let (filter, expected, server) = done.last_conflict.clone().unwrap_or_default();
    // What the stream leader holds for that aggregate, to tell a view that missed an event
    // from a server that disagrees with itself.
    let leader_last = match log.stream(&log.config().history_stream).await {
        Ok(stream) => match stream.get_last_raw_message_by_subject(&filter).await {
            Ok(m) => format!("{} at {}", m.subject, m.sequence),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    tracing::warn!(
        position = projector.position(),
        %filter,
        expected,
        %server,
        %leader_last,
        "every decision conflicts and nothing new arrives: replaying the log"
    );
    match projector.rebuild().await {
        Ok(_) => {}
        // The stream without a leader or quorum for a moment (a partition, a node lost):
        // the projector keeps what it folded so far and its position, and the next polls
        // read the rest, instead of the coordinator ending.
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "replaying the log failed; reading on");
        }
        Err(e) => return Err(e),
    }
    // A replay that did not help is not repeated at full speed.
    rounds.diverged_after = (rounds.diverged_after * 2).min(DIVERGED_AFTER * 32);
    rounds.conflicted = 0;
    rounds.conflicted_at = projector.position();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Requirements;
    use crate::tasks::TaskState;

    fn task(input: serde_json::Value, depends_on: &[&str], output: Option<&str>) -> Task {
        let at = chrono::DateTime::<chrono::Utc>::MIN_UTC;
        Task {
            submitter: "alice".into(),
            requirements: Requirements::default(),
            priority: 0,
            max_attempts: 3,
            lease_ms: 1_000,
            attempt: 0,
            failures: vec![],
            state: TaskState::Pending { not_before: at },
            submitted_sequence: 1,
            last_sequence: 1,
            input,
            correlation_id: "c".into(),
            last_event_id: "e".into(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            fail_with_dependency: false,
            output: output.map(|o| serde_json::json!(o)),
            sender: None,
            questions: Vec::new(),
        }
    }

    #[test]
    fn assignments_carry_small_work_and_leave_large_work_to_the_log() {
        let mut book = TaskBook::default();
        book.tasks.insert(
            "parent".into(),
            task(serde_json::json!(1), &[], Some("built")),
        );
        let small = task(serde_json::json!({"n": 1}), &[], None);
        let child = task(serde_json::json!("go"), &["parent"], None);
        // Exactly at the limit is carried; one byte more is not ("x" * k is k + 2 bytes).
        let at_limit = task(
            serde_json::json!("x".repeat(CARRIED_INPUT_BYTES - 2)),
            &[],
            None,
        );
        let over = task(
            serde_json::json!("x".repeat(CARRIED_INPUT_BYTES - 1)),
            &[],
            None,
        );

        let carried = carried_work(&book, &small).expect("small input carried");
        assert_eq!(carried.input, serde_json::json!({"n": 1}));
        assert_eq!(carried.submitter, "alice");
        // A graph child carries what its handler gets: the input and the parents' outputs.
        assert_eq!(
            carried_work(&book, &child).expect("child carried").input,
            serde_json::json!({"input": "go", "parents": {"parent": "built"}})
        );
        assert!(carried_work(&book, &at_limit).is_some());
        assert!(carried_work(&book, &over).is_none(), "the worker reads it");
    }
}
