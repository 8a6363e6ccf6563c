//! `murmur demo compile`: the distributed-compilation pipeline with real, separate processes.
//!
//! Starts nats-server (unless `NATS_URL` is set) and a coordinator in this process, then a
//! planner, two compilers and an executor as separate `murmur agent run` OS processes, each
//! with its own identity and temp dirs. Two sample workspaces (each: `mathlib`, and `app`
//! depending on it by path) are packed into the artifact store and handed to the planner,
//! which reads their manifests and submits build and test tasks. The compilers run the
//! machine's cargo, the executor runs the test binaries; source and binaries move only
//! through the Object Store. The good workspace builds and passes; the broken one comes back
//! with a failing test and a compile error as failed tasks carrying the tools' messages, and
//! the test of the crate that did not compile is cancelled. Exits non-zero otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_agents::artifacts::ArtifactStore;
use murmur_agents::pipeline::workspace::{self, SourceTree};
use murmur_coordination::coordinator::{
    CoordinatorConfig, CoordinatorProjection, CoordinatorView, run_coordinator,
};
use murmur_coordination::registry::AgentStatus;
use murmur_coordination::tasks::TaskState;
use murmur_subjects::clock::SystemClock;
use murmur_subjects::events::{TaskAssigned, TaskCompleted, TaskFailed, TaskSubmitted};
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, Projector, Token};
use tokio::io::AsyncBufReadExt;

use crate::demo::connect_or_start;
use crate::settings::Settings;
use murmur_testkit::authority::Issuer;

/// Long enough for two cold cargo builds per workspace on a slow machine.
const DEADLINE: Duration = Duration::from_secs(600);

/// A sample workspace (`tools/samples/<dir>`) embedded in the binary: both samples have
/// the same files, so the list is written once.
macro_rules! sample {
    ($dir:literal) => {
        [
            "Cargo.toml",
            "mathlib/Cargo.toml",
            "mathlib/src/lib.rs",
            "app/Cargo.toml",
            "app/src/lib.rs",
            "app/src/main.rs",
        ]
        .into_iter()
        .zip([
            include_bytes!(concat!("../../samples/", $dir, "/Cargo.toml")).as_slice(),
            include_bytes!(concat!("../../samples/", $dir, "/mathlib/Cargo.toml")).as_slice(),
            include_bytes!(concat!("../../samples/", $dir, "/mathlib/src/lib.rs")).as_slice(),
            include_bytes!(concat!("../../samples/", $dir, "/app/Cargo.toml")).as_slice(),
            include_bytes!(concat!("../../samples/", $dir, "/app/src/lib.rs")).as_slice(),
            include_bytes!(concat!("../../samples/", $dir, "/app/src/main.rs")).as_slice(),
        ])
        .map(|(path, bytes)| (path.to_string(), bytes.to_vec()))
        .collect::<SourceTree>()
    };
}

/// The good workspace and the broken one (a failing test in `mathlib`, a type error in `app`).
fn samples() -> Vec<(&'static str, SourceTree)> {
    vec![
        ("calc", sample!("calc")),
        ("calc-broken", sample!("calc-broken")),
    ]
}

/// An agent the demo started as a separate `murmur agent run` process.
pub(crate) struct AgentProcess {
    pub(crate) name: String,
    pub(crate) child: tokio::process::Child,
}

