//! `murmur roles`: grants and revocations in the log.

use anyhow::Result;
use murmur_subjects::roles::Role;
use murmur_testkit::authority::{self};

use crate::cli::creds::{ensure_operator, expiry, list};
use crate::settings::Settings;

/// `murmur roles ...`
#[derive(Debug, clap::Subcommand)]
pub enum RolesCommand {
    /// Grant a participant key a role in the log (no credentials: for servers that enforce
    /// nothing, or keys whose credentials are issued elsewhere).
    Grant {
        /// The participant's public key (U...).
        key: String,
        /// The role.
        #[arg(long)]
        role: Role,
        /// A name for it.
        #[arg(long, default_value = "")]
        name: String,
        /// Valid for this long (e.g. 30d); without it, until revoked.
        #[arg(long)]
        expires: Option<humantime::Duration>,
    },
    /// Revoke a key's role in the log (every role without `--role`).
    Revoke {
        /// The participant's public key.
        key: String,
        /// Only this role.
        #[arg(long)]
        role: Option<Role>,
        /// Why.
        #[arg(long, default_value = "revoked by the operator")]
        reason: String,
    },
    /// The realm's owner and every grant, from the log.
    Ls,
}

/// Runs `murmur roles ...`.
pub async fn run(settings: &Settings, command: RolesCommand) -> Result<()> {
    match command {
        RolesCommand::Grant {
            key,
            role,
            name,
            expires,
        } => {
            let log = settings.open_log("murmur-roles").await?;
            ensure_operator(&log).await?;
            let sequence = authority::grant(&log, &key, role, &name, expiry(expires)?).await?;
            out!("granted {key} the {role} role at log position {sequence}");
            Ok(())
        }
        RolesCommand::Revoke { key, role, reason } => {
            let log = settings.open_log("murmur-roles").await?;
            ensure_operator(&log).await?;
            let sequence = authority::revoke(&log, &key, role, &reason).await?;
            out!(
                "revoked {key}'s {} at log position {sequence}",
                role.map_or("roles".to_string(), |r| format!("{r} role"))
            );
            Ok(())
        }
        RolesCommand::Ls => list(settings).await,
    }
}
