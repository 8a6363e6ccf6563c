//! Tasks end to end with worker agents as separate processes: many tasks complete exactly
//! once, a worker killed with SIGKILL mid-task loses its lease and the task completes on the
//! other worker, a task that always fails is dead-lettered with every reason, and the task
//! projection that lived through it equals a replay.

use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::{Context, Result};
use murmur_coordination::coordinator::{
    CoordinatorConfig, CoordinatorProjection, CoordinatorView, run_coordinator,
};
use murmur_coordination::registry::AgentStatus;
use murmur_coordination::tasks::TaskState;
use murmur_e2e::{DEADLINE, agent_process, spawn_agent};
use murmur_subjects::clock::SystemClock;
use murmur_subjects::events::{TaskCompleted, TaskSubmitted};
use murmur_subjects::log::Expected;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventType, Projector, StartAt, Token};
use murmur_testkit::TestNats;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

#[path = "tasks/drain.rs"]
mod drain;
#[path = "tasks/tool_agent.rs"]
mod tool_agent;

type Stopper = tokio::sync::watch::Receiver<bool>;

/// A coordinator for realm `acme` that stops when `stop` turns true.
async fn spawn_coordinator(
    nats: &TestNats,
    mut stop: Stopper,
) -> Result<tokio::task::JoinHandle<Result<u64, murmur_subjects::LogError>>> {
    let log = nats
        .log_as("acme", Role::Coordinator, "coordinator")
        .await?;
    Ok(tokio::spawn(run_coordinator(
        log,
        Arc::new(SystemClock),
        CoordinatorConfig::default(),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    )))
}

/// A no-op worker process with worker credentials of its own.
async fn spawn_worker(nats: &TestNats, data: &std::path::Path) -> Result<(Child, String)> {
    let who = murmur_e2e::enrol(nats, Role::Worker, "worker", data).await?;
    spawn_agent(
        nats.url(),
        data,
        &who,
        "tester",
        "test.run",
        &["--builtin-handler"],
    )
    .await
}

async fn wait(
    view: &mut Projector<CoordinatorProjection>,
    what: &str,
    done: impl FnMut(&CoordinatorView) -> bool,
) -> Result<()> {
    anyhow::ensure!(
        view.follow_until(DEADLINE, done).await?,
        "never saw {what}: tasks {:?}, agents {:?}",
        view.state().tasks.counts(),
        view.state()
            .registry
            .agents
            .values()
            .map(|a| a.status)
            .collect::<Vec<_>>()
    );
    Ok(())
}

fn submitted(input: serde_json::Value, max_attempts: u32, lease_ms: u64) -> TaskSubmitted {
    TaskSubmitted {
        capability: "test.run".into(),
        input,
        max_attempts: Some(max_attempts),
        lease_ms: Some(lease_ms),
        ..Default::default()
    }
}

/// What most of these tests start from: a real server, a coordinator for realm `acme`, a
/// submitter's log, and a live view of the realm's tasks and agents.
struct Platform {
    nats: TestNats,
    data: tempfile::TempDir,
    submitter: murmur_subjects::EventLog,
    live: Projector<CoordinatorProjection>,
    stop: tokio::sync::watch::Sender<bool>,
    coordinator: tokio::task::JoinHandle<Result<u64, murmur_subjects::LogError>>,
}

impl Platform {
    async fn start() -> Result<Self> {
        let nats = TestNats::start().await?;
        let submitter = nats.event_log("acme").await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let coordinator = spawn_coordinator(&nats, stopped).await?;
        let live = Projector::new(
            submitter.clone(),
            CoordinatorProjection::new(Token::new("acme")?),
        );
        Ok(Self {
            nats,
            data: tempfile::tempdir()?,
            submitter,
            live,
            stop,
            coordinator,
        })
    }

    /// Submits task `id` (its first event).
    async fn submit(&self, id: &str, input: serde_json::Value, lease_ms: u64) -> Result<()> {
        self.submitter
            .append_expected(
                Draft::new(Token::new(id)?, &submitted(input, 1, lease_ms))?,
                Expected::NoEvents,
            )
            .await?;
        Ok(())
    }

