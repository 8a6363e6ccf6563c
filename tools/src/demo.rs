//! `murmur demo`: a finite sample workflow against a real nats-server with JetStream.
//!
//! Three participants with their own nkey identities (a coordinator and two workers) join,
//! tasks are submitted and completed with optimistic concurrency, a retried publish is
//! deduplicated by the server, a stale write is refused, an event forged with raw async-nats
//! is dead-lettered by the auditor, and the overview projection built live equals the one
//! rebuilt by replaying the log. Exits non-zero if any step does not hold.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_subjects::binding::{self, ContentMode};
use murmur_subjects::events::{
    AgentJoined, AgentLeft, DeadLetterReason, DeadLettered, Hardware, TaskCompleted, TaskFailed,
    TaskSubmitted,
};
use murmur_subjects::log::{Expected, LogError, MSG_ID};
use murmur_subjects::projection::{StartAt, read_stream};
use murmur_subjects::{Draft, EventLog, Identity, Projector, SubjectFilter, Token};

use crate::cli::Settings;
use crate::nats_server::NatsProcess;
use crate::overview::{Overview, OverviewProjection};

const DEADLINE: Duration = Duration::from_secs(30);

fn step(n: usize, text: &str) {
    out!("[{n}] {text}");
}

async fn participant(
    url_or_opts: &murmur_subjects::connect::ConnectOptions,
    name: &str,
    realm: &Token,
    settings: &Settings,
) -> Result<EventLog> {
    let client = url_or_opts.clone().name(name).connect().await?;
    Ok(EventLog::open(
        client,
        Identity::generate(),
        realm.clone(),
        settings.log.clone(),
        settings.codec.clone(),
    )
    .await?)
}

fn joined(name: &str, kind: &str, caps: &[&str]) -> AgentJoined {
    AgentJoined {
        name: name.into(),
        kind: kind.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        labels: Default::default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hardware: Hardware {
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_mib: 0,
            accelerators: vec![],
            vram_mib: 0,
        },
    }
}

