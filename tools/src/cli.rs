//! The `murmur` command line.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::consumer;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use murmur_subjects::connect::ConnectOptions;
use murmur_subjects::events::{DeadLettered, Redriven};
use murmur_subjects::projection::{StartAt, read_stream};
use murmur_subjects::{
    Catalog, Draft, EventCodec, EventLog, Identity, LogConfig, Payload, SubjectFilter, Token,
    VerifiedEvent,
};

use crate::config::{AuthFlags, FileConfig, default_data_dir, load_or_create_identity};
use crate::nats_server::{NatsCluster, NatsProcess};

/// murmur: agents, coordinators and voters cooperating over NATS, with JetStream as the log.
#[derive(Debug, Parser)]
#[command(name = "murmur", version, about)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, env = "MURMUR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// NATS servers, comma-separated. Without one, `up` and `demo` start a local server.
    #[arg(long = "server", env = "NATS_URL", global = true)]
    pub servers: Option<String>,
    /// Realm (tenant) token.
    #[arg(long, env = "MURMUR_REALM", global = true)]
    pub realm: Option<String>,
    /// Seed file of this participant's identity (created if missing).
    #[arg(long, env = "MURMUR_IDENTITY", global = true)]
    pub identity: Option<PathBuf>,
    /// Data directory for the local server and identity.
    #[arg(long, env = "MURMUR_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, env = "MURMUR_LOG_LEVEL", default_value = "warn", global = true)]
    pub log_level: String,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Connection auth and TLS.
    #[command(flatten)]
    pub auth: AuthFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the local platform and run until ctrl-c: a nats-server with JetStream in
    /// operator mode (unless NATS_URL is set), the streams and buckets, the realm claimed by
    /// this identity, and its auditor, liveness monitor, coordinator, tallier and compactor.
    Up {
        /// Client port of the local server.
        #[arg(long, default_value_t = 4222)]
        port: u16,
        /// Start the local server open to anyone who can reach it, with every permission
        /// (no accounts, no credentials): for experiments only.
        #[arg(long)]
        insecure: bool,
    },
    /// Run the sample workflow end to end and exit 0 when it succeeded.
    Demo {
        /// Another demo instead of the main one.
        #[command(subcommand)]
        which: Option<DemoCommand>,
        /// Give up, stop what the demo started and exit non-zero when it has not finished
        /// after this many seconds (it takes 10–30 s; a hang must not go unnoticed).
        #[arg(long, global = true, default_value_t = 600)]
        deadline_s: u64,
    },
    /// Print the declared subject tree and event types; with `--roles`, what each role may
    /// publish and subscribe (the permissions the server enforces).
    Subjects {
        /// The role matrix instead of the subject tree.
        #[arg(long)]
        roles: bool,
    },
    /// Credentials for participants (the operator's, where `murmur up` keeps its data).
    Creds {
        /// What to do.
        #[command(subcommand)]
        command: crate::creds_cli::CredsCommand,
    },
    /// Roles in the log: grants and revocations signed by the realm's owner or an operator.
    Roles {
        /// What to do.
        #[command(subcommand)]
        command: crate::creds_cli::RolesCommand,
    },
    /// Live events.
    Events {
        /// What to do with events.
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Replay stored events over a range.
    Replay(ReplayArgs),
    /// Inspect and redrive dead letters.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run one agent.
    Agent {
        /// What to do.
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The agent registry.
    Agents {
        /// What to do.
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Run a coordinator (assigns tasks, expires leases, retries, dead-letters) until ctrl-c.
    Coordinator,
    /// Summarise the realm: agents (with their live $SRV.STATS counters), queues, tasks per
    /// state, throughput.
    Status {
        /// Throughput window in seconds.
        #[arg(long, default_value_t = 60)]
        window_s: u64,
    },
    /// Tasks.
    Task {
        /// What to do.
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Proposals and votes (consensus).
    Vote {
        /// What to do.
        #[command(subcommand)]
        command: VoteCommand,
    },
    /// Knowledge spaces: facts, conflicts, history, snapshots.
    Kb {
        /// What to do.
        #[command(subcommand)]
        command: crate::kb_cli::KbCommand,
    },
    /// Voter agents.
    Voter {
        /// What to do.
        #[command(subcommand)]
        command: VoterCommand,
    },
    /// Run a tallier (decides proposals from the votes in the log) until ctrl-c; also runs
    /// inside `murmur up`.
    Tallier,
    /// Print this participant's public key: its id, the `source` of the events it signs, what
    /// a proposer names with `--voter` (creates the identity file if missing).
    Identity,
    /// Language models for `murmur agent run --kind inference`.
    Inference {
        /// What to do.
        #[command(subcommand)]
        command: InferenceCommand,
    },
    /// Deployment graph → Nix flake.
    Flake {
        /// What to do.
        #[command(subcommand)]
        command: FlakeCommand,
    },
    /// Local NATS servers for development.
    Nats {
        /// What to do.
        #[command(subcommand)]
        command: NatsCommand,
    },
}

/// `murmur vote ...`
#[derive(Debug, Subcommand)]
pub enum VoteCommand {
    /// Open a proposal; prints its id.
    Propose(crate::vote_cli::ProposeArgs),
    /// List proposals.
    Ls {
        /// Only proposals in this state (repeatable).
        #[arg(long = "state", value_parser = clap::builder::PossibleValuesParser::new(
            murmur_coordination::consensus::Proposal::STATE_NAMES
        ))]
        states: Vec<String>,
    },
    /// One proposal: votes, refused votes, decision.
    Show {
        /// Proposal id.
        id: String,
    },
    /// Follow a proposal until it is decided or withdrawn: each vote as it is stored
    /// (voter, choice, reason), then the outcome and tally (`--json`: the proposal's state).
    /// Exit 0 only when it is approved.
    Watch {
        /// Proposal id.
        id: String,
        /// Give up after this many seconds (default: until 10 s after its deadline).
        #[arg(long)]
        timeout_s: Option<u64>,
    },
    /// Withdraw a proposal you opened.
    Withdraw {
        /// Proposal id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Adaptive protocol: each voter's response threshold per category (a voter answers a
    /// proposal whose stimulus reaches its threshold; voters not listed have the initial one).
    Thresholds {
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
    },
    /// Cast a vote as this participant; fails (the vote stays recorded as refused) when it
    /// does not count.
    Cast {
        /// Proposal id.
        id: String,
        /// approve | reject | abstain.
        choice: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `murmur inference ...`
#[derive(Debug, Subcommand)]
pub enum InferenceCommand {
    /// Write a tiny GGUF model with seeded random weights (it produces noise, not language):
    /// to try `agent run --kind inference --model FILE` without downloading anything.
    TestModel {
        /// Where to write it.
        path: std::path::PathBuf,
        /// Seed of its weights (the same seed writes the same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Architecture: llama, qwen2, qwen3, phi3 or gemma3.
        #[arg(long, default_value = "llama")]
        architecture: String,
        /// Vocabulary: byte-level (`gpt2`, as Llama 3 and Qwen) or sentencepiece (`llama`,
        /// as Llama 2, TinyLlama and Mistral).
        #[arg(long, default_value = "byte-level")]
        vocabulary: String,
        /// The context length it declares (runs are held to at most 4096 whatever a model
        /// declares).
        #[arg(long, default_value_t = 512)]
        context: u32,
    },
    /// Run a model here, without NATS: the text on stdout, tokens and speed on stderr (with
    /// `--json`, the `llm.generate` task output). To check a model file before an agent
    /// serves it.
    Generate(GenerateArgs),
}

/// `murmur inference generate`: the options an `llm.generate` task takes.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The GGUF model file.
    #[arg(long, value_name = "GGUF")]
    pub model: std::path::PathBuf,
    /// The prompt (with `--chat`: the user's message).
    pub prompt: String,
    /// Treat PROMPT as a user's message in a conversation, rendered with the model's chat
    /// template (instruct and chat models answer in their format).
    #[arg(long)]
    pub chat: bool,
    /// With `--chat`: a system message before it.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample among this many of the most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose probabilities reach this.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sampling seed (default: derived from the prompt, so a run repeats).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Penalise the last 64 tokens (1: off).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
}

/// `murmur voter ...`
#[derive(Debug, Subcommand)]
pub enum VoterCommand {
    /// Run a voter agent: by a policy or by a model.
    Run(crate::vote_cli::VoterRunArgs),
}

/// `murmur flake ...`
#[derive(Debug, Subcommand)]
pub enum FlakeCommand {
    /// Validate the graph and write flake.nix, hosts/*.nix and modules/ into DIR.
    Generate {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
        /// Output directory.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// Validate only; prints every problem.
    Check {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
    },
    /// Print the deployment as a graph.
    Graph {
        /// Deployment graph (.toml or .json).
        graph: PathBuf,
        /// Graphviz DOT (the only format so far).
        #[arg(long, default_value_t = true)]
        dot: bool,
    },
}

/// `murmur demo ...`
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// The distributed-compilation pipeline: a planner, two compilers and an executor as
    /// separate processes build and test two sample workspaces with the machine's cargo.
    Compile,
}

/// `murmur events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow new events as they are stored.
    Tail {
        /// Subject filter (NATS wildcards).
        #[arg(long)]
        subject: Option<String>,
        /// CloudEvent type.
        #[arg(long = "type")]
        ty: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Output formats of `replay`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// One readable line per event.
    Pretty,
    /// One JSON object per line.
    Jsonl,
}

/// `murmur replay`
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// First stream sequence (inclusive).
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Last stream sequence (inclusive).
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Start time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// End time (RFC 3339, exclusive).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Subject filter.
    #[arg(long)]
    pub subject: Option<String>,
    /// CloudEvent type.
    #[arg(long = "type")]
    pub ty: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `murmur dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    Ls {
        /// Only this reason (e.g. bad_signature).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show one dead letter by its sequence in the dead-letter stream.
    Show {
        /// Sequence.
        seq: u64,
    },
    /// Re-publish a dead letter's original message to its original subject.
    Redrive {
        /// Sequence.
        seq: u64,
    },
}

/// `murmur agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join the cluster as one agent and run until ctrl-c / SIGTERM (then leave).
    Run(crate::agent_cli::AgentRunArgs),
}

/// `murmur agents ...`
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents from the registry (a projection of the log).
    Ls {
        /// Only agents offering this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Only agents carrying this label key=value (repeatable: all of them).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
}

/// `murmur task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task.
    Submit {
        /// Capability it needs.
        #[arg(long)]
        capability: String,
        /// Input (JSON).
        #[arg(long, default_value = "null")]
        input: String,
        /// Priority (higher first).
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Attempts before dead-lettering.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Lease per attempt, ms.
        #[arg(long)]
        lease_ms: Option<u64>,
        /// A label key=value the agent must carry (repeatable), e.g. an inference agent's
        /// `model_sha256=…` or `model=…`.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Then watch it as `murmur task watch` does, until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a task until it ends: its states from the log and its running attempt's
    /// progress (an inference agent's text as it is generated); prints the output and exits
    /// 0 when it completed, 1 otherwise.
    Watch {
        /// Task id.
        id: String,
        /// Give up after this many seconds (default: wait until it ends).
        #[arg(long)]
        timeout_s: Option<u64>,
    },
    /// List tasks (replayed from the log), oldest first.
    Ls(crate::agent_cli::TaskLsArgs),
    /// Task graphs.
    Graph {
        /// What to do.
        #[command(subcommand)]
        command: GraphCommand,
    },
    /// Show one task's timeline from the log.
    Show {
        /// Task id.
        id: String,
    },
    /// Cancel a task; a worker running it stops the attempt.
    Cancel {
        /// Task id.
        id: String,
        /// Why.
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
}

/// `murmur task graph ...`
#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Validate a task graph file (JSON, or TOML by extension) and submit its tasks; children
    /// start when their parents complete and receive the parents' outputs.
    Submit {
        /// The graph file.
        file: PathBuf,
    },
}

/// `murmur nats ...`
#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Start a local development server or cluster and run until ctrl-c.
    Up {
        /// Number of nodes (1 or 3).
        #[arg(long, default_value_t = 1)]
        cluster: usize,
        /// Without accounts or credentials (anyone may do anything).
        #[arg(long)]
        insecure: bool,
    },
}