/// Enrols a participant with the role of agent kind `kind`, starts `murmur agent run
/// KIND --name NAME EXTRA...` as a separate process with its credentials, and waits until it
/// printed its id (it joined).
pub(crate) async fn spawn_agent(
    issuer: &Issuer,
    realm: &Token,
    data: &std::path::Path,
    kind: &str,
    name: &str,
    extra: &[&str],
) -> Result<AgentProcess> {
    let who = issuer
        .process_args(
            realm,
            murmur_subjects::roles::Role::for_agent_kind(kind),
            name,
            data,
        )
        .await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "--server",
            &issuer.servers().join(","),
            "--realm",
            realm.as_str(),
            "--data-dir",
        ])
        .arg(data.join(name))
        .args(&who)
        .args(["agent", "run", kind, "--name", name])
        .args(["--heartbeat-ms", "500"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting agent {name}"))?;
    if let Some(pid) = child.id() {
        murmur_testkit::children::track(pid);
    }
    let stdout = child.stdout.take().context("agent stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let id = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .with_context(|| format!("agent {name} did not join within 60 s"))??
        .with_context(|| format!("agent {name} exited before joining"))?;
    out!(
        "    {name:<12} pid {:<7} id {}…",
        child.id().unwrap_or(0),
        &id[..12.min(id.len())]
    );
    Ok(AgentProcess {
        name: name.into(),
        child,
    })
}

/// Sends SIGTERM to every agent (each drains and leaves with `agent.left`) and waits for
/// them; returns what did not stop cleanly.
pub(crate) async fn stop_agents(agents: &mut [AgentProcess]) -> Vec<String> {
    let mut problems = Vec::new();
    for a in agents.iter() {
        if let Some(pid) = a.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for a in agents.iter_mut() {
        let pid = a.child.id();
        match tokio::time::timeout(Duration::from_secs(20), a.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            other => problems.push(format!("agent {} did not stop cleanly: {other:?}", a.name)),
        }
        // Reaped (or killed on drop below): its pid may be reused by another process.
        if let Some(pid) = pid {
            murmur_testkit::children::untrack(pid);
        }
    }
    problems
}

/// One line per stored event of the flow, as it happens.
fn flow_line(ev: &murmur_subjects::VerifiedEvent, names: &BTreeMap<String, String>) -> String {
    let who = |id: &str| {
        names
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.chars().take(8).collect())
    };
    let task = ev.subject.aggregate().as_str().to_string();
    let detail = if let Ok(a) = ev.payload::<TaskAssigned>() {
        format!("→ {} (attempt {})", who(&a.agent), a.attempt)
    } else if let Ok(s) = ev.payload::<TaskSubmitted>() {
        format!("needs {} by {}", s.capability, who(ev.emitter()))
    } else if ev.payload::<TaskCompleted>().is_ok() || ev.record.ty.ends_with(".started") {
        format!("by {}", who(ev.emitter()))
    } else if let Ok(f) = ev.payload::<TaskFailed>() {
        format!(
            "by {}: {}",
            who(ev.emitter()),
            f.reason.lines().next().unwrap_or("")
        )
    } else {
        String::new()
    };
    format!(
        "    {} {:<27} {:<26} {detail}",
        ev.record
            .time
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default(),
        ev.record.ty.trim_start_matches("dev.murmur."),
        task
    )
}

fn step(n: usize, text: &str) {
    out!("[compile {n}] {text}");
}

/// Runs the compile demo on its own (`murmur demo compile`).
pub async fn run(settings: &Settings) -> Result<()> {
    let demo = connect_or_start(settings).await?;
    run_on(settings, &demo.issuer).await
}

/// A coordinator running in this process for one demo realm: the realm owner's process,
/// granted the coordinator role.
pub(crate) struct DemoCoordinator {
    /// Its log (also what the demo submits and reads with).
    pub(crate) platform: murmur_subjects::EventLog,
    /// Its public key.
    pub(crate) key: String,
    /// Send `true` to stop it.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// The coordinator: how many decisions it wrote.
    pub(crate) task: tokio::task::JoinHandle<Result<u64, murmur_subjects::LogError>>,
}

impl DemoCoordinator {
    /// Opens `realm` and starts the coordinator as its owner.
    pub(crate) async fn start(issuer: &Issuer, realm: &Token) -> Result<Self> {
        let platform = issuer
            .platform(realm, &[murmur_subjects::roles::Role::Coordinator])
            .await?;
        let key = platform.identity().public_key().to_string();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run_coordinator(
            platform.clone(),
            Arc::new(SystemClock),
            CoordinatorConfig::default(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Ok(Self {
            platform,
            key,
            stop,
            task,
        })
    }

    /// Submits each of `tasks` (id, capability, input) in `realm` with a single attempt, then
    /// follows the log for up to `limit` until every one is final. Returns the tasks as this
    /// coordinator's fold holds them, and whether they all ended in time.
    pub(crate) async fn run_once(
        &self,
        realm: &Token,
        tasks: &[(&str, &str, serde_json::Value)],
        limit: Duration,
    ) -> Result<(BTreeMap<String, murmur_coordination::tasks::Task>, bool)> {
        for (id, capability, input) in tasks {
            let submitted = TaskSubmitted {
                capability: capability.to_string(),
                input: input.clone(),
                max_attempts: Some(1),
                ..Default::default()
            };
            self.platform
                .append_expected(
                    Draft::new(Token::new(*id)?, &submitted)?,
                    Expected::NoEvents,
                )
                .await?;
        }
        let mut view = Projector::new(
            self.platform.clone(),
            CoordinatorProjection::new(realm.clone()),
        );
        let finished = view
            .follow_until(limit, |v| {
                tasks
                    .iter()
                    .all(|(id, ..)| v.tasks.tasks.get(*id).is_some_and(|t| t.state.is_final()))
            })
            .await?;
        Ok((view.take_state().tasks.tasks, finished))
    }
}

/// Runs the compile demo against a server that is already up (the main demo's).
pub async fn run_on(settings: &Settings, issuer: &Issuer) -> Result<()> {
    let realm = crate::demo::fresh_realm("compile")?;
    let DemoCoordinator {
        platform,
        key: coordinator_key,
        stop: stop_tx,
        task: coordinator,
    } = DemoCoordinator::start(issuer, &realm).await?;
    step(
        1,
        &format!(
            "coordinator running in realm {realm} (key {}…)",
            &coordinator_key[..12]
        ),
    );

    let data = tempfile::tempdir()?;
    step(2, "starting agents as separate processes");
    let mut agents = Vec::new();
    for (kind, name) in [
        ("planner", "planner"),
        ("compiler", "compiler-1"),
        ("compiler", "compiler-2"),
        ("executor", "executor"),
    ] {
        agents.push(spawn_agent(issuer, &realm, data.path(), kind, name, &[]).await?);
    }
    let mut view = Projector::new(platform.clone(), CoordinatorProjection::new(realm.clone()));
    ensure!(
        view.follow_until(Duration::from_secs(60), |v| {
            v.registry
                .agents
                .values()
                .filter(|a| a.status == AgentStatus::Online)
                .count()
                == 4
        })
        .await?,
        "the four agents never showed up in the registry"
    );

    // Print the flow as the events are stored.
    let names: BTreeMap<String, String> = view
        .state()
        .registry
        .agents
        .iter()
        .map(|(id, a)| (id.clone(), a.name.clone()))
        .chain([(coordinator_key.clone(), "demo".to_string())])
        .collect();
    // Print the flow as the events are stored (read back from the stream, so each stored
    // event shows once, whatever the writers retried).
    let flow_filter = murmur_subjects::SubjectFilter::plane(murmur_subjects::Plane::Evt)
        .realm(realm.clone())
        .domain(murmur_subjects::Domain::Task);
    let mut flow = platform
        .stream(&settings.log.history_stream)
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: flow_filter.to_string(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let codec_log = platform.clone();
    let printer = tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(Ok(msg)) = flow.next().await {
            let Ok(info) = msg.info() else { continue };
            let (seq, at) = (info.stream_sequence, info.published);
            if let Ok(ev) = codec_log.decode_stored(&msg, seq, Some(at)) {
                out!("{}", flow_line(&ev, &names));
            }
        }
    });

    let store = ArtifactStore::open(&platform).await?;
    let mut plans = Vec::new();
    for (name, tree) in samples() {
        let archive = workspace::pack(&tree)?;
        let source = store.put(&format!("{name}.tar"), &archive).await?;
        step(
            3,
            &format!(
                "uploaded workspace {name} ({} files, {} bytes) to the object store as sha256:{}…",
                tree.len(),
                source.size,
                &source.sha256[..12]
            ),
        );
        let id = Token::new(format!("plan-{name}"))?;
        platform
            .append_expected(
                Draft::new(
                    id.clone(),
                    &TaskSubmitted {
                        capability: workspace::PLANNER.into(),
                        input: serde_json::json!({ "source": source, "goal": "build-and-test" }),
                        max_attempts: Some(2),
                        ..Default::default()
                    },
                )?,
                Expected::NoEvents,
            )
            .await?;
        plans.push((name, id.to_string()));
    }
    step(4, "submitted both workspaces to the planner; event flow:");

    let settled = |v: &CoordinatorView| {
        let planned = plans
            .iter()
            .all(|(_, id)| v.tasks.tasks.get(id).is_some_and(|t| t.state.is_final()));
        planned
            && v.tasks.tasks.len() >= 2 + 2 * 4
            && v.tasks.tasks.values().all(|t| t.state.is_final())
    };
    let done = view.follow_until(DEADLINE, settled).await?;
    // Let the printer catch the last events of the flow.
    tokio::time::sleep(Duration::from_millis(200)).await;
    printer.abort();
    ensure!(done, "the pipeline did not settle within {DEADLINE:?}");

    step(5, "results:");
    let tasks = &view.state().tasks.tasks;
    let mut problems = Vec::new();
    let mut expect = |id_suffix: &str, plan: &str, want: &str, message: Option<&str>| {
        let prefix = tasks
            .get(&format!("plan-{plan}"))
            .and_then(|t| t.output.as_ref())
            .and_then(|o| o["tasks"][id_suffix].as_str())
            .map(str::to_string);
        let Some(task_id) = prefix else {
            problems.push(format!("{plan}: the planner did not plan {id_suffix}"));
            return;
        };
        let Some(t) = tasks.get(&task_id) else {
            problems.push(format!("{plan}: task {task_id} missing"));
            return;
        };
        let state = t.state.name();
        let shown = match (&t.state, t.failures.last()) {
            (TaskState::DeadLettered, Some(reason)) => {
                let first_lines: Vec<&str> = reason
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .take(4)
                    .collect();
                format!("failed:\n        {}", first_lines.join("\n        "))
            }
            (TaskState::Completed { .. }, _) => {
                let o = t.output.clone().unwrap_or_default();
                match (o["compile_ms"].as_u64(), o["runs"].as_array()) {
                    (Some(ms), _) => format!(
                        "completed: built in {ms} ms, test binaries stored: {}",
                        o["tests"].as_array().map_or(0, Vec::len)
                    ),
                    (_, Some(runs)) => format!(
                        "completed: {}",
                        runs.iter()
                            .filter_map(|r| r["summary"].as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    _ => "completed".into(),
                }
            }
            _ => state.to_string(),
        };
        out!("    {plan:<12} {id_suffix:<14} {shown}");
        if state != want {
            problems.push(format!("{plan}/{id_suffix}: expected {want}, got {state}"));
        }
        if let Some(m) = message
            && !t.failures.iter().any(|f| f.contains(m))
        {
            problems.push(format!("{plan}/{id_suffix}: no failure mentions {m:?}"));
        }
    };
    for id in ["build-mathlib", "build-app", "test-mathlib", "test-app"] {
        expect(id, "calc", "completed", None);
    }
    expect("build-mathlib", "calc-broken", "completed", None);
    expect(
        "test-mathlib",
        "calc-broken",
        "dead_lettered",
        Some("max picks the largest value"),
    );
    expect(
        "build-app",
        "calc-broken",
        "dead_lettered",
        Some("error[E0308]"),
    );
    expect("test-app", "calc-broken", "cancelled", None);

    // The view built live equals a replay of the log from sequence 1.
    let mut replay = Projector::new(platform.clone(), CoordinatorProjection::new(realm.clone()));
    replay.catch_up().await?;
    if replay.state().tasks != view.state().tasks {
        problems.push("the replayed task states differ from the live ones".into());
    }

    step(
        6,
        "stopping the agents (SIGTERM: each leaves with agent.left)",
    );
    problems.extend(stop_agents(&mut agents).await);
    let _ = stop_tx.send(true);
    coordinator.await??;
    if !problems.is_empty() {
        bail!("demo compile failed:\n  {}", problems.join("\n  "));
    }
    out!(
        "demo compile ok: {} tasks; the live task states equal a replay of the log",
        replay.state().tasks.tasks.len()
    );
    Ok(())
}
