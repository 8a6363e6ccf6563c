//! Shared helpers for murmur's end-to-end suites (all against a real nats-server).

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_subjects::events::{AgentJoined, DeadLettered, Hardware, TaskSubmitted};
use murmur_subjects::{EventLog, Plane, StartAt, SubjectFilter};

/// Generous deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A sample `agent.joined` payload.
pub fn joined(name: &str) -> AgentJoined {
    AgentJoined {
        name: name.into(),
        kind: "tool".into(),
        capabilities: vec!["tool.fs".into()],
        labels: Default::default(),
        agent_version: "test".into(),
        hardware: Hardware::default(),
        slots: 1,
        handles: None,
    }
}

/// A sample `task.submitted` payload.
pub fn submitted(n: u64) -> TaskSubmitted {
    TaskSubmitted {
        capability: "compiler.rust".into(),
        input: serde_json::json!({ "n": n }),
        priority: 0,
        ..Default::default()
    }
}

/// Submits task `id` needing `capability` with `input` and a single attempt (a failure
/// dead-letters it at once), as the task's first event.
pub async fn submit_once(
    log: &EventLog,
    id: &str,
    capability: &str,
    input: serde_json::Value,
) -> Result<()> {
    log.append_expected(
        murmur_subjects::Draft::new(
            murmur_subjects::Token::new(id)?,
            &TaskSubmitted {
                capability: capability.into(),
                input,
                max_attempts: Some(1),
                ..Default::default()
            },
        )?,
        murmur_subjects::log::Expected::NoEvents,
    )
    .await?;
    Ok(())
}

