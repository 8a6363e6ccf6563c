//! `murmur agent run`: one agent of a kind, until ctrl-c or SIGTERM (then it leaves).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_agents::handlers::{EventHandlers, run_handlers};
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::routing::validate_capability;
use murmur_subjects::EventLog;
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
    /// Agent kind: planner, compiler, executor, tool, inference, memory, orchestrator, mcp or
    /// bridge (each
    /// with its options below), or any other name: an agent that runs the built-in test
    /// handler (`--builtin-handler`) or only joins, heartbeats and leaves. Its role follows
    /// from the kind.
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
    #[arg(
        long,
        default_value_t = 600,
        help_heading = "Pipeline kinds (planner, compiler, executor)"
    )]
    pub compile_timeout_s: u64,
    /// Longest an executor lets one test binary run, in seconds.
    #[arg(
        long,
        default_value_t = 120,
        help_heading = "Pipeline kinds (planner, compiler, executor)"
    )]
    pub test_timeout_s: u64,
    /// On SIGTERM / ctrl-c, how long attempts already running may take to finish and
    /// report (no new ones start) before they are stopped and left to lease expiry.
    #[arg(long, default_value_t = 30)]
    pub drain_grace_s: u64,
    /// Address-space limit of a test binary run by an executor, in MiB.
    #[arg(
        long,
        default_value_t = 2048,
        help_heading = "Pipeline kinds (planner, compiler, executor)"
    )]
    pub test_memory_mib: u64,
    /// The GGUF model file (llama, qwen2, qwen3, phi3 or gemma3 architecture) it runs
    /// `llm.generate` tasks with. Loaded before joining.
    #[arg(
        long,
        value_name = "GGUF",
        help_heading = "Inference agents (--kind inference)"
    )]
    pub model: Option<std::path::PathBuf>,
    /// An accelerator this machine has, by model name (repeatable): replaces the detected
    /// ones (NVIDIA GPUs through nvidia-smi, AMD ones through sysfs).
    #[arg(long = "accelerator", value_name = "NAME")]
    pub accelerators: Vec<String>,
    /// Accelerator memory in MiB, summed: replaces the detected figure.
    #[arg(long, value_name = "MIB")]
    pub vram_mib: Option<u64>,
    /// The directory its `tool.fs` operations are confined to (offers `tool.fs`).
    #[arg(long, value_name = "DIR", help_heading = "Tool agents (--kind tool)")]
    pub root: Option<std::path::PathBuf>,
    /// Allow `write` (read-only without it).
    #[arg(long, help_heading = "Tool agents (--kind tool)")]
    pub writable: bool,
    /// A program `tool.exec` may run, by name, found in /usr/local/bin, /usr/bin or /bin
    /// (repeatable; offers `tool.exec`). Each run gets a private temporary directory, a
    /// cleared environment and the limits below; as root, it runs as nobody.
    #[arg(long, value_name = "NAME", help_heading = "Tool agents (--kind tool)")]
    pub exec_allow: Vec<String>,
    /// Wall-clock (and CPU) seconds a `tool.exec` command may take before its process
    /// group is killed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..), help_heading = "Tool agents (--kind tool)")]
    pub exec_timeout_s: u64,
    /// Address space of each `tool.exec` process, in MiB.
    #[arg(
        long,
        default_value_t = 512,
        help_heading = "Tool agents (--kind tool)"
    )]
    pub exec_memory_mib: u64,
    /// Processes or threads a `tool.exec` command may start.
    #[arg(long, default_value_t = 16, help_heading = "Tool agents (--kind tool)")]
    pub exec_max_processes: u64,
    /// Bytes of a `tool.exec` command's standard output and of its standard error kept,
    /// each, in KiB (the rest is counted, not kept).
    #[arg(long, default_value_t = 64, help_heading = "Tool agents (--kind tool)")]
    pub exec_output_kib: usize,
    /// The Synadia Agent Protocol agent (its name) whose prompts run this
    /// agent's tasks; found through `$SRV.INFO.agents` before joining.
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Bridge agents (--kind bridge)"
    )]
    pub protocol_agent: Option<String>,
    /// Only the protocol agent with this owner.
    #[arg(
        long,
        value_name = "OWNER",
        help_heading = "Bridge agents (--kind bridge)"
    )]
    pub protocol_owner: Option<String>,
    /// An attempt fails when the protocol agent sends nothing for this
    /// many seconds.
    #[arg(
        long,
        default_value_t = 120,
        help_heading = "Bridge agents (--kind bridge)"
    )]
    pub protocol_inactivity_s: u64,
    /// The MCP server to offer as tools, started as a child process spoken to
    /// over stdio: its command line (e.g. "python server.py").
    #[arg(long, value_name = "COMMAND", help_heading = "MCP agents (--kind mcp)")]
    pub mcp_command: Option<String>,
    /// The MCP server's streamable HTTP endpoint instead.
    #[arg(long, value_name = "URL", help_heading = "MCP agents (--kind mcp)")]
    pub mcp_url: Option<String>,
    /// Seconds between snapshots of the spaces they replicate (0: never).
    #[arg(
        long,
        default_value_t = 300,
        help_heading = "Memory agents (--kind memory)"
    )]
    pub snapshot_every_s: u64,
    /// A sentence-embedding model directory (all-MiniLM-L6-v2 as `scripts/install.sh`
    /// installs it under models/): `tool.memory` recall ranks by meaning as well as by
    /// words. Loaded before joining.
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "Memory agents (--kind memory)"
    )]
    pub embedding_model: Option<std::path::PathBuf>,
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

