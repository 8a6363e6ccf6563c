//! `murmur agent run` and `murmur agents ls`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_coordination::routing::validate_capability;
use murmur_subjects::Projector;
use murmur_subjects::events::{AgentJoined, Hardware};

use crate::cli::Settings;

/// `murmur agent run` arguments.
#[derive(Debug, clap::Args)]
pub struct AgentRunArgs {
    /// Agent kind (planner, compiler, executor, tool, memory, inference, ...).
    #[arg(long)]
    pub kind: String,
    /// Name shown in listings (defaults to the kind).
    #[arg(long)]
    pub name: Option<String>,
    /// A capability it offers, e.g. compiler.rust (repeatable).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    /// A label key=value (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Tasks it runs at once, announced in its manifest: coordinators assign it at most this
    /// many attempts in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub slots: u32,
    /// Use a fresh identity instead of the identity file (for running several agents).
    #[arg(long)]
    pub ephemeral_identity: bool,
    /// Run leased tasks with the built-in test handler: waits `sleep_ms` from the input if
    /// given, fails with the input's `fail` message if given, else returns the input.
    /// Without it, the kinds planner, compiler and executor run their pipeline handlers
    /// (and offer `planner`, `compiler.rust`, `executor.test` unless capabilities are given);
    /// other kinds only join, heartbeat and leave.
    #[arg(long)]
    pub builtin_handler: bool,
    /// Longest a compiler's build may take, in seconds.
    #[arg(long, default_value_t = 600)]
    pub compile_timeout_s: u64,
    /// Longest an executor lets one test binary run, in seconds.
    #[arg(long, default_value_t = 120)]
    pub test_timeout_s: u64,
    /// On SIGTERM / ctrl-c, how long attempts already running may take to finish and
    /// report (no new ones start) before they are stopped and left to lease expiry.
    #[arg(long, default_value_t = 30)]
    pub drain_grace_s: u64,
    /// Address-space limit of a test binary run by an executor, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub test_memory_mib: u64,
    /// `--kind inference`: the GGUF model file (llama, qwen2, qwen3, phi3 or gemma3 architecture) it runs
    /// `llm.generate` tasks with. Loaded before joining.
    #[arg(long, value_name = "GGUF")]
    pub model: Option<std::path::PathBuf>,
    /// `--kind tool`: the directory its `tool.fs` operations are confined to.
    #[arg(long, value_name = "DIR")]
    pub root: Option<std::path::PathBuf>,
    /// `--kind tool`: allow `write` (read-only without it).
    #[arg(long)]
    pub writable: bool,
    /// Memory agents: seconds between snapshots of the spaces they replicate (0: never).
    #[arg(long, default_value_t = 300)]
    pub snapshot_every_s: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// The built-in test handler (a no-op worker for demos, tests and benchmarks).
pub fn builtin_handler() -> murmur_agents::worker::Handler {
    murmur_agents::worker::handler(|ctx| async move {
        let input = ctx.input;
        {
            if let Some(ms) = input.get("sleep_ms").and_then(serde_json::Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(msg) = input.get("fail").and_then(serde_json::Value::as_str) {
                return Err(msg.to_string());
            }
            Ok(input)
        }
    })
}

/// This machine's cores and memory, as every agent process announces them in its manifest.
pub(crate) fn hardware() -> Hardware {
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb / 1024);
    Hardware {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mib,
        accelerators: vec![],
        vram_mib: 0,
    }
}

/// The agent kind that serves knowledge spaces (`murmur_agents::memory`).
pub const MEMORY_KIND: &str = "memory";

/// The agent kind that serves tools (`murmur_agents::tool`).
pub const TOOL_KIND: &str = "tool";

/// The agent kind that runs a language model (`murmur_agents::inference`).
pub const INFERENCE_KIND: &str = "inference";

/// What an inference agent offers unless told otherwise (`murmur_agents::inference`'s
/// generate and score capabilities).
const INFERENCE_CAPABILITIES: [&str; 2] = ["llm.generate", "llm.score"];

#[cfg(feature = "inference")]
pub(crate) type LoadedModel = std::sync::Arc<murmur_agents::inference::GgufModel>;
#[cfg(not(feature = "inference"))]
pub(crate) type LoadedModel = std::convert::Infallible;

/// Loads the model of `--kind inference` (on a blocking thread: it reads the whole file).
#[cfg(feature = "inference")]
pub(crate) async fn load_model(path: Option<&std::path::Path>) -> Result<LoadedModel> {
    let path = path
        .context("--kind inference needs --model FILE.gguf (a llama, qwen2, qwen3, phi3 or gemma3 GGUF model)")?
        .to_path_buf();
    let model =
        tokio::task::spawn_blocking(move || murmur_agents::inference::GgufModel::load(&path))
            .await??;
    eprintln!(
        "model loaded: {} {} (sha256 {})",
        model.architecture(),
        model.name().unwrap_or("(unnamed)"),
        model.sha256()
    );
    Ok(std::sync::Arc::new(model))
}

#[cfg(not(feature = "inference"))]
pub(crate) async fn load_model(_path: Option<&std::path::Path>) -> Result<LoadedModel> {
    bail!("this murmur was built without the `inference` feature")
}

#[cfg(feature = "inference")]
pub(crate) fn model_labels(model: &LoadedModel) -> BTreeMap<String, String> {
    model.labels()
}

#[cfg(not(feature = "inference"))]
pub(crate) fn model_labels(model: &LoadedModel) -> BTreeMap<String, String> {
    match *model {}
}

#[cfg(feature = "inference")]
fn inference_handler(
    model: LoadedModel,
    metrics: std::sync::Arc<murmur_agents::metrics::AgentMetrics>,
) -> murmur_agents::worker::Handler {
    murmur_agents::inference::generate_handler(model, Some(metrics))
}

#[cfg(not(feature = "inference"))]
fn inference_handler(
    model: LoadedModel,
    _metrics: std::sync::Arc<murmur_agents::metrics::AgentMetrics>,
) -> murmur_agents::worker::Handler {
    match model {}
}

/// Runs one agent until ctrl-c or SIGTERM, then leaves.
pub async fn run(settings: &Settings, mut args: AgentRunArgs) -> Result<()> {
    if args.capabilities.is_empty()
        && !args.builtin_handler
        && let Some(c) = murmur_agents::pipeline::default_capability(&args.kind)
    {
        args.capabilities.push(c.to_string());
    }
    if args.kind == MEMORY_KIND && args.capabilities.is_empty() {
        args.capabilities.push("knowledge.query".into());
    }
    // An inference agent loads its model before it joins: a bad file fails the start, not
    // every task routed to it.
    let inference = if args.kind == INFERENCE_KIND {
        if args.capabilities.is_empty() {
            args.capabilities
                .extend(INFERENCE_CAPABILITIES.map(String::from));
        }
        Some(load_model(args.model.as_deref()).await?)
    } else {
        if args.model.is_some() {
            bail!("--model is for --kind {INFERENCE_KIND}");
        }
        None
    };
    // A tool agent checks its root before it joins, as an inference agent its model.
    let tool = if args.kind == TOOL_KIND {
        if args.capabilities.is_empty() {
            args.capabilities
                .push(murmur_agents::tool::FS_CAPABILITY.into());
        }
        let root = args.root.as_deref().context(
            "--kind tool needs --root DIR (the directory its file operations are confined to)",
        )?;
        Some(std::sync::Arc::new(murmur_agents::tool::FsTool::new(
            root,
            args.writable,
        )?))
    } else {
        if args.root.is_some() || args.writable {
            bail!("--root and --writable are for --kind {TOOL_KIND}");
        }
        None
    };
    for c in &args.capabilities {
        validate_capability(c).map_err(anyhow::Error::msg)?;
    }
    // An inference agent carries its model's labels, so tasks can ask for the model; labels
    // given on the command line win.
    let mut labels = inference.as_ref().map(model_labels).unwrap_or_default();
    labels.extend(parse_labels(&args.labels)?);
    let (settings, identity) = settings
        .participant(
            args.ephemeral_identity,
            murmur_subjects::roles::Role::for_agent_kind(&args.kind),
            args.name.as_deref().unwrap_or(&args.kind),
        )
        .await?;
    let settings = &settings;
    let log = settings
        .open_log_as(&format!("murmur-agent-{}", args.kind), identity)
        .await?;
    // What it will handle, decided as below: it declares exactly that, so a kind without a
    // task handler is never assigned a task it would only let expire.
    let handles = if args.kind == MEMORY_KIND {
        murmur_agents::memory::handled_types()
    } else if args.builtin_handler
        || inference.is_some()
        || tool.is_some()
        || murmur_agents::pipeline::default_capability(&args.kind).is_some()
    {
        murmur_agents::worker::handled_types()
    } else {
        Vec::new()
    };
    let spec = AgentSpec {
        manifest: AgentJoined {
            name: args.name.clone().unwrap_or_else(|| args.kind.clone()),
            kind: args.kind.clone(),
            capabilities: args.capabilities.clone(),
            labels,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hardware: hardware(),
            slots: args.slots,
            handles: Some(handles),
        },
        heartbeat: Duration::from_millis(args.heartbeat_ms),
    };
    let agent = Agent::join(log, spec).await?;
    eprintln!(
        "agent {} joined as {} (realm {})",
        args.kind,
        agent.id(),
        settings.realm
    );
    if let Some(addr) = &args.metrics_listen {
        let bound = crate::metrics_http::serve(addr, agent.metrics().clone())?;
        eprintln!("metrics at http://{bound}/metrics");
    }
    out!("{}", agent.id());
    let signals = shutdown_signals()?;
    let stop = signals.nth(1);
    let handler = if args.builtin_handler {
        Some(builtin_handler())
    } else if let Some(model) = inference {
        Some(inference_handler(model, agent.metrics().clone()))
    } else if let Some(tool) = tool {
        eprintln!(
            "tool.fs over {} ({})",
            tool.root().display(),
            if args.writable {
                "writable"
            } else {
                "read-only"
            }
        );
        Some(murmur_agents::tool::fs_handler(tool))
    } else if murmur_agents::pipeline::default_capability(&args.kind).is_none() {
        None
    } else {
        let store = murmur_agents::artifacts::ArtifactStore::open(
            agent.log().jetstream(),
            settings.log.replicas,
        )
        .await?;
        murmur_agents::pipeline::handler_for(
            &args.kind,
            agent.log().clone(),
            store,
            murmur_agents::pipeline::PipelineOptions {
                compile_timeout: Duration::from_secs(args.compile_timeout_s),
                test_timeout: Duration::from_secs(args.test_timeout_s),
                test_memory_bytes: args.test_memory_mib << 20,
                ..Default::default()
            },
        )
    };
    if args.kind == MEMORY_KIND {
        let options = murmur_agents::memory::MemoryOptions {
            snapshot_every: (args.snapshot_every_s > 0)
                .then(|| Duration::from_secs(args.snapshot_every_s)),
            compact: settings.may_purge(),
            ..Default::default()
        };
        let stats = murmur_agents::memory::run_memory(&agent, options, stop).await?;
        eprintln!(
            "memory agent answered {} queries and {} sync requests, wrote {} snapshots, refused {} changes",
            stats.queries, stats.sync_requests, stats.snapshots, stats.refused
        );
        agent.enter_lame_duck();
        agent.leave("shutdown").await?;
        return Ok(());
    }
    match handler {
        Some(handler) => {
            let worker = murmur_agents::worker::run_worker(
                &agent,
                handler,
                stop,
                Duration::from_secs(args.drain_grace_s),
            );
            tokio::select! {
                done = worker => { done?; }
                // Dropping the worker stops its running attempts; their leases expire.
                _ = signals.nth(2) => {
                    eprintln!("second signal: stopping the running attempts without waiting for them");
                }
            }
        }
        None => stop.await,
    }
    agent.enter_lame_duck();
    agent.leave("shutdown").await?;
    eprintln!("agent left");
    Ok(())
}

/// Lists agents from the registry projection.
pub async fn ls(settings: &Settings, capability: Option<String>, labels: &[String]) -> Result<()> {
    let labels = parse_labels(labels)?;
    let log = settings.open_log("murmur-agents-ls").await?;
    let mut projector = Projector::new(
        log,
        RegistryProjection {
            realm: settings.realm.clone(),
        },
    );
    projector.catch_up().await?;
    let registry = projector.state();
    let rows: Vec<_> = registry
        .agents
        .iter()
        .filter(|(_, a)| {
            capability
                .as_ref()
                .is_none_or(|c| a.capabilities.contains(c))
                && labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
        })
        .collect();
    if settings.json {
        out!(
            "{}",
            serde_json::to_string_pretty(
                &rows
                    .iter()
                    .map(|(id, a)| serde_json::json!({"id": id, "agent": a}))
                    .collect::<Vec<_>>()
            )?
        );
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no agents in realm {}", settings.realm);
    }
    for (id, a) in rows {
        let status = match a.status {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Left => "left",
        };
        let handles = match &a.handles {
            None => "handles: undeclared".to_string(),
            Some(types) if types.is_empty() => "handles: none".to_string(),
            Some(types) => format!(
                "handles: {}",
                types
                    .iter()
                    .map(|t| t.strip_prefix("dev.murmur.").unwrap_or(t))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let slots = match a.slots {
            _ if !a.takes_tasks() => "no tasks".to_string(),
            1 => "1 slot".to_string(),
            n => format!("{n} slots"),
        };
        // Long values (a model's hash) shortened, as ids are elsewhere.
        let labels: String = a
            .labels
            .iter()
            .map(|(k, v)| match v.char_indices().nth(16) {
                Some((end, _)) => format!("  {k}={}…", &v[..end]),
                None => format!("  {k}={v}"),
            })
            .collect();
        out!(
            "{id}  {status:<8} {:<10} {:<16} {:<40} {} cores {} MiB {slots}  {handles}{labels}",
            a.kind,
            a.name,
            a.capabilities.iter().cloned().collect::<Vec<_>>().join(","),
            a.hardware.cores,
            a.hardware.memory_mib,
        );
    }
    Ok(())
}

/// Listens for ctrl-c and SIGTERM: how agent processes are told to leave.
pub fn shutdown_signals() -> Result<ShutdownSignals> {
    ShutdownSignals::listen()
}

/// Resolves on the first ctrl-c or SIGTERM.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    Ok(shutdown_signals()?.nth(1))
}

/// Counts ctrl-c and SIGTERM signals: the first asks an agent to drain and leave, a second
/// cuts the drain short.
pub struct ShutdownSignals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl ShutdownSignals {
    /// Starts listening (needs a tokio runtime).
    pub fn listen() -> Result<Self> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (tx, count) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => if r.is_err() { break },
                    s = term.recv() => if s.is_none() { break },
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Self { count })
    }

