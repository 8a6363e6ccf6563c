//! # murmur-testkit
//!
//! A real nats-server with JetStream for your tests, secure by default.
//!
//! [`TestNats::start`] runs the server in operator mode, as `murmur up` does: an operator,
//! a system account and one account per realm with a scoped signing key per role, every
//! participant connecting with credentials of its own ([`TestNats::log_as`],
//! [`TestNats::creds`]). It tries a container first (testcontainers, image `nats` at
//! [`PINNED_SERVER_VERSION`], the version `scripts/install.sh` installs,
//! with the generated configuration mounted) when a Docker engine is reachable, and
//! otherwise starts the local `nats-server` binary on a random port with a temporary store;
//! either way it logs one line saying which path it took, waits until JetStream answers (not
//! for a log line), and removes everything on drop. [`TestNats::start_insecure`] starts one
//! that enforces nothing. [`TestCluster::start`] starts a local 3-node cluster whose nodes
//! can be stopped, restarted and paused; [`TestCluster::start_with`] can run its routes
//! through [`links`] that are cut or delayed on demand, sync every write to disk, put a
//! node's store on a small disk, or put every store on a [`lazy_disk`] that a power failure
//! ([`NatsCluster::cut_power`]) takes back to its last sync.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use murmur_subjects::roles::Role;
//! use murmur_testkit::TestNats;
//! let nats = TestNats::start().await?;
//! let worker = nats.log_as("acme", Role::Worker, "w1").await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_subjects::roles::Role;
use murmur_subjects::{EventCodec, EventLog, Identity, LogConfig, Token};
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub mod authority;
pub mod children;
pub mod lazy_disk;
pub mod links;
pub mod server;

use crate::authority::{Authority, Issuer};
pub use crate::server::ClusterOptions;
use crate::server::{
    NatsCluster, NatsProcess, RESOLVER_DIR_PLACEHOLDER, ServerAuth, wait_jetstream,
};

/// The nats-server version the kit runs: the container image's tag, and the version
/// `scripts/install.sh` pins for the local binary (`scripts/requirements-nats.txt`).
pub const PINNED_SERVER_VERSION: &str = "2.15.1";

/// How long the kit waits for a server to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The realm the kit opens at start.
pub const DEFAULT_REALM: &str = "acme";

/// What keeps the server alive; dropping it stops the server and removes its store.
enum Backend {
    Container(#[allow(dead_code)] Box<ContainerAsync<GenericImage>>),
    Local { _process: Box<NatsProcess> },
}

/// A running single nats-server with JetStream, removed on drop.
pub struct TestNats {
    url: String,
    issuer: Issuer,
    backend: Backend,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNats")
            .field("url", &self.url)
            .field("secure", &self.issuer.is_secure())
            .finish_non_exhaustive()
    }
}

fn docker_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

/// The operator's keys in `dir/auth` and the server settings for them (resolver under
/// `resolver`, the operator JWT at `operator_jwt` as the server sees it).
fn secure_setup(dir: &Path, resolver: &Path) -> Result<(Authority, ServerAuth)> {
    let authority = Authority::open_or_create(&dir.join("auth"))?;
    authority.realm_keys(&Token::new(DEFAULT_REALM)?)?;
    let creds = dir.join("system.creds");
    crate::authority::write_secret(&creds, &authority.system_creds()?)?;
    let config = authority.server_config(&LogConfig::default(), resolver)?;
    Ok((authority, ServerAuth { config, creds }))
}

fn issuer(
    authority: Option<Authority>,
    servers: Vec<String>,
    dir: &Path,
    log: LogConfig,
) -> Issuer {
    Issuer::new(
        authority,
        servers,
        Identity::generate(),
        &dir.join("creds"),
        log,
        EventCodec::default(),
    )
    .grant_deciding_roles_only()
}

impl TestNats {
    /// Starts a server in operator mode: a container if Docker is reachable and
    /// `MURMUR_TEST_NATS` is not `local`, else the local binary. Realm `acme` is open.
    pub async fn start() -> Result<Self> {
        Self::start_with(true).await
    }

    /// Starts a server that enforces nothing (anyone may do anything): for tests of what
    /// the folds do without the server's word.
    pub async fn start_insecure() -> Result<Self> {
        Self::start_with(false).await
    }

