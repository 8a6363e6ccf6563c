//! The NATS/JetStream edge: a replica of one or every knowledge space.
//!
//! Reading: [`KnowledgeReplica::refresh`] takes the history's last sequence `L`, folds the
//! `space.*` events up to `L` (access, snapshots), loads any newer snapshot from the Object
//! Store (checked against its SHA-256 and heads), then reads the documents' `changed` events
//! up to `L` and applies them in batches. A snapshot recorded after `L` may already have
//! purged changes this read had not reached, so the refresh ends by reading the space events
//! again and loading (or merging in) any such snapshot. Because every change is judged with
//! the access held at its own sequence, and every replica reads the same log, all replicas
//! and a replay agree.
//!
//! Writing: local edits go into the documents at once and are committed into changes (every
//! [`AUTO_COMMIT_OPS`] operations or 128 KiB, and at [`KnowledgeReplica::flush`]); each change
//! is sealed as a `knowledge.changed` event with id `kc-<change hash>` (server dedupe) and kept
//! in an outbox until the server acknowledged it, so edits made while cut off from the
//! cluster are published when it is reachable again — nothing written is lost. With
//! [`ReplicaConfig::outbox_dir`] the outbox is on disk too, so that also holds across a
//! crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use murmur_subjects::events::{
    AccessRole, KnowledgeChanged, SpaceAccessGranted, SpaceAccessRevoked, SpaceOpened,
    SpaceSnapshotted,
};
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, EventLog, LogError, Token};
use sha2::{Digest, Sha256};

use crate::base::{DocumentSummary, KnowledgeBase};
use crate::document::{AUTO_COMMIT_OPS, FactView, ResolutionPolicy, ResolutionRecord};
use crate::error::KnowledgeError;
use crate::fact::{FactCore, FactDraft, FactId, Value, hex};
use crate::outbox::Outbox;
use crate::query::Query;
use crate::space::{document_token, shard_of, space_token};

mod catch_up;

/// Object Store bucket holding snapshots.
pub const SNAPSHOT_BUCKET: &str = murmur_subjects::roles::KNOWLEDGE_BUCKET;
/// Default largest fact, in bytes of JSON.
pub const DEFAULT_MAX_FACT_BYTES: u32 = 16 * 1024;
/// Bytes of pending text after which a document commits on its own.
const AUTO_COMMIT_BYTES: usize = 128 * 1024;

/// The clock stamping local edits (injectable so tests control time).
pub type Clock = Arc<dyn murmur_subjects::clock::Clock>;

/// How a replica reads and what it does with refusals.
#[derive(Clone)]
pub struct ReplicaConfig {
    /// Spaces to follow; `None` follows every space (what a memory agent does).
    pub spaces: Option<BTreeSet<String>>,
    /// Changes applied per Automerge call at most.
    pub batch: usize,
    /// Write a dead letter for every refused change (one replica per realm should: the
    /// memory agent). Others only record refusals in their state.
    pub dead_letter_refusals: bool,
    /// Purge the changes a snapshot covers right after recording it ([`compact`]). Purging
    /// is the operator's: where the server enforces roles, a replica without the operator
    /// role leaves it to the compactor `murmur up` runs ([`crate::compaction`]).
    pub compact: bool,
    /// The clock stamping local edits.
    pub clock: Clock,
    /// Where unacknowledged changes are kept on disk (see [`ReplicaConfig::outbox_dir`]);
    /// `None` keeps them in memory only.
    pub outbox_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("spaces", &self.spaces)
            .field("batch", &self.batch)
            .field("dead_letter_refusals", &self.dead_letter_refusals)
            .field("compact", &self.compact)
            .finish_non_exhaustive()
    }
}

impl ReplicaConfig {
    /// Follows one space.
    pub fn space(name: &str) -> Self {
        Self {
            spaces: Some([name.to_string()].into()),
            ..Self::all()
        }
    }

    /// Follows every space.
    pub fn all() -> Self {
        Self {
            spaces: None,
            batch: 5_000,
            dead_letter_refusals: false,
            compact: true,
            clock: Arc::new(murmur_subjects::clock::SystemClock),
            outbox_dir: None,
        }
    }

    /// Dead-letters refused changes.
    pub fn dead_lettering(mut self, on: bool) -> Self {
        self.dead_letter_refusals = on;
        self
    }

