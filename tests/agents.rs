//! Agents as real separate processes: join (registry + micro-service discovery), crash
//! detection by missed heartbeats with two monitors writing one offline event, graceful
//! leave on SIGTERM, and the live registry equal to a replayed one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_coordination::liveness::{SystemClock, run_monitor};
use murmur_coordination::registry::{AgentStatus, Registry, RegistryProjection};
use murmur_e2e::{DEADLINE, spawn_agent};
use murmur_subjects::events::AgentOffline;
use murmur_subjects::projection::{StartAt, read_stream};
use murmur_subjects::{EventType, Projector, Token};
use murmur_tools::testkit::TestNats;

async fn wait_registry(
    projector: &mut Projector<RegistryProjection>,
    what: &str,
    done: impl FnMut(&Registry) -> bool,
) -> Result<()> {
    anyhow::ensure!(
        projector.follow_until(DEADLINE, done).await?,
        "registry never showed {what}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_processes_join_crash_and_leave() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let observer = nats.event_log("acme").await?;
    let mut live = Projector::new(
        observer.clone(),
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );

    let (mut compiler, compiler_id) =
        spawn_agent(nats.url(), data.path(), "compiler", "compiler.rust", &[]).await?;
    let (executor, executor_id) =
        spawn_agent(nats.url(), data.path(), "executor", "executor.test", &[]).await?;
    wait_registry(&mut live, "both agents online", |r| {
        r.count(AgentStatus::Online) == 2
    })
    .await?;
    let online: Vec<_> = live
        .state()
        .online_with("compiler.rust")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(online, vec![compiler_id.clone()]);

    // Stock NATS service discovery finds the agent, with its murmur id in the metadata.
    let info = observer
        .client()
        .request("$SRV.INFO.murmur-agent-compiler", "".into())
        .await?;
    let info: serde_json::Value = serde_json::from_slice(&info.payload)?;
    assert_eq!(info["metadata"]["murmur.id"], compiler_id.as_str());

    // Two liveness monitors, so the deterministic offline id is put to the test.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut monitors = Vec::new();
    for _ in 0..2 {
        let log = nats.event_log("acme").await?;
        let mut rx = stop_rx.clone();
        monitors.push(tokio::spawn(run_monitor(
            log,
            Arc::new(SystemClock),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
    }
    // Let both monitors hear at least one beat before the crash.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // kill -9: no left event; heartbeats stop.
    compiler.kill().await?;
    wait_registry(&mut live, "the killed agent offline", |r| {
        r.agents
            .get(&compiler_id)
            .is_some_and(|a| a.status == AgentStatus::Offline)
    })
    .await?;

    // SIGTERM: the agent leaves on purpose.
    let pid = executor.id().context("executor pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    wait_registry(&mut live, "the terminated agent left", |r| {
        r.agents
            .get(&executor_id)
            .is_some_and(|a| a.status == AgentStatus::Left)
    })
    .await?;

    stop_tx.send_replace(true);
    let mut declared = 0;
    for m in monitors {
        declared += m.await??;
    }
    assert_eq!(
        declared, 1,
        "one monitor wrote the offline event, the other was deduplicated"
    );
    let offline_filter = EventType::of::<AgentOffline>().filter(Some(&Token::new("acme")?));
    let offline_count = read_stream(
        observer.jetstream(),
        "MURMUR_HISTORY",
        &offline_filter,
        StartAt::Beginning,
        None,
        |_| std::ops::ControlFlow::Continue(()),
    )
    .await?;
    assert_eq!(offline_count, 1, "exactly one agent.offline in the log");

    // The registry a fresh process replays equals the live one.
    let mut replayed = Projector::new(
        nats.event_log("acme").await?,
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    replayed.catch_up().await?;
    assert_eq!(replayed.state(), live.state());
    Ok(())
}