/// Every stored event of one aggregate in the log's realm (`domain`, `id`), in log order,
/// each decoded and verified (an entry that is not an event fails the read).
pub async fn aggregate_events(
    log: &EventLog,
    domain: murmur_subjects::Domain,
    id: &str,
) -> Result<Vec<murmur_subjects::VerifiedEvent>> {
    let events =
        murmur_subjects::projection::read_aggregate(log, domain, &murmur_subjects::Token::new(id)?)
            .await?;
    Ok(events
        .into_iter()
        .map(|(_, event)| event)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Every dead letter in the log's realm, with its dead-letter stream sequence.
pub async fn dead_letters(log: &EventLog) -> Result<Vec<(u64, DeadLettered)>> {
    let filter = SubjectFilter::plane(Plane::Dlq).realm(log.realm().clone());
    let mut out = Vec::new();
    let mut raw = Vec::new();
    log.read_dead_letters(&filter, StartAt::Beginning, None, |stored| {
        raw.push(stored);
        ControlFlow::Continue(())
    })
    .await?;
    for stored in raw {
        let ev = log.decode_stored(&stored.message, stored.sequence, None)?;
        if let Ok(d) = ev.payload::<DeadLettered>() {
            out.push((stored.sequence, d));
        }
    }
    Ok(out)
}

/// Waits (polling the stream, up to [`DEADLINE`]) until a dead letter matching `pred` exists.
pub async fn wait_for_dead_letter(
    log: &EventLog,
    what: &str,
    mut pred: impl FnMut(&DeadLettered) -> bool,
) -> Result<DeadLettered> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some((_, d)) = dead_letters(log).await?.into_iter().find(|(_, d)| pred(d)) {
            return Ok(d);
        }
        if tokio::time::Instant::now() > until {
            return Err(anyhow::anyhow!(
                "no dead letter for {what} within {DEADLINE:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes raw bytes to JetStream and waits for the store ack.
pub async fn publish_raw(
    log: &EventLog,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Vec<u8>,
) -> Result<u64> {
    let js = async_nats::jetstream::new(log.client().clone());
    let ack = js
        .publish_with_headers(subject.to_string(), headers, body.into())
        .await
        .with_context(|| format!("publish to {subject}"))?
        .await
        .with_context(|| format!("ack from {subject}"))?;
    Ok(ack.sequence)
}

/// The `murmur` binary cargo built for the running suite: the suites are integration tests
/// of `murmur-tools`, so `cargo test` builds the binary first and names it in
/// `CARGO_BIN_EXE_murmur` (never a stale `target/debug/murmur`).
pub fn murmur_binary() -> Result<std::path::PathBuf> {
    let bin = std::env::var_os("CARGO_BIN_EXE_murmur").context(
        "CARGO_BIN_EXE_murmur is not set: run the suites with `cargo test -p murmur-tools --test SUITE`",
    )?;
    Ok(bin.into())
}

/// Waits until the file at `path` (a process's log) contains `needle`, or `deadline` passes.
pub async fn wait_for_line(path: &std::path::Path, needle: &str, deadline: Duration) -> Result<()> {
    wait_for_any_line(path, &[needle], deadline).await
}

/// Waits until the file at `path` (a process's log) contains one of `needles`, or `deadline`
/// passes.
pub async fn wait_for_any_line(
    path: &std::path::Path,
    needles: &[&str],
    deadline: Duration,
) -> Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if needles.iter().any(|n| text.contains(n)) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{} never said any of {needles:?}; it said:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `murmur tallier` for realm `acme` at `url` as a separate process, as the participant
/// `who` names (`--creds FILE`: see [`murmur_testkit::TestNats::process_args`]), its log (at `log_level`)
/// written to `DATA/tallier.log`, whose path is returned with it. Killed when dropped.
pub fn tallier_process(
    url: &str,
    data: &std::path::Path,
    who: &[String],
    log_level: &str,
) -> Result<(tokio::process::Child, std::path::PathBuf)> {
    std::fs::create_dir_all(data)?;
    let log_path = data.join("tallier.log");
    let child = tokio::process::Command::new(murmur_binary()?)
        .args(["--server", url, "--realm", "acme", "--data-dir"])
        .arg(data)
        .args(who)
        .args(["--log-level", log_level, "tallier"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()?;
    Ok((child, log_path))
}

/// Waits for `child` to exit, up to `deadline`. Past it the process gets SIGTERM (`murmur
/// demo` then stops the processes it started), and SIGKILL if it has not exited 5 s later;
/// `None` then.
pub fn wait_with_deadline(
    child: &mut std::process::Child,
    deadline: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let poll = |until: std::time::Instant, child: &mut std::process::Child| loop {
        if let Some(status) = child.try_wait()? {
            return Ok::<_, anyhow::Error>(Some(status));
        }
        if std::time::Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(status) = poll(std::time::Instant::now() + deadline, child)? {
        return Ok(Some(status));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    if poll(std::time::Instant::now() + Duration::from_secs(5), child)?.is_none() {
        let _ = child.kill();
        child.wait()?;
    }
    Ok(None)
}

/// Runs `murmur ARGS` with `NATS_URL` unset and waits for it to exit, up to `deadline`.
/// Past the deadline the process is stopped ([`wait_with_deadline`]) and the error carries
/// what it printed, so a hang fails the test with the place it hung instead of stalling the
/// whole run.
pub fn murmur_output(args: &[&str], deadline: Duration) -> Result<std::process::Output> {
    murmur_output_with(args, &[], deadline)
}

/// [`murmur_output`] with these environment variables set (after `NATS_URL` is unset).
pub fn murmur_output_with(
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = std::process::Command::new(murmur_binary()?)
        .args(args)
        .env_remove("NATS_URL")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let status = wait_with_deadline(&mut child, deadline)?;
    let (stdout, stderr) = (std::fs::read(&out_path)?, std::fs::read(&err_path)?);
    match status {
        Some(status) => Ok(std::process::Output {
            status,
            stdout,
            stderr,
        }),
        None => anyhow::bail!(
            "murmur {} did not exit within {deadline:?}; it printed:\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// A `murmur` CLI command against the server at `url` in realm `acme`, as the participant
/// `who` names (`--creds FILE`), with its data in `data`, killed when dropped; add the
/// subcommand's arguments.
pub fn murmur_cli(
    url: &str,
    data: &std::path::Path,
    who: &[String],
) -> Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(murmur_binary()?);
    command
        .args(["--server", url, "--realm", "acme", "--data-dir"])
        .arg(data)
        .args(who)
        .kill_on_drop(true);
    Ok(command)
}

/// A participant of realm `acme` for `murmur` processes: a fresh identity enrolled with
/// `role` as `name`, and the arguments that make a process that participant (its
/// credentials file, written under `dir`).
pub async fn enrol(
    nats: &murmur_testkit::TestNats,
    role: murmur_subjects::roles::Role,
    name: &str,
    dir: &std::path::Path,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    nats.process_args("acme", role, name, dir).await
}

/// `murmur agent run` as a separate process in realm `acme`, as the participant `who` names
/// (see [`enrol`]), with a 200 ms heartbeat. `global` goes before the subcommand (e.g.
/// `--log-level info`), `agent` after `agent run K --capability C` (e.g.
/// `--builtin-handler`). Stdout is piped; stderr is piped when `capture_stderr` (read it, or
/// the pipe fills), else inherited. The process is killed when dropped.
#[allow(clippy::too_many_arguments)]
pub fn agent_process(
    url: &str,
    data: &std::path::Path,
    who: &[String],
    global: &[&str],
    kind: &str,
    capability: &str,
    agent: &[&str],
    capture_stderr: bool,
) -> Result<tokio::process::Child> {
    agent_process_of(
        &murmur_binary()?,
        url,
        data,
        who,
        global,
        kind,
        capability,
        agent,
        capture_stderr,
    )
}

/// [`agent_process`] running `program` (a copy of the `murmur` binary) instead.
#[allow(clippy::too_many_arguments)]
pub fn agent_process_of(
    program: &std::path::Path,
    url: &str,
    data: &std::path::Path,
    who: &[String],
    global: &[&str],
    kind: &str,
    capability: &str,
    agent: &[&str],
    capture_stderr: bool,
) -> Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(program)
        .args(["--server", url, "--realm", "acme", "--data-dir"])
        .arg(data)
        .args(who)
        .args(global)
        .args(["agent", "run", kind, "--capability", capability])
        .args(["--heartbeat-ms", "200"])
        .args(agent)
        .stdout(std::process::Stdio::piped())
        .stderr(if capture_stderr {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::inherit()
        })
        .kill_on_drop(true)
        .spawn()?)
}

/// Starts [`agent_process`] and waits (up to [`DEADLINE`]) for the id it prints once joined.
pub async fn spawn_agent(
    url: &str,
    data: &std::path::Path,
    who: &[String],
    kind: &str,
    capability: &str,
    agent: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let mut child = agent_process(url, data, who, &[], kind, capability, agent, false)?;
    let id = joined_id(&mut child).await?;
    Ok((child, id))
}

/// A `tester` worker offering `test.run` through the built-in handler, enrolled as a worker
/// under `data` (operator mode) and started with `extra` arguments: [`spawn_agent`]'s answer.
pub async fn spawn_tester(
    nats: &murmur_testkit::TestNats,
    data: &std::path::Path,
    extra: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let who = enrol(nats, murmur_subjects::roles::Role::Worker, "worker", data).await?;
    let mut agent = vec!["--builtin-handler"];
    agent.extend_from_slice(extra);
    spawn_agent(nats.url(), data, &who, "tester", "test.run", &agent).await
}

/// The id an [`agent_process`] prints on its first line of output once joined, waited for
/// up to [`DEADLINE`].
pub async fn joined_id(child: &mut tokio::process::Child) -> Result<String> {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let id = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("agent did not print its id")??
        .context("agent exited before joining")?;
    Ok(id.trim().to_string())
}

/// A running log auditor: send on `stop` (or drop it) to end it, then await `task`.
pub struct Auditor {
    /// Ends the auditor.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// Its result: what it saw.
    pub task: tokio::task::JoinHandle<
        Result<murmur_subjects::audit::AuditStats, murmur_subjects::LogError>,
    >,
    /// Its counters, updated after every message or batch of messages read together.
    pub stats: tokio::sync::watch::Receiver<murmur_subjects::audit::AuditStats>,
}

/// Starts the auditor on `log`.
pub fn spawn_auditor(log: &EventLog) -> Auditor {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (stats_tx, stats) = tokio::sync::watch::channel(Default::default());
    let task = tokio::spawn(murmur_subjects::audit::run_auditor(
        log.clone(),
        async {
            stopped.await.ok();
        },
        Some(stats_tx),
    ));
    Auditor { stop, task, stats }
}

/// A background service of a test, stopped with [`Service::stop`].
pub struct Service<T> {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<T>,
}

impl<T> Service<T> {
    /// Signals the service to stop and waits for its result.
    pub async fn stop(self) -> Result<T> {
        let _ = self.stop.send(true);
        Ok(self.task.await?)
    }
}

fn stop_signal() -> (
    tokio::sync::watch::Sender<bool>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    (tx, async move {
        let _ = rx.wait_for(|s| *s).await;
    })
}

/// An in-process coordinator (default config, system clock) on `log`, which must hold the
/// coordinator role ([`murmur_testkit::TestNats::log_as`]).
pub fn spawn_coordinator(log: EventLog) -> Service<Result<u64, murmur_subjects::LogError>> {
    let (stop, stopped) = stop_signal();
    let task = tokio::spawn(murmur_coordination::coordinator::run_coordinator(
        log,
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        murmur_coordination::coordinator::CoordinatorConfig::default(),
        stopped,
    ));
    Service { stop, task }
}

/// An in-process tallier (50 ms tick) on `log`, which must hold the tallier role.
pub fn spawn_tallier(log: EventLog) -> Service<Result<u64, murmur_subjects::LogError>> {
    let (stop, stopped) = stop_signal();
    let task = tokio::spawn(murmur_coordination::tallier::run_tallier(
        log,
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        Duration::from_millis(50),
        stopped,
    ));
    Service { stop, task }
}

/// Opens the event log (realm `acme`) on a cluster as `identity` with operator credentials,
/// with `replicas` copies of each stream. Stream creation needs a JetStream meta leader,
/// which a fresh cluster may not have yet; this retries until [`DEADLINE`].
pub async fn open_cluster_log(
    cluster: &murmur_testkit::TestCluster,
    identity: murmur_subjects::Identity,
    replicas: usize,
) -> Result<EventLog> {
    let creds = cluster.creds_for("acme", murmur_subjects::roles::Role::Operator, &identity)?;
    open_cluster_log_with(cluster, identity, &creds, replicas).await
}

/// [`open_cluster_log`] with `creds`.
pub async fn open_cluster_log_with(
    cluster: &murmur_testkit::TestCluster,
    identity: murmur_subjects::Identity,
    creds: &std::path::Path,
    replicas: usize,
) -> Result<EventLog> {
    use murmur_subjects::connect::{Auth, ConnectOptions};
    use murmur_subjects::{LogConfig, Token};
    let client = ConnectOptions::servers(&cluster.urls())
        .auth(Auth::CredsFile {
            path: creds.to_path_buf(),
        })
        .connect()
        .await?;
    let config = LogConfig {
        replicas,
        ..LogConfig::default()
    };
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match EventLog::options(identity.clone(), Token::new("acme")?)
            .config(config.clone())
            .open(client.clone())
            .await
        {
            Ok(log) => return Ok(log),
            Err(e) if tokio::time::Instant::now() < until => {
                eprintln!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fails unless the history and dead-letter streams are still R3: a cluster test checks
/// this after its participants joined, before it stops a node (a participant with default
/// settings once scaled the log down to R1 on joining).
pub async fn ensure_r3(log: &EventLog) -> Result<()> {
    for name in ["MURMUR_HISTORY", "MURMUR_DLQ"] {
        let replicas = stream_config(log, name).await?.num_replicas;
        anyhow::ensure!(replicas == 3, "{name} is R{replicas}, not R3");
    }
    Ok(())
}

/// The configuration the server holds for stream `name`.
pub async fn stream_config(
    log: &EventLog,
    name: &str,
) -> Result<async_nats::jetstream::stream::Config> {
    Ok(async_nats::jetstream::new(log.client().clone())
        .get_stream(name)
        .await?
        .cached_info()
        .config
        .clone())
}

/// A local 3-node cluster and an event log on it with R3 streams (asserted), as
/// `identity`.
pub async fn r3_cluster(
    identity: murmur_subjects::Identity,
) -> Result<(murmur_testkit::TestCluster, EventLog)> {
    let cluster = murmur_testkit::TestCluster::start().await?;
    let log = open_cluster_log(&cluster, identity, 3).await?;
    let replicas = async_nats::jetstream::new(log.client().clone())
        .get_stream("MURMUR_HISTORY")
        .await?
        .info()
        .await?
        .config
        .num_replicas;
    anyhow::ensure!(replicas == 3, "history stream is R{replicas}, not R3");
    Ok((cluster, log))
}