    /// Cancels task `id` as the submitter, in the task's flow, expecting the task as the
    /// live view last saw it.
    async fn cancel(&self, id: &str, reason: &str) -> Result<()> {
        let task = self.live.state().tasks.tasks[id].clone();
        let cancel = Draft::new(
            Token::new(id)?,
            &murmur_subjects::events::TaskCancelled {
                reason: reason.into(),
            },
        )?
        .caused_by_ids(task.correlation_id, task.last_event_id, None);
        self.submitter
            .append_expected(cancel, Expected::LastSequence(task.last_sequence))
            .await?;
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        self.coordinator.await??;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_complete_exactly_once_across_a_worker_crash() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let realm = Token::new("acme")?;
    let submitter = nats.event_log("acme").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx.clone()).await?;
    // A liveness monitor, as `murmur up` runs one: a killed worker is marked offline and
    // gets no new work.
    let monitor = {
        let log = nats.log_as("acme", Role::Monitor, "monitor").await?;
        let mut rx = stop_rx.clone();
        tokio::spawn(murmur_coordination::liveness::run_monitor(
            log,
            Arc::new(SystemClock),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    let mut live = Projector::new(submitter.clone(), CoordinatorProjection::new(realm.clone()));

    // No capable agent yet: the task waits, visibly pending.
    let early = Token::new("early")?;
    submitter
        .append_expected(
            Draft::new(
                early.clone(),
                &submitted(serde_json::json!({"n": -1}), 3, 5_000),
            )?,
            Expected::NoEvents,
        )
        .await?;
    wait(&mut live, "the early task pending", |v| {
        v.tasks
            .tasks
            .get("early")
            .is_some_and(|t| t.state.name() == "pending")
    })
    .await?;

    let (mut w1, id1) = spawn_worker(&nats, data.path()).await?;
    let (mut w2, id2) = spawn_worker(&nats, data.path()).await?;
    wait(&mut live, "two workers online", |v| {
        v.registry.count(AgentStatus::Online) == 2
    })
    .await?;

    for i in 0..20 {
        let id = Token::new(format!("t{i:02}"))?;
        submitter
            .append_expected(
                Draft::new(id, &submitted(serde_json::json!({"n": i}), 3, 5_000))?,
                Expected::NoEvents,
            )
            .await?;
    }
    wait(&mut live, "21 tasks completed", |v| {
        v.tasks.counts().get("completed") == Some(&21)
    })
    .await?;

    // A long task; kill -9 whichever worker starts it.
    let long = Token::new("long")?;
    submitter
        .append_expected(
            Draft::new(
                long.clone(),
                &submitted(serde_json::json!({"sleep_ms": 1500}), 3, 3_000),
            )?,
            Expected::NoEvents,
        )
        .await?;
    wait(&mut live, "the long task running", |v| {
        matches!(
            v.tasks.tasks.get("long").map(|t| &t.state),
            Some(TaskState::Assigned { started: true, .. })
        )
    })
    .await?;
    let holder = match &live.state().tasks.tasks["long"].state {
        TaskState::Assigned { agent, .. } => agent.clone(),
        other => anyhow::bail!("unexpected {other:?}"),
    };
    let survivor = if holder == id1 {
        w1.kill().await?;
        id2.clone()
    } else {
        w2.kill().await?;
        id1.clone()
    };
    wait(&mut live, "the long task completed after the crash", |v| {
        matches!(
            v.tasks.tasks.get("long").map(|t| &t.state),
            Some(TaskState::Completed { .. })
        )
    })
    .await?;
    let long_task = &live.state().tasks.tasks["long"];
    assert_eq!(
        long_task.state,
        TaskState::Completed {
            agent: survivor.clone()
        }
    );
    assert_eq!(long_task.attempt, 2);
    assert_eq!(
        long_task.failures,
        vec![format!("lease expired on {holder}")]
    );

    // A task that always fails is dead-lettered after max attempts with every reason.
    let doomed = Token::new("doomed")?;
    submitter
        .append_expected(
            Draft::new(
                doomed,
                &submitted(
                    serde_json::json!({"fail": "error[E0308]: mismatched types"}),
                    2,
                    5_000,
                ),
            )?,
            Expected::NoEvents,
        )
        .await?;
    wait(&mut live, "the doomed task dead-lettered", |v| {
        v.tasks
            .tasks
            .get("doomed")
            .is_some_and(|t| t.state == TaskState::DeadLettered)
    })
    .await?;
    assert_eq!(
        live.state().tasks.tasks["doomed"].failures,
        vec!["error[E0308]: mismatched types".to_string(); 2]
    );

    // Exactly one completion per task in the log: zero lost, none doubled.
    let completed = EventType::of::<TaskCompleted>().filter(Some(&realm));
    let mut per_task = std::collections::BTreeMap::<String, u32>::new();
    submitter
        .read(&completed, StartAt::Beginning, None, |m| {
            let task = m
                .message
                .subject
                .as_str()
                .split('.')
                .nth(5)
                .unwrap_or_default()
                .to_string();
            *per_task.entry(task).or_default() += 1;
            ControlFlow::Continue(())
        })
        .await?;
    assert_eq!(per_task.len(), 22, "{per_task:?}");
    assert!(per_task.values().all(|n| *n == 1), "{per_task:?}");

    assert_eq!(
        live.state().registry.agents[&holder].status,
        AgentStatus::Offline
    );
    stop_tx.send_replace(true);
    coordinator.await??;
    monitor.await??;
    let mut replayed = Projector::new(
        nats.event_log("acme").await?,
        CoordinatorProjection::new(realm),
    );
    replayed.catch_up().await?;
    live.catch_up().await?;
    assert_eq!(replayed.state().tasks, live.state().tasks);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_the_attempt() -> Result<()> {
    let mut platform = Platform::start().await?;
    let who =
        murmur_e2e::enrol(&platform.nats, Role::Worker, "worker", platform.data.path()).await?;
    let mut worker = agent_process(
        platform.nats.url(),
        platform.data.path(),
        &who,
        &["--log-level", "info"],
        "tester",
        "test.run",
        &["--builtin-handler"],
        true,
    )?;
    let mut stderr = BufReader::new(worker.stderr.take().context("stderr")?).lines();
    platform
        .submit("slow", serde_json::json!({"sleep_ms": 600_000}), 900_000)
        .await?;
    wait(&mut platform.live, "the slow task running", |v| {
        matches!(
            v.tasks.tasks.get("slow").map(|t| &t.state),
            Some(TaskState::Assigned { started: true, .. })
        )
    })
    .await?;
    platform.cancel("slow", "operator").await?;
    wait(&mut platform.live, "the task cancelled", |v| {
        v.tasks
            .tasks
            .get("slow")
            .is_some_and(|t| t.state == TaskState::Cancelled)
    })
    .await?;
    // The worker reports that it stopped the attempt.
    let stopped = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stderr.next_line().await? {
            if line.contains("cancelled: attempt stopped") && line.contains("slow") {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("worker never reported stopping the attempt")??;
    assert!(stopped);
    worker.kill().await?;
    platform.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_as_many_tasks_at_once_as_its_slots() -> Result<()> {
    let mut platform = Platform::start().await?;
    let ids = ["s1", "s2", "s3"];
    // All three wait before the agent joins, so one decision round sees them together.
    for id in ids {
        platform
            .submit(id, serde_json::json!({"sleep_ms": 600_000}), 900_000)
            .await?;
    }
    let who =
        murmur_e2e::enrol(&platform.nats, Role::Worker, "worker", platform.data.path()).await?;
    let (mut worker, agent) = spawn_agent(
        platform.nats.url(),
        platform.data.path(),
        &who,
        "tester",
        "test.run",
        &["--builtin-handler", "--slots", "2"],
    )
    .await?;
    let started = |v: &CoordinatorView| {
        ids.iter()
            .filter(|id| {
                matches!(
                    v.tasks.tasks.get(**id).map(|t| &t.state),
                    Some(TaskState::Assigned { started: true, .. })
                )
            })
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
    };
    wait(&mut platform.live, "two tasks running", |v| {
        started(v).len() == 2
    })
    .await?;
    let view = platform.live.state();
    assert_eq!(view.registry.agents[&agent].slots, 2);
    let running = started(view);
    let waiting: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !running.iter().any(|r| r == id))
        .collect();
    assert!(
        matches!(
            view.tasks.tasks[waiting[0]].state,
            TaskState::Pending { .. }
        ),
        "with both slots taken the third task waits: {:?}",
        view.tasks.tasks[waiting[0]].state
    );
    // Ending one frees a slot for the third.
    platform.cancel(&running[0], "free a slot").await?;
    wait(&mut platform.live, "the third task running", |v| {
        started(v).iter().any(|id| id == waiting[0])
    })
    .await?;
    worker.kill().await?;
    platform.stop().await
}

/// An agent offering the capability but no task handler (`agent run` of a kind without
/// one: its manifest declares it handles no assignments) is never assigned the task; the
/// task waits for an agent that runs tasks and completes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_handles_no_assignments_is_never_assigned_a_task() -> Result<()> {
    let mut platform = Platform::start().await?;
    let (url, data) = (
        platform.nats.url().to_string(),
        platform.data.path().to_owned(),
    );
    let who = murmur_e2e::enrol(&platform.nats, Role::Worker, "watcher", &data).await?;
    let (mut watcher, watcher_id) =
        spawn_agent(&url, &data, &who, "watcher", "test.run", &[]).await?;
    wait(&mut platform.live, "the watcher online", |v| {
        v.registry
            .agents
            .get(&watcher_id)
            .is_some_and(|a| a.status == AgentStatus::Online)
    })
    .await?;
    assert_eq!(
        platform.live.state().registry.agents[&watcher_id].handles,
        Some(vec![]),
        "a kind without a handler declares it handles nothing"
    );
    platform
        .submit("job", serde_json::json!({"n": 1}), 900_000)
        .await?;
    // Had the watcher been chosen, the task would sit on its 15-minute lease instead.
    let (mut worker, worker_id) = spawn_worker(&platform.nats, &data).await?;
    wait(&mut platform.live, "the task completed", |v| {
        v.tasks
            .tasks
            .get("job")
            .is_some_and(|t| matches!(t.state, TaskState::Completed { .. }))
    })
    .await?;
    let assigned: Vec<String> =
        murmur_e2e::aggregate_events(&platform.submitter, murmur_subjects::Domain::Task, "job")
            .await?
            .into_iter()
            .filter(|e| {
                e.record.ty
                    == <murmur_subjects::events::TaskAssigned as murmur_subjects::Payload>::TYPE
            })
            .map(|e| {
                e.payload::<murmur_subjects::events::TaskAssigned>()
                    .map(|a| a.agent)
            })
            .collect::<Result<_, _>>()?;
    assert_eq!(assigned, [worker_id]);
    worker.kill().await?;
    watcher.kill().await?;
    platform.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_graphs_release_children_with_parent_outputs_and_cancel_on_failure() -> Result<()> {
    use murmur_coordination::graph::{FailurePolicy, GraphSpec, GraphTask};
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let realm = Token::new("acme")?;
    let submitter = nats.event_log("acme").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx.clone()).await?;
    let (_worker, _) = spawn_worker(&nats, data.path()).await?;
    let task = |id: &str, input: serde_json::Value, deps: &[&str]| GraphTask {
        id: id.into(),
        capability: "test.run".into(),
        input,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    // build → test; plus broken → never (cancelled when broken is dead-lettered).
    let spec = GraphSpec {
        tasks: vec![
            task("build", serde_json::json!({"artifact": "sha256:abc"}), &[]),
            task("test", serde_json::json!({"suite": "all"}), &["build"]),
            task("broken", serde_json::json!({"fail": "compile error"}), &[]),
            task("never", serde_json::json!({}), &["broken"]),
        ],
        on_failure: FailurePolicy::CancelDescendants,
    };
    // A cycle is refused before anything is submitted, naming the path.
    let cyclic = GraphSpec {
        tasks: vec![
            task("x", serde_json::json!({}), &["y"]),
            task("y", serde_json::json!({}), &["x"]),
        ],
        on_failure: FailurePolicy::CancelDescendants,
    };
    // The last task event in the log (agents write their own events meanwhile).
    let last_task_event = || async {
        let stream = submitter.stream("MURMUR_HISTORY").await?;
        let last = stream
            .get_last_raw_message_by_subject("murmur.v1.acme.evt.task.>")
            .await
            .map(|m| m.sequence)
            .unwrap_or(0);
        anyhow::Ok(last)
    };
    let before = last_task_event().await?;
    let err = murmur_coordination::submit::submit_graph(&submitter, &cyclic, "bad", None)
        .await
        .expect_err("cycle");
    assert!(err.to_string().contains("x → y → x"), "{err}");
    assert_eq!(last_task_event().await?, before, "nothing submitted");

    let ids = murmur_coordination::submit::submit_graph(&submitter, &spec, "g1", None).await?;
    let signatures = submission_signatures(&submitter, "g1-").await?;
    assert_eq!(signatures.len(), spec.tasks.len(), "every task submitted");
    assert!(
        signatures.iter().all(|s| *s == signatures[0] && s.0),
        "the graph's tasks share one batch signature: {signatures:?}"
    );
    let mut live = Projector::new(submitter.clone(), CoordinatorProjection::new(realm));
    wait(&mut live, "the graph settled", |v| {
        let state = |id: &str| v.tasks.tasks.get(id).map(|t| t.state.name());
        state("g1-test") == Some("completed") && state("g1-never") == Some("cancelled")
    })
    .await?;
    let test = &live.state().tasks.tasks[&ids["test"]];
    // The built-in handler echoes its input: the child saw the parent's output.
    assert_eq!(
        test.output
            .as_ref()
            .map(|o| o["parents"]["g1-build"]["artifact"].clone()),
        Some(serde_json::json!("sha256:abc"))
    );
    assert_eq!(
        live.state().tasks.tasks[&ids["broken"]].state,
        TaskState::DeadLettered
    );
    stop_tx.send_replace(true);
    coordinator.await??;
    Ok(())
}

/// A result larger than an event should carry goes to the Object Store: the completed event
/// holds its content-hash reference, and the bytes read back equal the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_go_to_the_object_store_by_content_hash() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let submitter = nats.event_log("acme").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx.clone()).await?;
    let (_worker, _) = spawn_worker(&nats, data.path()).await?;
    // The built-in handler echoes its input: 100 KiB in, 100 KiB out.
    let input = serde_json::json!({ "blob": "x".repeat(100 * 1024) });
    submitter
        .append(Draft::new(
            Token::new("big")?,
            &submitted(input.clone(), 1, 30_000),
        )?)
        .await?;
    let mut live = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    wait(&mut live, "the big task completed", |v| {
        v.tasks
            .tasks
            .get("big")
            .is_some_and(|t| t.state.name() == "completed")
    })
    .await?;
    let output = live.state().tasks.tasks["big"]
        .output
        .clone()
        .context("output")?;
    assert_eq!(output["offloaded"], true, "{output}");
    let reference: murmur_agents::artifacts::ArtifactRef =
        serde_json::from_value(output["artifact"].clone())?;
    let store = murmur_agents::artifacts::ArtifactStore::open(&submitter).await?;
    let bytes = store.get(&reference).await?;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&bytes)?, input);
    stop_tx.send_replace(true);
    coordinator.await??;
    Ok(())
}

/// Messages the task fold does not accept still move the task's last stored sequence on the
/// server: a completion from an agent that never held the task (refused) and garbage bytes
/// on the task's subject (undecodable). The coordinator's expected sequence must count them,
/// or every write to that task would conflict forever (seen after failovers, where late
/// results from lost leases are refused). Here the task is assigned and completed anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_garbage_messages_do_not_jam_a_task() -> Result<()> {
    let nats = TestNats::start().await?;
    let submitter = nats.event_log("acme").await?;
    submitter
        .append(Draft::new(
            Token::new("jam")?,
            &submitted(serde_json::json!({"n": 1}), 3, 5_000),
        )?)
        .await?;
    // Not the holder: refused by the fold, stored by the server.
    let stranger = nats
        .event_log_as(murmur_subjects::Identity::generate(), "acme")
        .await?;
    stranger
        .append(Draft::new(
            Token::new("jam")?,
            &TaskCompleted {
                output: serde_json::json!("forged result"),
                attempt: 1,
            },
        )?)
        .await?;
    let garbage_seq = murmur_e2e::publish_raw(
        &submitter,
        "murmur.v1.acme.evt.task.jam.completed",
        async_nats::HeaderMap::new(),
        b"not an event".to_vec(),
    )
    .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx).await?;
    let data = tempfile::tempdir()?;
    let (_worker, _) = spawn_worker(&nats, data.path()).await?;
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    wait(&mut view, "the jammed task completed", |v| {
        v.tasks
            .tasks
            .get("jam")
            .is_some_and(|t| matches!(t.state, TaskState::Completed { .. }))
    })
    .await?;
    let task = &view.state().tasks.tasks["jam"];
    assert!(task.last_sequence > garbage_seq, "{task:?}");
    assert_eq!(
        view.stats().refused,
        1,
        "the stranger's completion was refused"
    );
    assert_eq!(view.stats().invalid, 1, "the garbage was skipped");
    let _ = stop_tx.send(true);
    coordinator.await??;
    Ok(())
}

/// A worker never starts an attempt the log has moved past. Its assignment of `stale` was
/// expired and the task reassigned to another agent before the worker came up; it starts
/// only `fresh`, and nothing of it is stored on `stale` (without the expected sequence on
/// `started` it would store a `started` and then a `completed` there, both refused by the
/// fold, and run the handler for nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_start_an_assignment_the_task_moved_past() -> Result<()> {
    use murmur_agents::{Agent, AgentSpec};
    use murmur_subjects::Identity;
    use murmur_subjects::events::{TaskAssigned, TaskLeaseExpired};

