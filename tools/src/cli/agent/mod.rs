//! `murmur agent run KIND`: one agent of a kind, until ctrl-c or SIGTERM (then it leaves).
//! [`args`] holds each kind's options, [`kind`] what each kind offers, handles and runs,
//! [`models`] the models some kinds load before joining.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use murmur_agents::handlers::run_handlers;
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::routing::validate_capability;
use murmur_subjects::events::{AgentJoined, Hardware};

use crate::cli::task::parse_labels;
use crate::settings::Settings;
use crate::signals::shutdown_signals;

pub mod args;
pub mod kind;
pub mod models;

pub use args::KindCommand;
pub use kind::{AgentKind, builtin_handler};
pub(crate) use models::{LoadedModel, load_model, model_labels};

/// `murmur agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join the cluster as one agent of a kind and run until ctrl-c / SIGTERM (then leave).
    #[command(
        subcommand_value_name = "KIND",
        subcommand_help_heading = "Kinds",
        after_help = "Any other KIND (e.g. `tester`) is a worker: with --builtin-handler it runs the built-in test handler, without it only joins, heartbeats and leaves. Its role is the one named like the kind, else `worker`. `murmur agent run KIND --help` shows a kind's options."
    )]
    Run {
        /// The kind, with its options.
        #[command(subcommand)]
        kind: KindCommand,
    },
}

/// This machine's hardware as every agent process announces it in its manifest, with what
/// the operator declared (`--accelerator`, `--vram-mib`) over what is detected.
pub(crate) fn hardware(declared: &murmur_agents::hardware::Declared) -> Hardware {
    murmur_agents::hardware::detect(declared)
}

