//! The test kit: a real nats-server with JetStream for your tests.
//!
//! [`TestNats::start`] tries a container first (testcontainers, image `nats:2.11` with `-js`)
//! when a Docker engine is reachable, and otherwise starts the local `nats-server` binary on a
//! random port with a temporary store; either way it logs one line saying which path it took,
//! waits until JetStream answers (not for a log line), and removes everything on drop.
//! [`TestCluster::start`] starts a local 3-node cluster whose nodes can be stopped and
//! restarted.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use murmur_tools::testkit::TestNats;
//! let nats = TestNats::start().await?;
//! let client = async_nats::connect(nats.url()).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use anyhow::{Context, Result};
use murmur_subjects::{EventCodec, EventLog, Identity, LogConfig, Token};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::nats_server::{NatsCluster, NatsProcess, wait_jetstream};

/// How long the kit waits for a server to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// What keeps the server alive; dropping it stops the server and removes its store.
enum Backend {
    Container(#[allow(dead_code)] Box<ContainerAsync<GenericImage>>),
    Local {
        _process: Box<NatsProcess>,
        _dir: tempfile::TempDir,
    },
}

/// A running single nats-server with JetStream, removed on drop.
pub struct TestNats {
    url: String,
    backend: Backend,
}

impl std::fmt::Debug for TestNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNats")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn docker_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

impl TestNats {
    /// Starts a server: a container if Docker is reachable and `MURMUR_TEST_NATS` is not
    /// `local`, else the local binary.
    pub async fn start() -> Result<Self> {
        let want_local = std::env::var("MURMUR_TEST_NATS").is_ok_and(|v| v == "local");
        if !want_local && docker_reachable() {
            match Self::start_container().await {
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
        Self::start_local().await
    }

    async fn start_container() -> Result<Self> {
        let container = GenericImage::new("nats", "2.11")
            .with_exposed_port(4222.tcp())
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(["-js"])
            .start()
            .await
            .context("starting nats container")?;
        let port = container.get_host_port_ipv4(4222.tcp()).await?;
        let url = format!("nats://127.0.0.1:{port}");
        wait_jetstream(&url, READY_DEADLINE).await?;
        Ok(Self {
            url,
            backend: Backend::Container(Box::new(container)),
        })
    }

    /// Starts the local binary on a random port with a temporary store.
    pub async fn start_local() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut process = NatsProcess::start(0, dir.path()).await?;
        process.wait_ready(READY_DEADLINE).await?;
        Ok(Self {
            url: process.url(),
            backend: Backend::Local {
                _process: Box::new(process),
                _dir: dir,
            },
        })
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this server runs in a container.
    pub fn is_container(&self) -> bool {
        matches!(self.backend, Backend::Container(_))
    }

    /// A new client connection.
    pub async fn client(&self) -> Result<async_nats::Client> {
        Ok(async_nats::connect(&self.url).await?)
    }

    /// An event log for a fresh identity in `realm`, streams created.
    pub async fn event_log(&self, realm: &str) -> Result<EventLog> {
        self.event_log_as(Identity::generate(), realm).await
    }

    /// An event log for `identity` in `realm`, streams created.
    pub async fn event_log_as(&self, identity: Identity, realm: &str) -> Result<EventLog> {
        let client = self.client().await?;
        Ok(EventLog::open(
            client,
            identity,
            Token::new(realm)?,
            LogConfig::default(),
            EventCodec::default(),
        )
        .await?)
    }
}

/// A local 3-node cluster (routes, JetStream everywhere); nodes can be stopped and
/// restarted. Always uses the local binary.
pub struct TestCluster {
    /// The cluster.
    pub cluster: NatsCluster,
}

impl TestCluster {
    /// Starts three nodes and waits until each serves JetStream.
    pub async fn start() -> Result<Self> {
        tracing::info!("test kit: local 3-node nats-server cluster");
        Ok(Self {
            cluster: NatsCluster::start(3, None).await?,
        })
    }

    /// All URLs, comma-separated.
    pub fn urls(&self) -> String {
        self.cluster.urls()
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