    /// Whether its snapshots purge what they cover ([`ReplicaConfig::compact`]).
    pub fn compacting(mut self, on: bool) -> Self {
        self.compact = on;
        self
    }

    /// Uses `clock` for local edits.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps unacknowledged changes in `dir` as well as in memory, so a crash while cut off
    /// from the servers loses no edit: a replica opened later on the same folder (one
    /// folder per identity) publishes them at its next flush. Its changes are signed by
    /// the identity that made them.
    pub fn outbox_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.outbox_dir = Some(dir.into());
        self
    }

    fn follows(&self, space: &str) -> bool {
        self.spaces.as_ref().is_none_or(|s| s.contains(space))
    }
}

/// What one [`KnowledgeReplica::refresh`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Space events folded.
    pub space_events: u64,
    /// Change events read.
    pub changes: u64,
    /// Snapshots loaded.
    pub snapshots_loaded: u64,
    /// Changes refused (and dead-lettered when configured).
    pub refused: u64,
    /// Messages that did not decode as events (the auditor dead-letters those).
    pub undecodable: u64,
    /// The history position read up to.
    pub position: u64,
}

/// Creates a space owned by `log`'s identity; refused if it exists.
pub async fn open_space(
    log: &EventLog,
    name: &str,
    title: &str,
    shards: u16,
    max_fact_bytes: u32,
) -> Result<u64, KnowledgeError> {
    let token = space_token(name)?;
    let draft = Draft::new(
        token,
        &SpaceOpened {
            title: title.to_string(),
            shards,
            max_fact_bytes,
        },
    )
    .map_err(|e| KnowledgeError::Ingest(e.into()))?;
    match log.append_expected(draft, Expected::NoEvents).await {
        Ok((_, appended)) => Ok(appended.sequence),
        Err(LogError::Conflict { .. }) => Err(KnowledgeError::SpaceExists(name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Grants (or with `granted = false`, revokes) `role` in a space; only the owner's
/// grants count.
pub async fn set_access(
    log: &EventLog,
    space: &str,
    agent: &str,
    role: AccessRole,
    granted: bool,
) -> Result<u64, KnowledgeError> {
    let token = space_token(space)?;
    let draft = if granted {
        Draft::new(
            token,
            &SpaceAccessGranted {
                agent: agent.to_string(),
                role,
            },
        )
    } else {
        Draft::new(
            token,
            &SpaceAccessRevoked {
                agent: agent.to_string(),
                role,
            },
        )
    }
    .map_err(|e| KnowledgeError::Ingest(e.into()))?;
    Ok(log.append(draft).await?.1.sequence)
}

/// A replica of one or every knowledge space.
pub struct KnowledgeReplica {
    log: EventLog,
    base: KnowledgeBase,
    config: ReplicaConfig,
    space_position: u64,
    change_positions: BTreeMap<String, u64>,
    outbox: Outbox,
    store: Option<ObjectStore>,
}

impl std::fmt::Debug for KnowledgeReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeReplica")
            .field("author", &self.base.author())
            .field("config", &self.config)
            .field("space_position", &self.space_position)
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

fn session_nonce() -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    out
}

impl KnowledgeReplica {
    /// Opens a replica and catches up with the log (snapshots first, then the changes after).
    pub async fn open(log: EventLog, config: ReplicaConfig) -> Result<Self, KnowledgeError> {
        let base = KnowledgeBase::new(log.identity().public_key(), session_nonce());
        let outbox = match &config.outbox_dir {
            Some(dir) => Outbox::durable(dir)?,
            None => Outbox::in_memory(),
        };
        let mut replica = Self {
            log,
            base,
            config,
            space_position: 0,
            change_positions: BTreeMap::new(),
            outbox,
            store: None,
        };
        replica.refresh().await?;
        Ok(replica)
    }

    /// The projection.
    pub fn base(&self) -> &KnowledgeBase {
        &self.base
    }

    /// The log this replica reads and writes.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The history position this replica has read up to.
    pub fn position(&self) -> u64 {
        self.space_position
    }

    /// Changes written locally and not yet acknowledged by the server.
    pub fn unpublished(&self) -> usize {
        self.outbox.len()
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    async fn store(&mut self) -> Result<ObjectStore, KnowledgeError> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let store = ensure_snapshot_bucket(&self.log).await?;
        self.store = Some(store.clone());
        Ok(store)
    }

    fn writable(&self, space: &str) -> Result<(), KnowledgeError> {
        let access = self
            .base
            .space(space)
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.to_string()))?;
        if access.can_write(self.base.author(), u64::MAX) {
            Ok(())
        } else {
            Err(KnowledgeError::NoWriteAccess {
                agent: self.base.author().to_string(),
                space: space.to_string(),
            })
        }
    }

    fn document_of(&self, space: &str, fact: &FactId) -> Result<String, KnowledgeError> {
        let access = self
            .base
            .space(space)
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.to_string()))?;
        let token = space_token(space)?;
        Ok(
            document_token(&token, shard_of(fact, access.settings.shards))
                .as_str()
                .to_string(),
        )
    }

    /// Runs a local edit on the document holding `fact`, committing when it grew large.
    fn edit<T>(
        &mut self,
        space: &str,
        fact: &FactId,
        op: impl FnOnce(&mut crate::document::KnowledgeDoc, DateTime<Utc>) -> Result<T, KnowledgeError>,
    ) -> Result<T, KnowledgeError> {
        self.writable(space)?;
        let document = self.document_of(space, fact)?;
        let now = self.now();
        let state = self
            .base
            .document_mut(&document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.clone()))?;
        let out = op(&mut state.doc, now)?;
        if state.doc.pending_ops() >= AUTO_COMMIT_OPS
            || state.doc.pending_bytes() >= AUTO_COMMIT_BYTES
        {
            self.commit_document(space, &document)?;
        }
        Ok(out)
    }

    fn commit_document(&mut self, space: &str, document: &str) -> Result<(), KnowledgeError> {
        let now = self.now();
        let Some(state) = self.base.document_mut(document) else {
            return Ok(());
        };
        let Some(mut change) = state.doc.commit(now) else {
            return Ok(());
        };
        let id = format!("kc-{}", change.hash());
        let payload = KnowledgeChanged {
            space: space.to_string(),
            change: B64.encode(change.bytes()),
        };
        let token =
            Token::new(document).map_err(|e| KnowledgeError::UnknownDocument(e.to_string()))?;
        let draft = Draft::new(token, &payload)
            .map_err(|e| KnowledgeError::Ingest(e.into()))?
            .with_id(id);
        self.outbox.push(self.log.seal(draft))
    }

    /// Checks a frame from an automerge-repo peer against this replica's documents
    /// ([`crate::repo::RepoGateway::check`]).
    pub fn repo_check(
        &mut self,
        gateway: &mut crate::repo::RepoGateway,
        peer: &str,
        session: &str,
        frame: &[u8],
        signature: &str,
    ) -> Result<crate::repo::Checked, KnowledgeError> {
        let now = std::time::Instant::now();
        gateway.check(&mut self.base, peer, session, frame, signature, now)
    }

    /// Applies a checked frame: appends its relay to the log first when it adds changes
    /// (so a change a peer sees taken is in the log), then answers it.
    pub async fn repo_apply(
        &mut self,
        gateway: &mut crate::repo::RepoGateway,
        checked: crate::repo::Checked,
    ) -> Result<Vec<crate::repo::Outgoing>, KnowledgeError> {
        if let Some((document, relayed)) = checked.relay() {
            let token =
                Token::new(document).map_err(|e| KnowledgeError::UnknownDocument(e.to_string()))?;
            let id = format!(
                "kr-{}",
                hex(&Sha256::digest(relayed.frame.as_bytes())[..16])
            );
            let draft = Draft::new(token, relayed)
                .map_err(|e| KnowledgeError::Ingest(e.into()))?
                .with_id(id);
            self.log.append(draft).await?;
        }
        gateway.apply(&mut self.base, checked)
    }

    /// The frames automerge-repo peers are owed after the documents changed.
    pub fn repo_pending(
        &mut self,
        gateway: &mut crate::repo::RepoGateway,
    ) -> Vec<crate::repo::Outgoing> {
        gateway.pending(&mut self.base)
    }

    /// Commits the pending edits of `space`'s documents into the outbox (not published yet).
    pub fn commit_pending(&mut self, space: &str) -> Result<(), KnowledgeError> {
        for document in self.base.documents_of(space) {
            if self
                .base
                .document(&document)
                .is_some_and(|d| d.doc.pending_ops() > 0)
            {
                self.commit_document(space, &document)?;
            }
        }
        Ok(())
    }

    /// A document of this replica, for the sync protocol.
    pub fn document_mut(&mut self, document: &str) -> Option<&mut crate::document::KnowledgeDoc> {
        self.base.document_mut(document).map(|s| &mut s.doc)
    }

    /// Asserts a fact in `space`.
    pub fn put(&mut self, space: &str, draft: &FactDraft) -> Result<FactId, KnowledgeError> {
        let max = self
            .base
            .space(space)
            .map(|s| s.settings.max_fact_bytes as usize)
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.to_string()))?;
        let (id, ..) = FactCore::from_draft(draft, self.base.author(), self.now(), max)?;
        self.edit(space, &id, |doc, now| doc.assert_fact(draft, now))
    }

    /// Sets a shared field of a fact.
    pub fn set_field(
        &mut self,
        space: &str,
        fact: &FactId,
        field: &str,
        value: Value,
    ) -> Result<(), KnowledgeError> {
        self.edit(space, fact, |doc, now| {
            doc.set_field(fact, field, value, now)
        })
    }

    /// Sets this agent's confidence in a fact.
    pub fn set_confidence(
        &mut self,
        space: &str,
        fact: &FactId,
        confidence: f64,
    ) -> Result<(), KnowledgeError> {
        self.edit(space, fact, |doc, _| doc.set_confidence(fact, confidence))
    }

    /// Retracts a fact.
    pub fn retract(
        &mut self,
        space: &str,
        fact: &FactId,
        reason: &str,
    ) -> Result<(), KnowledgeError> {
        self.edit(space, fact, |doc, now| doc.retract(fact, reason, now))
    }

    /// Marks `old` as superseded by `new`.
    pub fn supersede(
        &mut self,
        space: &str,
        old: &FactId,
        new: &FactId,
        reason: &str,
    ) -> Result<(), KnowledgeError> {
        if self.fact(space, new)?.is_none() {
            return Err(KnowledgeError::UnknownFact(new.clone()));
        }
        self.edit(space, old, |doc, now| doc.supersede(old, new, reason, now))
    }

    /// Resolves a field's conflict by `policy` (recorded in the document).
    pub fn resolve(
        &mut self,
        space: &str,
        fact: &FactId,
        field: &str,
        policy: ResolutionPolicy,
    ) -> Result<ResolutionRecord, KnowledgeError> {
        self.edit(space, fact, |doc, now| {
            doc.resolve(fact, field, policy, now)
        })
    }

    /// Commits every document with pending edits and publishes the outbox, waiting for the
    /// server's acks. Returns how many changes were published. On failure the unpublished
    /// changes stay in the outbox for the next flush.
    pub async fn flush(&mut self) -> Result<usize, KnowledgeError> {
        let spaces: Vec<String> = self.base.spaces().map(|s| s.space.clone()).collect();
        for space in spaces {
            self.commit_pending(&space)?;
        }
        let mut pending = Vec::with_capacity(self.outbox.len());
        let mut send_error = None;
        for ev in self.outbox.events() {
            match self.log.append_sealed(ev).await {
                Ok(p) => pending.push(p),
                Err(e) => {
                    send_error = Some(e);
                    break;
                }
            }
        }
        let mut published = 0;
        let mut first_error = send_error.map(KnowledgeError::from);
        // One deadline for all the acks: waited one after another with a timeout each, a
        // flush of k events whose acks never come (their stream leader lost them in an
        // election) took k × 10 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for p in pending {
            match tokio::time::timeout_at(deadline, p.wait()).await {
                Ok(Ok(_)) if first_error.is_none() => published += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.into());
                }
                Err(_) => {
                    first_error.get_or_insert(KnowledgeError::Request("no ack within 10 s".into()));
                }
            }
        }
        // Acks arrive in order per connection: drop the acknowledged prefix; re-sending the
        // rest later is safe (same ids, server dedupe).
        self.outbox.acknowledged(published)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(published),
        }
    }

    /// One fact's states along the retained log (see [`KnowledgeBase::fact_history`]).
    pub fn fact_history(
        &self,
        space: &str,
        id: &FactId,
    ) -> Result<Vec<(u64, FactView)>, KnowledgeError> {
        let document = self.document_of(space, id)?;
        self.base.fact_history(&document, id)
    }

    /// One fact.
    pub fn fact(&self, space: &str, id: &FactId) -> Result<Option<FactView>, KnowledgeError> {
        let document = self.document_of(space, id)?;
        match self.base.document(&document) {
            Some(state) => state.doc.fact(id),
            None => Ok(None),
        }
    }

    /// Facts matching `query`, now or as of a log position.
    pub fn query(
        &self,
        space: &str,
        query: &Query,
        as_of: Option<u64>,
    ) -> Result<Vec<FactView>, KnowledgeError> {
        let facts = self.base.facts(space, as_of)?;
        Ok(query.run(&facts).into_iter().cloned().collect())
    }

    /// Heads and fact counts per document.
    pub fn summary(&mut self, space: &str) -> BTreeMap<String, DocumentSummary> {
        self.base.summary(space)
    }

    /// Saves every document of `space` to the Object Store and records each snapshot in the
    /// log; with [`ReplicaConfig::compact`], also purges the document's change subject up to
    /// the sequence the snapshot covers. Needs the replica role (or ownership). Returns the
    /// snapshot records.
    pub async fn snapshot(&mut self, space: &str) -> Result<Vec<SpaceSnapshotted>, KnowledgeError> {
        let access = self
            .base
            .space(space)
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.to_string()))?;
        if !access.holds(self.base.author(), AccessRole::Replica, u64::MAX) {
            return Err(KnowledgeError::NotAllowed {
                agent: self.base.author().to_string(),
                action: "publish snapshots".into(),
                space: space.to_string(),
            });
        }
        // Only what the log holds goes into a snapshot: publish local edits, read back.
        self.flush().await?;
        self.refresh().await?;
        let store = self.store().await?;
        let token = space_token(space)?;
        let mut out = Vec::new();
        for document in self.base.documents_of(space) {
            let Some(position) = self.base.document(&document).map(|d| d.position) else {
                continue;
            };
            let covered = self
                .base
                .space(space)
                .and_then(|a| a.snapshots.get(&document))
                .map_or(0, |snap| snap.stream_sequence);
            let Some(state) = self.base.document_mut(&document) else {
                continue;
            };
            if position == 0 || covered >= position {
                continue; // nothing new since the last snapshot
            }
            let heads = state.doc.heads_hex();
            let bytes = state.doc.save();
            let sha256 = hex(&Sha256::digest(&bytes));
            let object = format!("{document}/{position}-{}", &sha256[..16]);
            store
                .put(object.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| KnowledgeError::Store(e.to_string()))?;
            let record = SpaceSnapshotted {
                document: document.clone(),
                object,
                heads,
                stream_sequence: position,
                size: bytes.len() as u64,
                sha256,
            };
            let draft = Draft::new(token.clone(), &record)
                .map_err(|e| KnowledgeError::Ingest(e.into()))?
                .with_id(format!("ks-{document}-{position}"));
            self.log.append(draft).await?;
            if self.config.compact {
                compact(&self.log, &record).await?;
            }
            out.push(record);
        }
        Ok(out)
    }
}

