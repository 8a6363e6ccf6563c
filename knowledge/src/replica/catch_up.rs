//! Reading: [`KnowledgeReplica::refresh`] and what it calls, in the order the module docs of
//! [`replica`](super) give.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use murmur_subjects::Payload as _;
use murmur_subjects::events::{
    DeadLetterReason, KnowledgeChanged, KnowledgeRelayed, SpaceSnapshotted,
};
use murmur_subjects::{Domain, Plane, StartAt, StoredMessage, SubjectFilter, Token};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{KnowledgeReplica, RefreshReport};
use crate::base::{IncomingChange, RefusedChange};
use crate::error::KnowledgeError;
use crate::fact::hex;
use crate::space::space_token;

impl KnowledgeReplica {
    /// Reads what the log has beyond this replica's position; see the module docs.
    pub async fn refresh(&mut self) -> Result<RefreshReport, KnowledgeError> {
        let history = self.log.config().history_stream.clone();
        let until = self.log.last_sequence(&history).await?;
        let mut report = RefreshReport {
            position: until,
            ..Default::default()
        };
        if until <= self.space_position && self.change_positions.values().all(|p| *p >= until) {
            return Ok(report);
        }
        self.read_space_events(until, &mut report).await?;
        // Applying remote changes closes Automerge's open transaction: commit local edits
        // first so they become changes in the outbox, never an unpublished implicit commit.
        let spaces: Vec<String> = self.base.spaces().map(|s| s.space.clone()).collect();
        for space in spaces {
            self.commit_pending(&space)?;
        }
        self.load_snapshots(&mut report).await?;
        let before = self.snapshot_view();
        self.read_changes(until, &mut report).await?;
        self.merge_racing_snapshots(&history, &before, &mut report)
            .await?;
        Ok(report)
    }

    /// Each followed document's read position and its latest known snapshot object.
    fn snapshot_view(&self) -> BTreeMap<String, (u64, Option<String>)> {
        self.base
            .spaces()
            .filter(|s| self.config.follows(&s.space))
            .flat_map(|s| {
                self.base.documents_of(&s.space).into_iter().map(|doc| {
                    let position = self.base.document(&doc).map_or(0, |d| d.position);
                    let object = s.snapshots.get(&doc).map(|snap| snap.object.clone());
                    (doc, (position, object))
                })
            })
            .collect()
    }

    /// A snapshot recorded after this refresh read the space events purges the changes it
    /// covers, perhaps before [`Self::read_changes`] reached them. Its record is appended
    /// before the purge, so reading the space events once more finds every such snapshot;
    /// each that covers more than the document had read before is loaded (or merged in).
    async fn merge_racing_snapshots(
        &mut self,
        history: &str,
        before: &BTreeMap<String, (u64, Option<String>)>,
        report: &mut RefreshReport,
    ) -> Result<(), KnowledgeError> {
        let now = self.log.last_sequence(history).await?;
        if now <= self.space_position {
            return Ok(());
        }
        self.read_space_events(now, report).await?;
        let racing: Vec<SpaceSnapshotted> = self
            .base
            .spaces()
            .flat_map(|s| s.snapshots.values())
            .filter(|snap| {
                before.get(&snap.document).is_some_and(|(read, object)| {
                    object.as_deref() != Some(snap.object.as_str()) && snap.stream_sequence > *read
                })
            })
            .cloned()
            .collect();
        for snap in racing {
            let bytes = self.fetch_snapshot(&snap).await?;
            self.base.load_snapshot(&snap.document, &bytes, &snap)?;
            report.snapshots_loaded += 1;
        }
        Ok(())
    }

