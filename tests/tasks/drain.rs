//! A worker told to stop (SIGTERM, ctrl-c) drains: it starts nothing new, lets running
//! attempts finish within its grace, and leaves.

use super::*;

/// Starts a builtin-handler worker process that logs at info level (so a test can see it
/// begin draining), with `extra` agent flags; returns it, its id and its stderr lines.
async fn spawn_logging_worker(
    nats: &TestNats,
    data: &std::path::Path,
    extra: &[&str],
) -> Result<(
    Child,
    String,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
)> {
    let mut args = vec!["--builtin-handler"];
    args.extend_from_slice(extra);
    let who = murmur_e2e::enrol(nats, Role::Worker, "worker", data).await?;
    let mut worker = agent_process(
        nats.url(),
        data,
        &who,
        &["--log-level", "info"],
        "tester",
        "test.run",
        &args,
        true,
    )?;
    let stderr = BufReader::new(worker.stderr.take().context("stderr")?).lines();
    let mut stdout = BufReader::new(worker.stdout.take().context("stdout")?).lines();
    let id = tokio::time::timeout(DEADLINE, stdout.next_line())
        .await
        .context("worker did not print its id")??
        .context("worker exited before joining")?;
    Ok((worker, id.trim().to_string(), stderr))
}

/// Sends SIGTERM to `child` and waits for the line of its stderr that contains `needle`.
async fn terminate_and_wait_for(
    child: &Child,
    stderr: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> Result<()> {
    let pid = child.id().context("worker pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stderr.next_line().await? {
            if line.contains(needle) {
                return Ok(());
            }
        }
        anyhow::bail!("the worker's stderr ended before it said {needle:?}")
    })
    .await
    .with_context(|| format!("the worker never said {needle:?}"))?
}

/// Submits task `id` for the builtin handler to sleep `sleep_ms` in, and waits until a
/// worker has started it.
async fn submit_and_wait_running(
    submitter: &murmur_subjects::EventLog,
    live: &mut Projector<CoordinatorProjection>,
    id: &str,
    sleep_ms: u64,
) -> Result<()> {
    submitter
        .append_expected(
            Draft::new(
                Token::new(id)?,
                &submitted(serde_json::json!({ "sleep_ms": sleep_ms }), 1, 900_000),
            )?,
            Expected::NoEvents,
        )
        .await?;
    wait(live, "the task running", |v| {
        matches!(
            v.tasks.tasks.get(id).map(|t| &t.state),
            Some(TaskState::Assigned { started: true, .. })
        )
    })
    .await
}

/// Checks that `worker` left (`agent.left` stored) and that nothing reports on `task`: an
/// attempt stopped by a shutdown is left to lease expiry.
fn left_without_reporting(
    events: &[(String, u64, chrono::DateTime<chrono::Utc>)],
    worker: &str,
    task: &str,
) -> Result<()> {
    let left = format!("murmur.v1.acme.evt.agent.{worker}.left");
    anyhow::ensure!(
        events.iter().any(|(s, ..)| *s == left),
        "the worker never left: {events:?}"
    );
    let on_task = format!("murmur.v1.acme.evt.task.{task}.");
    anyhow::ensure!(
        !events.iter().any(|(s, ..)| s.starts_with(&on_task)
            && (s.ends_with(".completed") || s.ends_with(".failed"))),
        "a stopped attempt reported: {events:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_worker_finishes_its_running_attempt_and_starts_no_new_one() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let submitter = nats.event_log("acme").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx.clone()).await?;
    // The default drain grace (30 s) is far longer than the attempt.
    let (mut worker, worker_id, mut stderr) = spawn_logging_worker(&nats, data.path(), &[]).await?;
    let mut live = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    submit_and_wait_running(&submitter, &mut live, "running", 3000).await?;
    let terminated_at = chrono::Utc::now();
    terminate_and_wait_for(&worker, &mut stderr, "draining").await?;
    // Submitted while the worker drains: it must not start it, even if the coordinator
    // assigns it there before the lame duck reaches the registry.
    submitter
        .append_expected(
            Draft::new(
                Token::new("late")?,
                &submitted(serde_json::json!({}), 1, 900_000),
            )?,
            Expected::NoEvents,
        )
        .await?;
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .context("the draining worker never exited")??;
    assert!(status.success(), "the worker exits cleanly after draining");

    wait(&mut live, "the running task completed", |v| {
        v.tasks.tasks.get("running").is_some_and(
            |t| matches!(&t.state, TaskState::Completed { agent } if *agent == worker_id),
        )
    })
    .await?;
    let events = realm_events(&submitter).await?;
    let find = |subject: &str| {
        events
            .iter()
            .find(|(s, ..)| s == subject)
            .with_context(|| format!("no {subject} in {events:?}"))
    };
    let (_, completed_seq, completed_at) =
        find("murmur.v1.acme.evt.task.running.completed")?.clone();
    let (_, left_seq, _) = find(&format!("murmur.v1.acme.evt.agent.{worker_id}.left"))?.clone();
    assert!(
        completed_at > terminated_at,
        "the attempt finished before SIGTERM was sent ({completed_at} <= {terminated_at}): \
         this run proves nothing about draining"
    );
    assert!(
        completed_seq < left_seq,
        "the result is stored before the agent leaves"
    );
    assert!(
        !events
            .iter()
            .any(|(s, ..)| s == "murmur.v1.acme.evt.task.late.started"),
        "a draining worker started new work: {events:?}"
    );
    stop_tx.send_replace(true);
    coordinator.await??;
    Ok(())
}

/// A worker running an endless task gets SIGTERM once per line in `signals` (waiting after
/// each for the line it logs), then must exit cleanly without reporting the task.
async fn drain_ends_without_reporting(
    grace_s: &str,
    signals: &[&str],
    never_exited: &'static str,
) -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let submitter = nats.event_log("acme").await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = spawn_coordinator(&nats, stop_rx.clone()).await?;
    let (mut worker, worker_id, mut stderr) =
        spawn_logging_worker(&nats, data.path(), &["--drain-grace-s", grace_s]).await?;
    let mut live = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    submit_and_wait_running(&submitter, &mut live, "endless", 600_000).await?;
    for line in signals {
        terminate_and_wait_for(&worker, &mut stderr, line).await?;
    }
    let status = tokio::time::timeout(DEADLINE, worker.wait())
        .await
        .context(never_exited)??;
    assert!(status.success(), "the worker exits cleanly");
    let events = realm_events(&submitter).await?;
    left_without_reporting(&events, &worker_id, "endless")?;
    stop_tx.send_replace(true);
    coordinator.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_outlasts_its_grace_stops_the_attempt_and_leaves() -> Result<()> {
    drain_ends_without_reporting(
        "1",
        &["drain grace over"],
        "the worker never exited after its grace",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_drain_short() -> Result<()> {
    // A grace far past the test's deadline: only the second signal can end the drain in time.
    drain_ends_without_reporting(
        "3600",
        &["draining", "second signal"],
        "the worker kept draining after a second SIGTERM",
    )
    .await
}
