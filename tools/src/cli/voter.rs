//! `murmur voter run`: a voter agent, by a policy or by a model.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_agents::handlers::{EventHandlers, run_handlers};
use murmur_agents::voter::{PolicyVoter, Voter};
use murmur_agents::{Agent, AgentSpec};
use murmur_subjects::events::AgentJoined;

use crate::settings::Settings;

/// `murmur voter ...`
#[derive(Debug, Subcommand)]
pub enum VoterCommand {
    /// Run a voter agent: by a policy or by a model.
    Run(crate::cli::voter::VoterRunArgs),
}

/// `murmur voter run` arguments.
#[derive(Debug, clap::Args)]
pub struct VoterRunArgs {
    /// Policy file (TOML; see `murmur_agents::voter::PolicyVoter`).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub policy: Option<std::path::PathBuf>,
    /// Instead of a policy, a GGUF model (as `agent run inference` takes): it votes
    /// approve or reject, whichever answer the model scores higher after a prompt holding
    /// the proposal's question and payload (`murmur_agents::voter::ModelVoter`). The voter
    /// joins with the model's labels.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// With `--model`: the instructions its prompts start with.
    #[arg(long, requires = "model")]
    pub instructions: Option<String>,
    /// Name shown in listings.
    #[arg(long, default_value = "voter")]
    pub name: String,
    /// A label key=value (repeatable): proposals can name their voters by label.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Use a fresh identity instead of the identity file.
    #[arg(long)]
    pub ephemeral_identity: bool,
    /// Keep the program's pages that only the start ran mapped (by default they are given
    /// back to the kernel two seconds after joining, as `murmur agent run` does).
    #[arg(long)]
    pub keep_startup_pages: bool,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
}

/// `murmur voter run`: a policy or model voter agent until ctrl-c / SIGTERM.
pub async fn voter_run(settings: &Settings, args: VoterRunArgs) -> Result<()> {
    let mut labels = BTreeMap::new();
    let voter: std::sync::Arc<dyn Voter> = match (&args.policy, &args.model) {
        (Some(policy), _) => {
            let text = std::fs::read_to_string(policy)
                .with_context(|| format!("reading {}", policy.display()))?;
            let policy: PolicyVoter =
                toml::from_str(&text).with_context(|| format!("parsing {}", policy.display()))?;
            std::sync::Arc::new(policy)
        }
        (None, Some(model)) => {
            let model = crate::cli::agent::load_model(model).await?;
            labels = crate::cli::agent::model_labels(&model);
            model_voter(model, args.instructions.as_deref())
        }
        (None, None) => bail!("murmur voter run needs --policy FILE or --model FILE.gguf"),
    };
    let (settings, identity) = settings
        .participant(
            args.ephemeral_identity,
            murmur_subjects::roles::Role::Voter,
            &args.name,
        )
        .await?;
    let settings = &settings;
    labels.extend(crate::cli::task::parse_labels(&args.labels)?);
    let log = settings.open_log_as("murmur-voter", identity).await?;
    let handlers = EventHandlers::new().votes(voter);
    let agent = Agent::join(
        log,
        AgentSpec {
            manifest: AgentJoined {
                name: args.name.clone(),
                kind: "voter".into(),
                capabilities: vec!["vote".into()],
                labels,
                agent_version: env!("CARGO_PKG_VERSION").into(),
                hardware: crate::cli::agent::hardware(&Default::default()),
                slots: 1,
                handles: Some(handlers.types()),
            },
            heartbeat: Duration::from_millis(args.heartbeat_ms),
        },
    )
    .await?;
    eprintln!("voter {} joined as {}", args.name, agent.id());
    out!("{}", agent.id());
    let stop = crate::signals::shutdown_signal()?;
    if !args.keep_startup_pages {
        tokio::spawn(crate::cli::agent::release_startup_pages());
    }
    let cast = run_handlers(&agent, &handlers, stop).await?.votes_cast;
    agent.enter_lame_duck();
    agent.leave("shutdown").await?;
    eprintln!("voter left after {cast} votes");
    Ok(())
}

#[cfg(feature = "inference")]
fn model_voter(
    model: crate::cli::agent::LoadedModel,
    instructions: Option<&str>,
) -> std::sync::Arc<dyn Voter> {
    use murmur_agents::voter::ModelVoter;
    std::sync::Arc::new(ModelVoter::new(
        model,
        instructions.unwrap_or(ModelVoter::DEFAULT_INSTRUCTIONS),
    ))
}

#[cfg(not(feature = "inference"))]
fn model_voter(
    model: crate::cli::agent::LoadedModel,
    _instructions: Option<&str>,
) -> std::sync::Arc<dyn Voter> {
    match model {}
}

/// Runs `murmur voter ...`.
pub async fn run(settings: &Settings, command: VoterCommand) -> Result<()> {
    match command {
        VoterCommand::Run(args) => voter_run(settings, args).await,
    }
}