    /// Resolves once `n` signals have arrived (never, if signals cannot be received).
    pub fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + use<> {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|c| *c >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Refuses an empty kind early (clap allows it).
pub fn check_kind(kind: &str) -> Result<()> {
    if kind.trim().is_empty() {
        bail!("--kind must not be empty");
    }
    Ok(())
}

/// `murmur coordinator`: runs until ctrl-c.
pub async fn coordinator(settings: &Settings) -> Result<()> {
    let log = settings.open_log("murmur-coordinator").await?;
    eprintln!(
        "coordinator running for realm {} (ctrl-c to stop)",
        settings.realm
    );
    let written = murmur_coordination::coordinator::run_coordinator(
        log,
        std::sync::Arc::new(murmur_coordination::liveness::SystemClock),
        murmur_coordination::coordinator::CoordinatorConfig {
            ..Default::default()
        },
        async {
            tokio::signal::ctrl_c().await.ok();
        },
    )
    .await?;
    eprintln!("coordinator stopped after {written} decisions");
    Ok(())
}

/// `murmur task submit`: prints and returns the new task's id.
pub async fn submit(
    settings: &Settings,
    capability: String,
    input: &str,
    priority: u8,
    max_attempts: Option<u32>,
    lease_ms: Option<u64>,
    labels: &[String],
) -> Result<String> {
    validate_capability(&capability).map_err(anyhow::Error::msg)?;
    let labels = parse_labels(labels)?;
    let input: serde_json::Value = serde_json::from_str(input).context("--input is not JSON")?;
    let log = settings.open_log("murmur-task-submit").await?;
    let id = murmur_subjects::Token::new(format!("task-{}", uuid::Uuid::now_v7().simple()))?;
    let payload = murmur_subjects::events::TaskSubmitted {
        capability,
        input,
        priority,
        max_attempts,
        lease_ms,
        labels,
        ..Default::default()
    };
    log.append_expected(
        murmur_subjects::Draft::new(id.clone(), &payload)?,
        murmur_subjects::log::Expected::NoEvents,
    )
    .await?;
    out!("{id}");
    Ok(id.as_str().to_string())
}

/// `--label key=value` arguments as a map.
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for l in args {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// `murmur task ls` filters.
#[derive(Debug, Default, clap::Args)]
pub struct TaskLsArgs {
    /// Only tasks in this state (pending, assigned, running, completed, dead_lettered,
    /// cancelled; repeatable).
    #[arg(long = "state", value_parser = clap::builder::PossibleValuesParser::new(murmur_coordination::tasks::TaskState::NAMES))]
    pub states: Vec<String>,
    /// Only tasks needing this capability.
    #[arg(long)]
    pub capability: Option<String>,
    /// Only the tasks of this graph (the id `task graph submit` printed before each task).
    #[arg(long)]
    pub graph: Option<String>,
    /// Only the last N that match (tasks are listed oldest first).
    #[arg(long)]
    pub last: Option<usize>,
}

/// `murmur task ls`.
pub async fn task_ls(settings: &Settings, args: TaskLsArgs) -> Result<()> {
    let log = settings.open_log("murmur-task-ls").await?;
    let mut p = Projector::new(
        log,
        murmur_coordination::tasks::TaskProjection {
            realm: settings.realm.clone(),
        },
    );
    p.catch_up().await?;
    let book = p.state();
    let rows = task_rows(book, &args);
    if settings.json {
        // An array, in the order listed (a map would sort by id).
        let tasks: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(id, t)| serde_json::json!({ "id": id, "task": t }))
            .collect();
        out!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no tasks match in realm {}", settings.realm);
    }
    let width = rows.iter().map(|(id, _)| id.len()).max().unwrap_or(0);
    for (id, t) in rows {
        use murmur_coordination::tasks::TaskState;
        let who = match &t.state {
            TaskState::Assigned { agent, .. } | TaskState::Completed { agent } => {
                format!("  by {}", &agent[..agent.len().min(8)])
            }
            _ => String::new(),
        };
        out!(
            "{id:<width$}  {:<13} {:<20} attempt {}/{}  failures {}{who}",
            t.state.name(),
            t.requirements.capability,
            t.attempt,
            t.max_attempts,
            t.failures.len()
        );
    }
    Ok(())
}

/// The tasks `args` selects, in submission order (pure).
fn task_rows<'a>(
    book: &'a murmur_coordination::tasks::TaskBook,
    args: &TaskLsArgs,
) -> Vec<(&'a String, &'a murmur_coordination::tasks::Task)> {
    let graph_prefix = args.graph.as_ref().map(|g| format!("{g}-"));
    let mut rows: Vec<_> = book
        .tasks
        .iter()
        .filter(|(_, t)| args.states.is_empty() || args.states.iter().any(|s| s == t.state.name()))
        .filter(|(_, t)| {
            args.capability
                .as_ref()
                .is_none_or(|c| *c == t.requirements.capability)
        })
        .filter(|(id, _)| {
            graph_prefix
                .as_ref()
                .is_none_or(|g| id.starts_with(g.as_str()))
        })
        .collect();
    rows.sort_by_key(|(id, t)| (t.submitted_sequence, *id));
    if let Some(n) = args.last {
        rows.drain(..rows.len().saturating_sub(n));
    }
    rows
}

/// `murmur task show ID`: the task's timeline, every event of its aggregate in log order.
pub async fn task_show(settings: &Settings, id: &str) -> Result<()> {
    let log = settings.open_log("murmur-task-show").await?;
    let lines = crate::cli::aggregate_timeline(&log, murmur_subjects::Domain::Task, id).await?;
    if lines.is_empty() {
        bail!("no task {id} in realm {}", settings.realm);
    }
    for l in lines {
        out!("{l}");
    }
    Ok(())
}

/// A task graph file: TOML when its name ends in `.toml`, JSON otherwise.
fn parse_graph(
    file: &std::path::Path,
    text: &str,
) -> Result<murmur_coordination::graph::GraphSpec> {
    Ok(if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str(text).with_context(|| format!("parsing {}", file.display()))?
    } else {
        serde_json::from_str(text).with_context(|| format!("parsing {}", file.display()))?
    })
}