    async fn start_with(secure: bool) -> Result<Self> {
        let want_local = std::env::var("MURMUR_TEST_NATS").is_ok_and(|v| v == "local");
        if !want_local && docker_reachable() {
            match Self::start_container(secure).await {
                Ok(nats) => {
                    tracing::info!(url = %nats.url, "test kit: nats-server in a container (testcontainers)");
                    return Ok(nats);
                }
                Err(e) => {
                    tracing::info!(error = %e, "test kit: container path failed; using the local nats-server binary");
                }
            }
        } else {
            tracing::info!(
                "test kit: no Docker engine reachable; using the local nats-server binary"
            );
        }
        Self::start_local(secure).await
    }

    async fn start_container(secure: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        // The server sees the kit's directory at /murmur.
        let (authority, command) = if secure {
            let (authority, auth) = secure_setup(dir.path(), Path::new("/murmur/jwt"))?;
            let config = auth
                .config
                .replace(&dir.path().display().to_string(), "/murmur");
            std::fs::write(
                dir.path().join("nats.conf"),
                format!(
                    "listen: 0.0.0.0:4222\njetstream {{ store_dir: \"/murmur/js\" }}\n{config}"
                ),
            )?;
            (Some(authority), vec!["-c", "/murmur/nats.conf"])
        } else {
            (None, vec!["-js"])
        };
        let container = GenericImage::new("nats", PINNED_SERVER_VERSION)
            .with_exposed_port(4222.tcp())
            .with_wait_for(WaitFor::Nothing)
            .with_mount(Mount::bind_mount(
                dir.path().display().to_string(),
                "/murmur",
            ))
            .with_cmd(command)
            .start()
            .await
            .context("starting nats container")?;
        let port = container.get_host_port_ipv4(4222.tcp()).await?;
        let url = format!("nats://127.0.0.1:{port}");
        let system_creds = secure.then(|| dir.path().join("system.creds"));
        wait_jetstream(&url, system_creds.as_deref(), READY_DEADLINE).await?;
        Self::ready(
            url.clone(),
            issuer(authority, vec![url], dir.path(), LogConfig::default()),
            Backend::Container(Box::new(container)),
            dir,
        )
        .await
    }