    let nats = TestNats::start().await?;
    let submitter = nats.event_log("acme").await?;
    let coordinator = nats
        .log_as("acme", Role::Coordinator, "coordinator")
        .await?;
    let (me, other) = (Identity::generate(), Identity::generate());
    let assign = |agent: &Identity, attempt: u32| TaskAssigned {
        agent: agent.public_key().into(),
        attempt,
        lease_ms: 60_000,
        work: None,
    };
    for task in ["stale", "fresh"] {
        submitter
            .append(Draft::new(
                Token::new(task)?,
                &submitted(serde_json::json!({"task": task}), 3, 60_000),
            )?)
            .await?;
    }
    let stale = Token::new("stale")?;
    let mut last = coordinator
        .append(Draft::new(stale.clone(), &assign(&me, 1))?)
        .await?
        .1
        .sequence;
    last = coordinator
        .append_expected(
            Draft::new(
                stale.clone(),
                &TaskLeaseExpired {
                    attempt: 1,
                    agent: me.public_key().into(),
                },
            )?,
            Expected::LastSequence(last),
        )
        .await?
        .1
        .sequence;
    coordinator
        .append_expected(
            Draft::new(stale, &assign(&other, 2))?,
            Expected::LastSequence(last),
        )
        .await?;
    coordinator
        .append(Draft::new(Token::new("fresh")?, &assign(&me, 1))?)
        .await?;