/// This machine's hardware as every agent process announces it in its manifest, with what
/// the operator declared (`--accelerator`, `--vram-mib`) over what is detected.
pub(crate) fn hardware(declared: &murmur_agents::hardware::Declared) -> Hardware {
    murmur_agents::hardware::detect(declared)
}

/// What an inference agent offers unless told otherwise (`murmur_agents::inference`'s
/// generate and score capabilities).
const INFERENCE_CAPABILITIES: [&str; 2] = ["llm.generate", "llm.score"];

#[cfg(feature = "inference")]
pub(crate) type LoadedModel = std::sync::Arc<murmur_agents::inference::GgufModel>;
#[cfg(not(feature = "inference"))]
pub(crate) type LoadedModel = std::convert::Infallible;

/// Loads the model of an inference agent (on a blocking thread: it reads the whole file).
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

/// Loads a memory agent's sentence-embedding model (on a blocking thread).
#[cfg(feature = "inference")]
async fn load_embedder(
    dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn murmur_agents::recall::Embedder>> {
    let dir = dir.to_path_buf();
    let embedder = tokio::task::spawn_blocking(move || {
        murmur_agents::inference::embed::SentenceEmbedder::load(&dir)
    })
    .await??;
    eprintln!(
        "embedding model loaded: {} ({} dimensions, sha256 {})",
        embedder.name(),
        embedder.dimension(),
        embedder.sha256()
    );
    Ok(std::sync::Arc::new(embedder))
}

#[cfg(not(feature = "inference"))]
async fn load_embedder(
    _dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn murmur_agents::recall::Embedder>> {
    bail!("this murmur was built without the `inference` feature (--embedding-model needs it)")
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
fn inference_handler(model: LoadedModel) -> murmur_agents::worker::Handler {
    murmur_agents::inference::generate_handler(model)
}

#[cfg(not(feature = "inference"))]
fn inference_handler(model: LoadedModel) -> murmur_agents::worker::Handler {
    match model {}
}

/// A tool agent's handler: each attempt goes to the tool of its capability.
fn tool_handler(
    fs: Option<std::sync::Arc<murmur_agents::tool::FsTool>>,
    exec: Option<std::sync::Arc<murmur_agents::exec::ExecTool>>,
) -> murmur_agents::worker::Handler {
    let fs = fs.map(murmur_agents::tool::fs_handler);
    let exec = exec.map(murmur_agents::exec::exec_handler);
    std::sync::Arc::new(move |ctx: murmur_agents::worker::TaskContext| {
        let chosen = if ctx.capability == murmur_agents::exec::EXEC_CAPABILITY {
            exec.as_ref()
        } else {
            fs.as_ref()
        };
        match chosen.or(fs.as_ref()).or(exec.as_ref()) {
            Some(handler) => handler(ctx),
            None => Box::pin(async { Err("this tool agent offers no tool".to_string()) }),
        }
    })
}

/// The kind of agent `murmur agent run` runs, decided once from `--kind` and the kind's own
/// flags: what it offers, what it handles, which role it holds and how it runs.
pub enum AgentKind {
    /// `memory`: a replica of every space, serving queries and sync, and `tool.memory`
    /// recall tasks.
    Memory {
        /// Seconds between snapshots (`None`: never).
        snapshot_every: Option<Duration>,
        /// What recall ranks meaning with, when `--embedding-model` is given.
        embedder: Option<std::sync::Arc<dyn murmur_agents::recall::Embedder>>,
    },
    /// Any kind with `--builtin-handler`: the built-in test handler.
    Builtin(String),
    /// `inference`: a GGUF model, loaded before joining so a bad file fails the start.
    Inference(LoadedModel),
    /// `tool`: `tool.fs` confined to a root and/or `tool.exec` with its allowlist, checked
    /// before joining.
    Tool {
        /// `tool.fs`, with `--root`.
        fs: Option<std::sync::Arc<murmur_agents::tool::FsTool>>,
        /// `tool.exec`, with `--exec-allow`.
        exec: Option<std::sync::Arc<murmur_agents::exec::ExecTool>>,
    },
    /// `planner`, `compiler` or `executor`: the pipeline handlers.
    Pipeline(String),
    /// `orchestrator`: runs `assistant.ask` requests as plans of other agents' tasks.
    Orchestrator,
    /// `bridge`: runs its tasks by prompting an outside Synadia Agent Protocol agent.
    Bridge {
        /// The protocol agent's name.
        agent: String,
        /// Its owner, when one is asked for.
        owner: Option<String>,
        /// What discovery found ([`AgentKind::prepare`]).
        target: Option<murmur_agents::agent_protocol::Discovered>,
    },
    /// `mcp`: an outside MCP server's tools, one capability `mcp.{tool}` each.
    Mcp {
        /// Where the server is.
        server: murmur_agents::mcp::McpServer,
        /// Connected and listed ([`AgentKind::prepare`]).
        tools: Option<std::sync::Arc<murmur_agents::mcp::McpTools>>,
    },
    /// Any other kind: joins, heartbeats and leaves; handles nothing, so it is never routed
    /// a task.
    Idle(String),
}

/// The agent kind that offers an MCP server's tools.
pub const MCP_KIND: &str = "mcp";

/// The agent kind that bridges to a Synadia Agent Protocol agent.
pub const BRIDGE_KIND: &str = "bridge";

/// How long a bridge keeps looking for its protocol agent before it gives up.
const BRIDGE_DISCOVERY: Duration = Duration::from_secs(15);

/// The agent kind that serves knowledge spaces (`murmur_agents::memory`).
pub const MEMORY_KIND: &str = "memory";
/// The agent kind that serves tools (`murmur_agents::tool`).
pub const TOOL_KIND: &str = "tool";
/// The agent kind that runs the assistant's requests (`murmur ask`).
pub const ORCHESTRATOR_KIND: &str = "orchestrator";
/// The agent kind that runs a language model (`murmur_agents::inference`).
pub const INFERENCE_KIND: &str = "inference";

impl AgentKind {
    /// The kind `args` ask for; refuses flags that belong to another kind.
    pub async fn from_args(args: &AgentRunArgs) -> Result<Self> {
        let kind = args.kind.trim();
        if kind.is_empty() {
            bail!("--kind must not be empty");
        }
        if kind != INFERENCE_KIND && args.model.is_some() {
            bail!("--model is for --kind {INFERENCE_KIND}");
        }
        if kind != TOOL_KIND
            && (args.root.is_some() || args.writable || !args.exec_allow.is_empty())
        {
            bail!("--root, --writable and --exec-allow are for --kind {TOOL_KIND}");
        }
        if kind != MEMORY_KIND && args.embedding_model.is_some() {
            bail!("--embedding-model is for --kind {MEMORY_KIND}");
        }
        if kind != MCP_KIND && (args.mcp_command.is_some() || args.mcp_url.is_some()) {
            bail!("--mcp-command and --mcp-url are for --kind {MCP_KIND}");
        }
        if kind != BRIDGE_KIND && (args.protocol_agent.is_some() || args.protocol_owner.is_some()) {
            bail!("--protocol-agent and --protocol-owner are for --kind {BRIDGE_KIND}");
        }
        Ok(match kind {
            MEMORY_KIND => Self::Memory {
                snapshot_every: (args.snapshot_every_s > 0)
                    .then(|| Duration::from_secs(args.snapshot_every_s)),
                embedder: match &args.embedding_model {
                    Some(dir) => Some(load_embedder(dir).await?),
                    None => None,
                },
            },
            _ if args.builtin_handler => {
                if args.model.is_some() || args.root.is_some() {
                    bail!("--builtin-handler runs the test handler; drop --model / --root");
                }
                Self::Builtin(kind.to_string())
            }
            INFERENCE_KIND => Self::Inference(load_model(args.model.as_deref()).await?),
            ORCHESTRATOR_KIND => Self::Orchestrator,
            MCP_KIND => Self::Mcp {
                server: match (&args.mcp_command, &args.mcp_url) {
                    (Some(command), None) => murmur_agents::mcp::McpServer::Command(
                        shlex::split(command)
                            .filter(|argv| !argv.is_empty())
                            .context("--mcp-command is not a command line (check its quotes)")?,
                    ),
                    (None, Some(url)) => murmur_agents::mcp::McpServer::Url(url.clone()),
                    _ => bail!(
                        "--kind mcp needs one of --mcp-command \"PROGRAM ARGS\" (a stdio MCP server) or --mcp-url URL (streamable HTTP)"
                    ),
                },
                tools: None,
            },
            BRIDGE_KIND => Self::Bridge {
                agent: args.protocol_agent.clone().context(
                    "--kind bridge needs --protocol-agent NAME (a Synadia Agent Protocol agent's name)",
                )?,
                owner: args.protocol_owner.clone(),
                target: None,
            },
            TOOL_KIND => {
                if args.root.is_none() && args.exec_allow.is_empty() {
                    bail!(
                        "--kind tool needs --root DIR (tool.fs: the directory its file operations are confined to) and/or --exec-allow NAME (tool.exec: a program it may run)"
                    );
                }
                if args.writable && args.root.is_none() {
                    bail!("--writable makes --root writable; give --root DIR");
                }
                let fs = match &args.root {
                    Some(root) => Some(std::sync::Arc::new(murmur_agents::tool::FsTool::new(
                        root,
                        args.writable,
                    )?)),
                    None => None,
                };
                let exec = if args.exec_allow.is_empty() {
                    None
                } else {
                    Some(std::sync::Arc::new(murmur_agents::exec::ExecTool::new(
                        args.exec_allow.iter().cloned(),
                        murmur_agents::exec::ExecLimits {
                            timeout: Duration::from_secs(args.exec_timeout_s),
                            memory_bytes: args.exec_memory_mib << 20,
                            processes: args.exec_max_processes,
                            output_bytes: args.exec_output_kib << 10,
                            ..Default::default()
                        },
                    )?))
                };
                Self::Tool { fs, exec }
            }
            _ if murmur_agents::pipeline::default_capability(kind).is_some() => {
                Self::Pipeline(kind.to_string())
            }
            _ => Self::Idle(kind.to_string()),
        })
    }

    /// The kind's name, as its manifest and `murmur agents ls` show it.
    pub fn name(&self) -> &str {
        match self {
            Self::Memory { .. } => MEMORY_KIND,
            Self::Orchestrator => ORCHESTRATOR_KIND,
            Self::Inference(_) => INFERENCE_KIND,
            Self::Tool { .. } => TOOL_KIND,
            Self::Bridge { .. } => BRIDGE_KIND,
            Self::Mcp { .. } => MCP_KIND,
            Self::Builtin(kind) | Self::Pipeline(kind) | Self::Idle(kind) => kind,
        }
    }

    /// What it offers when no `--capability` is given.
    pub fn default_capabilities(&self) -> Vec<String> {
        match self {
            Self::Memory { .. } => vec![
                "knowledge.query".into(),
                murmur_agents::recall::MEMORY_CAPABILITY.into(),
            ],
            Self::Inference(_) => INFERENCE_CAPABILITIES.map(String::from).to_vec(),
            Self::Orchestrator => vec![murmur_agents::assistant::ASK_CAPABILITY.into()],
            Self::Tool { fs, exec } => fs
                .as_ref()
                .map(|_| murmur_agents::tool::FS_CAPABILITY.to_string())
                .into_iter()
                .chain(
                    exec.as_ref()
                        .map(|_| murmur_agents::exec::EXEC_CAPABILITY.to_string()),
                )
                .collect(),
            Self::Pipeline(kind) => murmur_agents::pipeline::default_capability(kind)
                .map(String::from)
                .into_iter()
                .collect(),
            Self::Bridge { agent, .. } => vec![format!("agent.{agent}")],
            Self::Mcp { tools, .. } => tools.as_ref().map(|t| t.capabilities()).unwrap_or_default(),
            Self::Builtin(_) | Self::Idle(_) => Vec::new(),
        }
    }

    /// What must be found before joining: a bridge's protocol agent (retried for
    /// 15 s, so a bridge started with its agent finds it).
    pub async fn prepare(&mut self, client: &async_nats::Client) -> Result<()> {
        if let Self::Mcp { server, tools } = self {
            let connected = murmur_agents::mcp::McpTools::connect(server.clone()).await?;
            if connected.capabilities().is_empty() {
                bail!("the MCP server {} lists no tools", connected.server_name());
            }
            eprintln!(
                "MCP server {}: tools offered as {}",
                connected.server_name(),
                connected.capabilities().join(", ")
            );
            *tools = Some(std::sync::Arc::new(connected));
        }
        if let Self::Bridge {
            agent,
            owner,
            target,
        } = self
        {
            let until = tokio::time::Instant::now() + BRIDGE_DISCOVERY;
            while target.is_none() {
                *target = murmur_agents::agent_protocol::discover(
                    client,
                    agent,
                    owner.as_deref(),
                    Duration::from_millis(750),
                )
                .await?;
                if target.is_none() && tokio::time::Instant::now() >= until {
                    bail!(
                        "no Synadia Agent Protocol agent named {agent:?}{} answered $SRV.INFO.agents within {BRIDGE_DISCOVERY:?}; is it running, and may these credentials discover it (a worker's may)?",
                        owner
                            .as_deref()
                            .map(|o| format!(" owned by {o:?}"))
                            .unwrap_or_default()
                    );
                }
            }
            if let Some(found) = target {
                eprintln!(
                    "bridge to protocol agent {} (owner {}, instance {}, protocol {}) at {}",
                    found.agent,
                    found.owner,
                    found.instance_id,
                    found.protocol_version,
                    found.prompt_subject
                );
            }
        }
        Ok(())
    }

    /// The role it connects and acts with.
    pub fn role(&self) -> murmur_subjects::roles::Role {
        murmur_subjects::roles::Role::for_agent_kind(self.name())
    }

    /// Labels it joins with: an inference agent carries its model's, so tasks can ask for
    /// the model.
    pub fn labels(&self) -> BTreeMap<String, String> {
        match self {
            Self::Inference(model) => model_labels(model),
            Self::Mcp {
                tools: Some(tools), ..
            } => BTreeMap::from([("mcp_server".to_string(), tools.server_name())]),
            Self::Bridge {
                target: Some(found),
                ..
            } => BTreeMap::from([
                (
                    "protocol".to_string(),
                    format!("synadia-agent/{}", found.protocol_version),
                ),
                ("protocol_agent".to_string(), found.agent.clone()),
                ("protocol_owner".to_string(), found.owner.clone()),
            ]),
            _ => BTreeMap::new(),
        }
    }

    /// What it runs, registered before it joins: its manifest's `handles` are these
    /// handlers' types, so a kind without a task handler is never assigned a task it would
    /// only let expire. `compact`: a memory agent also purges what its snapshots cover.
    pub async fn handlers(
        &self,
        log: &EventLog,
        args: &AgentRunArgs,
        compact: bool,
    ) -> Result<EventHandlers> {
        let drain_grace = Duration::from_secs(args.drain_grace_s);
        let tasks = |handler| EventHandlers::new().tasks(handler, drain_grace);
        Ok(match self {
            Self::Memory {
                snapshot_every,
                embedder,
            } => {
                eprintln!(
                    "tool.memory recall by {}",
                    match embedder {
                        Some(e) => format!("meaning ({}) and words", e.model()),
                        None => "words (give --embedding-model DIR to rank by meaning too)".into(),
                    }
                );
                EventHandlers::new()
                    .knowledge(murmur_agents::memory::MemoryOptions {
                        snapshot_every: *snapshot_every,
                        compact,
                        ..Default::default()
                    })
                    .tasks(
                        murmur_agents::recall::recall_handler(log.clone(), embedder.clone()),
                        drain_grace,
                    )
            }
            Self::Builtin(_) => tasks(builtin_handler()),
            Self::Orchestrator => tasks(crate::cli::ask::orchestrator_handler(log.clone())),
            Self::Inference(model) => tasks(inference_handler(model.clone())),
            Self::Tool { fs, exec } => {
                if let Some(fs) = fs {
                    eprintln!(
                        "tool.fs over {} ({})",
                        fs.root().display(),
                        if args.writable {
                            "writable"
                        } else {
                            "read-only"
                        }
                    );
                }
                if let Some(exec) = exec {
                    let limits = exec.limits();
                    eprintln!(
                        "tool.exec of {} ({:?}, {} MiB, {} more processes, {} KiB of output kept)",
                        exec.allowed().join(", "),
                        limits.timeout,
                        limits.memory_bytes >> 20,
                        limits.processes,
                        limits.output_bytes >> 10
                    );
                }
                tasks(tool_handler(fs.clone(), exec.clone()))
            }
            Self::Pipeline(kind) => {
                let store = murmur_agents::artifacts::ArtifactStore::open(log).await?;
                match murmur_agents::pipeline::handler_for(
                    kind,
                    log.clone(),
                    store,
                    murmur_agents::pipeline::PipelineOptions {
                        compile_timeout: Duration::from_secs(args.compile_timeout_s),
                        test_timeout: Duration::from_secs(args.test_timeout_s),
                        test_memory_bytes: args.test_memory_mib << 20,
                        ..Default::default()
                    },
                ) {
                    Some(handler) => tasks(handler),
                    None => EventHandlers::new(),
                }
            }
            Self::Mcp { tools, .. } => tasks(murmur_agents::mcp::mcp_handler(
                tools.clone().context("the MCP server was not connected")?,
            )),
            Self::Bridge { target, .. } => {
                use murmur_agents::agent_protocol::{PromptSigner, connection_account};
                let client = log.client().clone();
                // Prompts carry a signed `Agent-Sender` where the server says which account
                // this connection is in; elsewhere they go unsigned.
                let signer = connection_account(&client)
                    .await
                    .map(|account| PromptSigner {
                        identity: log.identity().clone(),
                        account,
                        name: "murmur bridge".into(),
                    });
                tasks(murmur_agents::agent_protocol::bridge_handler(
                    client,
                    target
                        .clone()
                        .context("the bridge's protocol agent was not discovered")?,
                    Duration::from_secs(args.protocol_inactivity_s.max(1)),
                    signer,
                ))
            }
            Self::Idle(_) => EventHandlers::new(),
        })
    }
}

impl AgentRunArgs {
    /// What the operator declared about the machine.
    pub(crate) fn declared_hardware(&self) -> murmur_agents::hardware::Declared {
        murmur_agents::hardware::Declared {
            accelerators: self.accelerators.clone(),
            vram_mib: self.vram_mib,
        }
    }
}

/// Runs one agent until ctrl-c or SIGTERM, then leaves.
pub async fn run_agent(settings: &Settings, args: AgentRunArgs) -> Result<()> {
    let mut kind = AgentKind::from_args(&args).await?;
    for c in &args.capabilities {
        validate_capability(c).map_err(anyhow::Error::msg)?;
    }
    let cli_labels = parse_labels(&args.labels)?;
    let name = args.name.clone().unwrap_or_else(|| match &kind {
        // A bridge is listed under the protocol agent it stands for.
        AgentKind::Bridge { agent, .. } => agent.clone(),
        _ => kind.name().to_string(),
    });
    let (settings, identity) = settings
        .participant(args.ephemeral_identity, kind.role(), &name)
        .await?;
    let settings = &settings;
    let log = settings
        .open_log_as(&format!("murmur-agent-{}", kind.name()), identity)
        .await?;
    kind.prepare(log.client()).await?;
    let capabilities = if args.capabilities.is_empty() {
        kind.default_capabilities()
    } else {
        args.capabilities.clone()
    };
    for c in &capabilities {
        validate_capability(c).map_err(anyhow::Error::msg)?;
    }
    // Labels given on the command line win over the kind's.
    let mut labels = kind.labels();
    labels.extend(cli_labels);
    let handlers = kind.handlers(&log, &args, settings.may_purge()).await?;
    let spec = AgentSpec {
        manifest: AgentJoined {
            name,
            kind: kind.name().to_string(),
            capabilities,
            labels,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hardware: hardware(&args.declared_hardware()),
            slots: args.slots,
            handles: Some(handlers.types()),
        },
        heartbeat: Duration::from_millis(args.heartbeat_ms),
    };
    let agent = Agent::join(log, spec).await?;
    if matches!(kind, AgentKind::Inference(_)) {
        // Its generation counters are exported from the start, at zero until the first.
        agent.metrics().count_generations();
    }
    eprintln!(
        "agent {} joined as {} (realm {})",
        kind.name(),
        agent.id(),
        settings.realm
    );
    if let Some(addr) = &args.metrics_listen {
        let bound = crate::metrics_http::serve(addr, agent.metrics().clone())?;
        eprintln!("metrics at http://{bound}/metrics");
    }
    out!("{}", agent.id());
    let signals = shutdown_signals()?;
    let running = run_handlers(&agent, &handlers, signals.nth(1));
    tokio::select! {
        stats = running => {
            let stats = stats?;
            if matches!(kind, AgentKind::Memory { .. }) {
                let k = stats.knowledge;
                eprintln!(
                    "memory agent answered {} queries and {} sync requests, wrote {} snapshots, refused {} changes",
                    k.queries, k.sync_requests, k.snapshots, k.refused
                );
            }
        }
        // Dropping the worker stops its running attempts; their leases expire.
        _ = signals.nth(2) => {
            eprintln!("second signal: stopping the running attempts without waiting for them");
        }
    }
    agent.enter_lame_duck();
    agent.leave("shutdown").await?;
    eprintln!("agent left");
    Ok(())
}

/// Runs `murmur agent ...`.
pub async fn run(settings: &Settings, command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Run(args) => run_agent(settings, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> AgentRunArgs {
        let mut all = vec!["murmur", "agent", "run"];
        all.extend(argv);
        match Cli::try_parse_from(all).expect("parses").command {
            Command::Agent {
                command: AgentCommand::Run(args),
            } => args,
            _ => unreachable!("agent run"),
        }
    }

    async fn kind(argv: &[&str]) -> Result<AgentKind> {
        AgentKind::from_args(&args(argv)).await
    }

    #[tokio::test]
    async fn each_kind_knows_what_it_offers_handles_and_is() -> Result<()> {
        let workspace = tempfile::tempdir()?;
        let root = workspace.path().to_str().expect("utf-8");
        let tool = kind(&["--kind", "tool", "--root", root]).await?;
        assert_eq!(tool.default_capabilities(), ["tool.fs"]);
        assert_eq!(tool.role(), murmur_subjects::roles::Role::Tool);
        let both = kind(&["--kind", "tool", "--root", root, "--exec-allow", "wc"]).await?;
        assert_eq!(both.default_capabilities(), ["tool.fs", "tool.exec"]);
        let exec = kind(&["--kind", "tool", "--exec-allow", "wc"]).await?;
        assert_eq!(exec.default_capabilities(), ["tool.exec"]);
        let compiler = kind(&["--kind", "compiler"]).await?;
        assert!(matches!(compiler, AgentKind::Pipeline(_)));
        assert_eq!(compiler.default_capabilities(), ["compiler.rust"]);
        let memory = kind(&["--kind", "memory", "--builtin-handler"]).await?;
        assert!(matches!(memory, AgentKind::Memory { .. }));
        assert_eq!(
            memory.default_capabilities(),
            ["knowledge.query", "tool.memory"]
        );
        // The built-in handler replaces a pipeline kind's handler and its default offer.
        let tester = kind(&["--kind", "compiler", "--builtin-handler"]).await?;
        assert!(matches!(tester, AgentKind::Builtin(_)));
        assert!(tester.default_capabilities().is_empty());
        assert_eq!(tester.role(), murmur_subjects::roles::Role::Compiler);
        let orchestrator = kind(&["--kind", "orchestrator"]).await?;
        assert_eq!(orchestrator.default_capabilities(), ["assistant.ask"]);
        assert_eq!(
            orchestrator.role(),
            murmur_subjects::roles::Role::Orchestrator
        );
        let idle = kind(&["--kind", "idle"]).await?;
        assert!(matches!(idle, AgentKind::Idle(_)));
        assert_eq!(idle.role(), murmur_subjects::roles::Role::Worker);
        Ok(())
    }

    #[tokio::test]
    async fn a_flag_of_another_kind_is_refused_with_its_kind() {
        for (argv, expected) in [
            (
                &["--kind", "tool", "--model", "m.gguf"][..],
                "--model is for --kind inference",
            ),
            (
                &["--kind", "compiler", "--root", "/tmp"][..],
                "--root, --writable and --exec-allow are for --kind tool",
            ),
            (
                &["--kind", "compiler", "--exec-allow", "wc"][..],
                "--root, --writable and --exec-allow are for --kind tool",
            ),
            (&["--kind", "tool"][..], "--kind tool needs --root DIR"),
            (
                &["--kind", "tool", "--writable", "--exec-allow", "wc"][..],
                "give --root DIR",
            ),
            (
                &["--kind", "tool", "--exec-allow", "no-such-program"][..],
                "not a program in /usr/local/bin",
            ),
            (&["--kind", " "][..], "--kind must not be empty"),
        ] {
            let error = kind(argv).await.err().expect("refused").to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
    }
}
