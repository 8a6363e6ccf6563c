//! `murmur agent run KIND`: one subcommand per agent kind, each with its own options and the
//! options every kind takes ([`CommonArgs`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Subcommand};

/// The kinds `murmur agent run` runs. Any other name is a worker kind ([`OtherArgs`]).
#[derive(Debug, Subcommand)]
pub enum KindCommand {
    /// Plans a Rust build (`planner`): the pipeline's first step.
    Planner(PlannerArgs),
    /// Builds a planned workspace into test binaries (`compiler.rust`).
    Compiler(CompilerArgs),
    /// Runs test binaries under limits (`executor.test`).
    Executor(ExecutorArgs),
    /// File operations under a root (`tool.fs`) and/or allowlisted programs (`tool.exec`).
    Tool(ToolArgs),
    /// A GGUF language model (`llm.generate`, `llm.score`), loaded before joining.
    Inference(InferenceArgs),
    /// A replica of every knowledge space: queries, sync, snapshots and `tool.memory` recall.
    Memory(MemoryArgs),
    /// Runs `murmur ask` requests (`assistant.ask`) as plans of other agents' tasks.
    Orchestrator(OrchestratorArgs),
    /// An MCP server's tools, one capability `mcp.{tool}` each.
    Mcp(McpArgs),
    /// Runs its tasks by prompting a Synadia Agent Protocol agent hosted elsewhere.
    Bridge(BridgeArgs),
    /// Any other kind name: a worker ([`OtherArgs`], parsed by [`KindCommand::other`]).
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// What every kind takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Name shown in listings (defaults to the kind).
    #[arg(long)]
    pub name: Option<String>,
    /// A capability it offers, e.g. compiler.rust (repeatable; replaces the kind's own).
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
    /// Keep the program's pages that only the start ran mapped (by default they are given
    /// back to the kernel two seconds after joining, which keeps an idle agent's RSS to
    /// what it runs while idle).
    #[arg(long)]
    pub keep_startup_pages: bool,
    /// On SIGTERM / ctrl-c, how long attempts already running may take to finish and
    /// report (no new ones start) before they are stopped and left to lease expiry.
    #[arg(long, default_value_t = 30)]
    pub drain_grace_s: u64,
    /// An accelerator this machine has, by model name (repeatable): replaces the detected
    /// ones (NVIDIA GPUs through nvidia-smi, AMD ones through sysfs).
    #[arg(long = "accelerator", value_name = "NAME")]
    pub accelerators: Vec<String>,
    /// Accelerator memory in MiB, summed: replaces the detected figure.
    #[arg(long, value_name = "MIB")]
    pub vram_mib: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl CommonArgs {
    /// What the operator declared about the machine.
    pub(crate) fn declared_hardware(&self) -> murmur_agents::hardware::Declared {
        murmur_agents::hardware::Declared {
            accelerators: self.accelerators.clone(),
            vram_mib: self.vram_mib,
        }
    }
}

/// `--builtin-handler`, for the kinds that run tasks through a handler of their kind's own.
#[derive(Debug, Clone, Args)]
pub struct BuiltinHandlerArg {
    /// Run leased tasks with the built-in test handler instead: waits `sleep_ms` from the
    /// input if given, fails with the input's `fail` message if given, else returns the
    /// input. It offers nothing unless `--capability` is given.
    #[arg(long)]
    pub builtin_handler: bool,
}

/// `murmur agent run planner`.
#[derive(Debug, Clone, Args)]
pub struct PlannerArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// `--builtin-handler`.
    #[command(flatten)]
    pub builtin: BuiltinHandlerArg,
}

/// `murmur agent run compiler`.
#[derive(Debug, Clone, Args)]
pub struct CompilerArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// `--builtin-handler`.
    #[command(flatten)]
    pub builtin: BuiltinHandlerArg,
    /// Longest a build may take, in seconds.
    #[arg(long, default_value_t = 600)]
    pub compile_timeout_s: u64,
}

/// `murmur agent run executor`.
#[derive(Debug, Clone, Args)]
pub struct ExecutorArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// `--builtin-handler`.
    #[command(flatten)]
    pub builtin: BuiltinHandlerArg,
    /// Longest one test binary may run, in seconds.
    #[arg(long, default_value_t = 120)]
    pub test_timeout_s: u64,
    /// Address-space limit of a test binary, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub test_memory_mib: u64,
}

