//! `murmur gateway`: serves a murmur capability as a Synadia Agent Protocol agent, so the
//! protocol's clients (its Python and TypeScript SDKs, `nats req`) discover it and prompt
//! it; each prompt becomes a murmur task, routed and logged like any other.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use murmur_agents::agent_protocol::{Gateway, GatewayConfig};
use murmur_subjects::agent_protocol::AgentAddress;

use crate::settings::Settings;

/// `murmur gateway` arguments.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The capability each prompt's task asks for.
    #[arg(long, default_value = "llm.generate")]
    capability: String,
    /// The protocol agent's name (default: the capability, dots as dashes).
    #[arg(long)]
    agent: Option<String>,
    /// Its owner (default: the realm).
    #[arg(long)]
    owner: Option<String>,
    /// Its session.
    #[arg(long, default_value = "default")]
    session: String,
    /// A label key=value the agent running each task must carry (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// For `llm.generate`: most tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Seconds between protocol heartbeats (the protocol's default is 30).
    #[arg(long, default_value_t = 30)]
    heartbeat_s: u64,
    /// Seconds a prompt may take before it is answered with an error.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

/// Runs the gateway until ctrl-c.
pub async fn run(settings: &Settings, args: GatewayArgs) -> Result<()> {
    let agent = args
        .agent
        .clone()
        .unwrap_or_else(|| args.capability.replace('.', "-"));
    let owner = args
        .owner
        .clone()
        .unwrap_or_else(|| settings.realm.to_string());
    let address = AgentAddress::new(agent, owner, args.session.clone()).context(
        "agent, owner and session must each be one subject token (letters, digits, _ and -)",
    )?;
    murmur_coordination::routing::validate_capability(&args.capability)
        .map_err(anyhow::Error::msg)?;
    let log = settings.open_log("murmur-gateway").await?;
    let config = GatewayConfig {
        address: address.clone(),
        capability: args.capability.clone(),
        labels: super::task::parse_labels(&args.labels)?,
        max_tokens: args.max_tokens,
        heartbeat: Duration::from_secs(args.heartbeat_s.max(1)),
        prompt_timeout: Duration::from_secs(args.timeout_s.max(1)),
        description: format!(
            "murmur realm {}: each prompt runs as a {} task",
            settings.realm, args.capability
        ),
    };
    let gateway = Gateway::start(log, config)
        .await
        .context("registering the protocol agent (a submitter's credentials may)")?;
    out!("{}", address.prompt_subject());
    eprintln!(
        "protocol agent {} (owner {}, instance {}) answers prompts as {} tasks; ctrl-c to stop",
        address.agent(),
        address.owner(),
        gateway.instance_id(),
        args.capability
    );
    let stats = gateway
        .serve(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    eprintln!(
        "gateway stopped: {} prompts answered, {} failed",
        stats.answered, stats.failed
    );
    Ok(())
}