    /// Starts the local binary on a random port with a temporary store.
    pub async fn start_local(secure: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = dir.path().join("nats");
        let (authority, auth) = if secure {
            let (authority, auth) = secure_setup(dir.path(), &store.join("jwt"))?;
            (Some(authority), Some(auth))
        } else {
            (None, None)
        };
        let mut retries = 0;
        let process = loop {
            let mut process = NatsProcess::start(0, &store, auth.as_ref()).await?;
            match process.wait_ready(READY_DEADLINE).await {
                Ok(()) => break process,
                // Its ports were free when picked, but another process picking its own (a
                // `murmur` the test runs) can bind one first: the server stops, and starts
                // again on other ports with the same store, as any restart would.
                Err(e) if retries < 3 && e.to_string().contains("address already in use") => {
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let url = process.url();
        Self::ready(
            url.clone(),
            issuer(authority, vec![url], dir.path(), LogConfig::default()),
            Backend::Local {
                _process: Box::new(process),
            },
            dir,
        )
        .await
    }

    /// The server is ready; realm `acme`'s account is loaded (its streams are created by
    /// the first participant, as on an empty server).
    async fn ready(
        url: String,
        issuer: Issuer,
        backend: Backend,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        Ok(Self {
            url,
            issuer,
            backend,
            _dir: dir,
        })
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The version the running server reports in its INFO (which binary or image ran).
    pub async fn server_version(&self) -> Result<String> {
        Ok(self.client().await?.server_info().version)
    }

    /// Whether this server runs in a container.
    pub fn is_container(&self) -> bool {
        matches!(self.backend, Backend::Container(_))
    }

    /// Whether the server enforces roles.
    pub fn is_secure(&self) -> bool {
        self.issuer.is_secure()
    }

    /// Who opens realms and enrols participants here.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// A new client connection with operator credentials in realm `acme` (anonymous on an
    /// insecure server).
    pub async fn client(&self) -> Result<async_nats::Client> {
        let identity = Identity::generate();
        let realm = Token::new(DEFAULT_REALM)?;
        let creds = self
            .issuer
            .creds_file(&realm, Role::Operator, "test-client", &identity)?;
        Ok(self
            .issuer
            .connect_options(creds.as_deref())
            .connect()
            .await?)
    }

    /// An event log for a fresh identity in `realm` with operator credentials (no role in
    /// the log), streams created.
    pub async fn event_log(&self, realm: &str) -> Result<EventLog> {
        self.event_log_as(Identity::generate(), realm).await
    }

    /// An event log for `identity` in `realm` with operator credentials (no role in the
    /// log), streams created.
    pub async fn event_log_as(&self, identity: Identity, realm: &str) -> Result<EventLog> {
        let realm = Token::new(realm)?;
        self.issuer.open_realm(&realm).await?;
        let creds = self
            .issuer
            .creds_file(&realm, Role::Operator, "test", &identity)?;
        let client = self
            .issuer
            .connect_options(creds.as_deref())
            .connect()
            .await?;
        Ok(EventLog::options(identity, realm).open(client).await?)
    }

    /// A participant with a fresh identity and `role` in `realm`: its own credentials, and
    /// the role granted in the log when folds judge its decisions.
    pub async fn log_as(&self, realm: &str, role: Role, name: &str) -> Result<EventLog> {
        self.issuer
            .participant(&Token::new(realm)?, role, name)
            .await
    }

    /// Enrols a fresh identity with `role` in `realm` and returns it with its credentials
    /// file (`None` on an insecure server).
    pub async fn creds(
        &self,
        realm: &str,
        role: Role,
        name: &str,
    ) -> Result<(Identity, Option<PathBuf>)> {
        self.issuer.enrol(&Token::new(realm)?, role, name).await
    }

    /// Arguments that make a `murmur` process a fresh participant with `role` in `realm`
    /// (`--creds FILE`, or `--identity FILE` on an insecure server; files under `dir`).
    pub async fn process_args(
        &self,
        realm: &str,
        role: Role,
        name: &str,
        dir: &Path,
    ) -> Result<Vec<String>> {
        self.issuer
            .process_args(&Token::new(realm)?, role, name, dir)
            .await
    }

    /// The realm owner's log: operator credentials, the realm claimed in the log.
    pub async fn owner(&self, realm: &str) -> Result<EventLog> {
        self.issuer.owner_log(&Token::new(realm)?).await
    }
}

/// A local 3-node cluster (routes, JetStream everywhere, operator mode); nodes can be
/// stopped and restarted. Always uses the local binary.
pub struct TestCluster {
    /// The cluster.
    pub cluster: NatsCluster,
    issuer: Issuer,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts three nodes in operator mode and waits until each serves JetStream.
    pub async fn start() -> Result<Self> {
        Self::start_with(&ClusterOptions::default()).await
    }

    /// [`TestCluster::start`] with `options` (routes through links that can be cut, disks
    /// synced on every write).
    pub async fn start_with(options: &ClusterOptions) -> Result<Self> {
        Self::start_nodes(3, options).await
    }

    /// [`TestCluster::start_with`] with `size` nodes (a fourth one is where a replica
    /// moves when a stream's peer is removed).
    pub async fn start_nodes(size: usize, options: &ClusterOptions) -> Result<Self> {
        tracing::info!("test kit: local {size}-node nats-server cluster");
        let dir = tempfile::tempdir()?;
        let (authority, auth) = secure_setup(dir.path(), Path::new(RESOLVER_DIR_PLACEHOLDER))?;
        let cluster =
            NatsCluster::start_with(size, Some(&dir.path().join("nodes")), Some(&auth), options)
                .await?;
        let servers = cluster.nodes.iter().map(NatsProcess::url).collect();
        Ok(Self {
            cluster,
            issuer: issuer(
                Some(authority),
                servers,
                dir.path(),
                LogConfig {
                    replicas: 3,
                    ..LogConfig::default()
                },
            ),
            _dir: dir,
        })
    }

    /// All URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.cluster.urls()
    }

    /// Who enrols participants here (realm `acme`'s account is preloaded on every node).
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Credentials with `role` in `realm` for `identity` (no grant in the log).
    pub fn creds_for(&self, realm: &str, role: Role, identity: &Identity) -> Result<PathBuf> {
        self.issuer
            .creds_file(&Token::new(realm)?, role, "test", identity)?
            .context("the cluster is secure")
    }

    /// The system account user's credentials (the server's own APIs, e.g.
    /// `$JS.API.SERVER.REMOVE`).
    pub fn system_creds(&self) -> PathBuf {
        self._dir.path().join("system.creds")
    }

    /// Stops node `i` (0-based).
    pub async fn stop(&mut self, i: usize) -> Result<()> {
        self.cluster.nodes[i].stop().await
    }

    /// Restarts node `i` and waits until it serves JetStream again.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        let node = &mut self.cluster.nodes[i];
        node.restart().await?;
        node.wait_ready(READY_DEADLINE).await
    }
}
