//! The memory agent: a replica of every knowledge space that answers knowledge queries and
//! sync requests over NATS, dead-letters refused changes, and writes snapshots (compacting
//! the change subjects) for the spaces where it holds the replica role. An agent becomes one
//! with [`EventHandlers::knowledge`]; [`MemoryService`] runs one on its own task.

use std::time::{Duration, Instant};

use futures::StreamExt;
use murmur_knowledge::repo::{Outgoing, RepoGateway, WireMessage, frame_signed_bytes};
use murmur_knowledge::rpc::{QueryReply, QueryRequest, query_filter};
use murmur_knowledge::sync::{
    SESSION_HEADER, SIGNATURE_HEADER, SIGNER_HEADER, SyncServer, sync_filter,
};
use murmur_knowledge::{KnowledgeReplica, ReplicaConfig};
use murmur_subjects::events::AccessRole;
use murmur_subjects::roles::{KNOWLEDGE_REPO, repo_inbox};
use murmur_subjects::{Subject, Token};

use crate::handlers::{EventHandlers, run_handlers};
use crate::runtime::{Agent, AgentError};

/// How the memory agent runs.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// How often it looks for new events when nothing woke it.
    pub poll: Duration,
    /// How often it snapshots spaces with new changes (`None`: never on its own).
    pub snapshot_every: Option<Duration>,
    /// Whether it also purges the changes its snapshots cover. A stream purge is the
    /// operator's; without it the compactor `murmur up` runs purges them.
    pub compact: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            snapshot_every: Some(Duration::from_secs(300)),
            compact: false,
        }
    }
}

/// A memory agent serving on a task of its own (in-process use: the demo, tests,
/// benchmarks); [`MemoryService::stop`] ends it, makes the agent leave and returns its
/// counters.
pub struct MemoryService {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<MemoryStats, AgentError>>,
}

impl MemoryService {
    /// What the agent declares in its manifest's `handles` before [`MemoryService::spawn`]:
    /// the types of [`EventHandlers::knowledge`].
    pub fn handles() -> Vec<String> {
        EventHandlers::new()
            .knowledge(MemoryOptions::default())
            .types()
    }

    /// Runs the memory agent ([`EventHandlers::knowledge`]) for `agent` until stopped;
    /// the agent must have joined declaring those handlers' types.
    pub fn spawn(agent: Agent, options: MemoryOptions) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let handlers = EventHandlers::new().knowledge(options);
            let stats = run_handlers(&agent, &handlers, async {
                stopped.await.ok();
            })
            .await
            .map(|stats| stats.knowledge);
            if let Err(e) = agent.leave("stopped").await {
                tracing::warn!(error = %e, "memory agent could not log its leaving");
            }
            stats
        });
        Self { stop, task }
    }

    /// Stops the agent and returns what it did.
    pub async fn stop(self) -> Result<MemoryStats, AgentError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(stats) => stats,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(AgentError::Setup {
                what: "memory agent task",
                reason: e.to_string(),
            }),
        }
    }
}

/// What the memory agent did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Queries answered.
    pub queries: u64,
    /// Sync requests answered.
    pub sync_requests: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Changes refused (and dead-lettered).
    pub refused: u64,
    /// Frames taken from automerge-repo peers.
    pub repo_frames: u64,
    /// automerge-repo frames refused (and dead-lettered).
    pub repo_refused: u64,
    /// automerge-repo frames from connections it did not know, answered "join again".
    pub repo_rejoins: u64,
}