/// Settings after merging file, environment and flags.
#[derive(Clone)]
pub struct Settings {
    /// Connection, when a server was configured.
    pub connect: Option<ConnectOptions>,
    /// Realm.
    pub realm: Token,
    /// Whether the realm was chosen (flag, env or file) rather than defaulted; reads then
    /// default to every realm.
    pub realm_explicit: bool,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Identity seed file.
    pub identity_file: PathBuf,
    /// The credentials file given (flag, env, config file, or the operator's in the data
    /// dir), whether or not a server was.
    pub creds: Option<PathBuf>,
    /// Whether those are the operator's, taken from the data dir for want of others.
    pub creds_defaulted: bool,
    /// Whether the identity file was named (flag, env or file) rather than defaulted.
    pub identity_explicit: bool,
    /// Streams.
    pub log: LogConfig,
    /// Codec.
    pub codec: EventCodec,
    /// JSON output.
    pub json: bool,
}

impl Settings {
    /// Merges file < env < flags.
    pub fn resolve(cli: &Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        let base = match (&cli.servers, file.nats.clone()) {
            (Some(list), Some(mut f)) => {
                f.servers = ConnectOptions::servers(list).servers;
                Some(f)
            }
            (Some(list), None) => Some(ConnectOptions::servers(list)),
            (None, f) => f.filter(|f| !f.servers.is_empty()),
        };
        let mut connect = base.map(|b| cli.auth.apply(b)).transpose()?;
        // On the operator's machine, commands default to the credentials `murmur up` wrote.
        let mut creds_defaulted = false;
        if let Some(c) = &mut connect
            && c.auth == murmur_subjects::connect::Auth::None
        {
            let operator = data_dir.join(OPERATOR_CREDS);
            if operator.exists() {
                c.auth = murmur_subjects::connect::Auth::CredsFile { path: operator };
                creds_defaulted = true;
            }
        }
        let identity_explicit = cli.identity.is_some() || file.identity_file.is_some();
        let creds = match &connect {
            Some(c) => match &c.auth {
                murmur_subjects::connect::Auth::CredsFile { path } => Some(path.clone()),
                _ => None,
            },
            None => cli
                .auth
                .creds
                .clone()
                .or_else(|| match file.nats.as_ref().map(|n| &n.auth) {
                    Some(murmur_subjects::connect::Auth::CredsFile { path }) => Some(path.clone()),
                    _ => None,
                }),
        };
        let realm_explicit = cli.realm.is_some() || file.realm.is_some();
        let realm = Token::new(
            cli.realm
                .clone()
                .or(file.realm)
                .unwrap_or_else(|| "default".into()),
        )
        .context("realm")?;
        let mut codec = EventCodec::default();
        if let Some(limit) = file.max_event_bytes {
            codec = codec.max_event_bytes(limit);
        }
        Ok(Self {
            connect,
            realm,
            realm_explicit,
            identity_file: cli
                .identity
                .clone()
                .or(file.identity_file)
                .unwrap_or_else(|| data_dir.join("identity.seed")),
            identity_explicit,
            creds,
            creds_defaulted,
            data_dir,
            log: file.log.unwrap_or_default(),
            codec,
            json: cli.json,
        })
    }