/// `murmur agent run tool`: `--root` offers `tool.fs`, `--exec-allow` offers `tool.exec`
/// (at least one of them; checked by [`AgentKind::from_command`](super::AgentKind::from_command),
/// whose error says what each is for).
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The directory its `tool.fs` operations are confined to (offers `tool.fs`).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Allow `write` under `--root` (read-only without it).
    #[arg(long, requires = "root")]
    pub writable: bool,
    /// A program `tool.exec` may run, by name, found in /usr/local/bin, /usr/bin or /bin
    /// (repeatable; offers `tool.exec`). Each run gets a private temporary directory, a
    /// cleared environment and the limits below; as root, it runs as nobody.
    #[arg(long, value_name = "NAME")]
    pub exec_allow: Vec<String>,
    /// Wall-clock (and CPU) seconds a `tool.exec` command may take before its process
    /// group is killed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub exec_timeout_s: u64,
    /// Address space of each `tool.exec` process, in MiB.
    #[arg(long, default_value_t = 512)]
    pub exec_memory_mib: u64,
    /// Processes or threads a `tool.exec` command may start.
    #[arg(long, default_value_t = 16)]
    pub exec_max_processes: u64,
    /// Bytes of a `tool.exec` command's standard output and of its standard error kept,
    /// each, in KiB (the rest is counted, not kept).
    #[arg(long, default_value_t = 64)]
    pub exec_output_kib: usize,
}

/// `murmur agent run inference`.
#[derive(Debug, Clone, Args)]
pub struct InferenceArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The GGUF model file (llama, qwen2, qwen3, phi3 or gemma3 architecture) it runs
    /// `llm.generate` and `llm.score` tasks with (required). Loaded before joining.
    #[arg(long, value_name = "GGUF")]
    pub model: Option<PathBuf>,
}

/// `murmur agent run memory`.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds between snapshots of the spaces they replicate (0: never).
    #[arg(long, default_value_t = 300)]
    pub snapshot_every_s: u64,
    /// A sentence-embedding model directory (all-MiniLM-L6-v2 as `scripts/install.sh`
    /// installs it under models/): `tool.memory` recall ranks by meaning as well as by
    /// words. Loaded before joining.
    #[arg(long, value_name = "DIR")]
    pub embedding_model: Option<PathBuf>,
}

/// `murmur agent run orchestrator`.
#[derive(Debug, Clone, Args)]
pub struct OrchestratorArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `murmur agent run mcp`: one of `--mcp-command` and `--mcp-url`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("server").args(["mcp_command", "mcp_url"])))]
pub struct McpArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The MCP server to offer as tools, started as a child process spoken to over stdio:
    /// its command line (e.g. "python server.py").
    #[arg(long, value_name = "COMMAND")]
    pub mcp_command: Option<String>,
    /// The MCP server's streamable HTTP endpoint instead.
    #[arg(long, value_name = "URL")]
    pub mcp_url: Option<String>,
}

/// `murmur agent run bridge`.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The Synadia Agent Protocol agent (its name) whose prompts run this agent's tasks;
    /// found through `$SRV.INFO.agents` before joining (required).
    #[arg(long, value_name = "NAME")]
    pub protocol_agent: Option<String>,
    /// Only the protocol agent with this owner.
    #[arg(long, value_name = "OWNER")]
    pub protocol_owner: Option<String>,
    /// An attempt fails when the protocol agent sends nothing for this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub protocol_inactivity_s: u64,
}

/// `murmur agent run KIND` for any other KIND (e.g. `tester`): a worker. With
/// `--builtin-handler` it runs the built-in test handler; without, it only joins, heartbeats
/// and leaves, and is never routed a task. Its role is the one named like the kind (`voter`),
/// else `worker`.
#[derive(Debug, Clone, clap::Parser)]
pub struct OtherArgs {
    /// What every kind takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// `--builtin-handler`.
    #[command(flatten)]
    pub builtin: BuiltinHandlerArg,
}

impl KindCommand {
    /// Parses the arguments of a kind clap does not know (`argv[0]` is the kind's name):
    /// the kind and its [`OtherArgs`]. A clap error (or `--help`) is returned to be shown as
    /// clap shows its own.
    pub fn other(argv: &[String]) -> Result<(String, OtherArgs), clap::Error> {
        let kind = argv
            .first()
            .map(|k| k.trim().to_string())
            .unwrap_or_default();
        let mut command = OtherArgs::command().bin_name(format!("murmur agent run {kind}"));
        let matches = command
            .try_get_matches_from_mut(argv)
            .map_err(crate::cli::with_tips)?;
        let args = OtherArgs::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        Ok((kind, args))
    }
}

/// Refuses a kind name that cannot be one (empty, or shaped like a flag).
pub(crate) fn check_kind_name(kind: &str) -> Result<()> {
    if kind.is_empty() {
        bail!("the agent kind must not be empty: `murmur agent run KIND`");
    }
    if kind.starts_with('-') {
        bail!("{kind:?} is not an agent kind: `murmur agent run KIND [OPTIONS]`");
    }
    Ok(())
}
