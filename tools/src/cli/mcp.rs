//! `murmur mcp serve`: murmur's capabilities as an MCP server over stdio, for MCP clients
//! (editors, assistants, the MCP SDKs): each tool is a capability an online agent offers,
//! and each call runs as a task in the log.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use rmcp::ServiceExt as _;

use crate::settings::Settings;

/// `murmur mcp ...`
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve the realm's capabilities as MCP tools over stdin/stdout until the client
    /// closes the connection (a client starts it as its MCP server command). Needs a
    /// submitter's credentials: each call is a task submitted as this participant.
    Serve {
        /// Seconds a call may take before it answers with an error.
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
    },
}

/// Runs `murmur mcp ...`.
pub async fn run(settings: &Settings, command: McpCommand) -> Result<()> {
    match command {
        McpCommand::Serve { timeout_s } => {
            let log = settings.open_log("murmur-mcp").await?;
            eprintln!(
                "murmur MCP server for realm {} on stdio (each tool call runs as a task)",
                settings.realm
            );
            let tools =
                murmur_agents::mcp::MurmurTools::new(log, Duration::from_secs(timeout_s.max(1)));
            let service = tools
                .serve(rmcp::transport::stdio())
                .await
                .context("the MCP client's initialization failed")?;
            service.waiting().await?;
            Ok(())
        }
    }
}
