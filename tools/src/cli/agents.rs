//! `murmur agents ls`: the registry, a projection of the log.

use anyhow::Result;
use clap::Subcommand;
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_subjects::Projector;

use crate::cli::task::parse_labels;
use crate::settings::Settings;

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

/// Runs `murmur agents ...`.
pub async fn run(settings: &Settings, command: AgentsCommand) -> Result<()> {
    match command {
        AgentsCommand::Ls { capability, labels } => ls(settings, capability, &labels).await,
    }
}