    async fn read_space_events(
        &mut self,
        until: u64,
        report: &mut RefreshReport,
    ) -> Result<(), KnowledgeError> {
        if until <= self.space_position {
            return Ok(());
        }
        let mut filter = SubjectFilter::plane(Plane::Evt)
            .realm(self.log.realm().clone())
            .domain(Domain::Space);
        if let Some(spaces) = &self.config.spaces
            && spaces.len() == 1
            && let Some(only) = spaces.iter().next()
        {
            filter = filter.aggregate(space_token(only)?);
        }
        let mut stored = Vec::new();
        self.log
            .read(
                &filter,
                StartAt::Sequence(self.space_position + 1),
                Some(until),
                |m| {
                    stored.push(m);
                    ControlFlow::Continue(())
                },
            )
            .await?;
        // Decoded a batch at a time: their single signatures are checked together.
        let decoded: Vec<_> = stored
            .chunks(murmur_subjects::codec::DECODED_TOGETHER)
            .flat_map(|chunk| {
                let chunk: Vec<&StoredMessage> = chunk.iter().collect();
                self.log.decode_stored_many(&chunk)
            })
            .collect();
        for (m, event) in stored.iter().zip(decoded) {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    report.undecodable += 1;
                    tracing::warn!(sequence = m.sequence, error = %e, "space event does not decode");
                    continue;
                }
            };
            if !self.config.follows(event.subject.aggregate().as_str()) {
                continue;
            }
            report.space_events += 1;
            if let Err(e) = self.base.apply_space_event(m.sequence, &event) {
                tracing::warn!(sequence = m.sequence, error = %e, "space event refused");
                if self.config.dead_letter_refusals {
                    self.log
                        .dead_letter(
                            "knowledge",
                            &e.to_ingest_error(),
                            murmur_subjects::RefusedMessage::of(&m.message, Some(m.sequence)),
                        )
                        .await?;
                }
            }
        }
        self.space_position = until;
        Ok(())
    }

    async fn load_snapshots(&mut self, report: &mut RefreshReport) -> Result<(), KnowledgeError> {
        let wanted: Vec<SpaceSnapshotted> = self
            .base
            .spaces()
            .flat_map(|s| s.snapshots.values().cloned())
            .filter(|snap| {
                self.base
                    .document(&snap.document)
                    .is_some_and(|d| d.position < snap.stream_sequence)
            })
            .collect();
        for snap in wanted {
            let bytes = self.fetch_snapshot(&snap).await?;
            self.base.load_snapshot(&snap.document, &bytes, &snap)?;
            report.snapshots_loaded += 1;
        }
        Ok(())
    }

    async fn fetch_snapshot(&mut self, snap: &SpaceSnapshotted) -> Result<Vec<u8>, KnowledgeError> {
        let store = self.store().await?;
        let mut object = store
            .get(&snap.object)
            .await
            .map_err(|e| KnowledgeError::Snapshot(format!("{}: {e}", snap.object)))?;
        let mut bytes = Vec::with_capacity(snap.size as usize);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| KnowledgeError::Snapshot(format!("{}: {e}", snap.object)))?;
        let sha = hex(&Sha256::digest(&bytes));
        if sha != snap.sha256 || bytes.len() as u64 != snap.size {
            return Err(KnowledgeError::Snapshot(format!(
                "{} is damaged: {} bytes hashing to {sha}, recorded {} bytes {}",
                snap.object,
                bytes.len(),
                snap.size,
                snap.sha256
            )));
        }
        Ok(bytes)
    }

    /// The change filters this replica reads, with their read positions.
    fn change_filters(&self) -> Vec<(String, SubjectFilter)> {
        // Every knowledge event: changes, and frames relayed from automerge-repo peers.
        let evt = SubjectFilter::plane(Plane::Evt)
            .realm(self.log.realm().clone())
            .domain(Domain::Knowledge);
        match &self.config.spaces {
            None => vec![("*".into(), evt)],
            Some(spaces) => spaces
                .iter()
                .flat_map(|s| self.base.documents_of(s))
                .filter_map(|doc| {
                    let token = Token::new(doc.clone()).ok()?;
                    Some((doc, evt.clone().aggregate(token)))
                })
                .collect(),
        }
    }

    async fn read_changes(
        &mut self,
        until: u64,
        report: &mut RefreshReport,
    ) -> Result<(), KnowledgeError> {
        for (key, filter) in self.change_filters() {
            let mut from = self.change_positions.get(&key).copied().unwrap_or(0);
            if key != "*"
                && let Some(doc) = self.base.document(&key)
            {
                from = from.max(doc.position);
            }
            if from >= until {
                continue;
            }
            let mut stored = Vec::new();
            self.log
                .read(&filter, StartAt::Sequence(from + 1), Some(until), |m| {
                    stored.push(m);
                    ControlFlow::Continue(())
                })
                .await?;
            report.changes += stored.len() as u64;
            for chunk in stored.chunks(self.config.batch.max(1)) {
                let mut batch = Vec::with_capacity(chunk.len());
                // Decoded together: their single signatures are checked in one batch.
                let held: Vec<&StoredMessage> = chunk.iter().collect();
                let decoded = self.log.decode_stored_many(&held);
                for (m, decoded) in chunk.iter().zip(decoded) {
                    match decoded {
                        Ok(event) => {
                            let incoming = incoming_changes(&event, m.sequence);
                            if let Some(first) = incoming.first()
                                && !self.config.follows(&first.space)
                                && self.config.spaces.is_some()
                            {
                                continue;
                            }
                            batch.extend(incoming);
                        }
                        Err(e) => {
                            report.undecodable += 1;
                            tracing::warn!(sequence = m.sequence, error = %e, "change event does not decode");
                        }
                    }
                }
                let refused = self.base.ingest(batch);
                report.refused += refused.len() as u64;
                self.dead_letter(&refused, chunk).await?;
            }
            self.change_positions.insert(key, until);
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        refused: &[RefusedChange],
        chunk: &[murmur_subjects::projection::StoredMessage],
    ) -> Result<(), KnowledgeError> {
        for r in refused {
            tracing::warn!(sequence = r.sequence, document = %r.document, reason = %r.reason, detail = %r.detail, "knowledge change refused");
            if !self.config.dead_letter_refusals {
                continue;
            }
            let Some(m) = chunk.iter().find(|m| m.sequence == r.sequence) else {
                continue;
            };
            let error = murmur_subjects::IngestError::Refused {
                reason: r.reason,
                detail: r.detail.clone(),
            };
            self.log
                .dead_letter(
                    "knowledge",
                    &error,
                    murmur_subjects::RefusedMessage::of(&m.message, Some(m.sequence)),
                )
                .await?;
        }
        Ok(())
    }
}

