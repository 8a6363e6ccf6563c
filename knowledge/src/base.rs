//! The knowledge projection: spaces (access, snapshots) and their documents, folded from the
//! log. Pure — the same fold runs live and on replay; incoming changes are validated one by
//! one and applied to each document in one batch.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use automerge::{Change, ChangeHash};
use murmur_protocol::VerifiedEvent;
use murmur_protocol::events::{DeadLetterReason, SpaceSnapshotted};
use serde::{Deserialize, Serialize};

use crate::access::SpaceAccess;
use crate::document::{FactView, KnowledgeDoc};
use crate::error::KnowledgeError;
use crate::layout::{check_change, decode_change};
use crate::space::{document_token, parse_document, space_token};

/// A change read from the log, before validation.
#[derive(Debug, Clone)]
pub struct IncomingChange {
    /// Its stream sequence.
    pub sequence: u64,
    /// The document (subject aggregate).
    pub document: String,
    /// The space its payload names.
    pub space: String,
    /// The verified author: the event's emitter, or for a relayed frame the peer whose
    /// signature over the frame verified.
    pub emitter: String,
    /// The event id.
    pub event_id: String,
    /// The change bytes (base64 already decoded), or why they could not be read.
    pub bytes: Result<Vec<u8>, (DeadLetterReason, String)>,
    /// Whether it came in a relayed automerge-repo frame, which may also carry changes the
    /// document already has (another author's, synced to the peer earlier): those are
    /// skipped, not refused.
    pub relayed: bool,
}

/// A change the fold refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedChange {
    /// Its stream sequence.
    pub sequence: u64,
    /// The document it named.
    pub document: String,
    /// The emitter.
    pub emitter: String,
    /// Dead-letter reason.
    pub reason: DeadLetterReason,
    /// The typed error, as text.
    pub detail: String,
}

/// One document's state and its log positions.
#[derive(Debug, Clone)]
pub struct DocumentState {
    /// The document.
    pub doc: KnowledgeDoc,
    /// The last stream sequence applied (or covered by the loaded snapshot).
    pub position: u64,
    /// The snapshot it was loaded from: (sequence, heads).
    pub base: Option<(u64, Vec<ChangeHash>)>,
    /// Changes applied from the log: (sequence, hash, deps), for "as of" reads.
    pub applied: Vec<(u64, ChangeHash, Vec<ChangeHash>)>,
    /// Changes refused from the log, so that changes built on them are refused too.
    pub refused: std::collections::BTreeSet<ChangeHash>,
}

/// Per-document summary used to compare replicas (live vs replay, agent vs agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentSummary {
    /// Sorted hex heads.
    pub heads: Vec<String>,
    /// Number of facts.
    pub facts: usize,
}

/// Every space and document a replica knows.
#[derive(Debug, Clone)]
pub struct KnowledgeBase {
    author: String,
    session: [u8; 8],
    spaces: BTreeMap<String, SpaceAccess>,
    documents: BTreeMap<String, DocumentState>,
    refused: Vec<RefusedChange>,
}

impl KnowledgeBase {
    /// An empty base whose documents write as `author` in session `session`.
    pub fn new(author: &str, session: [u8; 8]) -> Self {
        Self {
            author: author.to_string(),
            session,
            spaces: BTreeMap::new(),
            documents: BTreeMap::new(),
            refused: Vec::new(),
        }
    }

    /// The local author.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// A space's access state.
    pub fn space(&self, name: &str) -> Option<&SpaceAccess> {
        self.spaces.get(name)
    }

    /// Every known space.
    pub fn spaces(&self) -> impl Iterator<Item = &SpaceAccess> {
        self.spaces.values()
    }

    /// Changes refused so far, in log order.
    pub fn refused(&self) -> &[RefusedChange] {
        &self.refused
    }

    /// A document's state.
    pub fn document(&self, document: &str) -> Option<&DocumentState> {
        self.documents.get(document)
    }

