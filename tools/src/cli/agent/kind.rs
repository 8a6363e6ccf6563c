//! [`AgentKind`]: what an agent of each kind offers, handles and runs, decided once from its
//! subcommand ([`KindCommand`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use murmur_agents::handlers::EventHandlers;
use murmur_subjects::EventLog;

use super::args::{CommonArgs, KindCommand, check_kind_name};
use super::models::{LoadedModel, inference_handler, load_embedder, load_model, model_labels};

/// What an inference agent offers unless told otherwise (`murmur_agents::inference`'s
/// generate and score capabilities).
const INFERENCE_CAPABILITIES: [&str; 2] = ["llm.generate", "llm.score"];

/// How long a bridge keeps looking for its protocol agent before it gives up.
const BRIDGE_DISCOVERY: Duration = Duration::from_secs(15);

/// The kind of agent `murmur agent run` runs: what it offers, what it handles, which role it
/// holds and how it runs.
pub enum AgentKind {
    /// `memory`: a replica of every space, serving queries and sync, and `tool.memory`
    /// recall tasks.
    Memory {
        /// Seconds between snapshots (`None`: never).
        snapshot_every: Option<Duration>,
        /// What recall ranks meaning with, when `--embedding-model` is given.
        embedder: Option<Arc<dyn murmur_agents::recall::Embedder>>,
    },
    /// A pipeline kind or any other kind with `--builtin-handler`: the built-in test handler.
    Builtin(String),
    /// `inference`: a GGUF model, loaded before joining so a bad file fails the start.
    Inference(LoadedModel),
    /// `tool`: `tool.fs` confined to a root and/or `tool.exec` with its allowlist, checked
    /// before joining.
    Tool {
        /// `tool.fs`, with `--root`.
        fs: Option<Arc<murmur_agents::tool::FsTool>>,
        /// `tool.exec`, with `--exec-allow`.
        exec: Option<Arc<murmur_agents::exec::ExecTool>>,
    },
    /// `planner`, `compiler` or `executor`: the pipeline handlers.
    Pipeline {
        /// Which of the three.
        kind: &'static str,
        /// Its limits.
        options: murmur_agents::pipeline::PipelineOptions,
    },
    /// `orchestrator`: runs `assistant.ask` requests as plans of other agents' tasks.
    Orchestrator,
    /// `bridge`: runs its tasks by prompting an outside Synadia Agent Protocol agent.
    Bridge {
        /// The protocol agent's name.
        agent: String,
        /// Its owner, when one is asked for.
        owner: Option<String>,
        /// An attempt fails after this long without a word from the protocol agent.
        inactivity: Duration,
        /// What discovery found ([`AgentKind::prepare`]).
        target: Option<murmur_agents::agent_protocol::Discovered>,
    },
    /// `mcp`: an outside MCP server's tools, one capability `mcp.{tool}` each.
    Mcp {
        /// Where the server is.
        server: murmur_agents::mcp::McpServer,
        /// Connected and listed ([`AgentKind::prepare`]).
        tools: Option<Arc<murmur_agents::mcp::McpTools>>,
    },
    /// Any other kind without `--builtin-handler`: joins, heartbeats and leaves; handles
    /// nothing, so it is never routed a task.
    Idle(String),
}

