//! Connecting to NATS: server list with failover, and every auth method NATS offers
//! (creds file, nkey seed, user/password, token) plus TLS options. Agents and the CLI use the
//! same options.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
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
    /// Reading credentials failed.
    #[error("cannot read credentials {path:?}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
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
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
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
        opts.connect(addrs)
            .await
            .map_err(|e| ConnectError::Connect {
                servers: self.servers.join(","),
                reason: e.to_string(),
            })
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
