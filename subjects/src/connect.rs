//! Connecting to NATS: server list with failover, and every auth method NATS offers
//! (creds file, nkey seed, user/password, token) plus TLS options. Agents and the CLI use the
//! same options.
//!
//! A creds file is read and checked here before the server sees it (a clear error naming
//! the file, not a bare "authorization violation"), and a participant that authenticates
//! with a key gets its own inbox prefix, `_INBOX.<key>`, the only inbox its role may
//! subscribe to. What the server refuses later (a permission, revoked or expired
//! credentials) is logged as an error naming what was refused, and a revocation or expiry
//! is reported on [`Connection::refused`], so a long-running participant can stop instead
//! of reconnecting forever.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A server URL did not parse.
    #[error("invalid server address {url:?}: {reason}")]
    BadServer {
        /// The URL.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// No server was given.
    #[error("no NATS server given (set NATS_URL or --server)")]
    NoServers,
    /// Reading credentials failed, or they are not valid (malformed, expired, not for
    /// their key).
    #[error("credentials {path:?}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The server refused the credentials.
    #[error("{servers} refused {what}: authorization violation. {hint}")]
    Refused {
        /// The servers tried.
        servers: String,
        /// What was presented.
        what: String,
        /// What to do.
        hint: String,
    },
    /// The connection itself failed.
    #[error("cannot connect to {servers}: {reason}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// Why.
        reason: String,
    },
}

/// How a client authenticates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Auth {
    /// No credentials (local development).
    #[default]
    None,
    /// A `.creds` file (JWT + nkey seed).
    CredsFile {
        /// Path of the file.
        path: PathBuf,
    },
    /// A bare nkey seed (`SU...`), the same seed that signs the participant's events.
    NkeySeed {
        /// The seed.
        seed: String,
    },
    /// User and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A token.
    Token {
        /// The token.
        token: String,
    },
}

/// TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    /// Refuse plain-text connections.
    #[serde(default)]
    pub required: bool,
    /// Extra root CA certificate (PEM).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Everything needed to open a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOptions {
    /// Server URLs; the client fails over between them.
    pub servers: Vec<String>,
    /// Authentication.
    #[serde(default)]
    pub auth: Auth,
    /// TLS.
    #[serde(default)]
    pub tls: Tls,
    /// Connection name shown by the server's monitoring.
    #[serde(default)]
    pub name: Option<String>,
    /// Use only the listed servers, never the cluster peers a server advertises (for
    /// clients that cannot reach the advertised addresses, or that must stay on one node).
    #[serde(default)]
    pub listed_servers_only: bool,
}

impl ConnectOptions {
    /// Options for a comma-separated server list (the `NATS_URL` format).
    pub fn servers(list: &str) -> Self {
        Self {
            servers: list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            ..Self::default()
        }
    }

    /// Uses only the listed servers, ignoring the peers a server advertises.
    pub fn listed_servers_only(mut self, only: bool) -> Self {
        self.listed_servers_only = only;
        self
    }