/// Opens the snapshot Object Store, creating it when missing. Where the server enforces
/// roles only the operator creates it (`murmur up` does).
pub async fn ensure_snapshot_bucket(log: &EventLog) -> Result<ObjectStore, KnowledgeError> {
    log.knowledge_store()
        .await
        .map_err(|e| KnowledgeError::Store(e.to_string()))
}

/// Purges the changes `snapshot` covers from its document's change subject: everything up
/// to its `stream_sequence`, nothing after (changes published while the snapshot was
/// written stay; a rollup would delete them too). Idempotent. A stream purge is the
/// operator's: where the server enforces roles, nobody else may.
pub async fn compact(log: &EventLog, snapshot: &SpaceSnapshotted) -> Result<(), KnowledgeError> {
    let doc_token = Token::new(snapshot.document.as_str())
        .map_err(|e| KnowledgeError::UnknownDocument(e.to_string()))?;
    let subject =
        murmur_subjects::EventType::of::<KnowledgeChanged>().subject(log.realm(), &doc_token);
    let stream = log.stream(&log.config().history_stream).await?;
    stream
        .purge()
        .filter(subject.to_string())
        .sequence(snapshot.stream_sequence + 1)
        .await
        .map_err(|e| KnowledgeError::Store(format!("purge {}: {e}", snapshot.document)))?;
    Ok(())
}
