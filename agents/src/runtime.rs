//! Join, heartbeat, discovery, lame duck, leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::service::ServiceExt;
use murmur_subjects::events::{AgentHeartbeat, AgentJoined, AgentLeft, AgentLoadChanged};
use murmur_subjects::{Draft, EventLog, LogError, Token};

use crate::metrics::AgentMetrics;
use tokio::task::JoinHandle;

/// KV bucket holding one presence entry per agent, keyed `<realm>.<agent key>`; entries
/// expire three heartbeat intervals (of the agent that created the bucket) after the last
/// beat.
pub const PRESENCE_BUCKET: &str = murmur_subjects::roles::PRESENCE_BUCKET;

/// Why the runtime failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The event log refused an operation.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A payload could not be encoded.
    #[error(transparent)]
    Payload(#[from] murmur_subjects::payload::PayloadError),
    /// The agent's public key is not usable as a subject token (never for nkeys).
    #[error("agent id: {0}")]
    Id(#[from] murmur_subjects::subject::SubjectError),
    /// The knowledge store refused an operation.
    #[error(transparent)]
    Knowledge(#[from] murmur_knowledge::KnowledgeError),
    /// A write the worker had in flight stopped without an answer (its task panicked).
    #[error("a worker write stopped: {0}")]
    WriteStopped(String),
    /// The manifest declares an event type the catalog does not know.
    #[error(
        "the manifest declares it handles {0:?}, which is not an event type in the catalog (`murmur subjects` lists them)"
    )]
    UnknownEventType(String),
    /// A handler was registered for an event type the agent's manifest does not declare.
    #[error("a handler for {0:?}, which the agent's manifest does not declare in `handles`")]
    UndeclaredHandler(String),
    /// Registering the micro service or the presence bucket failed.
    #[error("{what}: {reason}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// What an agent announces.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The manifest (name, kind, capabilities, labels, version, hardware).
    pub manifest: AgentJoined,
    /// Heartbeat interval.
    pub heartbeat: Duration,
}

/// A joined agent. Dropping it without [`Agent::leave`] is a crash as far as the cluster is
/// concerned: heartbeats stop and a liveness monitor records it offline.
pub struct Agent {
    log: EventLog,
    id: Token,
    session: Session,
    /// Where its `agent.joined` was stored.
    joined_sequence: u64,
    /// The event types its manifest declared (sorted), `None` when it declared none.
    handles: Option<Vec<String>>,
    lame_duck: Arc<AtomicBool>,
    queue_depth: Arc<AtomicU32>,
    metrics: Arc<AgentMetrics>,
    heartbeats: JoinHandle<()>,
    status: JoinHandle<()>,
    _service: async_nats::service::Service,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn service_name(kind: &str) -> String {
    let clean: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("murmur-agent-{clean}")
}

/// One membership of an agent, from its `agent.joined` to its `agent.left` (or `offline`):
/// everything the agent says about itself in between continues that event's flow.
#[derive(Debug, Clone)]
struct Session {
    agent: Token,
    joined_event: String,
}

impl Session {
    /// A draft about this agent, correlated with and caused by its `agent.joined`.
    fn draft<P: murmur_subjects::Payload>(
        &self,
        payload: &P,
    ) -> Result<Draft, murmur_subjects::payload::PayloadError> {
        Ok(Draft::new(self.agent.clone(), payload)?.caused_by_ids(
            self.joined_event.clone(),
            self.joined_event.clone(),
            None,
        ))
    }
}

impl Agent {
    /// Joins: appends `agent.joined`, registers the micro service, starts heartbeats. A
    /// manifest that declares an event type the log's catalog does not know is refused
    /// before anything is written.
    pub async fn join(log: EventLog, mut spec: AgentSpec) -> Result<Self, AgentError> {
        if let Some(handles) = &mut spec.manifest.handles {
            let catalog = log.codec().catalog();
            if let Some(unknown) = handles.iter().find(|t| catalog.get(t).is_none()) {
                return Err(AgentError::UnknownEventType(unknown.clone()));
            }
            handles.sort();
            handles.dedup();
        }
        let id = Token::new(log.identity().public_key())?;
        let (joined, stored) = log.append(Draft::new(id.clone(), &spec.manifest)?).await?;
        let session = Session {
            agent: id.clone(),
            joined_event: joined.record.id.clone(),
        };

        let mut metadata = std::collections::HashMap::new();
        metadata.insert("murmur.id".to_string(), id.to_string());
        metadata.insert("murmur.realm".to_string(), log.realm().to_string());
        metadata.insert(
            "murmur.capabilities".to_string(),
            spec.manifest.capabilities.join(","),
        );
        let version = if spec.manifest.agent_version.split('.').count() == 3 {
            spec.manifest.agent_version.clone()
        } else {
            "0.0.0".to_string()
        };
        let metrics = Arc::new(AgentMetrics::new(id.as_str(), &spec.manifest.kind));
        let stats_metrics = metrics.clone();
        let service = log
            .client()
            .service_builder()
            .description(format!(
                "murmur {} agent {}",
                spec.manifest.kind, spec.manifest.name
            ))
            .metadata(metadata)
            .stats_handler(move |_endpoint, _stats| {
                serde_json::to_value(stats_metrics.snapshot()).unwrap_or_default()
            })
            .start(service_name(&spec.manifest.kind), version)
            .await
            .map_err(|e| AgentError::Setup {
                what: "micro service",
                reason: e.to_string(),
            })?;
        // `status` answers with the agent's counters; `$SRV.STATS` shows them as its data.
        let status_subject = murmur_subjects::roles::AGENT_STATUS.subject(log.realm(), &id);
        let mut endpoint = service
            .endpoint_builder()
            .name("status")
            .add(status_subject.to_string())
            .await
            .map_err(|e| AgentError::Setup {
                what: "status endpoint",
                reason: e.to_string(),
            })?;
        let status_metrics = metrics.clone();
        let status = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(request) = endpoint.next().await {
                let body = serde_json::to_vec(&status_metrics.snapshot()).unwrap_or_default();
                if let Err(e) = request.respond(Ok(body.into())).await {
                    tracing::debug!(error = %e, "status reply failed");
                }
            }
        });

