//! The distributed-compilation pipeline with real processes and the machine's cargo:
//! `murmur demo compile` end to end, and a cancelled build whose processes (cargo and the
//! build script it started) are stopped.

use std::time::Duration;

use anyhow::{Context, Result};
use murmur_agents::artifacts::ArtifactStore;
use murmur_agents::pipeline::workspace::{self, SourceTree};
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::tasks::TaskState;
use murmur_e2e::{DEADLINE, spawn_agent};
use murmur_subjects::events::{TaskCancelled, TaskSubmitted};
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, Projector, Token};
use murmur_testkit::TestNats;

#[test]
fn demo_compile_builds_tests_and_reports_tool_errors() -> Result<()> {
    let out = murmur_e2e::murmur_output(
        &["demo", "compile", "--deadline-s", "300"],
        Duration::from_secs(420),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo compile failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "task.started",
        "→ compiler-",
        "→ executor",
        "error[E0308]: mismatched types",
        "test tests::max_of_values ... FAILED",
        "test-app       cancelled",
        "demo compile ok",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    Ok(())
}

/// Polls until `done` holds or the deadline passes.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE * 4;
    while !done() {
        anyhow::ensure!(tokio::time::Instant::now() < until, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_build_stops_cargo_and_its_build_script() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let marker = data.path().join("build-script.pid");
    // A crate whose build script records its pid and then hangs: only killing the whole
    // process group stops it.
    let build_rs = format!(
        "fn main() {{ std::fs::write({:?}, std::process::id().to_string()).unwrap(); \
         std::thread::sleep(std::time::Duration::from_secs(600)); }}",
        marker.display().to_string()
    );
    let tree: SourceTree = [
        (
            "Cargo.toml",
            "[package]\nname = \"slow\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_string(),
        ),
        ("build.rs", build_rs),
        ("src/lib.rs", "pub fn x() {}\n".to_string()),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), t.into_bytes()))
    .collect();

    let submitter = nats.event_log("acme").await?;
    let coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as(
            "acme",
            murmur_subjects::roles::Role::Coordinator,
            "coordinator",
        )
        .await?,
    );
    let who = murmur_e2e::enrol(
        &nats,
        murmur_subjects::roles::Role::Compiler,
        "compiler",
        data.path(),
    )
    .await?;
    let (_compiler, _) = spawn_agent(
        nats.url(),
        data.path(),
        &who,
        "compiler",
        "compiler.rust",
        &[],
    )
    .await?;

    let store = ArtifactStore::open(&submitter).await?;
    let source = store.put("slow.tar", &workspace::pack(&tree)?).await?;
    let id = Token::new("build-slow")?;
    let (submitted, _) = submitter
        .append(Draft::new(
            id.clone(),
            &TaskSubmitted {
                capability: "compiler.rust".into(),
                input: serde_json::json!({ "source": source, "package": "slow" }),
                max_attempts: Some(1),
                lease_ms: Some(600_000),
                ..Default::default()
            },
        )?)
        .await?;

    // The file exists as soon as `fs::write` creates it, before its contents are written:
    // wait for a whole pid, not for the file.
    let written_pid = || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    eventually("the build script start", || written_pid().is_some()).await?;
    let pid: i32 = written_pid().context("pid")?;
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid), "build script {pid} is running");

    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    view.catch_up().await?;
    let task = view
        .state()
        .tasks
        .tasks
        .get("build-slow")
        .context("task")?
        .clone();
    submitter
        .append_expected(
            Draft::new(
                id,
                &TaskCancelled {
                    reason: "test".into(),
                },
            )?
            .caused_by_ids(
                submitted.record.id.clone(),
                task.last_event_id.clone(),
                None,
            ),
            Expected::LastSequence(task.last_sequence),
        )
        .await?;
    // A zombie (killed, not yet reaped by its orphaned parent) counts as stopped.
    let stopped = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
    };
    eventually("the build script stopped after the cancel", || stopped(pid)).await?;
    assert!(matches!(
        view.state().tasks.tasks.get("build-slow").map(|t| &t.state),
        Some(TaskState::Assigned { .. }) | Some(TaskState::Cancelled)
    ));
    view.follow_until(DEADLINE, |v| {
        v.tasks
            .tasks
            .get("build-slow")
            .is_some_and(|t| t.state == TaskState::Cancelled)
    })
    .await?;
    coordinator.stop().await??;
    Ok(())
}
