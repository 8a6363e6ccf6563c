//! The `murmur` command line: [`Cli`] and its [`Command`]s, one module per noun, each
//! owning its arguments and its `run`; this module only dispatches.

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::settings::{GlobalArgs, Settings};

pub mod agent;
pub mod agents;
pub mod ask;
pub mod coordinator;
pub mod creds;
pub mod demo;
pub mod dlq;
pub mod events;
pub mod flake;
pub mod gateway;
pub mod identity;
pub mod inference;
pub mod kb;
pub mod mcp;
pub mod nats;
pub mod replay;
pub mod roles;
pub mod status;
pub mod subjects;
pub mod tallier;
pub mod task;
pub mod task_watch;
pub mod up;
pub mod vote;
pub mod voter;

/// murmur: agents, coordinators and voters cooperating over NATS, with JetStream as the log.
#[derive(Debug, Parser)]
#[command(name = "murmur", version, about)]
pub struct Cli {
    /// The flags every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments as [`Parser::parse`] does (printing help or the error
    /// and exiting), with [`with_tips`] added to an error.
    pub fn parse_args() -> Cli {
        Self::try_parse()
            .map_err(with_tips)
            .unwrap_or_else(|e| e.exit())
    }
}

/// `--sync-interval`: what nats-server takes, checked before a server is started.
fn parse_sync_interval(value: &str) -> Result<String, String> {
    if murmur_nix::validate::is_sync_interval(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is neither \"always\" nor a duration such as \"500ms\", \"30s\", \"2m\" or \"1h\""
        ))
    }
}

