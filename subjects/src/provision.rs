//! What the platform keeps in JetStream besides its streams, created where missing: the
//! presence and checkpoint key-value buckets and the artifact and knowledge object stores.
//! Their names are declared with the roles ([`crate::roles`]), their settings here, so the
//! operator can create them all before any participant joins (where the server enforces
//! roles, only the operator may) and each participant creates the same ones when it is first.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};

use crate::log::{EventLog, LogError, creation_error};
use crate::roles::{ARTIFACT_BUCKET, CHECKPOINT_BUCKET, KNOWLEDGE_BUCKET, PRESENCE_BUCKET};

/// The heartbeat interval presence entries are kept for when the operator creates the
/// bucket: entries expire after three of them.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Why creating `bucket` failed, naming the stream that holds it (`KV_…` or `OBJ_…`): a
/// configuration the server refuses is not retried.
fn setup_error(
    js: &jetstream::Context,
    stream: String,
    e: impl std::error::Error + Send + Sync + 'static,
) -> LogError {
    creation_error(&stream, &js.client().server_info().version, e)
}

/// The presence bucket: one entry per agent, expiring after three missed heartbeats.
async fn ensure_presence_bucket(
    js: &jetstream::Context,
    replicas: usize,
    heartbeat: Duration,
) -> Result<kv::Store, LogError> {
    if let Ok(kv) = js.get_key_value(PRESENCE_BUCKET).await {
        return Ok(kv);
    }
    js.create_key_value(kv::Config {
        bucket: PRESENCE_BUCKET.into(),
        description: "murmur agent presence: one entry per agent, expires after missed heartbeats"
            .into(),
        history: 1,
        max_age: heartbeat * 3,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| setup_error(js, format!("KV_{PRESENCE_BUCKET}"), e))
}

/// The projections' checkpoint bucket.
async fn ensure_checkpoint_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, LogError> {
    match js.get_key_value(CHECKPOINT_BUCKET).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: CHECKPOINT_BUCKET.into(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| setup_error(js, format!("KV_{CHECKPOINT_BUCKET}"), e)),
    }
}

/// An object store with `description`.
async fn ensure_object_store(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    replicas: usize,
) -> Result<object_store::ObjectStore, LogError> {
    match js.get_object_store(bucket).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: bucket.into(),
                description: Some(description.into()),
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| setup_error(js, format!("OBJ_{bucket}"), e)),
    }
}

/// The artifact store: build inputs and outputs, named by SHA-256.
async fn ensure_artifact_store(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, LogError> {
    ensure_object_store(
        js,
        ARTIFACT_BUCKET,
        "murmur artifacts, named by SHA-256",
        replicas,
    )
    .await
}

/// The knowledge snapshot store.
async fn ensure_knowledge_store(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<object_store::ObjectStore, LogError> {
    ensure_object_store(js, KNOWLEDGE_BUCKET, "murmur knowledge snapshots", replicas).await
}

impl EventLog {
    /// The presence bucket, created where missing with entries expiring after three
    /// `heartbeat`s.
    pub async fn presence_bucket(&self, heartbeat: Duration) -> Result<kv::Store, LogError> {
        ensure_presence_bucket(self.jetstream(), self.config().replicas, heartbeat).await
    }

    /// The projections' checkpoint bucket, created where missing.
    pub async fn checkpoint_bucket(&self) -> Result<kv::Store, LogError> {
        ensure_checkpoint_bucket(self.jetstream(), self.config().replicas).await
    }

    /// The artifact store, created where missing.
    pub async fn artifact_store(&self) -> Result<object_store::ObjectStore, LogError> {
        ensure_artifact_store(self.jetstream(), self.config().replicas).await
    }

    /// The knowledge snapshot store, created where missing.
    pub async fn knowledge_store(&self) -> Result<object_store::ObjectStore, LogError> {
        ensure_knowledge_store(self.jetstream(), self.config().replicas).await
    }

    /// Creates everything the platform keeps in JetStream that is missing: the history and
    /// dead-letter streams, the presence and checkpoint buckets, the artifact and knowledge
    /// object stores; and turns fast-ingest batches on for a history stream made without
    /// them where the server now knows them ([`EventLog::enable_fast_ingest`]).
    pub async fn provision(&self) -> Result<(), LogError> {
        self.ensure_streams().await?;
        self.enable_fast_ingest().await?;
        self.presence_bucket(DEFAULT_HEARTBEAT).await?;
        self.checkpoint_bucket().await?;
        self.artifact_store().await?;
        self.knowledge_store().await?;
        Ok(())
    }
}