    /// A document's state, mutable (local writes).
    pub fn document_mut(&mut self, document: &str) -> Option<&mut DocumentState> {
        self.documents.get_mut(document)
    }

    /// The documents of a space, in shard order.
    pub fn documents_of(&self, space: &str) -> Vec<String> {
        let Some(access) = self.spaces.get(space) else {
            return Vec::new();
        };
        let Ok(token) = space_token(space) else {
            return Vec::new();
        };
        (0..access.settings.shards)
            .map(|shard| document_token(&token, shard).as_str().to_string())
            .collect()
    }

    /// Folds one `space.*` event (sequence from the log). A refusal leaves the state
    /// unchanged and is returned for the dead-letter stream.
    pub fn apply_space_event(
        &mut self,
        sequence: u64,
        event: &VerifiedEvent,
    ) -> Result<(), KnowledgeError> {
        let Some(opened) = crate::access::apply_space_event(&mut self.spaces, sequence, event)?
        else {
            return Ok(());
        };
        let token = space_token(&opened.space)?;
        for shard in 0..opened.settings.shards {
            let doc = document_token(&token, shard).as_str().to_string();
            self.documents.insert(
                doc,
                DocumentState {
                    doc: KnowledgeDoc::new(
                        &self.author,
                        self.session,
                        opened.settings.max_fact_bytes as usize,
                    ),
                    position: 0,
                    base: None,
                    applied: Vec::new(),
                    refused: Default::default(),
                },
            );
        }
        Ok(())
    }

    /// Replaces a document's state with a verified snapshot covering the log up to its
    /// `stream_sequence`, keeping local changes. A snapshot older than what the document has
    /// read is merged in instead: its purge may have removed changes this replica had not
    /// read yet (a snapshot written while it refreshed), and the snapshot holds them.
    pub fn load_snapshot(
        &mut self,
        document: &str,
        bytes: &[u8],
        record: &SpaceSnapshotted,
    ) -> Result<(), KnowledgeError> {
        let (space, _) = parse_document(document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
        let max = self
            .spaces
            .get(space)
            .map(|s| s.settings.max_fact_bytes as usize)
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.to_string()))?;
        let mut doc = KnowledgeDoc::load(bytes, &self.author, self.session, max)?;
        let heads = doc.heads_hex();
        let mut claimed = record.heads.clone();
        claimed.sort();
        if heads != claimed {
            return Err(KnowledgeError::Snapshot(format!(
                "{document}: loaded heads {heads:?} differ from the recorded {claimed:?}"
            )));
        }
        let state = self
            .documents
            .get_mut(document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
        if state.position > record.stream_sequence {
            let base_heads = doc.heads();
            state.doc.automerge().merge(doc.automerge())?;
            // History before the snapshot now rests on it (as after a plain load).
            state.base = Some((record.stream_sequence, base_heads));
            state
                .applied
                .retain(|(sequence, ..)| *sequence > record.stream_sequence);
            return Ok(());
        }
        // Keep local changes not covered by the snapshot.
        let local = state.doc.changes_since(&[]);
        let base_heads = doc.heads();
        doc.apply_changes(local)?;
        *state = DocumentState {
            doc,
            position: record.stream_sequence,
            base: Some((record.stream_sequence, base_heads)),
            applied: Vec::new(),
            refused: Default::default(),
        };
        Ok(())
    }