/// The event types a memory agent handles, for its manifest's `handles`: every space and
/// knowledge event (it replicates the spaces it holds and checks their changes).
pub(crate) fn handled_types() -> Vec<String> {
    use murmur_subjects::Payload as _;
    use murmur_subjects::events::{
        KnowledgeChanged, KnowledgeRelayed, SpaceAccessGranted, SpaceAccessRevoked, SpaceOpened,
        SpaceSnapshotted,
    };
    let mut types: Vec<String> = [
        KnowledgeChanged::TYPE,
        KnowledgeRelayed::TYPE,
        SpaceAccessGranted::TYPE,
        SpaceAccessRevoked::TYPE,
        SpaceOpened::TYPE,
        SpaceSnapshotted::TYPE,
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    types.sort();
    types
}

/// How long an automerge-repo connection may stay silent before its sync states are dropped
/// (automerge-repo peers send nothing when nothing changed, so this is generous; a peer that
/// comes back re-joins).
const REPO_IDLE: Duration = Duration::from_secs(3600);

/// Runs the memory agent until `shutdown` resolves.
pub(crate) async fn run_memory(
    agent: &Agent,
    options: MemoryOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<MemoryStats, AgentError> {
    let log = agent.log().clone();
    let realm = log.realm().clone();
    let client = log.client().clone();
    let mut replica = KnowledgeReplica::open(
        log.clone(),
        ReplicaConfig::all()
            .dead_lettering(true)
            .compacting(options.compact),
    )
    .await?;
    let setup = |what: &'static str| {
        move |e: async_nats::SubscribeError| AgentError::Setup {
            what,
            reason: e.to_string(),
        }
    };
    // Woken as space and knowledge events are published: one subscription per type it
    // handles, the subjects its role may subscribe to.
    let mut wakes = Vec::new();
    for ty in handled_types() {
        let Some(t) = log.codec().catalog().get(&ty) else {
            continue;
        };
        wakes.push(
            client
                .subscribe(t.filter(Some(&realm)).to_string())
                .await
                .map_err(setup("wake-up subscription"))?,
        );
    }
    let mut wake = futures::stream::select_all(wakes);
    let mut sync_requests = client
        .queue_subscribe(sync_filter(&realm).to_string(), "murmur-memory".into())
        .await
        .map_err(setup("sync subscription"))?;
    let mut queries = client
        .queue_subscribe(query_filter(&realm).to_string(), "murmur-memory".into())
        .await
        .map_err(setup("query subscription"))?;
    let identity = log.identity().clone();
    // automerge-repo peers reach this agent on its own key's repo subject.
    let own = Token::new(identity.public_key()).map_err(|e| AgentError::Setup {
        what: "repo gateway subject",
        reason: e.to_string(),
    })?;
    let mut repo_frames = client
        .subscribe(KNOWLEDGE_REPO.subject(&realm, &own).to_string())
        .await
        .map_err(setup("repo gateway subscription"))?;
    let mut gateway = RepoGateway::new(realm.as_str(), identity.public_key());
    let mut server = SyncServer::new();
    let mut stats = MemoryStats::default();
    let mut dirty = false;
    let mut last_snapshot = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_poll = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = wake.next() => dirty = true,
            _ = tick.tick() => {
                if dirty || last_poll.elapsed() >= options.poll {
                    dirty = false;
                    last_poll = Instant::now();
                    match replica.refresh().await {
                        Ok(report) => stats.refused += report.refused,
                        Err(e) => tracing::warn!(error = %e, "knowledge refresh failed; retrying"),
                    }
                    if gateway.connections() > 0 {
                        gateway.forget_idle(Instant::now(), REPO_IDLE);
                        let owed = replica.repo_pending(&mut gateway);
                        send_repo_frames(&client, &identity, owed).await;
                    }
                }
                if let Some(every) = options.snapshot_every
                    && last_snapshot.elapsed() >= every
                {
                    last_snapshot = Instant::now();
                    let me = identity.public_key().to_string();
                    let spaces: Vec<String> = replica
                        .base()
                        .spaces()
                        .filter(|s| s.holds(&me, AccessRole::Replica, u64::MAX))
                        .map(|s| s.space.clone())
                        .collect();
                    for space in spaces {
                        match replica.snapshot(&space).await {
                            Ok(written) => stats.snapshots += written.len() as u64,
                            Err(e) => tracing::warn!(%space, error = %e, "snapshot failed"),
                        }
                    }
                }
            }
            Some(request) = sync_requests.next() => {
                stats.sync_requests += 1;
                let Some(reply_to) = request.reply.clone() else { continue };
                let Ok(subject) = Subject::parse(request.subject.as_str()) else { continue };
                let document = subject.aggregate().as_str().to_string();
                let session = request
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(SESSION_HEADER))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                let answer = match replica.document_mut(&document) {
                    Some(doc) => server.answer(&identity, doc, &session, &document, &request.payload),
                    None => Err(murmur_knowledge::KnowledgeError::UnknownDocument(document.clone())),
                };
                match answer {
                    Ok((body, signature)) => {
                        let headers = signed_headers(identity.public_key(), &signature);
                        if let Err(e) = client.publish_with_headers(reply_to, headers, body.into()).await {
                            tracing::warn!(error = %e, "sync reply not sent");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%document, error = %e, "sync request refused");
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Nats-Service-Error", e.to_string().as_str());
                        headers.insert("Nats-Service-Error-Code", "400");
                        let _ = client.publish_with_headers(reply_to, headers, Vec::new().into()).await;
                    }
                }
            }
            Some(frame) = repo_frames.next() => {
                stats.repo_frames += 1;
                match take_repo_frame(&mut replica, &mut gateway, &client, &identity, &frame).await {
                    Ok(()) => {}
                    // A peer of a gateway that restarted: told to join again, nothing refused.
                    Err(murmur_knowledge::KnowledgeError::UnknownConnection) => stats.repo_rejoins += 1,
                    Err(e) => {
                        stats.repo_refused += 1;
                        tracing::warn!(error = %e, "automerge-repo frame refused");
                        let error = e.to_ingest_error();
                        if let Err(e) = log
                            .dead_letter("knowledge-repo", &error, murmur_subjects::RefusedMessage::of(&frame, None))
                            .await
                        {
                            tracing::warn!(error = %e, "refused repo frame not dead-lettered");
                        }
                    }
                }
            }
            Some(request) = queries.next() => {
                stats.queries += 1;
                let Some(reply_to) = request.reply.clone() else { continue };
                // Read-your-writes: a writer that flushed before asking sees its facts.
                if let Err(e) = replica.refresh().await {
                    tracing::warn!(error = %e, "refresh before query failed");
                }
                let (reply, nonce, space) = answer_query(&replica, request.subject.as_str(), &request.payload);
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                let signature = identity.sign_detached(
                    &murmur_knowledge::rpc::reply_signed_bytes(&nonce, &space, &body),
                );
                let headers = signed_headers(identity.public_key(), &signature);
                if let Err(e) = client.publish_with_headers(reply_to, headers, body.into()).await {
                    tracing::warn!(error = %e, "query reply not sent");
                }
            }
        }
    }
    Ok(stats)
}