/// Runs the demo.
pub async fn run(settings: &Settings) -> Result<()> {
    let _dir;
    let mut _server = None;
    let connect = match &settings.connect {
        Some(c) => c.clone(),
        None => {
            let dir = tempfile::tempdir()?;
            let mut server = NatsProcess::start(0, dir.path()).await?;
            server.wait_ready(Duration::from_secs(60)).await?;
            step(
                0,
                &format!(
                    "started nats-server with JetStream at {} (temporary store)",
                    server.url()
                ),
            );
            let c = murmur_subjects::connect::ConnectOptions::servers(&server.url());
            _server = Some(server);
            _dir = dir;
            c
        }
    };
    // A realm of its own, so the demo never mixes with other data on a shared server.
    let realm = Token::new(format!(
        "demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))?;
    let coordinator = participant(&connect, "demo-coordinator", &realm, settings).await?;
    let worker_a = participant(&connect, "demo-worker-a", &realm, settings).await?;
    let worker_b = participant(&connect, "demo-worker-b", &realm, settings).await?;
    step(
        1,
        &format!("streams ready; realm {realm}; three participants with their own nkeys"),
    );

    // The auditor dead-letters anything in the log that does not verify.
    let (stats_tx, _stats_rx) = tokio::sync::watch::channel(Default::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let auditor = tokio::spawn(murmur_subjects::audit::run_auditor(
        coordinator.clone(),
        async {
            stop_rx.await.ok();
        },
        Some(stats_tx),
    ));

    // Live projection follows the log while the workflow runs.
    let projection = OverviewProjection {
        realm: realm.clone(),
    };
    let live_log = coordinator.clone();
    let (expect_tx, expect_rx) = tokio::sync::oneshot::channel::<u64>();
    let live = tokio::spawn(async move {
        let mut p = Projector::new(live_log, projection);
        let target = expect_rx.await.unwrap_or(u64::MAX);
        let reached = p
            .follow_until(DEADLINE, |s: &Overview| s.events >= target)
            .await?;
        Ok::<_, LogError>((reached, p.state().clone(), p.position()))
    });

    let mut appended = 0u64;
    for (log, name, caps) in [
        (&worker_a, "worker-a", ["compiler.rust"]),
        (&worker_b, "worker-b", ["compiler.rust"]),
    ] {
        let me = Token::new(log.identity().public_key())?;
        let (sealed, ack) = log
            .append(Draft::new(me, &joined(name, "compiler", &caps))?)
            .await?;
        appended += 1;
        out!(
            "    {name} joined as {} (seq {})",
            sealed.record.source,
            ack.sequence
        );
    }
    step(2, "two workers joined (signed agent.joined v2)");

    let mut tasks = Vec::new();
    for i in 1..=3 {
        let id = Token::new(format!("task-{i}"))?;
        let submitted = TaskSubmitted {
            capability: "compiler.rust".into(),
            input: serde_json::json!({ "crate": format!("sample-{i}") }),
            priority: 1,
            ..Default::default()
        };
        let (sealed, ack) = coordinator
            .append_expected(Draft::new(id.clone(), &submitted)?, Expected::NoEvents)
            .await?;
        appended += 1;
        tasks.push((id, sealed, ack.sequence));
    }
    step(
        3,
        "coordinator submitted 3 tasks (expected: aggregate has no events)",
    );

    // A retried publish of the same event is deduplicated by the server (Nats-Msg-Id).
    let retry = coordinator.append_sealed(&tasks[0].1).await?.wait().await?;
    ensure!(retry.duplicate, "retrying an event must be deduplicated");
    step(
        4,
        &format!(
            "retry of {} deduplicated by the server (duplicate = {})",
            tasks[0].1.record.id, retry.duplicate
        ),
    );

    // worker-a completes task 1; worker-b fails task 2 once, then completes it; worker-a does task 3.
    let complete = |log: &EventLog,
                    parent: &murmur_subjects::SealedEvent,
                    seq: u64,
                    attempt: u32| {
        let draft = Draft::new(parent.subject.aggregate().clone(), &TaskCompleted { output: serde_json::json!({"artifact": format!("sha256-of-{}", parent.subject.aggregate())}), attempt })
            .map(|d| d.caused_by(&parent.record));
        let log = log.clone();
        async move {
            log.append_expected(draft?, Expected::LastSequence(seq))
                .await
                .map_err(anyhow::Error::from)
        }
    };
    let (done1, _) = complete(&worker_a, &tasks[0].1, tasks[0].2, 1).await?;
    appended += 1;
    let failed = Draft::new(
        tasks[1].0.clone(),
        &TaskFailed {
            reason: "error[E0308]: mismatched types".into(),
            attempt: 1,
        },
    )?
    .caused_by(&tasks[1].1.record);
    let (failed_ev, failed_ack) = worker_b
        .append_expected(failed, Expected::LastSequence(tasks[1].2))
        .await?;
    appended += 1;
    let (_, _) = complete(&worker_b, &failed_ev, failed_ack.sequence, 2).await?;
    appended += 1;
    let (_, _) = complete(&worker_a, &tasks[2].1, tasks[2].2, 1).await?;
    appended += 1;
    step(
        5,
        "tasks completed (task-2 after one failed attempt); each write expected the aggregate's last sequence",
    );
    out!(
        "    task-1 completion: correlation {} causation {} (the submission)",
        done1.record.correlation_id.as_deref().unwrap_or(""),
        done1.record.causation_id.as_deref().unwrap_or("")
    );

    // A stale write: worker-b tries to complete task-1 against the sequence it saw at submission.
    let stale = complete(&worker_b, &tasks[0].1, tasks[0].2, 1).await;
    match stale.as_ref().map_err(|e| e.downcast_ref::<LogError>()) {
        Err(Some(LogError::Conflict { .. })) => step(
            6,
            &format!(
                "stale write refused: {}",
                stale.err().map(|e| e.to_string()).unwrap_or_default()
            ),
        ),
        other => bail!("a stale write must be refused with a conflict, got {other:?}"),
    }

    // A forgery: mallory signs an agent.left that claims worker-a as its source, and publishes
    // it with raw async-nats. The auditor refuses and dead-letters it.
    let mallory = Identity::generate();
    let victim = Token::new(worker_a.identity().public_key())?;
    let mut forged = Draft::new(
        victim,
        &AgentLeft {
            reason: "forged".into(),
        },
    )?
    .seal(&mallory, &realm);
    forged.record.source = worker_a.identity().public_key().to_string();
    let (mut headers, body) =
        binding::encode(&forged.record, ContentMode::Binary, settings.codec.limit())?;
    headers.insert(MSG_ID, forged.record.id.as_str());
    let raw = async_nats::jetstream::new(coordinator.client().clone());
    raw.publish_with_headers(forged.subject.to_string(), headers, body)
        .await?
        .await?;
    appended += 1;
    // Another auditor (e.g. `murmur up`'s) may be the one that handles it: wait for the dead
    // letter in the stream, not for this process's auditor.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let dlq_filter = SubjectFilter::plane(murmur_subjects::Plane::Dlq).realm(realm.clone());
    let found = loop {
        let mut found = None;
        read_stream(
            coordinator.jetstream(),
            &settings.log.dlq_stream,
            &dlq_filter,
            StartAt::Beginning,
            None,
            |stored| {
                if let Ok(ev) = coordinator.decode_stored(&stored.message, stored.sequence, None)
                    && let Ok(d) = ev.payload::<DeadLettered>()
                {
                    found = Some((stored.sequence, d));
                }
                std::ops::ControlFlow::Continue(())
            },
        )
        .await?;
        if found.is_some() {
            break found;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the forged event was not dead-lettered within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (dl_seq, dl) = found.context("dead letter not found in the dead-letter stream")?;
    ensure!(
        dl.reason == DeadLetterReason::BadSignature,
        "forgery dead-lettered as {}",
        dl.reason
    );
    step(
        7,
        &format!(
            "forged agent.left refused and dead-lettered (dlq seq {dl_seq}): {}",
            dl.detail
        ),
    );

    for log in [&worker_a, &worker_b] {
        let me = Token::new(log.identity().public_key())?;
        log.append(Draft::new(
            me,
            &AgentLeft {
                reason: "demo finished".into(),
            },
        )?)
        .await?;
        appended += 1;
    }
    step(8, "workers left");

    // Every appended event but the forgery reaches the fold.
    let _ = expect_tx.send(appended - 1);
    let (reached, live_state, live_pos) = live.await??;
    ensure!(
        reached,
        "the live projection did not see all {appended} events in time"
    );
    let mut replayed = Projector::new(
        coordinator.clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    replayed.catch_up().await?;
    ensure!(
        replayed.state() == &live_state,
        "live and replayed projections differ:\nlive {live_state:?}\nreplay {:?}",
        replayed.state()
    );
    ensure!(replayed.position() == live_pos, "positions differ");
    ensure!(
        live_state.count("completed") == 3,
        "3 tasks must be completed: {live_state:?}"
    );
    ensure!(
        live_state.agents.values().all(|a| !a.online),
        "all agents must have left"
    );
    ensure!(
        replayed.stats().invalid == 1,
        "exactly the forged event is invalid on replay"
    );
    step(
        9,
        &format!(
            "live projection == replayed projection: {} agents, {} tasks completed, {} events applied, 1 forged event skipped, position {}",
            live_state.agents.len(),
            live_state.count("completed"),
            replayed.stats().applied,
            replayed.position()
        ),
    );

    let _ = stop_tx.send(());
    let audit = auditor.await??;
    out!(
        "demo ok: {appended} events appended; this process's auditor checked {} of them and dead-lettered {} (auditors sharing a server share the work)",
        audit.valid + audit.dead_lettered,
        audit.dead_lettered
    );
    Ok(())
}