    /// Connects and opens the event log as `identity`.
    pub async fn open_log_as(&self, name: &str, identity: Identity) -> Result<EventLog> {
        let connect = self
            .connect
            .clone()
            .context("no NATS server configured: set NATS_URL, --server, or run `murmur up` first (it listens on nats://127.0.0.1:4222)")?
            .name(name);
        let murmur_subjects::connect::Connection {
            client,
            mut refused,
        } = connect.connect_watched().await?;
        // Credentials refused once connected (revoked, expired): say so and stop, rather
        // than reconnect forever with nothing to show for it.
        let creds = self.creds_file().map(|p| p.display().to_string());
        tokio::spawn(async move {
            if let Ok(reason) = refused.wait_for(Option::is_some).await {
                let reason = reason.clone().unwrap_or_default();
                eprintln!(
                    "error: the server refused {} ({reason}): they were revoked or expired; ask the operator for new ones (`murmur creds issue`)",
                    creds.map_or("this connection's credentials".to_string(), |p| format!(
                        "the credentials {p}"
                    ))
                );
                crate::exit_killing_children(2);
            }
        });
        // A stream's leader election (a node just lost) makes JetStream requests time out
        // for a few seconds: a participant starting then waits it out instead of exiting.
        let until = tokio::time::Instant::now() + OPEN_PATIENCE;
        loop {
            match EventLog::open(
                client.clone(),
                identity.clone(),
                self.realm.clone(),
                self.log.clone(),
                self.codec.clone(),
            )
            .await
            {
                Ok(log) => return Ok(log),
                Err(e) if e.is_transient() && tokio::time::Instant::now() < until => {
                    tracing::warn!(error = %e, "the event log is unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Connects and opens the event log as this participant (see [`Settings::identity`]).
    pub async fn open_log(&self, name: &str) -> Result<EventLog> {
        let identity = self.identity()?;
        self.open_log_as(name, identity).await
    }

    /// The credentials file this participant connects with, if any.
    pub fn creds_file(&self) -> Option<&std::path::Path> {
        self.creds.as_deref()
    }

    /// This participant's identity. With credentials it is the key they were issued to
    /// (a participant signs with the key it connects as); an identity file named as well
    /// must hold that same key. Otherwise the identity file (created if missing).
    pub fn identity(&self) -> Result<Identity> {
        let Some(path) = self.creds_file() else {
            return load_or_create_identity(&self.identity_file);
        };
        let creds = murmur_subjects::connect::read_creds(path)?;
        let identity = Identity::from_seed(&creds.seed)?;
        if self.identity_explicit && self.identity_file.exists() {
            let named = load_or_create_identity(&self.identity_file)?;
            if named.public_key() != identity.public_key() {
                bail!(
                    "the credentials {} are for {}, but the identity file {} holds {}: a participant signs with the key it connects as; drop --identity, or use credentials issued to that key",
                    path.display(),
                    identity.public_key(),
                    self.identity_file.display(),
                    named.public_key()
                );
            }
        }
        Ok(identity)
    }
}

impl Settings {
    /// The settings and identity a participant `name` with `role` runs with: these settings
    /// and [`Settings::identity`], or with `--ephemeral-identity` a fresh identity. A fresh
    /// identity needs credentials of its own where the server enforces roles: on the
    /// operator's machine (the data dir holds the operator's keys and the commands default
    /// to its credentials) they are issued here, with the role granted in the log; a
    /// participant given credentials explicitly signs as the key they name, so it cannot
    /// take a fresh one.
    pub async fn participant(
        &self,
        ephemeral: bool,
        role: murmur_subjects::roles::Role,
        name: &str,
    ) -> Result<(Settings, Identity)> {
        if !ephemeral {
            return Ok((self.clone(), self.identity()?));
        }
        let identity = Identity::generate();
        let Some(path) = self.creds_file() else {
            return Ok((self.clone(), identity));
        };
        let auth_dir = self.data_dir.join("auth");
        if !self.creds_defaulted || !auth_dir.exists() {
            bail!(
                "--ephemeral-identity with the credentials {}: a participant signs as the key its credentials were issued to; drop --ephemeral-identity (the operator issues each agent its own credentials with `murmur creds issue`)",
                path.display()
            );
        }
        let authority = crate::authority::Authority::open(&auth_dir)?;
        let creds = self
            .data_dir
            .join("participants")
            .join(format!("{name}-{}.creds", &identity.public_key()[..12]));
        crate::authority::write_secret(
            &creds,
            &authority.creds(&self.realm, role, name, &identity, None)?,
        )?;
        let operator = self.open_log("murmur-enrol").await?;
        crate::authority::grant(&operator, identity.public_key(), role, name, None).await?;
        let mut settings = self.clone();
        if let Some(c) = &mut settings.connect {
            c.auth = murmur_subjects::connect::Auth::CredsFile {
                path: creds.clone(),
            };
        }
        settings.creds = Some(creds);
        settings.creds_defaulted = false;
        Ok((settings, identity))
    }
}

impl Settings {
    /// Whether this participant may purge streams: where the server enforces roles only
    /// the operator may (others leave knowledge compaction to `murmur up`'s compactor).
    pub fn may_purge(&self) -> bool {
        match self.creds_file() {
            None => true,
            Some(path) => murmur_subjects::connect::read_creds(path)
                .is_ok_and(|c| c.claims.role == Some(murmur_subjects::roles::Role::Operator)),
        }
    }
}

/// The operator's credentials `murmur up` writes into its data dir.
pub const OPERATOR_CREDS: &str = "operator.creds";

/// How long opening the event log keeps retrying while JetStream is unavailable.
const OPEN_PATIENCE: Duration = Duration::from_secs(60);

/// Entry point.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::resolve(&cli)?;
    match cli.command {
        Command::Subjects { roles } => subjects(&settings, roles),
        Command::Creds { command } => crate::creds_cli::creds(&settings, command).await,
        Command::Roles { command } => crate::creds_cli::roles(&settings, command).await,
        Command::Up { port, insecure } => up(&settings, port, insecure).await,
        Command::Demo { which, deadline_s } => {
            let deadline = Duration::from_secs(deadline_s);
            let signals = crate::agent_cli::shutdown_signals()?;
            // The demo runs as a task of its own, so the deadline and the signals are seen
            // even if a step blocks its thread.
            let demo = tokio::spawn(async move {
                match which {
                    None => crate::demo::run(&settings).await,
                    Some(DemoCommand::Compile) => crate::demo_compile::run(&settings).await,
                }
            });
            let why = tokio::select! {
                done = demo => return done?,
                _ = tokio::time::sleep(deadline) => format!("did not finish within {deadline:?}"),
                _ = signals.nth(1) => "was interrupted".to_string(),
            };
            // A stuck step may never yield, and the runtime waits for its threads on the way
            // out: kill the nats-server and agent processes the demo started, then exit.
            eprintln!(
                "error: the demo {why}; the last line it printed: {:?}",
                crate::last_output_line()
            );
            crate::exit_killing_children(1)
        }
        Command::Events {
            command: EventsCommand::Tail { subject, ty, count },
        } => tail(&settings, subject, ty, count).await,
        Command::Replay(args) => replay(&settings, args).await.map(|_| ()),
        Command::Dlq { command } => dlq(&settings, command).await,
        Command::Nats {
            command: NatsCommand::Up { cluster, insecure },
        } => nats_up(&settings, cluster, insecure).await,
        Command::Agent {
            command: AgentCommand::Run(args),
        } => {
            crate::agent_cli::check_kind(&args.kind)?;
            crate::agent_cli::run(&settings, args).await
        }
        Command::Agents {
            command: AgentsCommand::Ls { capability, labels },
        } => crate::agent_cli::ls(&settings, capability, &labels).await,
        Command::Coordinator => crate::agent_cli::coordinator(&settings).await,
        Command::Vote { command } => match command {
            VoteCommand::Propose(args) => crate::vote_cli::propose(&settings, args).await,
            VoteCommand::Ls { states } => crate::vote_cli::ls(&settings, &states).await,
            VoteCommand::Show { id } => crate::vote_cli::show(&settings, &id).await,
            VoteCommand::Watch { id, timeout_s } => {
                crate::vote_cli::watch(&settings, &id, timeout_s).await
            }
            VoteCommand::Withdraw { id, reason } => {
                crate::vote_cli::withdraw(&settings, &id, reason).await
            }
            VoteCommand::Thresholds { category } => {
                crate::vote_cli::thresholds(&settings, category.as_deref()).await
            }
            VoteCommand::Cast { id, choice, reason } => {
                crate::vote_cli::cast(&settings, &id, &choice, reason).await
            }
        },
        Command::Kb { command } => crate::kb_cli::run(&settings, command).await,
        Command::Voter {
            command: VoterCommand::Run(args),
        } => crate::vote_cli::voter_run(&settings, args).await,
        Command::Inference { command } => crate::inference_cli::run(&settings, command).await,
        Command::Identity => {
            let identity = identity_for(&settings)?;
            if settings.json {
                out!(
                    "{}",
                    serde_json::json!({
                        "public_key": identity.public_key(),
                        "identity_file": settings.identity_file,
                    })
                );
            } else {
                out!("{}", identity.public_key());
            }
            Ok(())
        }
        Command::Tallier => {
            let log = settings.open_log("murmur-tallier").await?;
            eprintln!(
                "tallier running for realm {} (ctrl-c to stop)",
                settings.realm
            );
            let n = murmur_coordination::consensus::run_tallier(
                log,
                Duration::from_millis(100),
                async {
                    tokio::signal::ctrl_c().await.ok();
                },
            )
            .await?;
            eprintln!("tallier stopped after writing {n} events");
            Ok(())
        }
        Command::Flake { command } => match command {
            FlakeCommand::Generate { graph, out } => crate::flake_cli::generate(&graph, &out),
            FlakeCommand::Check { graph } => crate::flake_cli::check(&graph),
            FlakeCommand::Graph { graph, .. } => crate::flake_cli::graph(&graph),
        },
        Command::Status { window_s } => crate::status::run(&settings, window_s).await,
        Command::Task {
            command:
                TaskCommand::Submit {
                    capability,
                    input,
                    priority,
                    max_attempts,
                    lease_ms,
                    labels,
                    watch,
                },
        } => {
            let id = crate::agent_cli::submit(
                &settings,
                capability,
                &input,
                priority,
                max_attempts,
                lease_ms,
                &labels,
            )
            .await?;
            if watch {
                crate::task_watch::run(&settings, &id, None).await?;
            }
            Ok(())
        }
        Command::Task {
            command: TaskCommand::Watch { id, timeout_s },
        } => crate::task_watch::run(&settings, &id, timeout_s.map(Duration::from_secs)).await,
        Command::Task {
            command: TaskCommand::Ls(args),
        } => crate::agent_cli::task_ls(&settings, args).await,
        Command::Task {
            command: TaskCommand::Show { id },
        } => crate::agent_cli::task_show(&settings, &id).await,
        Command::Task {
            command:
                TaskCommand::Graph {
                    command: GraphCommand::Submit { file },
                },
        } => crate::agent_cli::graph_submit(&settings, &file).await,
        Command::Task {
            command: TaskCommand::Cancel { id, reason },
        } => crate::agent_cli::task_cancel(&settings, &id, &reason).await,
    }
}

fn subjects(settings: &Settings, roles: bool) -> Result<()> {
    let catalog = Catalog::standard();
    if roles {
        let realm = if settings.realm_explicit {
            settings.realm.to_string()
        } else {
            "{realm}".to_string()
        };
        let names = murmur_subjects::roles::ResourceNames::for_streams(
            &settings.log.history_stream,
            &settings.log.dlq_stream,
        );
        let matrix = murmur_subjects::roles::RoleMatrix::derive(&realm, &names);
        if settings.json {
            out!("{}", serde_json::to_string_pretty(&matrix)?);
        } else {
            out!("{}", matrix.text().trim_end());
        }
        return Ok(());
    }
    if settings.json {
        out!("{}", serde_json::to_string_pretty(&catalog.views())?);
    } else {
        out!("{}", catalog.tree_text().trim_end());
    }
    Ok(())
}

async fn up(settings: &Settings, port: u16, insecure: bool) -> Result<()> {
    use murmur_subjects::roles::Role;
    // Listening from the start (SIGTERM too): a process manager's stop must not orphan the
    // nats-server started below.
    let stop = crate::agent_cli::shutdown_signal()?;
    let identity = load_or_create_identity(&settings.identity_file)?;
    let mut _server = None;
    let connect = match &settings.connect {
        Some(c) => c.clone(),
        None => {
            let store = settings.data_dir.join("nats");
            let auth = if insecure {
                None
            } else {
                let authority =
                    crate::authority::Authority::open_or_create(&settings.data_dir.join("auth"))?;
                authority.realm_keys(&settings.realm)?;
                let creds = settings.data_dir.join(OPERATOR_CREDS);
                crate::authority::write_secret(
                    &creds,
                    &authority.creds(
                        &settings.realm,
                        Role::Operator,
                        "operator",
                        &identity,
                        None,
                    )?,
                )?;
                Some(crate::nats_server::ServerAuth {
                    config: authority.server_config(&settings.log, &store.join("jwt"))?,
                    creds,
                })
            };
            let mut server = NatsProcess::start(port, &store, auth.as_ref()).await?;
            server.wait_ready(Duration::from_secs(60)).await?;
            let c = ConnectOptions::servers(&server.url());
            let c = match &auth {
                Some(auth) => {
                    eprintln!(
                        "nats-server with JetStream at {} in operator mode (store {}): connections need credentials",
                        server.url(),
                        store.display()
                    );
                    eprintln!(
                        "operator credentials: {} (only you can read them; murmur commands with this data dir use them)",
                        auth.creds.display()
                    );
                    c.auth(murmur_subjects::connect::Auth::CredsFile {
                        path: auth.creds.clone(),
                    })
                }
                None => {
                    eprintln!(
                        "INSECURE: nats-server with JetStream at {} (store {}) lets anyone who reaches it read, write and delete everything (--insecure)",
                        server.url(),
                        store.display()
                    );
                    c
                }
            };
            _server = Some(server);
            c
        }
    };
    let client = connect.clone().name("murmur-up").connect().await?;
    let log = EventLog::open(
        client,
        identity,
        settings.realm.clone(),
        settings.log.clone(),
        settings.codec.clone(),
    )
    .await?;
    crate::authority::provision(&log).await?;
    crate::authority::claim_realm(
        &log,
        "murmur up",
        &[
            Role::Coordinator,
            Role::Tallier,
            Role::Auditor,
            Role::Monitor,
        ],
    )
    .await?;
    eprintln!(
        "streams ready: {} (history), {} (dead letters); realm {} owned by {}; auditor, liveness monitor, coordinator, tallier and compactor running. ctrl-c to stop.",
        settings.log.history_stream,
        settings.log.dlq_stream,
        settings.realm,
        log.identity().public_key()
    );
    eprintln!(
        "in another shell: NATS_URL={} murmur events tail",
        connect.servers.join(",")
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let monitor = tokio::spawn(murmur_coordination::liveness::run_monitor(
        log.clone(),
        std::sync::Arc::new(murmur_coordination::liveness::SystemClock),
        stopped(stop_rx.clone()),
    ));
    let coordinator = tokio::spawn(murmur_coordination::coordinator::run_coordinator(
        log.clone(),
        std::sync::Arc::new(murmur_coordination::liveness::SystemClock),
        murmur_coordination::coordinator::CoordinatorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let tallier = tokio::spawn(murmur_coordination::consensus::run_tallier(
        log.clone(),
        Duration::from_millis(100),
        stopped(stop_rx.clone()),
    ));
    let compactor = tokio::spawn(murmur_knowledge::compaction::run_compactor(
        log.clone(),
        stopped(stop_rx.clone()),
    ));
    let auditor = tokio::spawn(murmur_subjects::audit::run_auditor(
        log,
        stopped(stop_rx),
        None,
    ));
    stop.await;
    stop_tx.send_replace(true);
    auditor.await??;
    monitor.await??;
    coordinator.await??;
    tallier.await??;
    compactor.await??;
    eprintln!("stopped");
    Ok(())
}

/// One line describing an event.
pub fn describe(seq: Option<u64>, event: &VerifiedEvent) -> String {
    let short = |s: &str| s.chars().take(8).collect::<String>();
    // Event ids are UUIDv7s, whose leading characters are the time (the same for every id made
    // in the same minute); their tail is what tells two flows apart.
    let aggregate = event.subject.aggregate().as_str();
    let tail = |s: &str| {
        // Ids derived from the aggregate's (`prop-1-decided`, `t1.assign.2`): the part after
        // the aggregate is what tells them apart, and it reads better than a cut.
        if let Some(rest) = s.strip_prefix(aggregate)
            && let Some(rest) = rest.strip_prefix(['-', '.'])
            && !rest.is_empty()
        {
            return rest.to_string();
        }
        let n = s.chars().count();
        s.chars().skip(n.saturating_sub(8)).collect::<String>()
    };
    format!(
        // 35: the longest event type, `dev.murmur.proposal.deadline_passed`.
        "{:>6} {} {:<35} {:<22} id {} from {} corr {} cause {} {}",
        seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        event
            .record
            .time
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default(),
        event.record.ty,
        event
            .subject
            .aggregate()
            .as_str()
            .chars()
            .take(22)
            .collect::<String>(),
        // Its own id too, so a `cause` on a later line can be followed back to this one.
        tail(&event.record.id),
        short(event.emitter()),
        tail(event.record.correlation_id.as_deref().unwrap_or("")),
        tail(event.record.causation_id.as_deref().unwrap_or("")),
        String::from_utf8_lossy(event.record.data.as_deref().unwrap_or(b""))
            .chars()
            .take(100)
            .collect::<String>(),
    )
}

/// One aggregate's events from the log, one [`describe`] line each (an entry that does not
/// decode is shown as INVALID with the reason): the timeline `task show` and `vote show` print.
pub async fn aggregate_timeline(
    log: &murmur_subjects::EventLog,
    domain: murmur_subjects::Domain,
    id: &str,
) -> Result<Vec<String>> {
    let events =
        murmur_subjects::projection::read_aggregate(log, domain, &murmur_subjects::Token::new(id)?)
            .await?;
    Ok(events
        .into_iter()
        .map(|(sequence, event)| match event {
            Ok(ev) => describe(Some(sequence), &ev),
            Err(e) => format!("{sequence:>6} INVALID: {e}"),
        })
        .collect())
}

/// JSON form of an event for JSONL output.
pub fn event_json(
    seq: Option<u64>,
    stored_at: Option<DateTime<Utc>>,
    subject: &str,
    event: &VerifiedEvent,
) -> serde_json::Value {
    let data: serde_json::Value = event
        .record
        .data
        .as_deref()
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "sequence": seq,
        "stored_at": stored_at,
        "subject": subject,
        "id": event.record.id,
        "type": event.record.ty,
        "source": event.record.source,
        "time": event.record.time,
        "correlationid": event.record.correlation_id,
        "causationid": event.record.causation_id,
        "traceparent": event.record.traceparent,
        "data": data,
    })
}

/// The filter for `tail`/`replay`: an explicit subject, else the type's subjects, else every
/// history event; limited to the realm only when one was chosen.
fn filter_for(
    subject: Option<&str>,
    ty: Option<&str>,
    realm: Option<&Token>,
) -> Result<SubjectFilter> {
    if let Some(s) = subject {
        return Ok(SubjectFilter::parse(s)?);
    }
    if let Some(t) = ty {
        let et = Catalog::standard()
            .get(t)
            .with_context(|| format!("unknown event type {t:?}; see `murmur subjects`"))?;
        return Ok(et.filter(realm));
    }
    let all = SubjectFilter::plane(murmur_subjects::Plane::Evt);
    Ok(match realm {
        Some(r) => all.realm(r.clone()),
        None => all,
    })
}

impl Settings {
    /// The realm to limit reads to, if one was chosen.
    pub fn read_realm(&self) -> Option<&Token> {
        self.realm_explicit.then_some(&self.realm)
    }
}

async fn tail(
    settings: &Settings,
    subject: Option<String>,
    ty: Option<String>,
    count: Option<u64>,
) -> Result<()> {
    let log = settings.open_log("murmur-tail").await?;
    let filter = filter_for(subject.as_deref(), ty.as_deref(), settings.read_realm())?;
    let stream = log
        .jetstream()
        .get_stream(&settings.log.history_stream)
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    eprintln!("tailing {filter} (ctrl-c to stop)");
    let mut seen = 0;
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            n = messages.next() => n,
        };
        let Some(msg) = next else { break };
        let msg = msg?;
        let info = msg.info().map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let (seq, at) = (info.stream_sequence, info.published);
        match log.decode_stored(&msg, seq, Some(at)) {
            Ok(ev) => {
                if ty.as_deref().is_some_and(|t| t != ev.record.ty) {
                    continue;
                }
                if settings.json {
                    out!(
                        "{}",
                        event_json(Some(seq), Some(at), msg.subject.as_str(), &ev)
                    );
                } else {
                    out!("{}", describe(Some(seq), &ev));
                }
            }
            Err(e) => out!(
                "{seq:>6} INVALID on {}: {e} (dead-lettered by the auditor)",
                msg.subject
            ),
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayTotals {
    /// Events written out.
    pub events: u64,
    /// Stored messages that failed verification (skipped, reported).
    pub invalid: u64,
    /// First and last sequence written.
    pub first: Option<u64>,
    /// Last sequence written.
    pub last: Option<u64>,
}

/// `murmur replay`: writes every event in the range; returns the totals.
pub async fn replay(settings: &Settings, args: ReplayArgs) -> Result<ReplayTotals> {
    let log = settings.open_log("murmur-replay").await?;
    let filter = filter_for(
        args.subject.as_deref(),
        args.ty.as_deref(),
        settings.read_realm(),
    )?;
    let start = match (args.from_seq, args.since) {
        (Some(s), _) => StartAt::Sequence(s),
        (None, Some(t)) => StartAt::Time(t),
        (None, None) => StartAt::Beginning,
    };
    let last = log.last_sequence(&settings.log.history_stream).await?;
    let end = args.to_seq.map_or(last, |e| e.min(last));
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let first_seq = match start {
        StartAt::Sequence(s) => s,
        _ => 1,
    };
    let bar = indicatif::ProgressBar::new(end.saturating_sub(first_seq) + 1);
    if args.output.is_none() || settings.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seq  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut totals = ReplayTotals::default();
    let started = Instant::now();
    let mut write_err = None;
    read_stream(log.jetstream(), &settings.log.history_stream, &filter, start, Some(end), |stored| {
        bar.set_position(stored.sequence.saturating_sub(first_seq) + 1);
        if args.until.is_some_and(|u| stored.stored_at >= u) {
            return ControlFlow::Break(());
        }
        match log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at)) {
            Ok(ev) => {
                if args.ty.as_deref().is_some_and(|t| t != ev.record.ty) {
                    return ControlFlow::Continue(());
                }
                let line = match args.format {
                    Format::Jsonl => event_json(Some(stored.sequence), Some(stored.stored_at), stored.message.subject.as_str(), &ev).to_string(),
                    Format::Pretty => describe(Some(stored.sequence), &ev),
                };
                if let Err(e) = writeln!(out, "{line}") {
                    write_err = Some(e);
                    return ControlFlow::Break(());
                }
                totals.events += 1;
                totals.first.get_or_insert(stored.sequence);
                totals.last = Some(stored.sequence);
            }
            Err(e) => {
                totals.invalid += 1;
                tracing::warn!(sequence = stored.sequence, error = %e, "invalid stored message skipped");
            }
        }
        ControlFlow::Continue(())
    })
    .await?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if settings.json {
        eprintln!("{}", serde_json::to_string(&totals)?);
    } else {
        eprintln!(
            "replayed {} events ({} invalid skipped) from seq {} to {} in {:.2}s ({:.0} events/s)",
            totals.events,
            totals.invalid,
            totals.first.map_or("-".into(), |s| s.to_string()),
            totals.last.map_or("-".into(), |s| s.to_string()),
            secs,
            totals.events as f64 / secs.max(1e-9)
        );
    }
    Ok(totals)
}

async fn dlq(settings: &Settings, command: DlqCommand) -> Result<()> {
    let log = settings.open_log("murmur-dlq").await?;
    let stream_name = settings.log.dlq_stream.clone();
    match command {
        DlqCommand::Ls { reason } => {
            let mut filter = SubjectFilter::plane(murmur_subjects::Plane::Dlq);
            if let Some(realm) = settings.read_realm() {
                filter = filter.realm(realm.clone());
            }
            if let Some(r) = &reason {
                filter = filter.aggregate(Token::new(r.as_str())?);
            }
            let mut rows = Vec::new();
            read_stream(
                log.jetstream(),
                &stream_name,
                &filter,
                StartAt::Beginning,
                None,
                |stored| {
                    rows.push(stored);
                    ControlFlow::Continue(())
                },
            )
            .await?;
            for stored in rows {
                match log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at)) {
                    Ok(ev) if ev.record.ty == DeadLettered::TYPE => {
                        let d: DeadLettered = ev.payload()?;
                        if settings.json {
                            out!(
                                "{}",
                                serde_json::json!({"sequence": stored.sequence, "stored_at": stored.stored_at, "dead_letter": d})
                            );
                        } else {
                            out!(
                                "{:>6} {} {:<18} {:<48} {} bytes  {}",
                                stored.sequence,
                                stored.stored_at.format("%Y-%m-%d %H:%M:%S"),
                                d.reason,
                                d.original_subject.chars().take(48).collect::<String>(),
                                d.original_size,
                                d.detail.chars().take(100).collect::<String>()
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => out!("{:>6} unreadable dead letter: {e}", stored.sequence),
                }
            }
        }
        DlqCommand::Show { seq } => {
            let d = load_dead_letter(&log, &stream_name, seq).await?;
            out!("{}", serde_json::to_string_pretty(&d)?);
        }
        DlqCommand::Redrive { seq } => {
            let subject = redrive(&log, &stream_name, seq).await?;
            out!("redrove dead letter {seq} to {subject}");
        }
    }
    Ok(())
}

/// Re-publishes dead letter `seq`'s original message (same subject, headers and bytes) and
/// records a `sys.redriven` event. Returns the subject it went to.
pub async fn redrive(log: &EventLog, dlq_stream: &str, seq: u64) -> Result<String> {
    let d = load_dead_letter(log, dlq_stream, seq).await?;
    let Some(b64) = &d.body_base64 else {
        bail!(
            "dead letter {seq} kept only a prefix ({} bytes, sha256 {}): it cannot be redriven",
            d.original_size,
            d.sha256
        );
    };
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in &d.original_headers {
        headers.append(k.as_str(), v.as_str());
    }
    log.client()
        .publish_with_headers(d.original_subject.clone(), headers, body.into())
        .await?;
    log.client().flush().await?;
    let note = Draft::new(
        Token::new("redrive")?,
        &Redriven {
            dead_letter_sequence: seq,
            subject: d.original_subject.clone(),
        },
    )?;
    log.append(note).await?;
    Ok(d.original_subject)
}

/// Loads dead letter `seq` from the dead-letter stream.
pub async fn load_dead_letter(log: &EventLog, stream: &str, seq: u64) -> Result<DeadLettered> {
    let s = log.jetstream().get_stream(stream).await?;
    let raw = s
        .get_raw_message(seq)
        .await
        .with_context(|| format!("no dead letter at sequence {seq}"))?;
    let msg = async_nats::Message {
        subject: raw.subject.clone(),
        reply: None,
        payload: raw.payload.clone(),
        headers: Some(raw.headers.clone()),
        status: None,
        description: None,
        length: raw.payload.len(),
    };
    let ev = log.decode_stored(&msg, seq, None)?;
    Ok(ev.payload()?)
}

async fn nats_up(settings: &Settings, size: usize, insecure: bool) -> Result<()> {
    use murmur_subjects::roles::Role;
    let auth = |resolver: &std::path::Path| -> Result<Option<crate::nats_server::ServerAuth>> {
        if insecure {
            return Ok(None);
        }
        let authority =
            crate::authority::Authority::open_or_create(&settings.data_dir.join("auth"))?;
        let identity = load_or_create_identity(&settings.identity_file)?;
        authority.realm_keys(&settings.realm)?;
        let creds = settings.data_dir.join(OPERATOR_CREDS);
        crate::authority::write_secret(
            &creds,
            &authority.creds(&settings.realm, Role::Operator, "operator", &identity, None)?,
        )?;
        Ok(Some(crate::nats_server::ServerAuth {
            config: authority.server_config(&settings.log, resolver)?,
            creds,
        }))
    };
    let stop = crate::agent_cli::shutdown_signal()?;
    let (creds, _running): (Option<std::path::PathBuf>, Box<dyn std::any::Any>) = match size {
        1 => {
            let store = settings.data_dir.join("nats");
            let auth = auth(&store.join("jwt"))?;
            let mut p = NatsProcess::start(4222, &store, auth.as_ref()).await?;
            p.wait_ready(Duration::from_secs(60)).await?;
            out!("{}", p.url());
            (auth.map(|a| a.creds), Box::new(p))
        }
        3 => {
            let dir = settings.data_dir.join("cluster");
            let auth = auth(std::path::Path::new(
                crate::nats_server::RESOLVER_DIR_PLACEHOLDER,
            ))?;
            let cluster = NatsCluster::start(3, Some(&dir), auth.as_ref()).await?;
            out!("{}", cluster.urls());
            eprintln!(
                "3-node cluster up (store {}); ctrl-c to stop",
                dir.display()
            );
            (auth.map(|a| a.creds), Box::new(cluster))
        }
        n => bail!("--cluster takes 1 or 3, not {n}"),
    };
    match &creds {
        Some(path) => eprintln!(
            "operator mode: connect with --creds {} (commands with this data dir use them)",
            path.display()
        ),
        None => eprintln!("INSECURE: anyone who reaches the server may do anything (--insecure)"),
    }
    stop.await;
    Ok(())
}

/// Sets up tracing from `--log-level`.
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Identity helper for commands that sign (see [`Settings::identity`]).
pub fn identity_for(settings: &Settings) -> Result<Identity> {
    settings.identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_subjects::events::VoteCast;
    use murmur_subjects::{Draft, EventCodec, Token};

    #[test]
    fn describe_shows_the_distinguishing_tail_of_correlation_and_causation_ids() {
        let identity = Identity::generate();
        let realm = Token::new("acme").expect("token");
        let vote = VoteCast {
            choice: murmur_subjects::events::Choice::Approve,
            reason: String::new(),
        };
        // Two UUIDv7 ids made in the same minute share their first 8 characters.
        let (corr, cause) = (
            "01a20c61-62ca-7785-b0b0-16521201d2a9",
            "01a20c61-7000-7000-8000-0000c0ffee00",
        );
        let sealed = Draft::new(Token::new("p1").expect("token"), &vote)
            .expect("draft")
            .caused_by_ids(corr, cause, None)
            .seal(&identity, &realm);
        let codec = EventCodec::default();
        let (headers, body) = codec.encode(&sealed).expect("encode");
        let event = codec
            .decode(sealed.subject.as_str(), Some(&headers), &body)
            .expect("decode");
        let line = describe(Some(7), &event);
        assert!(line.contains("corr 1201d2a9 cause c0ffee00"), "{line}");
        let id = &sealed.record.id;
        assert!(
            line.contains(&format!(" id {} from ", &id[id.len() - 8..])),
            "{line}"
        );
        // An id derived from the aggregate's shows what follows the aggregate, and so does a
        // cause that names one.
        let sealed = Draft::new(Token::new("p1").expect("token"), &vote)
            .expect("draft")
            .with_id("p1-decided")
            .caused_by_ids(corr, "p1-deadline-0", None)
            .seal(&identity, &realm);
        let (headers, body) = codec.encode(&sealed).expect("encode");
        let event = codec
            .decode(sealed.subject.as_str(), Some(&headers), &body)
            .expect("decode");
        let line = describe(Some(8), &event);
        assert!(line.contains(" id decided from "), "{line}");
        assert!(line.contains(" cause deadline-0 "), "{line}");
    }
}
