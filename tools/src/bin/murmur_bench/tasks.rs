//! The task suite: tasks submitted → completed through a coordinator and real agents, against
//! raw publishes and the same flow in raw async-nats; latency at half rate; join → routable;
//! an idle agent's memory.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Result;
use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::log::MSG_ID;
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Draft, Plane, Projection, Projector, Refusal, StartAt, SubjectFilter, Token, VerifiedEvent,
};

use super::*;

/// Issue 3: tasks submitted → completed per second with no-op workers against raw JetStream
/// publishes in the same run, submit→complete latency, join → routable latency, idle RSS.
pub(crate) async fn task_suite(
    target: &Target,
    n: u64,
    window: usize,
    worker_count: usize,
    submit_window: usize,
    submit_latency_target: Option<Duration>,
    agent_binary: Option<std::path::PathBuf>,
) -> Result<Vec<(String, f64)>> {
    let url = target.url.as_str();
    use murmur_agents::{Agent, AgentSpec};
    use murmur_coordination::coordinator::{
        CoordinatorConfig, CoordinatorProjection, run_coordinator,
    };
    use murmur_coordination::registry::AgentStatus;
    use murmur_subjects::clock::SystemClock;
    use std::sync::Arc;

    let realm = Token::new("tasks")?;
    // Each participant with credentials for its role, as a deployment runs them.
    let open = |name: &'static str, role: Role| target.log(&realm, role, name);

    // Raw baseline: the same number of pre-encoded submission-sized messages.
    let raw_log = open("raw", Role::Operator).await?;
    let raw_realm = Token::new("rawtasks")?;
    let mut prepared = Vec::new();
    for i in 0..n {
        let sealed = Draft::new(Token::new(format!("r{i}"))?, &task_payload(i))?
            .seal(raw_log.identity(), &raw_realm);
        let (h, b) = raw_log.codec().encode(&sealed)?;
        let mut h = async_nats::HeaderMap::from(h);
        h.insert(MSG_ID, sealed.record.id.as_str());
        prepared.push((sealed.subject.to_string(), h, b));
    }
    let js = async_nats::jetstream::new(raw_log.client().clone());
    let raw_rate = crate::event_log::publish_prepared(&js, prepared, window).await?;

    // The same task flow in raw async-nats: four stored events per task with the same
    // expected sequences and hops, bodies the size of murmur's events, nothing else.
    raw_flows::ensure_stream(
        &async_nats::jetstream::new(raw_log.client().clone()),
        &raw_log.config().history_stream,
    )
    .await?;
    let body_of = |draft: Draft| -> Result<bytes::Bytes> {
        Ok(raw_log
            .codec()
            .encode(&draft.seal(raw_log.identity(), &raw_realm))?
            .1)
    };
    let sample = Token::new("sample")?;
    let raw_bodies = raw_flows::TaskBodies {
        submitted: body_of(Draft::new(sample.clone(), &task_payload(0))?)?,
        assigned: body_of(Draft::new(
            sample.clone(),
            &murmur_subjects::events::TaskAssigned {
                agent: raw_log.identity().public_key().to_string(),
                attempt: 1,
                lease_ms: 600_000,
                work: Some(murmur_subjects::events::AssignedWork {
                    input: serde_json::json!({ "n": 0 }),
                    submitter: raw_log.identity().public_key().to_string(),
                    capability: "compiler.rust".into(),
                }),
            },
        )?)?,
        started: body_of(Draft::new(
            sample.clone(),
            &murmur_subjects::events::TaskStarted { attempt: 1 },
        )?)?,
        completed: body_of(Draft::new(
            sample,
            &murmur_subjects::events::TaskCompleted {
                output: serde_json::json!({ "n": 0 }),
                attempt: 1,
            },
        )?)?,
    };
    // The raw flows connect as the operator (their subjects are no murmur role's).
    let (raw_options, _) = target
        .participant(&realm, Role::Operator, "raw-flow")
        .await?;
    let raw_cpu = CpuSpan::start(target.server_pid());
    let raw_flow_rate = raw_flows::task_flow(
        &raw_options,
        n,
        window,
        worker_count,
        raw_bodies.clone(),
        true,
    )
    .await?;
    let raw_cpu = raw_cpu.per_task(n);
    let raw_flow_3_rate =
        raw_flows::task_flow(&raw_options, n, window, worker_count, raw_bodies, false).await?;

    // Platform and two no-op workers, in process.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The coordinator as `murmur up` runs it: the operator's credentials, the coordinator
    // role granted in the log (its decisions count only with it).
    let coordinator_log = open("coordinator", Role::Operator).await?;
    target.grant(&coordinator_log, &[Role::Coordinator]).await?;
    let coordinator = tokio::spawn(run_coordinator(
        coordinator_log,
        Arc::new(SystemClock),
        // The tick and batch window `murmur coordinator` uses.
        CoordinatorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let mut observer = Projector::new(
        open("observer", Role::Observer).await?,
        CoordinatorProjection::new(realm.clone()),
    );
    let mut join_ms = Vec::new();
    let mut workers = Vec::new();
    for k in 1..=worker_count.max(1) {
        let name = format!("w{k}");
        let log = open("worker", Role::Worker).await?;
        let t = Instant::now();
        let handlers = murmur_agents::handlers::EventHandlers::new().tasks(
            murmur_tools::cli::agent::builtin_handler(),
            Duration::from_secs(5),
        );
        let agent = Arc::new(
            Agent::join(
                log,
                AgentSpec {
                    manifest: murmur_subjects::events::AgentJoined {
                        name: name.clone(),
                        kind: "tester".into(),
                        capabilities: vec!["test.run".into()],
                        labels: Default::default(),
                        agent_version: "0.1.0".into(),
                        hardware: murmur_subjects::events::Hardware {
                            cores: 2,
                            memory_mib: 1024,
                            accelerators: vec![],
                            vram_mib: 0,
                            cpu_features: vec![],
                        },
                        // No-op tasks: as many at once as the coordinator sends.
                        slots: 512,
                        handles: Some(handlers.types()),
                    },
                    heartbeat: Duration::from_secs(1),
                },
            )
            .await?,
        );
        let id = agent.id().to_string();
        anyhow::ensure!(
            observer
                .follow_until(Duration::from_secs(30), |v| v
                    .registry
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.status == AgentStatus::Online))
                .await?,
            "agent never routable"
        );
        join_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let runner = agent.clone();
        let stop = stopped(stop_rx.clone());
        workers.push(tokio::spawn(async move {
            murmur_agents::handlers::run_handlers(&runner, &handlers, stop)
                .await
                .map(|stats| stats.tasks_completed)
        }));
    }

    // Progress from here on is read from completions only.
    drop(observer);
    let mut completions = Projector::new(
        open("completions", Role::Observer).await?,
        Completions {
            realm: realm.clone(),
        },
    );
    let submitter = open("submitter", Role::Submitter).await?;
    let verifier = murmur_subjects::identity::SignatureVerifier::shared();
    let checks_before = verifier.checks();
    let burst_cpu = CpuSpan::start(target.server_pid());
    // On stderr, for a profiler to attach to the phase alone.
    eprintln!("tasks: the peak-rate phase begins ({n} tasks)");
    let t = Instant::now();
    submit_tasks(&submitter, n, 256, window, |k| format!("t{k}")).await?;
    let done = completions
        .follow_until(Duration::from_secs(600), |done| *done >= n)
        .await?;
    let elapsed = t.elapsed().as_secs_f64();
    let burst_cpu = burst_cpu.per_task(n);
    eprintln!("tasks: the peak-rate phase ended after {elapsed:.2} s");
    anyhow::ensure!(
        done,
        "not all tasks completed: {} of {n}",
        completions.state()
    );
    let task_rate = n as f64 / elapsed;
    // Every participant here shares the process's verifier: each signature is checked once.
    let checks_per_task = (verifier.checks() - checks_before) as f64 / n as f64;

    // Latency at half the peak rate: about 20 s of submissions paced at task_rate / 2.
    let half_rate = task_rate / 2.0;
    let m = ((half_rate * 20.0) as u64).clamp(50, n);
    let interval = Duration::from_secs_f64(1.0 / half_rate);
    let paced_start = tokio::time::Instant::now();
    for k in 0..m {
        tokio::time::sleep_until(paced_start + interval.mul_f64(k as f64)).await;
        submitter
            .append(Draft::new(Token::new(format!("h{k}"))?, &task_payload(k))?)
            .await?;
    }
    anyhow::ensure!(
        completions
            .follow_until(Duration::from_secs(600), |done| *done >= n + m)
            .await?,
        "paced tasks did not complete: {} of {}",
        completions.state(),
        n + m
    );

    // Peak rate with backpressure: as fast as a submit window of `submit_window` open tasks
    // lets the submitter go (the burst waits at the submitter, not in the log).
    let mut window =
        murmur_coordination::backpressure::SubmitWindow::new(submitter.clone(), submit_window)
            .await?;
    if let Some(target) = submit_latency_target {
        window = window.with_latency_target(target);
    }
    // Given all at once, as a submitter with a batch of tasks does: those that fit in the
    // window at once share a signature.
    let tasks = (0..n)
        .map(|k| Ok((Token::new(format!("b{k}"))?, task_payload(k))))
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    window.submit_many(tasks).await?;
    window.flush().await?;
    anyhow::ensure!(
        completions
            .follow_until(Duration::from_secs(600), |done| *done >= n + m + n)
            .await?,
        "windowed tasks did not complete: {} of {}",
        completions.state(),
        n + m + n
    );
    let windowed_rate = n as f64 / t.elapsed().as_secs_f64();
    let windowed_wait = window.waited();
    let window_label = match submit_latency_target {
        Some(target) => format!(
            "a submit window steered to {} ms (`SubmitWindow::with_latency_target`, at most {submit_window} open tasks; {} at the end; `submit_many`)",
            target.as_millis(),
            window.limit()
        ),
        None => {
            format!("a submit window of {submit_window} open tasks (`SubmitWindow::submit_many`)")
        }
    };

    // Submit → complete latency from the log's own timestamps.
    let mut submitted_at: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let mut paced_latencies = Vec::new();
    let mut windowed_latencies = Vec::new();
    // Paced tasks: time from submission to each later event, by verb.
    let mut stages: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // Burst tasks: time from the previous event of the task, by verb.
    let mut peak_hops: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // Windowed tasks: time from the previous event of the task, by verb (where the tail is).
    let mut windowed_hops: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut previous_at: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(realm.clone())
        .domain(murmur_subjects::Domain::Task);
    submitter
        .read(&filter, StartAt::Beginning, None, |m| {
            let subject = m.message.subject.as_str();
            let task = subject.split('.').nth(5).unwrap_or_default().to_string();
            let verb = subject.rsplit('.').next().unwrap_or_default();
            let hops = if task.starts_with('t') {
                // Burst tasks: each hop from the one before (queueing for a slot aside).
                Some(&mut peak_hops)
            } else if task.starts_with('b') {
                Some(&mut windowed_hops)
            } else {
                None
            };
            if let Some(hops) = hops
                && let Some(prev) = previous_at.insert(task.clone(), m.stored_at)
                && verb != "submitted"
            {
                let ms = (m.stored_at - prev).num_microseconds().unwrap_or(0) as f64 / 1e3;
                hops.entry(verb.to_string()).or_default().push(ms);
            }
            if task.starts_with('h')
                && let Some(s) = submitted_at.get(&task)
            {
                let ms = (m.stored_at - *s).num_microseconds().unwrap_or(0) as f64 / 1e3;
                stages.entry(verb.to_string()).or_default().push(ms);
            }
            if subject.ends_with(".submitted") {
                submitted_at.insert(task, m.stored_at);
            } else if subject.ends_with(".completed")
                && let Some(s) = submitted_at.get(&task)
            {
                let ms = (m.stored_at - *s).num_microseconds().unwrap_or(0) as f64 / 1e3;
                if task.starts_with('h') {
                    paced_latencies.push(ms);
                } else if task.starts_with('b') {
                    windowed_latencies.push(ms);
                } else {
                    latencies.push(ms);
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    paced_latencies.sort_by(|a, b| a.total_cmp(b));
    windowed_latencies.sort_by(|a, b| a.total_cmp(b));
    let percentile = |v: &Vec<f64>, p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let pct = |p: f64| percentile(&latencies, p);

    stop_tx.send_replace(true);
    for w in workers {
        w.await??;
    }
    coordinator.await??;

    // Idle memory of real agent processes: one alone, then several side by side (the
    // binary's code pages are shared between them; what each adds is its own memory).
    let (mut starting, mut alone) = (None, None);
    let murmur = match agent_binary {
        Some(bin) if bin.exists() => Some(bin),
        Some(bin) => anyhow::bail!("--agent-binary {}: no such file", bin.display()),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("murmur"))
            .filter(|p| p.exists()),
    };
    let rss_binary = murmur
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rss = match murmur {
        Some(bin) => {
            let dir = tempfile::tempdir()?;
            let mut agents = Vec::new();
            for k in 0..IDLE_AGENTS {
                let data = dir.path().join(format!("idle{k}"));
                std::fs::create_dir_all(&data)?;
                // Its credentials (operator mode), or a fresh identity (open).
                let (creds, identity): (Vec<String>, &[&str]) = match &target.issuer {
                    Some(issuer) => (
                        issuer
                            .process_args(&realm, Role::Worker, &format!("idle{k}"), &data)
                            .await?,
                        &[],
                    ),
                    None => (Vec::new(), &["--ephemeral-identity"]),
                };
                agents.push(
                    tokio::process::Command::new(&bin)
                        .args(["--server", url, "--realm", "tasks", "--data-dir"])
                        .arg(&data)
                        .args(&creds)
                        .args(["agent", "run", "idle", "--capability", "test.idle"])
                        .args(identity)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .spawn()?,
                );
                if k == 0 {
                    // The first one alone: what one agent on a host costs, while it starts
                    // and once idle (it gives back its startup pages 2 s after joining;
                    // then a few heartbeats).
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    starting = agents[0].id().and_then(idle_memory);
                    tokio::time::sleep(IDLE_AFTER - Duration::from_millis(1500)).await;
                    alone = agents[0].id().and_then(idle_memory);
                }
            }
            tokio::time::sleep(IDLE_AFTER).await;
            let together: Vec<IdleMemory> = agents
                .iter()
                .filter_map(|a| a.id().and_then(idle_memory))
                .collect();
            for mut agent in agents {
                agent.kill().await.ok();
            }
            let mib = |kib: f64| kib / 1024.0;
            match alone {
                Some(one) if !together.is_empty() => {
                    let pss =
                        together.iter().map(|m| m.pss_kib).sum::<f64>() / together.len() as f64;
                    format!(
                        "RSS {:.1} MiB, of it {:.1} MiB the process's own (anonymous) and {:.1} MiB the binary's pages from the page cache (1.5 s after start, before it gave back the pages only its start used: RSS {}); {} side by side: PSS {:.1} MiB each",
                        mib(one.rss_kib),
                        mib(one.anon_kib),
                        mib(one.rss_kib - one.anon_kib),
                        starting.map_or("unknown".into(), |m| format!("{:.1} MiB", mib(m.rss_kib))),
                        together.len(),
                        mib(pss)
                    )
                }
                _ => "unknown (no /proc/PID/smaps_rollup)".into(),
            }
        }
        None => "not measured (murmur binary not built next to the bench)".into(),
    };

    println!("| measure | value |");
    println!("|---|---|");
    println!("| raw JetStream publish, same run | {raw_rate:.0} msgs/s |");
    println!(
        "| tasks submitted → completed ({worker_count} no-op workers, in process) | {task_rate:.0} tasks/s |"
    );
    println!("| ratio (target ≥ 0.25) | {:.3} |", task_rate / raw_rate);
    println!(
        "| the same task flow in raw async-nats (4 stored events, same expected sequences and hops, no signing or decoding) | {raw_flow_rate:.0} tasks/s ({:.3} of raw publishes) |",
        raw_flow_rate / raw_rate
    );
    println!(
        "| … the same without `started` (3 stored events per task) | {raw_flow_3_rate:.0} tasks/s ({:.3} of raw publishes) |",
        raw_flow_3_rate / raw_rate
    );
    println!(
        "| murmur / raw task flow | {:.3} |",
        task_rate / raw_flow_rate
    );
    println!(
        "| CPU per task at peak rate: this process (every participant) / nats-server; the raw task flow's (same machine, same run) | {} / {}; raw {} / {} |",
        micros(burst_cpu.0),
        micros(burst_cpu.1),
        micros(raw_cpu.0),
        micros(raw_cpu.1),
    );
    println!(
        "| Ed25519 verifications per task at peak rate (each signature once per process; batches share one) | {checks_per_task:.2} |"
    );
    println!(
        "| submit → complete latency at peak rate, p50 / p99 | {:.1} ms / {:.1} ms |",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "| peak rate through {window_label}: tasks/s; submit → complete p50 / p99; time the submitter waited | {windowed_rate:.0} tasks/s; {:.1} ms / {:.1} ms; {:.1} s |",
        percentile(&windowed_latencies, 0.5),
        percentile(&windowed_latencies, 0.99),
        windowed_wait.as_secs_f64()
    );
    println!(
        "| submit → complete latency at half the peak rate ({half_rate:.0} tasks/s, {m} tasks), p50 / p99 | {:.1} ms / {:.1} ms |",
        percentile(&paced_latencies, 0.5),
        percentile(&paced_latencies, 0.99)
    );
    for (verb, mut v) in peak_hops {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| … peak rate: the event before → {verb}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    for (verb, mut v) in windowed_hops {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| … through the window: the event before → {verb}, p50 / p99 / max | {:.1} ms / {:.1} ms / {:.1} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            percentile(&v, 1.0)
        );
    }
    for (verb, mut v) in stages {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| … half rate: submitted → {verb}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    println!(
        "| join → routable (agent.joined seen by a registry), median of {worker_count} | {:.1} ms |",
        median(join_ms)
    );
    println!(
        "| idle agent memory (`{rss_binary} agent run`, {} s after start; target < 15 MB) | {rss} |",
        IDLE_AFTER.as_secs()
    );
    Ok(vec![
        ("raw JetStream publish (msgs/s)".into(), raw_rate),
        ("tasks submitted → completed (tasks/s)".into(), task_rate),
        ("raw task flow (tasks/s)".into(), raw_flow_rate),
        (
            "CPU per task at peak rate, this process (µs; lower is better)".into(),
            burst_cpu.0.unwrap_or(f64::NAN),
        ),
        (
            "CPU per task at peak rate, nats-server (µs; lower is better)".into(),
            burst_cpu.1.unwrap_or(f64::NAN),
        ),
        (
            "tasks through a submit window (tasks/s)".into(),
            windowed_rate,
        ),
        (
            "submit → complete through a submit window, p99 (ms; lower is better)".into(),
            percentile(&windowed_latencies, 0.99),
        ),
        (
            "submit → complete at half rate, p50 (ms; lower is better)".into(),
            percentile(&paced_latencies, 0.5),
        ),
        (
            "submit → complete at half rate, p99 (ms; lower is better)".into(),
            percentile(&paced_latencies, 0.99),
        ),
    ])
}

/// Submits tasks `0..n` (ids from `id`) in batches of `batch`, with at most `window` acks in
/// flight (keep it well under async-nats's 5,000 ack permits: see `EventLog::append_sealed`).
pub(crate) async fn submit_tasks(
    log: &EventLog,
    n: u64,
    batch: u64,
    window: usize,
    id: impl Fn(u64) -> String,
) -> Result<()> {
    append_in_batches(log, n, batch, window, |k| {
        Ok(Draft::new(Token::new(id(k))?, &task_payload(k))?)
    })
    .await
}

/// Appends the drafts `draft(0..n)` in batches of `batch` (`append_many`: a batch signature
/// each), with at most `window` acks in flight, and waits for every ack.
pub(crate) async fn append_in_batches(
    log: &EventLog,
    n: u64,
    batch: u64,
    window: usize,
    draft: impl Fn(u64) -> Result<Draft>,
) -> Result<()> {
    let mut i = 0;
    let mut pending = VecDeque::new();
    while i < n {
        let end = (i + batch).min(n);
        let drafts = (i..end).map(&draft).collect::<Result<Vec<_>>>()?;
        for (_, p) in log.append_many(drafts).await? {
            pending.push_back(p);
        }
        while pending.len() > window {
            if let Some(p) = pending.pop_front() {
                p.wait().await?;
            }
        }
        i = end;
    }
    while let Some(p) = pending.pop_front() {
        p.wait().await?;
    }
    Ok(())
}

pub(crate) fn task_payload(i: u64) -> TaskSubmitted {
    TaskSubmitted {
        capability: "test.run".into(),
        input: serde_json::json!({ "n": i }),
        lease_ms: Some(600_000),
        ..Default::default()
    }
}
/// Counts `task.completed` events: how the task bench sees progress without reading (and
/// verifying) the three other events of every task, which the raw baseline never reads either.
pub(crate) struct Completions {
    realm: Token,
}

impl Projection for Completions {
    type State = u64;
    fn name(&self) -> &str {
        "bench-completions"
    }
    fn filter(&self) -> SubjectFilter {
        murmur_subjects::EventType::of::<murmur_subjects::events::TaskCompleted>()
            .filter(Some(&self.realm))
    }
    fn apply(&self, state: &mut u64, _: &VerifiedEvent) -> Result<(), Refusal> {
        *state += 1;
        Ok(())
    }
}

/// CPU time spent by this process and by the local nats-server over a phase, from
/// `/proc/PID/stat` (user + system, in the kernel's USER_HZ ticks: 100 a second on Linux,
/// so a phase of a few seconds is resolved to about 1%). It counts every participant in
/// the process, whatever thread runs it, which a rate on a shared 2-core VM does not:
/// the rate moves with the neighbours, the CPU a task costs much less.
struct CpuSpan {
    server: Option<u32>,
    at_start: (Option<f64>, Option<f64>),
}

impl CpuSpan {
    fn start(server: Option<u32>) -> Self {
        Self {
            server,
            at_start: (
                crate::cpu_seconds("self"),
                server.and_then(|p| crate::cpu_seconds(&p.to_string())),
            ),
        }
    }

    /// Microseconds of CPU per task (this process, the server) since the start.
    fn per_task(&self, tasks: u64) -> (Option<f64>, Option<f64>) {
        let per = |start: Option<f64>, now: Option<f64>| {
            Some((now? - start?) * 1e6 / tasks.max(1) as f64)
        };
        (
            per(self.at_start.0, crate::cpu_seconds("self")),
            per(
                self.at_start.1,
                self.server.and_then(|p| crate::cpu_seconds(&p.to_string())),
            ),
        )
    }
}

fn micros(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |us| format!("{us:.0} µs"))
}

/// Idle agents run side by side for the shared-memory figure.
const IDLE_AGENTS: usize = 5;

/// When an agent process counts as idle: it joined within half a second, gave back its
/// startup pages 2 s after joining, and has heartbeated a few times since.
const IDLE_AFTER: Duration = Duration::from_secs(6);

/// An agent process's memory, from `/proc/PID/smaps_rollup`, in KiB.
#[derive(Debug, Clone, Copy)]
struct IdleMemory {
    rss_kib: f64,
    /// Proportional set size: shared pages divided among the processes mapping them.
    pss_kib: f64,
    anon_kib: f64,
}

fn idle_memory(pid: u32) -> Option<IdleMemory> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
    };
    Some(IdleMemory {
        rss_kib: field("Rss:")?,
        pss_kib: field("Pss:")?,
        anon_kib: field("Anonymous:")?,
    })
}