    /// Validates and applies a batch of changes in log order; returns what was refused
    /// (also kept in [`KnowledgeBase::refused`]).
    pub fn ingest(&mut self, batch: Vec<IncomingChange>) -> Vec<RefusedChange> {
        let mut refused = Vec::new();
        let mut accepted: BTreeMap<String, Vec<(u64, Change)>> = BTreeMap::new();
        let mut batched: HashSet<ChangeHash> = HashSet::new();
        for incoming in batch {
            let (checked, hash) = self.check(&incoming, &batched);
            if let (Ok(Some(change)), _) = (&checked, hash) {
                batched.insert(change.hash());
            }
            if checked.is_err()
                && let (Some(hash), Some(state)) =
                    (hash, self.documents.get_mut(&incoming.document))
            {
                state.refused.insert(hash);
            }
            match checked {
                Ok(Some(change)) => accepted
                    .entry(incoming.document.clone())
                    .or_default()
                    .push((incoming.sequence, change)),
                Ok(None) => {}
                Err(e) => refused.push(RefusedChange {
                    sequence: incoming.sequence,
                    document: incoming.document.clone(),
                    emitter: incoming.emitter.clone(),
                    reason: e.dead_letter_reason(),
                    detail: e.to_string(),
                }),
            }
        }
        for (document, changes) in accepted {
            let Some(state) = self.documents.get_mut(&document) else {
                continue;
            };
            let last = changes
                .iter()
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(state.position);
            for (seq, change) in &changes {
                state
                    .applied
                    .push((*seq, change.hash(), change.deps().to_vec()));
            }
            let batch: Vec<Change> = changes.into_iter().map(|(_, c)| c).collect();
            if let Err(e) = state.doc.apply_changes(batch) {
                // Each change was decoded and checked; Automerge refusing the batch means a
                // change contradicts the document (e.g. a reused actor sequence).
                refused.push(RefusedChange {
                    sequence: last,
                    document: document.clone(),
                    emitter: String::new(),
                    reason: DeadLetterReason::Refused,
                    detail: format!("automerge refused the batch: {e}"),
                });
            }
            state.position = state.position.max(last);
        }
        self.refused.extend(refused.iter().cloned());
        refused
    }

    /// Checks one incoming change; also returns its hash when it decoded, so a refusal can be
    /// remembered for the changes that build on it.
    fn check(
        &self,
        incoming: &IncomingChange,
        batched: &HashSet<ChangeHash>,
    ) -> (Result<Option<Change>, KnowledgeError>, Option<ChangeHash>) {
        let unknown = || KnowledgeError::UnknownDocument(incoming.document.clone());
        let Some(state) = self.documents.get(&incoming.document) else {
            return (Err(unknown()), None);
        };
        if incoming.sequence <= state.position {
            return (Ok(None), None); // covered by the snapshot or already applied
        }
        let bytes = match incoming.bytes.clone() {
            Ok(b) => b,
            Err((DeadLetterReason::BadSignature, e)) => {
                return (Err(KnowledgeError::UnsignedFrame(e)), None);
            }
            Err((_, e)) => return (Err(KnowledgeError::CorruptChange(e)), None),
        };
        let change = match decode_change(bytes) {
            Ok(c) => c,
            Err(e) => return (Err(e), None),
        };
        let hash = change.hash();
        if incoming.relayed && (batched.contains(&hash) || state.doc.has_change(&hash)) {
            return (Ok(None), None);
        }
        if let Some(dependency) = change.deps().iter().find(|d| state.refused.contains(d)) {
            return (
                Err(KnowledgeError::DependsOnRefused {
                    change: hash.to_string(),
                    dependency: dependency.to_string(),
                }),
                Some(hash),
            );
        }
        (self.check_decoded(incoming, change), Some(hash))
    }

    fn check_decoded(
        &self,
        incoming: &IncomingChange,
        change: Change,
    ) -> Result<Option<Change>, KnowledgeError> {
        let unknown = || KnowledgeError::UnknownDocument(incoming.document.clone());
        let (space, _) = parse_document(&incoming.document).ok_or_else(unknown)?;
        if space != incoming.space {
            return Err(unknown());
        }
        let access = self.spaces.get(space).ok_or_else(unknown)?;
        check_change(
            &change,
            &incoming.emitter,
            access.settings.max_fact_bytes as usize,
        )?;
        if !access.can_write(&incoming.emitter, incoming.sequence) {
            return Err(KnowledgeError::NoWriteAccess {
                agent: incoming.emitter.clone(),
                space: space.to_string(),
            });
        }
        Ok(Some(change))
    }

