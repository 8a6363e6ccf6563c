//! `murmur agent run`: one agent of a kind, until ctrl-c or SIGTERM (then it leaves).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::routing::validate_capability;
use murmur_subjects::events::{AgentJoined, Hardware};

use crate::cli::task::parse_labels;
use crate::settings::Settings;
use crate::signals::shutdown_signals;

/// `murmur agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join the cluster as one agent and run until ctrl-c / SIGTERM (then leave).
    Run(crate::cli::agent::AgentRunArgs),
}

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
pub async fn run_agent(settings: &Settings, mut args: AgentRunArgs) -> Result<()> {
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

/// Refuses an empty kind early (clap allows it).
pub fn check_kind(kind: &str) -> Result<()> {
    if kind.trim().is_empty() {
        bail!("--kind must not be empty");
    }
    Ok(())
}

/// Runs `murmur agent ...`.
pub async fn run(settings: &Settings, command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Run(args) => {
            check_kind(&args.kind)?;
            run_agent(settings, args).await
        }
    }
}
