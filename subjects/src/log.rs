//! The JetStream event log: the history stream (source of truth), the dead-letter stream, a
//! publisher that signs, deduplicates by event id and pipelines acks, optimistic concurrency
//! per aggregate, and readers for replay.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::binding::BindingError;
use crate::codec::{Draft, EventCodec, IngestError, RefusedMessage, SealedEvent, VerifiedEvent};
use crate::identity::Identity;
use crate::subject::{Plane, SubjectFilter, Token};

/// The most appends a writer keeps sent and not yet awaited: well under the 5,000 ack
/// permits of a JetStream context (async-nats), past which a send waits for an ack to be
/// awaited. A writer that sends more than that before awaiting any waits for good; one
/// that slides a window of this size over its writes keeps the pipeline full.
pub const APPENDS_IN_FLIGHT: usize = 1_024;

/// Header JetStream deduplicates on.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Optimistic concurrency: expected last sequence of the subject (or filter below).
pub const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// Optimistic concurrency: the filter the expected sequence applies to (server ≥ 2.11).
pub const EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// Stream configuration murmur creates at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// History stream name.
    pub history_stream: String,
    /// Dead-letter stream name.
    pub dlq_stream: String,
    /// Replicas: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    /// Oldest history kept; default 365 days. Zero keeps forever.
    #[serde(with = "humantime_secs")]
    pub max_age: Duration,
    /// Largest history kept in bytes; default 10 GiB. -1 is unlimited.
    pub max_bytes: i64,
    /// Window in which the server deduplicates by `Nats-Msg-Id`; default 2 minutes.
    #[serde(with = "humantime_secs")]
    pub duplicate_window: Duration,
    /// Dead letters kept for; default 30 days.
    #[serde(with = "humantime_secs")]
    pub dlq_max_age: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            history_stream: "MURMUR_HISTORY".into(),
            dlq_stream: "MURMUR_DLQ".into(),
            replicas: 1,
            max_age: Duration::from_secs(365 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

mod humantime_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl LogConfig {
    /// Subjects captured by the history stream.
    pub fn history_subjects() -> Vec<String> {
        vec![format!("murmur.v1.*.{}.>", Plane::Evt.as_str())]
    }

    /// Subjects captured by the dead-letter stream.
    pub fn dlq_subjects() -> Vec<String> {
        vec![format!("murmur.v1.*.{}.>", Plane::Dlq.as_str())]
    }

    /// The history stream's configuration; `fast_ingest`: the server knows fast-ingest
    /// batches (see [`stores_fast_ingest_batches`]).
    fn history(&self, fast_ingest: bool) -> stream::Config {
        stream::Config {
            name: self.history_stream.clone(),
            description: Some("murmur history: the source of truth".into()),
            subjects: Self::history_subjects(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            discard: DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            allow_direct: true,
            // Bulk writers' fast-ingest batches (`crate::bulk`).
            allow_batch_publish: fast_ingest,
            ..Default::default()
        }
    }

    fn dlq(&self) -> stream::Config {
        stream::Config {
            name: self.dlq_stream.clone(),
            description: Some("murmur dead letters".into()),
            subjects: Self::dlq_subjects(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age: self.dlq_max_age,
            duplicate_window: self.duplicate_window,
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// Whether a server of `version` (its INFO's, e.g. `2.12.8`) knows fast-ingest batches
/// (`allow_batched`, nats-server 2.14+). The field goes only to servers that know it: from
/// 2.12 on a server refuses a stream configuration holding a field it does not know.
pub fn stores_fast_ingest_batches(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 14),
        _ => false,
    }
}

/// The client's or the server's error underneath a [`LogError`], kept as its source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Creating or reading a stream failed.
    #[error("stream {stream}: {source}")]
    Stream {
        /// Stream name.
        stream: String,
        /// The client's or the server's error.
        #[source]
        source: BoxError,
    },
    /// The server refused a stream's configuration (a field or setting it does not accept,
    /// subjects another stream holds): asking again cannot succeed.
    #[error(
        "stream {stream}: the server refused its configuration (the node this client is connected to runs nats-server {server_version}): {source} (murmur needs nats-server 2.11 or newer on every node; an existing stream of that name or subjects may need removing, or the settings in [log] changing)"
    )]
    StreamRefused {
        /// Stream name.
        stream: String,
        /// The version the server this client is connected to reported (in a cluster,
        /// another node may have parsed the configuration).
        server_version: String,
        /// The server's error.
        #[source]
        source: BoxError,
    },
    /// The event could not be encoded (e.g. over the size limit).
    #[error("cannot encode event: {0}")]
    Encode(#[from] BindingError),
    /// Another writer appended to the aggregate first.
    #[error(
        "optimistic concurrency conflict on {filter}: expected last sequence {expected}, the aggregate has moved on ({server})"
    )]
    Conflict {
        /// The aggregate filter.
        filter: String,
        /// The sequence the writer expected.
        expected: u64,
        /// The server's words (they name the actual last sequence).
        server: String,
    },
    /// The server refused or did not acknowledge a publish.
    #[error("publish to {subject} failed: {source}")]
    Publish {
        /// Subject.
        subject: String,
        /// The client's or the server's error.
        #[source]
        source: BoxError,
    },
    /// Only `evt` and `dlq` plane events are persisted; use `publish_live` for the others.
    #[error("{0} plane events are not persisted; use publish_live")]
    NotPersisted(Plane),
    /// Reading from a consumer failed.
    #[error("consumer: {0}")]
    Consumer(#[source] BoxError),
    /// The payload could not be encoded.
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    /// A stored message read on purpose (not folded) did not decode or verify.
    #[error("stored message on {subject} is not a valid event: {reason}")]
    Undecodable {
        /// Subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

impl LogError {
    /// Whether trying again may succeed: the server or stream was unreachable, a publish
    /// went unacknowledged, a consumer broke (a node lost, a leader election). Conflicts
    /// and encoding errors are not transient.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LogError::Stream { .. } | LogError::Publish { .. } | LogError::Consumer(_)
        )
    }

    /// What a long-running service does with a failed read: a transient failure is logged
    /// (`{what} unavailable; retrying`) and waited out for `pause`, then `Ok` (its
    /// projectors reconnect on the next poll); any other failure comes back as `Err`.
    pub async fn wait_out_if_transient(self, what: &str, pause: Duration) -> Result<(), Self> {
        if !self.is_transient() {
            return Err(self);
        }
        tracing::warn!(error = %self, "{what} unavailable; retrying");
        tokio::time::sleep(pause).await;
        Ok(())
    }
}

/// Whether a stream lookup failed because the stream does not exist.
fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether the server refused a stream's configuration for good: invalid JSON (a field it
/// does not know), an invalid setting, subjects another stream holds, more replicas than a
/// single server has, the account's stream limit.
fn is_config_refused(error: &jetstream::Error) -> bool {
    matches!(
        error.error_code(),
        jetstream::ErrorCode(10025 | 10052 | 10065 | 10074 | 10027)
    )
}

/// Why creating `stream` (one of the log's streams, or the stream underneath a key-value
/// bucket or an object store) failed: [`LogError::StreamRefused`] where the server refused
/// its configuration for good, found anywhere in `error`'s source chain (the client wraps
/// a bucket's refused stream in its own error), else the transient [`LogError::Stream`].
pub(crate) fn creation_error(
    stream: &str,
    server_version: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> LogError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let refused = std::iter::from_fn(|| {
        let this = cause?;
        cause = this.source();
        Some(this)
    })
    .any(|e| {
        e.downcast_ref::<jetstream::context::CreateStreamError>()
            .is_some_and(|e| {
                matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(js)
                    if is_config_refused(&js))
            })
    });
    if refused {
        LogError::StreamRefused {
            stream: stream.into(),
            server_version: server_version.into(),
            source: Box::new(error),
        }
    } else {
        LogError::Stream {
            stream: stream.into(),
            source: Box::new(error),
        }
    }
}