/// The changes one knowledge event brings: a `knowledge.changed` event's one change by its
/// emitter, or the changes of a relayed automerge-repo frame by the peer that signed it.
fn incoming_changes(event: &murmur_subjects::VerifiedEvent, sequence: u64) -> Vec<IncomingChange> {
    let one = |space: String, emitter: String, bytes, relayed| IncomingChange {
        sequence,
        document: event.subject.aggregate().as_str().to_string(),
        space,
        emitter,
        event_id: event.record.id.clone(),
        bytes,
        relayed,
    };
    let malformed = |e: String| Err((DeadLetterReason::Malformed, e));
    if event.record.ty == KnowledgeRelayed::TYPE {
        return match event.payload::<KnowledgeRelayed>() {
            Ok(p) => match crate::repo::relayed_changes(&p) {
                Ok(changes) => changes
                    .into_iter()
                    .map(|c| one(p.space.clone(), p.peer.clone(), Ok(c), true))
                    .collect(),
                Err(e) => vec![one(
                    p.space.clone(),
                    p.peer.clone(),
                    Err((e.dead_letter_reason(), e.to_string())),
                    true,
                )],
            },
            Err(e) => vec![one(
                String::new(),
                event.emitter().to_string(),
                malformed(e.to_string()),
                true,
            )],
        };
    }
    let (space, bytes) = match event.payload::<KnowledgeChanged>() {
        Ok(p) => (
            p.space,
            B64.decode(p.change.as_bytes())
                .map_err(|e| (DeadLetterReason::Malformed, e.to_string())),
        ),
        Err(e) => (String::new(), malformed(e.to_string())),
    };
    vec![one(space, event.emitter().to_string(), bytes, false)]
}
