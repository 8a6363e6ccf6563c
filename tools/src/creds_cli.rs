//! `murmur creds ...` (credentials: the operator's keys sign them, the server enforces
//! them) and `murmur roles ...` (grants in the log, which the folds enforce).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use murmur_subjects::roles::Role;
use murmur_subjects::{EventLog, Identity};

use crate::authority::{self, Authority};
use crate::cli::Settings;

/// `murmur creds ...`
#[derive(Debug, clap::Subcommand)]
pub enum CredsCommand {
    /// Mint a `.creds` file for a new participant key with a role, and record the grant in
    /// the log. Operator only (run where `murmur up` keeps its data).
    Issue {
        /// The role: operator, coordinator, tallier, auditor, monitor, worker, planner,
        /// compiler, executor, tool, inference, memory, voter, submitter or observer.
        #[arg(long)]
        role: Role,
        /// A name for the participant (shown by `creds ls` and the server's monitoring).
        #[arg(long)]
        name: String,
        /// Valid for this long (e.g. 30d, 12h); without it, until revoked.
        #[arg(long)]
        expires: Option<humantime::Duration>,
        /// Where to write it (default: ./NAME.creds); never overwritten.
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// Participants granted a role in this realm, from the log: key, name, role, when,
    /// expiry and status (active, expired, revoked).
    Ls,
    /// Revoke a participant key: the server disconnects it at once and refuses it from then
    /// on, and its roles end at this position in the log.
    Revoke {
        /// The participant's public key (U...).
        key: String,
        /// Why.
        #[arg(long, default_value = "revoked by the operator")]
        reason: String,
    },
}

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

fn expiry(expires: Option<humantime::Duration>) -> Result<Option<DateTime<Utc>>> {
    expires
        .map(|d| {
            Ok::<_, anyhow::Error>(
                Utc::now() + chrono::Duration::from_std(*d).context("--expires is too long")?,
            )
        })
        .transpose()
}

/// Fails unless `log`'s identity may grant roles in its realm now.
async fn ensure_operator(log: &EventLog) -> Result<()> {
    let book = authority::roles_now(log).await?;
    let me = log.identity().public_key();
    if book
        .roles_at(log.realm().as_str(), me, u64::MAX, Some(Utc::now()))
        .contains(Role::Operator)
    {
        return Ok(());
    }
    let owner = book
        .realm(log.realm().as_str())
        .and_then(|r| r.owner.clone());
    match owner {
        Some(o) => bail!(
            "this identity ({me}) is not an operator of realm {}: its owner is {} ({})",
            log.realm(),
            o.key,
            o.name
        ),
        None => bail!(
            "realm {} has no owner yet: start `murmur up` for it first",
            log.realm()
        ),
    }
}

fn servers(settings: &Settings) -> Result<Vec<String>> {
    Ok(settings
        .connect
        .as_ref()
        .context(
            "no NATS server configured: set NATS_URL or --server (`murmur up` prints its address)",
        )?
        .servers
        .clone())
}

/// Runs `murmur creds ...`.
pub async fn creds(settings: &Settings, command: CredsCommand) -> Result<()> {
    match command {
        CredsCommand::Issue {
            role,
            name,
            expires,
            out,
        } => {
            let authority = Authority::open(&settings.data_dir.join("auth"))?;
            let servers = servers(settings)?;
            let log = settings.open_log("murmur-creds").await?;
            ensure_operator(&log).await?;
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            if path.exists() {
                bail!(
                    "{} exists: credentials are never overwritten; pick another -o",
                    path.display()
                );
            }
            let expires_at = expiry(expires)?;
            let identity = Identity::generate();
            // The realm's account as this version derives it (a realm new to the server,
            // or templates from an older version, take effect now).
            authority::push_account_jwt(
                &servers,
                &authority.system_creds_file()?,
                &authority.account_jwt(&settings.realm, &settings.log)?,
            )
            .await?;
            let text = authority.creds(&settings.realm, role, &name, &identity, expires_at)?;
            authority::write_secret(&path, &text)?;
            let sequence =
                authority::grant(&log, identity.public_key(), role, &name, expires_at).await?;
            if settings.json {
                out!(
                    "{}",
                    serde_json::json!({
                        "path": path,
                        "key": identity.public_key(),
                        "role": role,
                        "realm": settings.realm,
                        "expires_at": expires_at,
                        "granted_at_sequence": sequence,
                    })
                );
            } else {
                out!("{}", path.display());
                eprintln!(
                    "{name}: {} as {role} in realm {}{} (granted at log position {sequence}); on its machine: murmur --server {} --realm {} --creds {} ...",
                    identity.public_key(),
                    settings.realm,
                    expires_at.map_or(String::new(), |t| format!(", until {t}")),
                    servers.join(","),
                    settings.realm,
                    path.display()
                );
            }
            Ok(())
        }
        CredsCommand::Ls => list(settings).await,
        CredsCommand::Revoke { key, reason } => {
            let authority = Authority::open(&settings.data_dir.join("auth"))?;
            let servers = servers(settings)?;
            let log = settings.open_log("murmur-creds").await?;
            ensure_operator(&log).await?;
            authority.revoke(&settings.realm, &key)?;
            authority::push_account_jwt(
                &servers,
                &authority.system_creds_file()?,
                &authority.account_jwt(&settings.realm, &settings.log)?,
            )
            .await?;
            let sequence = authority::revoke(&log, &key, None, &reason).await?;
            out!(
                "revoked {key}: disconnected and refused by the server from now on; its roles end at log position {sequence}"
            );
            Ok(())
        }
    }
}

/// Runs `murmur roles ...`.
pub async fn roles(settings: &Settings, command: RolesCommand) -> Result<()> {
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

async fn list(settings: &Settings) -> Result<()> {
    let log = settings.open_log("murmur-roles").await?;
    let book = authority::roles_now(&log).await?;
    let Some(realm) = book.realm(log.realm().as_str()) else {
        if settings.json {
            out!("{}", serde_json::json!({"owner": null, "grants": []}));
        } else {
            eprintln!("realm {} has no owner and no grants", log.realm());
        }
        return Ok(());
    };
    let now = Utc::now();
    if settings.json {
        let grants: Vec<serde_json::Value> = realm
            .grants
            .iter()
            .flat_map(|(key, grants)| {
                grants.iter().map(move |g| {
                    serde_json::json!({
                        "key": key,
                        "name": g.name,
                        "role": g.role,
                        "granted_at": g.granted_at,
                        "granted_at_sequence": g.from,
                        "expires_at": g.expires_at,
                        "revoked_at_sequence": g.until,
                        "status": g.status(now),
                    })
                })
            })
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"owner": realm.owner, "grants": grants})
            )?
        );
        return Ok(());
    }
    if let Some(o) = &realm.owner {
        out!(
            "owner {} ({}) since log position {}",
            o.key,
            o.name,
            o.since
        );
    }
    out!(
        "{:<56}  {:<16} {:<12} {:<20} {:<20} status",
        "key",
        "name",
        "role",
        "granted",
        "expires"
    );
    for (key, grants) in &realm.grants {
        for g in grants {
            out!(
                "{key:<56}  {:<16} {:<12} {:<20} {:<20} {}",
                g.name.chars().take(16).collect::<String>(),
                g.role.as_str(),
                g.granted_at
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                g.expires_at.map_or("never".into(), |t| t
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()),
                g.status(now)
            );
        }
    }
    Ok(())
}