    /// Sets the auth method.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the connection name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Connects, failing over between the servers, and keeps reconnecting forever after.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        Ok(self.connect_watched().await?.client)
    }

    /// The participant key these options authenticate as, if they name one (a creds file
    /// or an nkey seed), read and checked.
    pub fn participant_key(&self) -> Result<Option<String>, ConnectError> {
        match &self.auth {
            Auth::CredsFile { path } => Ok(Some(read_creds(path)?.claims.key)),
            Auth::NkeySeed { seed } => Ok(Some(
                nkeys::KeyPair::from_seed(seed)
                    .map_err(|e| ConnectError::Credentials {
                        path: PathBuf::from("<nkey seed>"),
                        reason: e.to_string(),
                    })?
                    .public_key(),
            )),
            _ => Ok(None),
        }
    }

    /// [`ConnectOptions::connect`], also reporting when the server later refuses the
    /// credentials (revoked or expired).
    pub async fn connect_watched(&self) -> Result<Connection, ConnectError> {
        if self.servers.is_empty() {
            return Err(ConnectError::NoServers);
        }
        let addrs = self
            .servers
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| ConnectError::BadServer {
                        url: url.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key = self.participant_key()?;
        let (refused_tx, refused) = tokio::sync::watch::channel(None::<String>);
        let (denied_tx, denied) = tokio::sync::watch::channel(None::<String>);
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // A server that stops answering (paused, hung, cut off behind a half-open link)
            // is left after three unanswered pings: about 15 s instead of the client's
            // default 60 s interval's three minutes.
            .ping_interval(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(move |event| {
                let refused_tx = refused_tx.clone();
                let denied_tx = denied_tx.clone();
                async move { note_event(&event, &refused_tx, &denied_tx) }
            });
        if let Some(key) = &key {
            opts = opts.custom_inbox_prefix(crate::roles::inbox_prefix(key));
        }
        if let Some(name) = &self.name {
            opts = opts.name(name);
        }
        if self.listed_servers_only {
            opts = opts.ignore_discovered_servers();
        }
        opts = match &self.auth {
            Auth::None => opts,
            Auth::CredsFile { path } => {
                opts.credentials_file(path)
                    .await
                    .map_err(|e| ConnectError::Credentials {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
            }
            Auth::NkeySeed { seed } => opts.nkey(seed.clone()),
            Auth::UserPassword { user, password } => {
                opts.user_and_password(user.clone(), password.clone())
            }
            Auth::Token { token } => opts.token(token.clone()),
        };
        if self.tls.required {
            opts = opts.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let servers = self.servers.join(",");
        let client = opts.connect(addrs).await.map_err(|e| {
            if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation {
                self.refusal(servers.clone())
            } else {
                ConnectError::Connect {
                    servers: servers.clone(),
                    reason: e.to_string(),
                }
            }
        })?;
        Ok(Connection {
            client,
            refused,
            denied,
        })
    }

    fn refusal(&self, servers: String) -> ConnectError {
        let (what, hint) = match &self.auth {
            Auth::None => (
                "an anonymous connection".to_string(),
                "This server requires credentials: pass --creds FILE (`murmur up` prints the \
                 operator's; `murmur creds issue` makes more), or start a server with \
                 `murmur up --insecure`."
                    .to_string(),
            ),
            Auth::CredsFile { path } => (
                format!("the credentials {}", path.display()),
                "They may be revoked, issued by another operator or for another realm, or for \
                 a role the account no longer has: ask the operator (`murmur creds ls`)."
                    .to_string(),
            ),
            Auth::NkeySeed { .. } => (
                "the nkey".to_string(),
                "The server does not know this key.".to_string(),
            ),
            Auth::UserPassword { user, .. } => {
                (format!("user {user:?}"), "Check the password.".to_string())
            }
            Auth::Token { .. } => ("the token".to_string(), "Check the token.".to_string()),
        };
        ConnectError::Refused {
            servers,
            what,
            hint,
        }
    }
}

/// An open connection.
#[derive(Debug)]
pub struct Connection {
    /// The client.
    pub client: async_nats::Client,
    /// Set once the server refuses the connection's credentials after connecting (revoked,
    /// expired): the reason.
    pub refused: tokio::sync::watch::Receiver<Option<String>>,
    /// The server's latest "Permissions Violation" for this connection: an operation its
    /// role does not allow (a publish the server dropped; a request then times out).
    pub denied: tokio::sync::watch::Receiver<Option<String>>,
}

/// Reads and checks a creds file, naming it in any error.
pub fn read_creds(
    path: &std::path::Path,
) -> Result<crate::credentials::UserCredentials, ConnectError> {
    let err = |reason: String| ConnectError::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    crate::credentials::parse_creds(&text, chrono::Utc::now()).map_err(|e| err(e.to_string()))
}

/// Logs what the server refused and notes a refusal of the credentials themselves.
fn note_event(
    event: &async_nats::Event,
    refused: &tokio::sync::watch::Sender<Option<String>>,
    denied: &tokio::sync::watch::Sender<Option<String>>,
) {
    use async_nats::{Event, ServerError};
    match event {
        Event::ServerError(ServerError::AuthorizationViolation) => {
            refused.send_replace(Some("authorization violation".into()));
            tracing::error!(
                "the server refused this connection's credentials (authorization violation)"
            );
        }
        Event::ServerError(ServerError::Other(text)) => {
            let lower = text.to_ascii_lowercase();
            if lower.contains("revoked") || lower.contains("expired") {
                refused.send_replace(Some(text.clone()));
                tracing::error!(reason = %text, "the server refused this connection's credentials");
            } else if lower.contains("permissions violation")
                && text.contains("$JS.API.CONSUMER.DELETE.")
            {
                // An ordered consumer being recreated (after a stall or a failover) asks
                // the server to delete its old one; roles may not delete consumers (they
                // could delete others'), and the server removes an ephemeral consumer once
                // it is inactive anyway. Expected, not a refusal the user must act on.
                tracing::debug!(refused = %text, "an ephemeral consumer's cleanup was left to the server");
            } else if lower.contains("permissions violation") {
                denied.send_replace(Some(text.clone()));
                tracing::error!(
                    refused = %text,
                    "the server refused an operation this identity's role does not allow"
                );
            } else {
                tracing::warn!(error = %text, "server error");
            }
        }
        Event::ClientError(async_nats::ClientError::Other(text))
            if text.contains("authorization violation") =>
        {
            refused.send_replace(Some(text.clone()));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_lists() {
        let o = ConnectOptions::servers("nats://a:4222, nats://b:4222,");
        assert_eq!(o.servers, vec!["nats://a:4222", "nats://b:4222"]);
    }

    #[tokio::test]
    async fn refuses_empty_and_bad_servers() {
        assert!(matches!(
            ConnectOptions::default().connect().await,
            Err(ConnectError::NoServers)
        ));
        assert!(matches!(
            ConnectOptions::servers("nats://[bad").connect().await,
            Err(ConnectError::BadServer { .. })
        ));
    }
}