/// Runs one agent until ctrl-c or SIGTERM, then leaves.
pub async fn run_agent(settings: &Settings, command: KindCommand) -> Result<()> {
    let (mut kind, args) = AgentKind::from_command(command).await?;
    for c in &args.capabilities {
        validate_capability(c).map_err(anyhow::Error::msg)?;
    }
    let cli_labels = parse_labels(&args.labels)?;
    let name = args.name.clone().unwrap_or_else(|| kind.default_name());
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
    let handlers = kind
        .handlers(
            &log,
            Duration::from_secs(args.drain_grace_s),
            settings.may_purge(),
        )
        .await?;
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
    if !args.keep_startup_pages {
        tokio::spawn(release_startup_pages());
    }
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

/// How long after joining an agent's start is over: its handlers' consumers are made within
/// milliseconds of the join, well before this.
const STARTUP: Duration = Duration::from_secs(2);

/// Once the agent's start is over, gives back the pages of the program only the start ran
/// (command line, connection, credentials, join): what the idle agent keeps resident is
/// then what it runs while idle (murmur_residency says why they stayed).
pub(crate) async fn release_startup_pages() {
    tokio::time::sleep(STARTUP).await;
    // What is resident is read (all of /proc/self/smaps) only for a debug line that shows.
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let resident_mib = || {
        debug
            .then(murmur_residency::program_resident_bytes)
            .and_then(Result::ok)
            .map(|b| b as f64 / 1048576.0)
    };
    let before = resident_mib();
    match murmur_residency::release_program_pages() {
        Ok(released) => tracing::debug!(
            mappings = released.mappings,
            resident_mib_before = before,
            resident_mib_after = resident_mib(),
            "gave back the program pages only the start used"
        ),
        // Costs memory, not function: the agent runs on as it would have.
        Err(e) => tracing::debug!(error = %e, "kept the program pages the start used"),
    }
}

/// Runs `murmur agent ...`.
pub async fn run(settings: &Settings, command: AgentCommand) -> Result<()> {
    match command {
        AgentCommand::Run { kind } => run_agent(settings, kind).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn command(argv: &[&str]) -> std::result::Result<KindCommand, clap::Error> {
        let mut all = vec!["murmur", "agent", "run"];
        all.extend(argv);
        match Cli::try_parse_from(all)?.command {
            Command::Agent {
                command: AgentCommand::Run { kind },
            } => Ok(kind),
            _ => unreachable!("agent run"),
        }
    }

    async fn kind(argv: &[&str]) -> Result<AgentKind> {
        Ok(AgentKind::from_command(command(argv)?).await?.0)
    }

    #[tokio::test]
    async fn each_kind_knows_what_it_offers_handles_and_is() -> Result<()> {
        let workspace = tempfile::tempdir()?;
        let root = workspace.path().to_str().expect("utf-8");
        let tool = kind(&["tool", "--root", root]).await?;
        assert_eq!(tool.default_capabilities(), ["tool.fs"]);
        assert_eq!(tool.role(), murmur_subjects::roles::Role::Tool);
        let both = kind(&["tool", "--root", root, "--exec-allow", "wc"]).await?;
        assert_eq!(both.default_capabilities(), ["tool.fs", "tool.exec"]);
        let exec = kind(&["tool", "--exec-allow", "wc"]).await?;
        assert_eq!(exec.default_capabilities(), ["tool.exec"]);
        let compiler = kind(&["compiler", "--compile-timeout-s", "7"]).await?;
        match &compiler {
            AgentKind::Pipeline { kind, options } => {
                assert_eq!(*kind, "compiler");
                assert_eq!(options.compile_timeout, Duration::from_secs(7));
            }
            _ => panic!("a compiler is a pipeline kind"),
        }
        assert_eq!(compiler.default_capabilities(), ["compiler.rust"]);
        let memory = kind(&["memory", "--snapshot-every-s", "0"]).await?;
        assert!(matches!(
            memory,
            AgentKind::Memory {
                snapshot_every: None,
                ..
            }
        ));
        assert_eq!(
            memory.default_capabilities(),
            ["knowledge.query", "tool.memory"]
        );
        // The built-in handler replaces a pipeline kind's handler and its default offer,
        // not its role.
        let tester = kind(&["compiler", "--builtin-handler"]).await?;
        assert!(matches!(tester, AgentKind::Builtin(_)));
        assert!(tester.default_capabilities().is_empty());
        assert_eq!(tester.role(), murmur_subjects::roles::Role::Compiler);
        let orchestrator = kind(&["orchestrator"]).await?;
        assert_eq!(orchestrator.default_capabilities(), ["assistant.ask"]);
        assert_eq!(
            orchestrator.role(),
            murmur_subjects::roles::Role::Orchestrator
        );
        let bridge = kind(&["bridge", "--protocol-agent", "echo"]).await?;
        assert_eq!(bridge.default_name(), "echo");
        assert_eq!(bridge.default_capabilities(), ["agent.echo"]);
        // Any other name is a worker kind, idle unless it runs the built-in handler.
        let idle = kind(&["idle"]).await?;
        assert!(matches!(idle, AgentKind::Idle(_)));
        assert_eq!(idle.role(), murmur_subjects::roles::Role::Worker);
        let worker = kind(&["tester", "--builtin-handler", "--capability", "test.run"]).await?;
        assert!(matches!(&worker, AgentKind::Builtin(k) if k == "tester"));
        assert_eq!(worker.role(), murmur_subjects::roles::Role::Worker);
        let voter = kind(&["voter"]).await?;
        assert_eq!(voter.role(), murmur_subjects::roles::Role::Voter);
        Ok(())
    }

    #[tokio::test]
    async fn the_options_every_kind_takes_follow_the_kind() -> Result<()> {
        for argv in [
            &[
                "tester",
                "--name",
                "t-1",
                "--slots",
                "3",
                "--capability",
                "test.run",
            ][..],
            &[
                "memory",
                "--name",
                "t-1",
                "--slots",
                "3",
                "--capability",
                "test.run",
            ][..],
        ] {
            let (_, common) = AgentKind::from_command(command(argv)?).await?;
            assert_eq!(common.name.as_deref(), Some("t-1"), "{argv:?}");
            assert_eq!(common.slots, 3, "{argv:?}");
            assert_eq!(common.capabilities, ["test.run"], "{argv:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_option_of_another_kind_is_refused_before_anything_runs() {
        for (argv, expected) in [
            (&["tool", "--model", "m.gguf"][..], "--model"),
            (&["compiler", "--root", "/tmp"][..], "--root"),
            (&["compiler", "--exec-allow", "wc"][..], "--exec-allow"),
            (&["memory", "--builtin-handler"][..], "--builtin-handler"),
            (
                &["tool", "--writable", "--exec-allow", "wc"][..],
                "--root <DIR>",
            ),
            (
                &["mcp", "--mcp-command", "x", "--mcp-url", "http://h"][..],
                "cannot be used with",
            ),
            (&[][..], "KIND"),
        ] {
            let error = command(argv).expect_err("refused").to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
        // What a kind cannot run without is named with what it is for.
        for (argv, expected) in [
            (&["tool"][..], "needs --root DIR (tool.fs"),
            (&["inference"][..], "needs --model FILE.gguf"),
            (&["mcp"][..], "needs one of --mcp-command"),
            (&["bridge"][..], "needs --protocol-agent NAME"),
        ] {
            let Err(error) = kind(argv).await else {
                panic!("{argv:?} accepted");
            };
            let error = error.to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
        let old = command(&["--kind", "tool", "--root", "."]).map_err(crate::cli::with_tips);
        let error = old.expect_err("refused").to_string();
        assert!(error.contains("murmur agent run KIND [OPTIONS]"), "{error}");
        // A kind clap does not know is parsed on its own, with its own usage line.
        for (argv, expected) in [
            (&["tester", "--root", "/tmp"][..], "murmur agent run tester"),
            (&["tester", "--model", "m.gguf"][..], "--model"),
            (
                &["tester", "--server", "nats://h"][..],
                "--server is a global flag",
            ),
        ] {
            let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let error = KindCommand::other(&argv).expect_err("refused").to_string();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_tool_agent_refuses_a_program_it_cannot_find() {
        let Err(error) = kind(&["tool", "--exec-allow", "no-such-program"]).await else {
            panic!("accepted");
        };
        let error = error.to_string();
        assert!(error.contains("not a program in /usr/local/bin"), "{error}");
    }
}