/// Takes one automerge-repo frame: checks it, relays it into the log when it adds changes,
/// answers it. A refusal is also told to the peer (an `error` message) when it can be.
async fn take_repo_frame(
    replica: &mut KnowledgeReplica,
    gateway: &mut RepoGateway,
    client: &async_nats::Client,
    identity: &murmur_subjects::Identity,
    frame: &async_nats::Message,
) -> Result<(), murmur_knowledge::KnowledgeError> {
    let header = |name: &str| murmur_knowledge::rpc::header(frame, name);
    let (peer, session, signature) = (
        header(SIGNER_HEADER),
        header(SESSION_HEADER),
        header(SIGNATURE_HEADER),
    );
    if Token::new(&session).is_err() {
        return Err(murmur_knowledge::KnowledgeError::BadFrame(format!(
            "session {session:?} is not a subject token"
        )));
    }
    let taken = match replica.repo_check(gateway, &peer, &session, &frame.payload, &signature) {
        Ok(checked) => replica.repo_apply(gateway, checked).await,
        Err(e) => Err(e),
    };
    match taken {
        Ok(frames) => {
            send_repo_frames(client, identity, frames).await;
            Ok(())
        }
        Err(e) => {
            // Only a peer whose own signature verified is answered on its inbox.
            if !matches!(e, murmur_knowledge::KnowledgeError::UnsignedFrame(_)) {
                let error = WireMessage::error(gateway.peer_id(), &e.to_string()).encode();
                let owed = vec![Outgoing {
                    peer,
                    session,
                    frame: error,
                }];
                send_repo_frames(client, identity, owed).await;
            }
            Err(e)
        }
    }
}

/// Sends frames to automerge-repo peers, each signed over its session.
async fn send_repo_frames(
    client: &async_nats::Client,
    identity: &murmur_subjects::Identity,
    frames: Vec<Outgoing>,
) {
    for out in frames {
        let signature = identity.sign_detached(&frame_signed_bytes(&out.session, &out.frame));
        let headers = signed_headers(identity.public_key(), &signature);
        let subject = repo_inbox(&out.peer, &out.session);
        if let Err(e) = client
            .publish_with_headers(subject, headers, out.frame.into())
            .await
        {
            tracing::warn!(error = %e, "automerge-repo frame not sent");
        }
    }
}

/// Reply headers naming the signer and carrying its detached signature.
fn signed_headers(signer: &str, signature: &str) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(SIGNER_HEADER, signer);
    headers.insert(SIGNATURE_HEADER, signature);
    headers
}

/// The reply to a query request, with the request's nonce and space (what the reply's
/// signature covers).
fn answer_query(
    replica: &KnowledgeReplica,
    subject: &str,
    body: &[u8],
) -> (QueryReply, String, String) {
    let failed = |error: String| QueryReply {
        error: Some(error),
        ..Default::default()
    };
    let Ok(subject) = Subject::parse(subject) else {
        return (failed("bad subject".into()), String::new(), String::new());
    };
    let space = subject.aggregate().as_str().to_string();
    let request: QueryRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                failed(format!("bad query request: {e}")),
                String::new(),
                space,
            );
        }
    };
    let reply = match replica.query(&space, &request.query, request.as_of) {
        Ok(facts) => QueryReply {
            facts,
            position: replica.position(),
            error: None,
        },
        Err(e) => failed(e.to_string()),
    };
    (reply, request.nonce, space)
}