/// `murmur task cancel ID`.
pub async fn task_cancel(settings: &Settings, id: &str, reason: &str) -> Result<()> {
    let log = settings.open_log("murmur-task-cancel").await?;
    let mut p = Projector::new(
        log.clone(),
        murmur_coordination::tasks::TaskProjection {
            realm: settings.realm.clone(),
        },
    );
    p.catch_up().await?;
    let task = p
        .state()
        .tasks
        .get(id)
        .with_context(|| format!("no task {id}"))?;
    if task.state.is_final() {
        bail!("task {id} is already {}", task.state.name());
    }
    let draft = murmur_subjects::Draft::new(
        murmur_subjects::Token::new(id)?,
        &murmur_subjects::events::TaskCancelled {
            reason: reason.to_string(),
        },
    )?
    .caused_by_ids(
        task.correlation_id.clone(),
        task.last_event_id.clone(),
        None,
    );
    log.append_expected(
        draft,
        murmur_subjects::log::Expected::LastSequence(task.last_sequence),
    )
    .await?;
    out!("cancelled {id}");
    Ok(())
}

/// `murmur task graph submit FILE`.
pub async fn graph_submit(settings: &Settings, file: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec = parse_graph(file, &text)?;
    let log = settings.open_log("murmur-graph-submit").await?;
    let graph = format!("g{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    for (file_id, task_id) in
        murmur_coordination::submit::submit_graph(&log, &spec, &graph, None).await?
    {
        out!("{file_id}\t{task_id}");
    }
    eprintln!("graph {graph}: follow it with `murmur task ls --graph {graph}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ls_filters_by_state_capability_and_graph_in_submission_order() {
        use murmur_coordination::tasks::{Task, TaskBook, TaskState};
        let task = |seq: u64, capability: &str, state: TaskState| Task {
            submitter: "UA".into(),
            requirements: murmur_coordination::routing::Requirements {
                capability: capability.into(),
                ..Default::default()
            },
            priority: 0,
            max_attempts: 3,
            lease_ms: 1_000,
            attempt: 1,
            failures: vec![],
            state,
            submitted_sequence: seq,
            last_sequence: seq,
            input: serde_json::Value::Null,
            correlation_id: String::new(),
            last_event_id: String::new(),
            depends_on: vec![],
            fail_with_dependency: false,
            output: None,
        };
        let done = || TaskState::Completed { agent: "UW".into() };
        let mut book = TaskBook::default();
        // Ids that sort the other way round from their submission.
        book.tasks
            .insert("z-first".into(), task(1, "test.run", done()));
        book.tasks
            .insert("g1-build".into(), task(2, "compiler.rust", done()));
        book.tasks
            .insert("a-third".into(), task(3, "test.run", TaskState::Cancelled));
        book.tasks.insert(
            "g1-test".into(),
            task(4, "test.run", TaskState::DeadLettered),
        );
        let ids = |args: TaskLsArgs| -> Vec<String> {
            task_rows(&book, &args)
                .into_iter()
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert_eq!(
            ids(TaskLsArgs::default()),
            ["z-first", "g1-build", "a-third", "g1-test"]
        );
        let states = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            ids(TaskLsArgs {
                states: states(&["completed", "dead_lettered"]),
                ..Default::default()
            }),
            ["z-first", "g1-build", "g1-test"]
        );
        assert_eq!(
            ids(TaskLsArgs {
                capability: Some("test.run".into()),
                graph: Some("g1".into()),
                ..Default::default()
            }),
            ["g1-test"]
        );
        assert_eq!(
            ids(TaskLsArgs {
                last: Some(2),
                ..Default::default()
            }),
            ["a-third", "g1-test"]
        );
    }

    #[test]
    fn the_example_task_graph_is_a_valid_dag() {
        let path = std::path::Path::new("examples/task-graph.toml");
        let spec =
            parse_graph(path, include_str!("../../examples/task-graph.toml")).expect("parses");
        let graph = murmur_coordination::graph::TaskGraph::new(&spec).expect("valid");
        assert_eq!(graph.ready(&Default::default()), vec!["fetch".to_string()]);
        let fetched = ["fetch".to_string()].into();
        assert_eq!(
            graph.ready(&fetched),
            vec!["build".to_string(), "lint".to_string()]
        );
    }
}