    let handlers = murmur_agents::handlers::EventHandlers::new().tasks(
        murmur_tools::cli::agent::builtin_handler(),
        std::time::Duration::from_secs(5),
    );
    let agent = Agent::join(
        nats.event_log_as(me, "acme").await?,
        AgentSpec {
            manifest: murmur_subjects::events::AgentJoined {
                handles: Some(handlers.types()),
                ..murmur_e2e::joined("tester")
            },
            heartbeat: std::time::Duration::from_secs(1),
        },
    )
    .await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(async move {
        murmur_agents::handlers::run_handlers(&agent, &handlers, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        })
        .await
        .map(|stats| stats.tasks_completed)
    });
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    wait(&mut view, "fresh completed", |v| {
        v.tasks
            .tasks
            .get("fresh")
            .is_some_and(|t| matches!(t.state, TaskState::Completed { .. }))
    })
    .await?;
    let _ = stop_tx.send(true);
    assert_eq!(worker.await??, 1, "the worker completed fresh only");

    let mut stored_on_stale = Vec::new();
    submitter
        .read(
            &murmur_subjects::SubjectFilter::parse("murmur.v1.acme.evt.task.stale.>")?,
            StartAt::Beginning,
            None,
            |m| {
                stored_on_stale.push(m.message.subject.to_string());
                ControlFlow::Continue(())
            },
        )
        .await?;
    assert_eq!(
        stored_on_stale,
        [
            "murmur.v1.acme.evt.task.stale.submitted",
            "murmur.v1.acme.evt.task.stale.assigned",
            "murmur.v1.acme.evt.task.stale.lease_expired",
            "murmur.v1.acme.evt.task.stale.assigned",
        ],
        "nothing from the worker on the task it was no longer assigned"
    );
    assert!(matches!(
        view.state().tasks.tasks["stale"].state,
        TaskState::Assigned { started: false, .. }
    ));
    Ok(())
}