/// Whether creating a stream failed because one with that name exists.
fn is_stream_name_taken(e: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// Acknowledgement of a persisted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence.
    pub sequence: u64,
    /// The server had already stored an event with this id (deduplicated).
    pub duplicate: bool,
}

/// Expected state of an aggregate for an optimistic-concurrency write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The aggregate must have no events yet.
    NoEvents,
    /// The aggregate's last event must be at this stream sequence.
    LastSequence(u64),
}

/// An ack still in flight: await it with [`PendingAppend::wait`].
#[must_use = "an unawaited append may not have been stored"]
pub struct PendingAppend {
    subject: String,
    occ: Option<(String, u64)>,
    future: PublishAckFuture,
}

impl PendingAppend {
    /// Waits for the server's acknowledgement.
    pub async fn wait(self) -> Result<Appended, LogError> {
        let ack = self
            .future
            .await
            .map_err(|e| classify(&self.subject, &self.occ, e.kind(), e.to_string()))?;
        Ok(Appended {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

/// A handle on the event log for one participant: its identity signs what it appends.
#[derive(Clone)]
pub struct EventLog {
    client: async_nats::Client,
    js: jetstream::Context,
    codec: EventCodec,
    identity: Identity,
    realm: Token,
    config: LogConfig,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("realm", &self.realm)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// How to open an [`EventLog`]: who writes (`identity`), in which realm, with which streams
/// ([`LogConfig`]) and codec ([`EventCodec`]); both default. Made by [`EventLog::options`].
#[derive(Debug, Clone)]
pub struct EventLogOptions {
    identity: Identity,
    realm: Token,
    config: LogConfig,
    codec: EventCodec,
}

impl EventLogOptions {
    /// The streams and their limits (default: [`LogConfig::default`]).
    pub fn config(mut self, config: LogConfig) -> Self {
        self.config = config;
        self
    }

    /// The codec (default: [`EventCodec::default`]).
    pub fn codec(mut self, codec: EventCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Opens the log on `client`, creating the streams where missing (idempotent).
    pub async fn open(self, client: async_nats::Client) -> Result<EventLog, LogError> {
        let js = jetstream::new(client.clone());
        let log = EventLog {
            client,
            js,
            codec: self.codec,
            identity: self.identity,
            realm: self.realm,
            config: self.config,
        };
        log.ensure_streams().await?;
        Ok(log)
    }
}

impl EventLog {
    /// Options for opening the log as `identity` in `realm`:
    /// `EventLog::options(identity, realm).config(c).open(client)`.
    pub fn options(identity: Identity, realm: Token) -> EventLogOptions {
        EventLogOptions {
            identity,
            realm,
            config: LogConfig::default(),
            codec: EventCodec::default(),
        }
    }

    /// Creates the history and dead-letter streams when they are missing. Safe to call from
    /// every participant at start.
    ///
    /// An existing stream keeps its configuration: it belongs to whoever created it (an
    /// operator, `murmur up`, the first participant). Rewriting it from each participant's
    /// settings, as this once did, let one agent started without a config file scale a
    /// cluster's R3 log down to R1 (and could shorten its retention) for everyone. Only
    /// subjects this version needs and the stream lacks are added.
    pub async fn ensure_streams(&self) -> Result<(), LogError> {
        let server_version = self.client.server_info().version;
        let fast_ingest = stores_fast_ingest_batches(&server_version);
        for cfg in [self.config.history(fast_ingest), self.config.dlq()] {
            let name = cfg.name.clone();
            let stream_err = |e: String| LogError::Stream {
                stream: name.clone(),
                source: e.into(),
            };
            let existing = self
                .find_stream(&name)
                .await?
                .map(|stream| stream.cached_info().config.clone());
            let mut existing = match existing {
                Some(config) => config,
                None => match self.create_stream_as_known(cfg.clone()).await {
                    Ok(_) => continue,
                    // Another participant created it meanwhile: theirs stands.
                    Err(e) if is_stream_name_taken(&e) => self
                        .js
                        .get_stream(&name)
                        .await
                        .map_err(|e| stream_err(e.to_string()))?
                        .cached_info()
                        .config
                        .clone(),
                    // A participant whose role may not create streams gets no answer (the
                    // server refuses the request without replying): say what is missing.
                    Err(e) if e.kind() == jetstream::context::CreateStreamErrorKind::TimedOut => {
                        return Err(stream_err(format!(
                            "it does not exist, and creating it got no answer ({e}); where the server enforces roles only an operator creates it (`murmur up` does)"
                        )));
                    }
                    Err(e) => return Err(creation_error(&name, &server_version, e)),
                },
            };
            if existing.num_replicas != cfg.num_replicas {
                tracing::debug!(
                    stream = %name,
                    existing = existing.num_replicas,
                    configured = cfg.num_replicas,
                    "the stream exists: keeping its replicas"
                );
            }
            let missing: Vec<String> = cfg
                .subjects
                .iter()
                .filter(|s| !existing.subjects.contains(s))
                .cloned()
                .collect();
            if !missing.is_empty() {
                existing.subjects.extend(missing);
                self.js
                    .update_stream(existing)
                    .await
                    .map_err(|e| creation_error(&name, &server_version, e))?;
            }
        }
        Ok(())
    }

    /// Turns fast-ingest batches on for the history stream where the server knows them and
    /// the stream was made without them: by a murmur from before them, by hand, or while a
    /// node that did not know them led a cluster's meta group (a 2.12 leader refuses the
    /// setting, a 2.11 leader drops it). The operator's provisioning calls it, so the next
    /// `murmur up` after an upgrade turns them on. Returns whether the stream takes them
    /// now. The stream's other settings stay as they are, and a refusal is no error: bulk
    /// writers then send one event at a time, as they do on older servers.
    pub async fn enable_fast_ingest(&self) -> Result<bool, LogError> {
        if !stores_fast_ingest_batches(&self.client.server_info().version) {
            return Ok(false);
        }
        let name = self.config.history_stream.as_str();
        let Some(stream) = self.find_stream(name).await? else {
            return Ok(false);
        };
        let mut config = stream.cached_info().config.clone();
        if config.allow_batch_publish {
            return Ok(true);
        }
        config.allow_batch_publish = true;
        match self.js.update_stream(config).await {
            Ok(info) if info.config.allow_batch_publish => {
                tracing::info!(
                    stream = %name,
                    "fast-ingest batches turned on: bulk writers send batches from now on"
                );
                Ok(true)
            }
            Ok(_) => {
                tracing::info!(
                    stream = %name,
                    "fast-ingest batches stay off: the node that parsed the change (the cluster's meta leader) drops the setting; `murmur up` turns them on once that leader runs nats-server 2.14 or newer"
                );
                Ok(false)
            }
            Err(e) => {
                tracing::info!(
                    stream = %name,
                    error = %e,
                    "fast-ingest batches stay off: the server refused turning them on (a node older than 2.14 may lead the cluster's meta group); bulk writers send one event at a time"
                );
                Ok(false)
            }
        }
    }

    /// Creates the stream `cfg`; where the server does not know the fast-ingest setting
    /// after all, without it. The version of the server a client is connected to can say
    /// more than the one that parses the request: in a cluster being upgraded the meta
    /// leader may be a 2.12 node (which refuses a field it does not know) while the node
    /// the client is on is 2.14 or newer.
    async fn create_stream_as_known(
        &self,
        cfg: stream::Config,
    ) -> Result<jetstream::stream::Stream, jetstream::context::CreateStreamError> {
        let asked_for_fast_ingest = cfg.allow_batch_publish;
        match self.js.create_stream(cfg.clone()).await {
            Err(e)
                if asked_for_fast_ingest
                    && matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(js)
                        if js.error_code() == jetstream::ErrorCode(10025)) =>
            {
                tracing::info!(
                    stream = %cfg.name,
                    refused = %e,
                    "the server does not know fast-ingest batches: the stream is created without them"
                );
                self.js
                    .create_stream(stream::Config {
                        allow_batch_publish: false,
                        ..cfg
                    })
                    .await
            }
            other => other,
        }
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
    /// The JetStream context.
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
    /// The codec.
    pub fn codec(&self) -> &EventCodec {
        &self.codec
    }
    /// This participant's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// The realm.
    pub fn realm(&self) -> &Token {
        &self.realm
    }
    /// The stream configuration.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Signs a draft as this participant.
    pub fn seal(&self, draft: Draft) -> SealedEvent {
        draft.seal(&self.identity, &self.realm)
    }

    pub(crate) fn persisted_headers(
        &self,
        sealed: &SealedEvent,
    ) -> Result<(HeaderMap, Bytes), LogError> {
        if !matches!(sealed.subject.plane(), Plane::Evt | Plane::Dlq) {
            return Err(LogError::NotPersisted(sealed.subject.plane()));
        }
        let (headers, body) = self.codec.encode(sealed)?;
        let mut headers = HeaderMap::from(headers);
        headers.insert(MSG_ID, sealed.record.id.as_str());
        if let Some(recipient) = &sealed.recipient {
            headers.insert(crate::headers::RECIPIENT, recipient.as_str());
        }
        Ok((headers, body))
    }

    /// Sends a sealed event without waiting for the ack (pipelined); the server dedupes by
    /// the event id. Keep at most [`APPENDS_IN_FLIGHT`] [`PendingAppend`]s un-awaited: each
    /// holds one of the JetStream context's 5,000 ack permits (async-nats), and a send past
    /// them waits until one is awaited or dropped, so a writer that awaits its acks only
    /// after sending more than 5,000 waits for good.
    pub async fn append_sealed(&self, sealed: &SealedEvent) -> Result<PendingAppend, LogError> {
        let (headers, body) = self.persisted_headers(sealed)?;
        self.send(sealed.subject.as_str(), headers, body, None)
            .await
    }

    /// Signs and appends a draft, waiting for the ack.
    pub async fn append(&self, draft: Draft) -> Result<(SealedEvent, Appended), LogError> {
        let sealed = self.seal(draft);
        let appended = self.append_sealed(&sealed).await?.wait().await?;
        Ok((sealed, appended))
    }

    /// Signs many drafts with batch signatures (one Ed25519 signature per batch).
    pub fn seal_many(&self, drafts: impl IntoIterator<Item = Draft>) -> Vec<SealedEvent> {
        crate::codec::seal_batch(drafts, &self.identity, &self.realm)
    }

    /// Appends sealed events pipelined and waits for every ack, re-sending an event whose
    /// publish failed transiently (see [`LogError::is_transient`]) until `patience` runs out.
    /// Re-sends carry the same event id, so the server stores each event once. What a
    /// long-running worker uses to ride out a lost node or a leader election.
    pub async fn append_sealed_patiently(
        &self,
        sealed: &[SealedEvent],
        patience: Duration,
    ) -> Result<Vec<Appended>, LogError> {
        self.append_windowed(sealed.iter().map(|ev| (ev, None)), patience)
            .await?
            .into_iter()
            .collect()
    }

    /// Waits for `first`; through transient failures re-sends `ev` (same id, same
    /// expectation) until `until`.
    async fn settle(
        &self,
        ev: &SealedEvent,
        expected: Option<Expected>,
        first: Result<PendingAppend, LogError>,
        until: tokio::time::Instant,
    ) -> Result<Appended, LogError> {
        let mut attempt = match first {
            Ok(p) => p.wait().await,
            Err(e) => Err(e),
        };
        loop {
            match attempt {
                Err(e) if e.is_transient() && tokio::time::Instant::now() < until => {
                    tracing::warn!(error = %e, id = %ev.record.id, "append failed; re-sending");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let resend = async {
                        match expected {
                            Some(x) => self.send_expected(ev, x).await?.wait().await,
                            None => self.append_sealed(ev).await?.wait().await,
                        }
                    };
                    attempt = tokio::time::timeout(Duration::from_secs(5), resend)
                        .await
                        .unwrap_or_else(|_| {
                            Err(LogError::Publish {
                                subject: ev.subject.to_string(),
                                source: "no ack within 5 s".into(),
                            })
                        });
                }
                done => return done,
            }
        }
    }

    /// Signs many drafts with batch signatures and sends them all pipelined; await each
    /// [`PendingAppend`] for its ack. The fast path for bursts of events (mind the in-flight
    /// limit of [`EventLog::append_sealed`]).
    pub async fn append_many(
        &self,
        drafts: impl IntoIterator<Item = Draft>,
    ) -> Result<Vec<(SealedEvent, PendingAppend)>, LogError> {
        let sealed = crate::codec::seal_batch(drafts, &self.identity, &self.realm);
        let mut out = Vec::with_capacity(sealed.len());
        for ev in sealed {
            let pending = self.append_sealed(&ev).await?;
            out.push((ev, pending));
        }
        Ok(out)
    }

    /// Appends only if the aggregate is where the writer expects it to be; a conflicting
    /// write is [`LogError::Conflict`], never an overwrite.
    pub async fn append_expected(
        &self,
        draft: Draft,
        expected: Expected,
    ) -> Result<(SealedEvent, Appended), LogError> {
        let sealed = self.seal(draft);
        let appended = self.send_expected(&sealed, expected).await?.wait().await?;
        Ok((sealed, appended))
    }

    /// Optimistic-concurrency writes of sealed events, each re-sent (same id, same
    /// expectation) through transient failures until `patience` runs out (none with
    /// `Duration::ZERO`). A conflict is that write's own result, not an error of the call:
    /// the aggregate moved on (or, after a re-send in a cluster, the first send was stored —
    /// the log tells which).
    pub async fn append_expected_patiently(
        &self,
        writes: &[(SealedEvent, Expected)],
        patience: Duration,
    ) -> Result<Vec<Result<Appended, LogError>>, LogError> {
        self.append_windowed(writes.iter().map(|(ev, x)| (ev, Some(*x))), patience)
            .await
    }

    /// Sends `writes` pipelined, at most [`APPENDS_IN_FLIGHT`] ahead of the one being
    /// settled, and settles each in order (re-sent through transient failures until
    /// `patience` runs out). However many there are, no send waits on the connection's ack
    /// permits. A conflict is that write's own result; any other error ends the call.
    async fn append_windowed<'a>(
        &self,
        writes: impl ExactSizeIterator<Item = (&'a SealedEvent, Option<Expected>)> + Clone,
        patience: Duration,
    ) -> Result<Vec<Result<Appended, LogError>>, LogError> {
        let until = tokio::time::Instant::now() + patience;
        let mut pending = std::collections::VecDeque::with_capacity(APPENDS_IN_FLIGHT);
        let mut unsent = writes.clone();
        let mut out = Vec::with_capacity(writes.len());
        for (ev, expected) in writes {
            while pending.len() < APPENDS_IN_FLIGHT
                && let Some((ev, expected)) = unsent.next()
            {
                pending.push_back(match expected {
                    Some(x) => self.send_expected(ev, x).await,
                    None => self.append_sealed(ev).await,
                });
            }
            let first = pending
                .pop_front()
                .expect("each write is sent before it settles");
            match self.settle(ev, expected, first, until).await {
                Ok(a) => out.push(Ok(a)),
                Err(e @ LogError::Conflict { .. }) => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn send_expected(
        &self,
        sealed: &SealedEvent,
        expected: Expected,
    ) -> Result<PendingAppend, LogError> {
        let (mut headers, body) = self.persisted_headers(sealed)?;
        let filter = sealed.subject.aggregate_filter().to_string();
        let seq = match expected {
            Expected::NoEvents => 0,
            Expected::LastSequence(s) => s,
        };
        headers.insert(EXPECTED_LAST_SUBJECT_SEQ, seq.to_string().as_str());
        headers.insert(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, filter.as_str());
        self.send(sealed.subject.as_str(), headers, body, Some((filter, seq)))
            .await
    }

    pub(crate) async fn send(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Bytes,
        occ: Option<(String, u64)>,
    ) -> Result<PendingAppend, LogError> {
        let future = self
            .js
            .publish_with_headers(subject.to_string(), headers, body)
            .await
            .map_err(|e| classify(subject, &occ, e.kind(), e.to_string()))?;
        Ok(PendingAppend {
            subject: subject.to_string(),
            occ,
            future,
        })
    }

    /// Publishes a `live`-plane event on core NATS (heartbeats): never persisted.
    pub async fn publish_live(&self, draft: Draft) -> Result<SealedEvent, LogError> {
        let sealed = self.seal(draft);
        if sealed.subject.plane() != Plane::Live {
            return Err(LogError::Publish {
                subject: sealed.subject.to_string(),
                source: "only live-plane events go over core NATS".into(),
            });
        }
        let (headers, body) = self.codec.encode(&sealed)?;
        self.client
            .publish_with_headers(sealed.subject.to_string(), headers.into(), body)
            .await
            .map_err(|e| LogError::Publish {
                subject: sealed.subject.to_string(),
                source: e.into(),
            })?;
        Ok(sealed)
    }

    /// Publishes many `live`-plane events on core NATS with batch signatures.
    pub async fn publish_live_many(
        &self,
        drafts: impl IntoIterator<Item = Draft>,
    ) -> Result<usize, LogError> {
        let sealed = crate::codec::seal_batch(drafts, &self.identity, &self.realm);
        for ev in &sealed {
            if ev.subject.plane() != Plane::Live {
                return Err(LogError::Publish {
                    subject: ev.subject.to_string(),
                    source: "only live-plane events go over core NATS".into(),
                });
            }
            let (headers, body) = self.codec.encode(ev)?;
            self.client
                .publish_with_headers(ev.subject.to_string(), headers.into(), body)
                .await
                .map_err(|e| LogError::Publish {
                    subject: ev.subject.to_string(),
                    source: e.into(),
                })?;
        }
        Ok(sealed.len())
    }

    /// Records a refused message in the dead-letter stream and returns the dead letter's
    /// sequence, so nothing is dropped silently.
    pub async fn dead_letter(
        &self,
        detector_name: &str,
        error: &IngestError,
        refused: RefusedMessage<'_>,
    ) -> Result<Appended, LogError> {
        // Refusing bad input is the designed path, and the dead letter is its record
        // (`murmur dlq ls`, `murmur status`); failing to write it comes back as an error.
        tracing::info!(
            subject = refused.subject,
            reason = %error.reason(),
            error = %error,
            stream_sequence = ?refused.stream_sequence,
            "dead-lettering message"
        );
        let sealed =
            self.codec
                .dead_letter(&self.identity, detector_name, &self.realm, error, &refused);
        self.append_sealed(&sealed).await?.wait().await
    }

    /// A handle on one of murmur's streams, with a typed error.
    pub async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, LogError> {
        self.js
            .get_stream(name)
            .await
            .map_err(|e| LogError::Stream {
                stream: name.to_string(),
                source: e.into(),
            })
    }

    /// A handle on stream `name`, or `None` when the server answers that it does not
    /// exist (as after a power failure that took its definition).
    pub async fn find_stream(
        &self,
        name: &str,
    ) -> Result<Option<jetstream::stream::Stream>, LogError> {
        match self.js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e) if is_stream_not_found(&e) => Ok(None),
            Err(e) => Err(LogError::Stream {
                stream: name.to_string(),
                source: e.into(),
            }),
        }
    }

    /// Last sequence of the history stream (0 when empty).
    pub async fn last_sequence(&self, stream_name: &str) -> Result<u64, LogError> {
        let mut stream = self.stream(stream_name).await?;
        let info = stream.info().await.map_err(|e| LogError::Stream {
            stream: stream_name.to_string(),
            source: e.into(),
        })?;
        Ok(info.state.last_sequence)
    }

    /// Decodes a stored message into a verified event, filling in its stream position.
    pub fn decode_stored(
        &self,
        message: &async_nats::Message,
        sequence: u64,
        stored_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<VerifiedEvent, IngestError> {
        let mut event = self.codec.decode(
            message.subject.as_str(),
            message.headers.as_ref(),
            &message.payload,
        )?;
        event.stream_sequence = Some(sequence);
        event.stored_at = stored_at;
        Ok(event)
    }

    /// [`EventLog::decode_stored`] for messages read together, with their signatures checked
    /// in one batch ([`crate::EventCodec::decode_many`]).
    pub fn decode_stored_many(
        &self,
        stored: &[&crate::read::StoredMessage],
    ) -> Vec<Result<VerifiedEvent, IngestError>> {
        let messages: Vec<_> = stored
            .iter()
            .map(|s| (&s.message, s.sequence, s.stored_at))
            .collect();
        self.decode_messages_many(&messages)
    }

    /// [`EventLog::decode_stored_many`] of (message, stream sequence, stored time).
    pub(crate) fn decode_messages_many(
        &self,
        messages: &[(&async_nats::Message, u64, chrono::DateTime<chrono::Utc>)],
    ) -> Vec<Result<VerifiedEvent, IngestError>> {
        self.codec
            .decode_messages(messages.iter().map(|(m, _, _)| *m))
            .into_iter()
            .zip(messages)
            .map(|(decoded, (_, sequence, stored_at))| {
                decoded.map(|mut event| {
                    event.stream_sequence = Some(*sequence);
                    event.stored_at = Some(*stored_at);
                    event
                })
            })
            .collect()
    }

    /// The first event stored on `subject`, verified; `None` when nothing is stored there.
    /// One request, for a reader that follows only some event types and needs one other (a
    /// worker fetching the submission it was assigned).
    pub async fn first_event(&self, subject: &str) -> Result<Option<VerifiedEvent>, LogError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let name = &self.config.history_stream;
        let stream_err = |reason: String| LogError::Stream {
            stream: name.clone(),
            source: reason.into(),
        };
        let stream = self
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        // The first message on a subject never changes, so any replica that has it may
        // answer (direct get: served by the stream itself, not the JetStream API queue,
        // which is slow under load). "Nothing there" may come from a replica that is behind:
        // then the leader is asked through the stream API.
        let stored = match stream.direct_get_first_for_subject(subject).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::trace!(error = %e, subject, "direct get missed; asking the leader");
                let request = stream
                    .raw_message_builder()
                    .sequence(1)
                    .next_by_subject(subject);
                match request.send().await {
                    Ok(m) => m,
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
                    Err(e) => return Err(stream_err(e.to_string())),
                }
            }
        };
        let mut event = self
            .codec
            .decode(
                stored.subject.as_str(),
                Some(&stored.headers),
                &stored.payload,
            )
            .map_err(|e| LogError::Undecodable {
                subject: subject.to_string(),
                reason: e.to_string(),
            })?;
        event.stream_sequence = Some(stored.sequence);
        event.stored_at = Some(stored.time);
        Ok(Some(event))
    }

    /// A filter for every history event in this log's realm.
    pub fn realm_filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.realm.clone())
    }
}

fn classify(
    subject: &str,
    occ: &Option<(String, u64)>,
    kind: PublishErrorKind,
    text: String,
) -> LogError {
    match (kind, occ) {
        (PublishErrorKind::WrongLastSequence, Some((filter, expected))) => LogError::Conflict {
            filter: filter.clone(),
            expected: *expected,
            server: text,
        },
        // async-nats reports a 503 "no responders" as "no stream found for given subject",
        // yet a stream that exists answers nothing too while its replicas elect a leader.
        (PublishErrorKind::StreamNotFound, _) => LogError::Publish {
            subject: subject.to_string(),
            source: format!(
                "no JetStream server answered (503 no responders): no stream takes this subject, or its stream has no leader at the moment (an election, a node catching up); `murmur status` shows the stream ({text})"
            )
            .into(),
        },
        _ => LogError::Publish {
            subject: subject.to_string(),
            source: text.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_servers_from_2_14_are_sent_the_fast_ingest_setting() {
        for (version, knows) in [
            ("2.11.11", false),
            ("2.12.8", false),
            ("2.13.0", false),
            ("2.14.0", true),
            ("2.14.0-RC.1", true),
            ("v2.15.1", true),
            ("3.0.0", true),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(stores_fast_ingest_batches(version), knows, "{version}");
        }
        let config = LogConfig::default();
        assert!(config.history(true).allow_batch_publish);
        assert!(!config.history(false).allow_batch_publish);
        // What a 2.12 server parses: no field it does not know.
        let json = serde_json::to_string(&config.history(false)).expect("config serialises");
        assert!(!json.contains("allow_batched"), "{json}");
    }

    #[test]
    fn a_publish_nobody_answered_says_the_stream_may_be_between_leaders() {
        let error = classify(
            "murmur.v1.default.evt.task.t1.submitted",
            &None,
            PublishErrorKind::StreamNotFound,
            "no stream found for given subject".into(),
        );
        assert!(error.is_transient());
        let text = format!(
            "{error}: {}",
            std::error::Error::source(&error).expect("a source")
        );
        assert!(text.contains("no leader at the moment"), "{text}");
        assert!(
            text.contains("murmur.v1.default.evt.task.t1.submitted"),
            "{text}"
        );
    }
}
