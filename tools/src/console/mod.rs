//! The operator console `murmur up` serves: the page (assets embedded in the binary at build
//! time, see `build.rs`), and a small JSON API over the same folds the CLI runs. The page
//! follows the log itself over NATS WebSocket with observer credentials and asks this API
//! for projections as of the sequence it saw; actions (redrive, cancel, vote) carry the
//! credentials the user entered, and this server acts with exactly those, so the NATS server
//! refuses what their role may not do.

mod api;
mod assets;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::registry::RegistryProjection;
use murmur_coordination::tasks::TaskProjection;
use murmur_subjects::EventLog;
use serde::Serialize;

pub use views::{Answered, LiveView};

/// Mints a worker's user JWT for a participant key the browser generated (its seed never
/// leaves the page), named as given: what the authority that started the server can do.
pub type Enroller = Arc<dyn Fn(&str, &str) -> Result<String> + Send + Sync>;

/// What the page needs to join the realm itself.
#[derive(Clone, Serialize)]
pub struct PageConfig {
    /// Realm.
    pub realm: String,
    /// The NATS WebSocket URL the browser connects to (`None`: the server has no WebSocket
    /// listener; the page says so).
    pub websocket_url: Option<String>,
    /// Read-only credentials the page connects with (`None`: a server without accounts).
    pub observer_creds: Option<String>,
    /// History stream name.
    pub history_stream: String,
    /// Dead-letter stream name.
    pub dlq_stream: String,
    /// The server URLs agents connect to, for the page's hints.
    pub nats_urls: Vec<String>,
    /// Whether the page may join as a compute agent (an [`Enroller`] is at hand).
    pub browser_agents: bool,
    /// Mints the JWT of a browser agent's key (only where `murmur up` started the server).
    #[serde(skip)]
    pub enroller: Option<Enroller>,
}

impl std::fmt::Debug for PageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageConfig")
            .field("realm", &self.realm)
            .field("websocket_url", &self.websocket_url)
            .field("history_stream", &self.history_stream)
            .field("browser_agents", &self.browser_agents)
            .finish_non_exhaustive()
    }
}

impl PageConfig {
    /// The page's settings for `log`'s realm and streams, its actions connecting to
    /// `nats_urls`; without a WebSocket URL or credentials until they are set.
    pub fn for_log(log: &EventLog, nats_urls: Vec<String>) -> Self {
        Self {
            realm: log.realm().to_string(),
            websocket_url: None,
            observer_creds: None,
            history_stream: log.config().history_stream.clone(),
            dlq_stream: log.config().dlq_stream.clone(),
            nats_urls,
            browser_agents: false,
            enroller: None,
        }
    }
}

/// Shared by the request handlers.
pub(crate) struct Console {
    log: EventLog,
    config: PageConfig,
    registry: LiveView<murmur_coordination::registry::Registry>,
    tasks: LiveView<murmur_coordination::tasks::TaskBook>,
    consensus: LiveView<murmur_coordination::consensus::Consensus>,
    /// Every knowledge space, read-only (never compacts, never dead-letters: the auditor
    /// and the compactor do that), refreshed before each answer.
    knowledge: tokio::sync::Mutex<Option<murmur_knowledge::KnowledgeReplica>>,
}

/// Serves the console on `listen` until `stop` resolves; returns the bound address once
/// listening (port 0 picks a free one).
pub async fn serve(
    log: EventLog,
    config: PageConfig,
    listen: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
    let realm = log.realm().clone();
    let console = Arc::new(Console {
        registry: LiveView::spawn(
            log.clone(),
            RegistryProjection {
                realm: realm.clone(),
            },
        ),
        tasks: LiveView::spawn(
            log.clone(),
            TaskProjection {
                realm: realm.clone(),
            },
        ),
        consensus: LiveView::spawn(log.clone(), ConsensusProjection { realm }),
        knowledge: tokio::sync::Mutex::new(None),
        log,
        config,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("listening on {listen} for the console: pick another --console-port, or --no-console")
        })?;
    let bound = listener.local_addr()?;
    let app = api::router(console).merge(assets::router());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("console server")
    });
    Ok((bound, task))
}

/// Whether the page assets were built into this binary (`npm run build` in `tools/console`
/// before cargo builds; `scripts/install.sh` does both).
pub fn assets_built() -> bool {
    assets::built()
}
