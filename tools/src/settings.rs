//! Settings after merging the config file, environment and flags: the server and
//! credentials to connect with, the realm, the identity, the streams; and opening the log with them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use murmur_subjects::connect::ConnectOptions;
use murmur_subjects::{EventCodec, EventLog, Identity, LogConfig, Token};

use crate::config::{AuthFlags, FileConfig, default_data_dir, load_or_create_identity};

/// The flags every command takes (file < environment < flag).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options (connection, identity, output)")]
pub struct GlobalArgs {
    /// Config file (TOML).
    #[arg(long, env = "MURMUR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// NATS servers, comma-separated. Without one (or with an empty `NATS_URL`), `up` and
    /// `demo` start a local server.
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
    /// The history archive `murmur up` keeps, from the config file's `[archive]`.
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// Codec.
    pub codec: EventCodec,
    /// JSON output.
    pub json: bool,
}

impl Settings {
    /// Merges file < env < flags.
    pub fn resolve(cli: &GlobalArgs) -> Result<Self> {
        let file = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let data_dir = cli
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(default_data_dir);
        // An empty list (`NATS_URL=`) names no server, as if unset.
        let servers = cli.servers.as_deref().filter(|s| !s.trim().is_empty());
        let base = match (servers, file.nats.clone()) {
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
            archive: file.archive,
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
            ..
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
            match EventLog::options(identity.clone(), self.realm.clone())
                .config(self.log.clone())
                .codec(self.codec.clone())
                .open(client.clone())
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
        let authority = murmur_testkit::authority::Authority::open(&auth_dir)?;
        let creds = self
            .data_dir
            .join("participants")
            .join(format!("{name}-{}.creds", &identity.public_key()[..12]));
        murmur_testkit::authority::write_secret(
            &creds,
            &authority.creds(&self.realm, role, name, &identity, None)?,
        )?;
        let operator = self.open_log("murmur-enrol").await?;
        murmur_testkit::authority::grant(&operator, identity.public_key(), role, name, None)
            .await?;
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

impl Settings {
    /// The realm to limit reads to, if one was chosen.
    pub fn read_realm(&self) -> Option<&Token> {
        self.realm_explicit.then_some(&self.realm)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn settings(args: &[&str]) -> Settings {
        let dir = tempfile::tempdir().expect("dir");
        let mut argv = vec!["murmur", "--data-dir"];
        argv.push(dir.path().to_str().expect("utf-8"));
        argv.extend(args);
        argv.push("identity");
        let cli = Cli::try_parse_from(argv).expect("parses");
        Settings::resolve(&cli.global).expect("resolves")
    }

    #[test]
    fn an_empty_server_list_names_no_server() {
        assert!(settings(&["--server", ""]).connect.is_none());
        assert!(settings(&["--server", "  "]).connect.is_none());
        let named = settings(&["--server", "nats://127.0.0.1:4999"]);
        assert_eq!(
            named.connect.expect("a server").servers,
            ["nats://127.0.0.1:4999"]
        );
    }
}
