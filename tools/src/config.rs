//! CLI configuration: TOML file < `MURMUR_*` environment < flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use murmur_subjects::connect::{Auth, ConnectOptions, Tls};
use murmur_subjects::{Identity, LogConfig};
use serde::Deserialize;

/// The TOML config file (all optional).
///
/// ```toml
/// realm = "acme"
/// identity_file = "/etc/murmur/agent.seed"
/// data_dir = "/var/lib/murmur"
/// [nats]
/// servers = ["nats://n1:4222", "nats://n2:4222"]
/// auth = { method = "creds_file", path = "/etc/murmur/agent.creds" }
/// tls = { required = true, ca_file = "/etc/murmur/ca.pem" }
/// listed_servers_only = false   # true: never fail over to peers a server advertises
/// [log]
/// replicas = 3
/// max_age = 31536000
/// [archive]
/// dir = "/var/lib/murmur/archive"
/// interval_s = 600
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Realm (tenant) token.
    pub realm: Option<String>,
    /// Seed file of this participant's identity.
    pub identity_file: Option<PathBuf>,
    /// Where `murmur up` keeps its server store.
    pub data_dir: Option<PathBuf>,
    /// Event size limit in bytes.
    pub max_event_bytes: Option<usize>,
    /// Connection.
    pub nats: Option<ConnectOptions>,
    /// Streams.
    pub log: Option<LogConfig>,
    /// The history archive `murmur up` keeps (see [`crate::archive`]).
    pub archive: Option<crate::archive::ArchiveConfig>,
}

impl FileConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Auth and TLS flags, merged over the file's.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct AuthFlags {
    /// NATS credentials file (JWT + seed).
    #[arg(long, env = "MURMUR_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// File holding an nkey seed used to authenticate the connection.
    #[arg(long, env = "MURMUR_NKEY_SEED_FILE", global = true)]
    pub nkey_seed_file: Option<PathBuf>,
    /// User name.
    #[arg(long, env = "MURMUR_USER", global = true)]
    pub user: Option<String>,
    /// Password.
    #[arg(long, env = "MURMUR_PASSWORD", global = true, hide_env_values = true)]
    pub password: Option<String>,
    /// Token.
    #[arg(long, env = "MURMUR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Require TLS.
    #[arg(long, env = "MURMUR_TLS", global = true)]
    pub tls: bool,
    /// Extra root CA (PEM).
    #[arg(long, env = "MURMUR_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "MURMUR_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "MURMUR_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Connect only to the servers given, never to cluster peers the server advertises.
    #[arg(long, env = "MURMUR_LISTED_SERVERS_ONLY", global = true)]
    pub listed_servers_only: bool,
}

impl AuthFlags {
    /// Applies the flags over `base`.
    pub fn apply(&self, mut base: ConnectOptions) -> Result<ConnectOptions> {
        if let Some(path) = &self.creds {
            base.auth = Auth::CredsFile { path: path.clone() };
        } else if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            base.auth = Auth::NkeySeed {
                seed: seed.trim().to_string(),
            };
        } else if let (Some(user), Some(password)) = (&self.user, &self.password) {
            base.auth = Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            };
        } else if let Some(token) = &self.token {
            base.auth = Auth::Token {
                token: token.clone(),
            };
        }
        base.listed_servers_only |= self.listed_servers_only;
        let tls = &mut base.tls;
        *tls = Tls {
            required: tls.required || self.tls,
            ca_file: self.tls_ca.clone().or(tls.ca_file.take()),
            cert_file: self.tls_cert.clone().or(tls.cert_file.take()),
            key_file: self.tls_key.clone().or(tls.key_file.take()),
        };
        Ok(base)
    }
}

/// Default data directory: `$XDG_DATA_HOME/murmur` or `~/.local/share/murmur`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("murmur");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local/share/murmur")
}

/// Loads the identity seed at `path`, creating a new identity there (mode 0600) if missing.
pub fn load_or_create_identity(path: &Path) -> Result<Identity> {
    if path.exists() {
        let seed =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(Identity::from_seed(&seed)?);
    }
    let identity = Identity::generate();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, identity.seed())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_example() {
        let text = r#"
realm = "acme"
[nats]
servers = ["nats://n1:4222"]
auth = { method = "creds_file", path = "/etc/murmur/agent.creds" }
tls = { required = true }
listed_servers_only = true
[log]
replicas = 3
"#;
        let cfg: FileConfig = toml::from_str(text).expect("parses");
        let nats = cfg.nats.expect("nats");
        assert_eq!(nats.servers, vec!["nats://n1:4222"]);
        assert!(matches!(nats.auth, Auth::CredsFile { .. }));
        assert!(nats.tls.required);
        assert!(nats.listed_servers_only);
        assert_eq!(cfg.log.expect("log").replicas, 3);
    }

    #[test]
    fn flags_win_over_file() {
        let base = ConnectOptions::servers("nats://x:1").auth(Auth::Token {
            token: "file".into(),
        });
        let flags = AuthFlags {
            user: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        let merged = flags.apply(base).expect("merge");
        assert_eq!(
            merged.auth,
            Auth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
    }

    #[test]
    fn identity_file_is_created_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id.seed");
        let a = load_or_create_identity(&path).expect("create");
        let b = load_or_create_identity(&path).expect("load");
        assert_eq!(a.public_key(), b.public_key());
    }
}