/// A burst larger than a connection's 5,000 ack permits, onto an agent with the slots for
/// all of it, is assigned: the coordinator decides it in one round and keeps at most
/// `APPENDS_IN_FLIGHT` writes un-awaited. (It used to send the whole round before awaiting
/// any ack, and waited for good on the first send past the permits: 32 agents of 512 slots
/// stopped a 10,000-task burst at 5,117.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_connections_ack_permits_is_assigned() -> Result<()> {
    use murmur_agents::{Agent, AgentSpec};
    const TASKS: usize = 6_000;
    let mut platform = Platform::start().await?;
    // All stored before the agent joins, so one decision round routes them all.
    let mut acks = std::collections::VecDeque::new();
    for first in (0..TASKS).step_by(500) {
        let drafts = (first..(first + 500).min(TASKS))
            .map(|k| {
                Ok(Draft::new(
                    Token::new(format!("b{k}"))?,
                    &submitted(serde_json::json!({ "k": k }), 1, 600_000),
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        acks.extend(platform.submitter.append_many(drafts).await?);
        while acks.len() > 1_000
            && let Some((_, ack)) = acks.pop_front()
        {
            ack.wait().await?;
        }
    }
    while let Some((_, ack)) = acks.pop_front() {
        ack.wait().await?;
    }
    let _agent = Agent::join(
        platform.nats.log_as("acme", Role::Worker, "wide").await?,
        AgentSpec {
            manifest: murmur_subjects::events::AgentJoined {
                capabilities: vec!["test.run".into()],
                slots: 8_000,
                ..murmur_e2e::joined("wide")
            },
            heartbeat: std::time::Duration::from_secs(1),
        },
    )
    .await?;
    let assigned = |v: &CoordinatorView| {
        v.tasks
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Assigned { .. }))
            .count()
    };
    anyhow::ensure!(
        platform
            .live
            .follow_until(std::time::Duration::from_secs(120), |v| assigned(v)
                == TASKS)
            .await?,
        "{} of {TASKS} tasks assigned",
        assigned(platform.live.state())
    );
    platform.stop().await
}

/// A submitter with a window of two never has more than two of its tasks unfinished in the
/// log: the third waits at the submitter until one ends, and every task completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_window_keeps_its_tasks_in_flight_within_its_limit() -> Result<()> {
    use murmur_coordination::backpressure::SubmitWindow;
    let mut platform = Platform::start().await?;
    let (mut worker, _) = spawn_worker(&platform.nats, platform.data.path()).await?;
    let mut window = SubmitWindow::new(platform.submitter.clone(), 2).await?;
    let ids: Vec<String> = (0..8).map(|k| format!("w{k}")).collect();
    for id in &ids {
        window
            .submit(
                Token::new(id)?,
                &submitted(serde_json::json!({"sleep_ms": 100}), 1, 60_000),
            )
            .await?;
        assert!(window.open() <= 2, "{} open", window.open());
    }
    window.flush().await?;
    all_completed(&mut platform.live, &ids, "every windowed task completed").await?;
    // In the log's order, submissions less ends never exceeded the window.
    assert_eq!(
        open_in_log_order(&platform.submitter, "w").await?,
        (0, 2),
        "the window filled, and no further"
    );
    worker.kill().await?;
    platform.stop().await
}