impl AgentKind {
    /// The kind `command` asks for, with the options every kind takes. Loads what must be
    /// loaded before joining (a model, an embedder) and checks a tool agent's root and
    /// allowlist.
    pub async fn from_command(command: KindCommand) -> Result<(Self, CommonArgs)> {
        let pipeline = |kind, builtin: bool, options| {
            if builtin {
                Self::Builtin(String::from(kind))
            } else {
                Self::Pipeline { kind, options }
            }
        };
        let defaults = murmur_agents::pipeline::PipelineOptions::default;
        Ok(match command {
            KindCommand::Planner(a) => (
                pipeline("planner", a.builtin.builtin_handler, defaults()),
                a.common,
            ),
            KindCommand::Compiler(a) => (
                pipeline(
                    "compiler",
                    a.builtin.builtin_handler,
                    murmur_agents::pipeline::PipelineOptions {
                        compile_timeout: Duration::from_secs(a.compile_timeout_s),
                        ..defaults()
                    },
                ),
                a.common,
            ),
            KindCommand::Executor(a) => (
                pipeline(
                    "executor",
                    a.builtin.builtin_handler,
                    murmur_agents::pipeline::PipelineOptions {
                        test_timeout: Duration::from_secs(a.test_timeout_s),
                        test_memory_bytes: a.test_memory_mib << 20,
                        ..defaults()
                    },
                ),
                a.common,
            ),
            KindCommand::Tool(a) => {
                if a.root.is_none() && a.exec_allow.is_empty() {
                    bail!(
                        "murmur agent run tool needs --root DIR (tool.fs: the directory its file operations are confined to) and/or --exec-allow NAME (tool.exec: a program it may run)"
                    );
                }
                let fs = match &a.root {
                    Some(root) => Some(Arc::new(murmur_agents::tool::FsTool::new(
                        root, a.writable,
                    )?)),
                    None => None,
                };
                let exec = if a.exec_allow.is_empty() {
                    None
                } else {
                    Some(Arc::new(murmur_agents::exec::ExecTool::new(
                        a.exec_allow.iter().cloned(),
                        murmur_agents::exec::ExecLimits {
                            timeout: Duration::from_secs(a.exec_timeout_s),
                            memory_bytes: a.exec_memory_mib << 20,
                            processes: a.exec_max_processes,
                            output_bytes: a.exec_output_kib << 10,
                            ..Default::default()
                        },
                    )?))
                };
                (Self::Tool { fs, exec }, a.common)
            }
            KindCommand::Inference(a) => {
                let model = a.model.context(
                    "murmur agent run inference needs --model FILE.gguf (a llama, qwen2, qwen3, phi3 or gemma3 GGUF model)",
                )?;
                (Self::Inference(load_model(&model).await?), a.common)
            }
            KindCommand::Memory(a) => (
                Self::Memory {
                    snapshot_every: (a.snapshot_every_s > 0)
                        .then(|| Duration::from_secs(a.snapshot_every_s)),
                    embedder: match &a.embedding_model {
                        Some(dir) => Some(load_embedder(dir).await?),
                        None => None,
                    },
                },
                a.common,
            ),
            KindCommand::Orchestrator(a) => (Self::Orchestrator, a.common),
            KindCommand::Mcp(a) => {
                let server = match (&a.mcp_command, &a.mcp_url) {
                    (Some(command), _) => murmur_agents::mcp::McpServer::Command(
                        shlex::split(command)
                            .filter(|argv| !argv.is_empty())
                            .context("--mcp-command is not a command line (check its quotes)")?,
                    ),
                    (None, Some(url)) => murmur_agents::mcp::McpServer::Url(url.clone()),
                    (None, None) => bail!(
                        "murmur agent run mcp needs one of --mcp-command \"PROGRAM ARGS\" (a stdio MCP server) or --mcp-url URL (streamable HTTP)"
                    ),
                };
                (
                    Self::Mcp {
                        server,
                        tools: None,
                    },
                    a.common,
                )
            }
            KindCommand::Bridge(a) => (
                Self::Bridge {
                    agent: a.protocol_agent.context(
                        "murmur agent run bridge needs --protocol-agent NAME (a Synadia Agent Protocol agent's name)",
                    )?,
                    owner: a.protocol_owner,
                    inactivity: Duration::from_secs(a.protocol_inactivity_s),
                    target: None,
                },
                a.common,
            ),
            KindCommand::Other(argv) => {
                let (kind, a) = KindCommand::other(&argv).unwrap_or_else(|e| e.exit());
                check_kind_name(&kind)?;
                let kind = if a.builtin.builtin_handler {
                    Self::Builtin(kind)
                } else {
                    Self::Idle(kind)
                };
                (kind, a.common)
            }
        })
    }

    /// The kind's name, as its manifest and `murmur agents ls` show it.
    pub fn name(&self) -> &str {
        match self {
            Self::Memory { .. } => "memory",
            Self::Orchestrator => "orchestrator",
            Self::Inference(_) => "inference",
            Self::Tool { .. } => "tool",
            Self::Bridge { .. } => "bridge",
            Self::Mcp { .. } => "mcp",
            Self::Pipeline { kind, .. } => kind,
            Self::Builtin(kind) | Self::Idle(kind) => kind,
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
            Self::Pipeline { kind, .. } => murmur_agents::pipeline::default_capability(kind)
                .map(String::from)
                .into_iter()
                .collect(),
            Self::Bridge { agent, .. } => vec![format!("agent.{agent}")],
            Self::Mcp { tools, .. } => tools.as_ref().map(|t| t.capabilities()).unwrap_or_default(),
            Self::Builtin(_) | Self::Idle(_) => Vec::new(),
        }
    }

    /// The name it is listed under unless `--name` says otherwise: a bridge under the
    /// protocol agent it stands for, every other kind under its kind.
    pub fn default_name(&self) -> String {
        match self {
            Self::Bridge { agent, .. } => agent.clone(),
            _ => self.name().to_string(),
        }
    }

    /// What must be found before joining: an MCP server's tools, a bridge's protocol agent
    /// (retried for 15 s, so a bridge started with its agent finds it).
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
            *tools = Some(Arc::new(connected));
        }
        if let Self::Bridge {
            agent,
            owner,
            target,
            ..
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
    /// only let expire. `drain_grace`: how long running attempts may finish on shutdown.
    /// `compact`: a memory agent also purges what its snapshots cover.
    pub async fn handlers(
        &self,
        log: &EventLog,
        drain_grace: Duration,
        compact: bool,
    ) -> Result<EventHandlers> {
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
                        if fs.writable() {
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
            Self::Pipeline { kind, options } => {
                let store = murmur_agents::artifacts::ArtifactStore::open(log).await?;
                match murmur_agents::pipeline::handler_for(
                    kind,
                    log.clone(),
                    store,
                    options.clone(),
                ) {
                    Some(handler) => tasks(handler),
                    None => EventHandlers::new(),
                }
            }
            Self::Mcp { tools, .. } => tasks(murmur_agents::mcp::mcp_handler(
                tools.clone().context("the MCP server was not connected")?,
            )),
            Self::Bridge {
                target, inactivity, ..
            } => {
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
                    *inactivity,
                    signer,
                ))
            }
            Self::Idle(_) => EventHandlers::new(),
        })
    }
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

/// A tool agent's handler: each attempt goes to the tool of its capability.
fn tool_handler(
    fs: Option<Arc<murmur_agents::tool::FsTool>>,
    exec: Option<Arc<murmur_agents::exec::ExecTool>>,
) -> murmur_agents::worker::Handler {
    let fs = fs.map(murmur_agents::tool::fs_handler);
    let exec = exec.map(murmur_agents::exec::exec_handler);
    Arc::new(move |ctx: murmur_agents::worker::TaskContext| {
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