        let presence = presence_bucket(&log, spec.heartbeat).await?;
        let lame_duck = Arc::new(AtomicBool::new(false));
        let queue_depth = Arc::new(AtomicU32::new(0));
        let heartbeats = tokio::spawn(beat(
            log.clone(),
            session.clone(),
            spec.heartbeat,
            presence,
            lame_duck.clone(),
            queue_depth.clone(),
            metrics.clone(),
        ));
        Ok(Self {
            log,
            id,
            session,
            joined_sequence: stored.sequence,
            handles: spec.manifest.handles,
            lame_duck,
            queue_depth,
            metrics,
            heartbeats,
            status,
            _service: service,
        })
    }

    /// The agent's id (its public key).
    pub fn id(&self) -> &Token {
        &self.id
    }

    /// Where its `agent.joined` was stored: what it handles is what is stored after it.
    pub fn joined_sequence(&self) -> u64 {
        self.joined_sequence
    }

    /// The event types its manifest declared it handles (sorted), `None` when undeclared.
    pub fn handles(&self) -> Option<&[String]> {
        self.handles.as_deref()
    }

    /// The agent's event log handle.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Enters lame-duck mode: announced in heartbeats, refuses new work. One-way.
    pub fn enter_lame_duck(&self) {
        self.lame_duck.store(true, Ordering::SeqCst);
        self.metrics.set_lame_duck();
    }

    /// The agent's counters.
    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    /// Whether it is in lame-duck mode.
    pub fn is_lame_duck(&self) -> bool {
        self.lame_duck.load(Ordering::SeqCst)
    }

    /// Sets the queue depth reported in heartbeats.
    pub fn set_queue_depth(&self, depth: u32) {
        self.queue_depth.store(depth, Ordering::SeqCst);
    }

    /// Leaves: stops heartbeats, appends `agent.left`, drains the connection.
    pub async fn leave(self, reason: &str) -> Result<(), AgentError> {
        self.heartbeats.abort();
        self.status.abort();
        self.log
            .append(self.session.draft(&AgentLeft {
                reason: reason.to_string(),
            })?)
            .await?;
        self.log.client().flush().await.ok();
        Ok(())
    }
}

async fn presence_bucket(log: &EventLog, heartbeat: Duration) -> Result<kv::Store, AgentError> {
    log.presence_bucket(heartbeat)
        .await
        .map_err(|e| AgentError::Setup {
            what: "presence bucket",
            reason: e.to_string(),
        })
}

async fn beat(
    log: EventLog,
    session: Session,
    interval: Duration,
    presence: kv::Store,
    lame_duck: Arc<AtomicBool>,
    queue_depth: Arc<AtomicU32>,
    metrics: Arc<AgentMetrics>,
) {
    let mut tick = tokio::time::interval(interval);
    let key = format!("{}.{}", log.realm(), session.agent);
    // What the registry last learned from the log (a fresh join resets it to idle).
    let mut logged = AgentLoadChanged::default();
    loop {
        tick.tick().await;
        let now = AgentLoadChanged {
            load: load_average(),
            queue_depth: queue_depth.load(Ordering::SeqCst),
            lame_duck: lame_duck.load(Ordering::SeqCst),
        };
        if logged.significant_change(&now) {
            match session.draft(&now) {
                Ok(draft) => match log.append(draft).await {
                    Ok(_) => logged = now,
                    Err(e) => tracing::warn!(error = %e, "load change not logged"),
                },
                Err(e) => tracing::error!(error = %e, "load change payload"),
            }
        }
        let hb = AgentHeartbeat {
            interval_ms: interval.as_millis() as u64,
            load: load_average(),
            queue_depth: if lame_duck.load(Ordering::SeqCst) {
                u32::MAX
            } else {
                queue_depth.load(Ordering::SeqCst)
            },
        };
        let draft = match session.draft(&hb) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "heartbeat payload");
                continue;
            }
        };
        match log.publish_live(draft).await {
            Ok(_) => metrics.heartbeat_sent(),
            Err(e) => tracing::warn!(error = %e, "heartbeat publish failed"),
        }
        let value = serde_json::to_vec(&hb).unwrap_or_default();
        if let Err(e) = presence.put(key.as_str(), value.into()).await {
            tracing::debug!(error = %e, "presence update failed");
        }
    }
}

/// One-minute load average per core, 0.0 when unknown.
fn load_average() -> f32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f32;
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f32>().ok())
        })
        .map(|l| (l / cores).clamp(0.0, 1.0))
        .unwrap_or(0.0)
}