    /// Heads of `document` as of log position `sequence`: the changes applied from the log at
    /// or before it, on top of the snapshot. `None` if the position is before the snapshot.
    pub fn heads_at(&self, document: &str, sequence: u64) -> Option<Vec<ChangeHash>> {
        let state = self.documents.get(document)?;
        let mut present: Vec<ChangeHash> = Vec::new();
        let mut deps: HashSet<ChangeHash> = HashSet::new();
        if let Some((base_seq, heads)) = &state.base {
            if sequence < *base_seq {
                return None;
            }
            present.extend(heads.iter().copied());
        }
        for (seq, hash, d) in &state.applied {
            if *seq <= sequence {
                present.push(*hash);
                deps.extend(d.iter().copied());
            }
        }
        let heads: BTreeSet<ChangeHash> =
            present.into_iter().filter(|h| !deps.contains(h)).collect();
        Some(heads.into_iter().collect())
    }

    /// The states of one fact along the log: `(sequence, view)` at each log position of its
    /// document after which the fact reads differently (first: where it appears). Heads are
    /// carried forward change by change (the log is in causal order), so this reads the one
    /// fact once per position instead of the whole space.
    pub fn fact_history(
        &self,
        document: &str,
        id: &crate::fact::FactId,
    ) -> Result<Vec<(u64, FactView)>, KnowledgeError> {
        let state = self
            .documents
            .get(document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
        let mut heads: BTreeSet<ChangeHash> = state
            .base
            .as_ref()
            .map(|(_, h)| h.iter().copied().collect())
            .unwrap_or_default();
        let mut out: Vec<(u64, FactView)> = Vec::new();
        let mut last: Option<String> = None;
        let applied = &state.applied;
        for (i, (seq, hash, deps)) in applied.iter().enumerate() {
            heads.retain(|h| !deps.contains(h));
            heads.insert(*hash);
            if applied.get(i + 1).is_some_and(|(next, ..)| next == seq) {
                continue; // several changes at one position: read once, after the last
            }
            let at: Vec<ChangeHash> = heads.iter().copied().collect();
            let Some(view) = state.doc.fact_at(id, Some(&at))? else {
                continue;
            };
            let text = serde_json::to_string(&view).unwrap_or_default();
            if last.as_deref() != Some(text.as_str()) {
                last = Some(text);
                out.push((*seq, view));
            }
        }
        Ok(out)
    }

    /// Every fact of a space, now or as of a log position.
    pub fn facts(&self, space: &str, as_of: Option<u64>) -> Result<Vec<FactView>, KnowledgeError> {
        if !self.spaces.contains_key(space) {
            return Err(KnowledgeError::UnknownSpace(space.to_string()));
        }
        let mut out = Vec::new();
        for document in self.documents_of(space) {
            let Some(state) = self.documents.get(&document) else {
                continue;
            };
            match as_of {
                None => out.extend(state.doc.facts_at(None)?),
                Some(seq) => {
                    let heads = self.heads_at(&document, seq).ok_or_else(|| {
                        KnowledgeError::Snapshot(format!(
                            "position {seq} is before {document}'s snapshot; history before it was compacted"
                        ))
                    })?;
                    out.extend(state.doc.facts_at(Some(&heads))?);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Heads and fact count per document of a space.
    pub fn summary(&mut self, space: &str) -> BTreeMap<String, DocumentSummary> {
        let docs = self.documents_of(space);
        let mut out = BTreeMap::new();
        for document in docs {
            if let Some(state) = self.documents.get_mut(&document) {
                out.insert(
                    document,
                    DocumentSummary {
                        heads: state.doc.heads_hex(),
                        facts: state.doc.len(),
                    },
                );
            }
        }
        out
    }
}