/// Tasks given to a window together are submitted as room frees up, the window never
/// holding more than its limit open, and those that fit at once share one batch
/// signature: the first four here, signed together, and fewer signatures than tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_window_signs_the_tasks_that_fit_at_once_together() -> Result<()> {
    use murmur_coordination::backpressure::SubmitWindow;
    const LIMIT: usize = 4;
    const TASKS: usize = 12;
    let mut platform = Platform::start().await?;
    let (mut worker, _) = spawn_worker(&platform.nats, platform.data.path()).await?;
    let mut window = SubmitWindow::new(platform.submitter.clone(), LIMIT).await?;
    let ids: Vec<String> = (0..TASKS).map(|k| format!("m{k:02}")).collect();
    let tasks = ids
        .iter()
        .map(|id| {
            Ok((
                Token::new(id)?,
                submitted(serde_json::json!({"sleep_ms": 50}), 1, 60_000),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    assert_eq!(window.submit_many(tasks).await?, TASKS);
    window.flush().await?;
    all_completed(
        &mut platform.live,
        &ids,
        "every task given together completed",
    )
    .await?;

    // In the log's order, submissions less ends never exceeded the window.
    assert_eq!(
        open_in_log_order(&platform.submitter, "m").await?,
        (0, LIMIT as i64),
        "the window filled, and no further"
    );

    let roots = submission_signatures(&platform.submitter, "m").await?;
    assert_eq!(roots.len(), TASKS, "every submission read back");
    assert!(
        roots[..LIMIT].iter().all(|(batch, _)| *batch),
        "the first {LIMIT}, which fit at once, are batch-signed: {roots:?}"
    );
    let roots: Vec<&str> = roots.iter().map(|(_, root)| root.as_str()).collect();
    assert!(
        roots[..LIMIT].iter().all(|r| *r == roots[0]),
        "the first {LIMIT} share one signature"
    );
    let distinct: std::collections::BTreeSet<&str> = roots.iter().copied().collect();
    assert!(
        distinct.len() < TASKS,
        "{} signatures for {TASKS} tasks",
        distinct.len()
    );
    worker.kill().await?;
    platform.stop().await
}

/// A window steered to a latency target narrows when its tasks take longer than the target
/// (every task here: 20 ms of work against 1 µs), timed by the log's stored times, and
/// every task still completes; with a target none reaches it keeps its most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steered_submit_window_narrows_while_its_tasks_take_longer_than_the_target() -> Result<()>
{
    use murmur_coordination::backpressure::SubmitWindow;
    const MOST: usize = 4;
    let mut platform = Platform::start().await?;
    let (mut worker, _) = spawn_worker(&platform.nats, platform.data.path()).await?;
    let mut ids = Vec::new();
    for (round, target) in [
        std::time::Duration::from_micros(1),
        std::time::Duration::from_secs(3600),
    ]
    .into_iter()
    .enumerate()
    {
        let mut window = SubmitWindow::new(platform.submitter.clone(), MOST)
            .await?
            .with_latency_target(target);
        for k in 0..16 {
            let id = format!("s{round}-{k}");
            window
                .submit(
                    Token::new(&id)?,
                    &submitted(serde_json::json!({"sleep_ms": 20}), 1, 60_000),
                )
                .await?;
            ids.push(id);
        }
        window.flush().await?;
        if round == 0 {
            assert!(
                window.limit() < MOST,
                "every task over the target: the window narrowed ({window:?})"
            );
        } else {
            assert_eq!(window.limit(), MOST, "none over the target: {window:?}");
        }
    }
    all_completed(&mut platform.live, &ids, "every steered task completed").await?;
    worker.kill().await?;
    platform.stop().await
}

/// Waits until every task of `ids` has completed.
async fn all_completed(
    view: &mut Projector<CoordinatorProjection>,
    ids: &[String],
    what: &str,
) -> Result<()> {
    wait(view, what, |v| {
        ids.iter().all(|id| {
            matches!(
                v.tasks.tasks.get(id.as_str()).map(|t| &t.state),
                Some(TaskState::Completed { .. })
            )
        })
    })
    .await
}

/// Of the tasks of realm `acme` whose id starts with `prefix`, in the log's order: how many
/// were open (submitted, not yet completed or dead-lettered) at the end, and at most.
async fn open_in_log_order(log: &murmur_subjects::EventLog, prefix: &str) -> Result<(i64, i64)> {
    let (mut open, mut most) = (0i64, 0i64);
    let tasks = format!(".evt.task.{prefix}");
    for (subject, _, _) in realm_events(log).await? {
        if !subject.contains(&tasks) {
            continue;
        }
        if subject.ends_with(".submitted") {
            open += 1;
        } else if subject.ends_with(".completed") || subject.ends_with(".dead_lettered") {
            open -= 1;
        }
        most = most.max(open);
    }
    Ok((open, most))
}

/// The signature of each task submitted in realm `acme` whose id starts with `prefix`, in
/// log order: whether it is a batch signature, and the signature itself (a batch's root
/// signature, shared by the events signed together).
async fn submission_signatures(
    log: &murmur_subjects::EventLog,
    prefix: &str,
) -> Result<Vec<(bool, String)>> {
    use murmur_subjects::identity::BATCH_SIGNATURE_SCHEME;
    let mut signatures = Vec::new();
    log.read(
        &murmur_subjects::SubjectFilter::parse("murmur.v1.acme.evt.task.*.submitted")?,
        StartAt::Beginning,
        None,
        |m| {
            if let Ok(event) = log.decode_stored(&m.message, m.sequence, Some(m.stored_at))
                && event
                    .record
                    .subject
                    .as_deref()
                    .is_some_and(|s| s.starts_with(prefix))
            {
                let signature = event.record.signature.unwrap_or_default();
                signatures.push(match signature.strip_prefix(BATCH_SIGNATURE_SCHEME) {
                    Some(batch) => (true, batch.split(':').next().unwrap_or_default().into()),
                    None => (false, signature),
                });
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    Ok(signatures)
}

/// Subject, sequence and stored time of every event of realm `acme`, in log order.
async fn realm_events(
    log: &murmur_subjects::EventLog,
) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>> {
    let mut events = Vec::new();
    log.read(
        &murmur_subjects::SubjectFilter::parse("murmur.v1.acme.evt.>")?,
        StartAt::Beginning,
        None,
        |m| {
            events.push((m.message.subject.to_string(), m.sequence, m.stored_at));
            ControlFlow::Continue(())
        },
    )
    .await?;
    Ok(events)
}