/// `error` with a tip where its cause is a flag given where murmur does not take it: the old
/// `agent run --kind K`, or a global flag after an agent kind clap does not know (which
/// parses its own arguments, [`agent::KindCommand::other`]).
pub fn with_tips(mut error: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = flag.split('=').next().unwrap_or_default().to_string();
    let tip = if flag == "--kind" {
        "the kind is a word: `murmur agent run KIND [OPTIONS]`, e.g. `murmur agent run tool --root .`".to_string()
    } else if <Cli as clap::CommandFactory>::command()
        .get_arguments()
        .any(|a| a.is_global_set() && a.get_long().is_some_and(|long| flag == format!("--{long}")))
    {
        format!(
            "{flag} is a global flag: give it before the command, e.g. `murmur {flag} … agent run KIND …`"
        )
    } else {
        return error;
    };
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
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
        /// HTTP port of the operator console (on 127.0.0.1; 0: any free one).
        #[arg(long, default_value_t = 4280)]
        console_port: u16,
        /// Do not serve the console (nor open the server's WebSocket listener for it).
        #[arg(long)]
        no_console: bool,
        /// Port of the local server's NATS WebSocket listener, which the console's page
        /// connects to (127.0.0.1, no TLS; 0: any free one).
        #[arg(long, default_value_t = 4223)]
        websocket_port: u16,
        /// With NATS_URL (a server murmur up did not start): the WebSocket URL of that
        /// server, which browsers reach (wss:// with TLS), for the console's page.
        #[arg(long, env = "MURMUR_WEBSOCKET_URL")]
        websocket_url: Option<String>,
        /// Keep a copy of every history event in this folder before the stream's retention
        /// limits can drop it (overrides the config file's `[archive] dir`).
        #[arg(long)]
        archive_dir: Option<std::path::PathBuf>,
        /// The local server's JetStream `sync_interval`: `always` (every write synced
        /// before its ack, so a power failure loses nothing acknowledged; about 20× fewer
        /// events/s on a 2-core VM) or a duration such as `30s`. The server's default (2
        /// minutes) when not given.
        #[arg(long, value_parser = parse_sync_interval)]
        sync_interval: Option<String>,
    },
    /// Run the sample workflow end to end and exit 0 when it succeeded.
    Demo {
        /// Another demo instead of the main one.
        #[command(subcommand)]
        which: Option<demo::DemoCommand>,
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
        command: creds::CredsCommand,
    },
    /// Roles in the log: grants and revocations signed by the realm's owner or an operator.
    Roles {
        /// What to do.
        #[command(subcommand)]
        command: roles::RolesCommand,
    },
    /// Live events.
    Events {
        /// What to do with events.
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Replay stored events over a range.
    Replay(replay::ReplayArgs),
    /// Inspect and redrive dead letters.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Run one agent.
    Agent {
        /// What to do.
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// The agent registry.
    Agents {
        /// What to do.
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// Run a coordinator (assigns tasks, expires leases, retries, dead-letters) until ctrl-c.
    Coordinator,
    /// MCP (Model Context Protocol): serve the realm's capabilities as MCP tools.
    Mcp {
        /// What to do.
        #[command(subcommand)]
        command: mcp::McpCommand,
    },
    /// Serve a capability as a Synadia Agent Protocol agent (its SDKs discover and prompt
    /// it; each prompt runs as a murmur task) until ctrl-c; prints the prompt subject.
    Gateway(gateway::GatewayArgs),
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
        command: task::TaskCommand,
    },
    /// Proposals and votes (consensus).
    Vote {
        /// What to do.
        #[command(subcommand)]
        command: vote::VoteCommand,
    },
    /// Knowledge spaces: facts, conflicts, history, snapshots.
    Kb {
        /// What to do.
        #[command(subcommand)]
        command: kb::KbCommand,
    },
    /// Voter agents.
    Voter {
        /// What to do.
        #[command(subcommand)]
        command: voter::VoterCommand,
    },
    /// Run a tallier (decides proposals from the votes in the log) until ctrl-c; also runs
    /// inside `murmur up`.
    Tallier,
    /// Print this participant's public key: its id, the `source` of the events it signs, what
    /// a proposer names with `--voter` (creates the identity file if missing).
    Identity,
    /// Ask the assistant: a planning step picks a tool (a JSON tool call the model is
    /// constrained to), a tool agent runs it, a model answers; every step is a task in the
    /// log. Needs a coordinator, an inference agent and a tool agent (`murmur demo` runs
    /// them all).
    Ask(ask::AskArgs),
    /// A conversation with the assistant: each line of standard input is a question asked
    /// with the turns before it (the answering step reads the last four); each answer is
    /// printed as it comes. Ends at end of input or `/exit`.
    Chat(ask::ChatArgs),
    /// Language models for `murmur agent run inference`.
    Inference {
        /// What to do.
        #[command(subcommand)]
        command: inference::InferenceCommand,
    },
    /// Deployment graph → Nix flake.
    Flake {
        /// What to do.
        #[command(subcommand)]
        command: flake::FlakeCommand,
    },
    /// Local NATS servers for development.
    Nats {
        /// What to do.
        #[command(subcommand)]
        command: nats::NatsCommand,
    },
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let settings = Settings::resolve(&cli.global)?;
    match cli.command {
        Command::Up {
            port,
            insecure,
            console_port,
            no_console,
            websocket_port,
            websocket_url,
            archive_dir,
            sync_interval,
        } => {
            let console = (!no_console).then_some(up::ConsoleSettings {
                port: console_port,
                websocket_port,
                websocket_url,
            });
            let archive = match (archive_dir, settings.archive.clone()) {
                (Some(dir), file) => Some(crate::archive::ArchiveConfig {
                    dir,
                    interval_s: file.map_or(600, |f| f.interval_s),
                }),
                (None, file) => file,
            };
            up::run(
                &settings,
                port,
                insecure,
                console,
                archive,
                sync_interval.as_deref(),
            )
            .await
        }
        Command::Demo { which, deadline_s } => demo::run(settings, which, deadline_s).await,
        Command::Subjects { roles } => subjects::run(&settings, roles),
        Command::Creds { command } => creds::run(&settings, command).await,
        Command::Roles { command } => roles::run(&settings, command).await,
        Command::Events { command } => events::run(&settings, command).await,
        Command::Replay(args) => replay::run(&settings, args).await.map(|_| ()),
        Command::Dlq { command } => dlq::run(&settings, command).await,
        Command::Agent { command } => agent::run(&settings, command).await,
        Command::Agents { command } => agents::run(&settings, command).await,
        Command::Coordinator => coordinator::run(&settings).await,
        Command::Gateway(args) => gateway::run(&settings, args).await,
        Command::Mcp { command } => mcp::run(&settings, command).await,
        Command::Status { window_s } => status::run(&settings, window_s).await,
        Command::Task { command } => task::run(&settings, command).await,
        Command::Vote { command } => vote::run(&settings, command).await,
        Command::Kb { command } => kb::run(&settings, command).await,
        Command::Voter { command } => voter::run(&settings, command).await,
        Command::Tallier => tallier::run(&settings).await,
        Command::Identity => identity::run(&settings),
        Command::Ask(args) => ask::run(&settings, args).await,
        Command::Chat(args) => ask::chat(&settings, args).await,
        Command::Inference { command } => inference::run(&settings, command).await,
        Command::Flake { command } => flake::run(command),
        Command::Nats { command } => nats::run(&settings, command).await,
    }
}

/// The line a failed command prints after `error: `: the error and each of its causes,
/// joined by `: `, leaving out a cause whose words already end the line (the library
/// errors name their source in their own message too, for logs that print only that).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Sets up tracing from `--log-level`: to stderr, in colour only when stderr is a terminal.
pub fn init_tracing(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_ends_with_is_printed_once() {
        let publish = murmur_subjects::LogError::Publish {
            subject: "murmur.v1.acme.evt.task.t1.completed".into(),
            source: "no stream found for given subject".into(),
        };
        let error = anyhow::Error::new(publish).context("completing t1");
        assert_eq!(
            error_line(&error),
            "completing t1: publish to murmur.v1.acme.evt.task.t1.completed failed: no stream found for given subject"
        );
        // A cause the message does not name is still printed.
        let io = std::io::Error::other("disk full");
        let error = anyhow::Error::new(io).context("writing the archive");
        assert_eq!(error_line(&error), "writing the archive: disk full");
    }
}
