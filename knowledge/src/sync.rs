//! The Automerge sync protocol between two replicas over NATS request/reply — used only to
//! catch a peer up or heal it after a partition; the log stays the record.
//!
//! The serving side (a memory agent holding the replica role) runs the protocol read-only:
//! it never takes changes from a sync peer (those reach it through the log, signed). Each
//! reply is signed with the server's nkey (detached signature over session, document and
//! body), and the client accepts it only from a key holding the space's replica role. The
//! changes a reply carries are first applied to a fork and checked — author's write access,
//! document layout — before they touch the real document.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use murmur_subjects::events::AccessRole;
use murmur_subjects::identity::SignatureVerifier;
use murmur_subjects::{Identity, Subject, SubjectFilter, Token};

use crate::document::KnowledgeDoc;
use crate::error::KnowledgeError;
use crate::layout::check_change;
use crate::replica::KnowledgeReplica;
use crate::space::{author_of, parse_document};

/// Header naming the sync session (one protocol run).
pub const SESSION_HEADER: &str = "Murmur-Sync-Session";
/// Header naming the key that signed a reply.
pub const SIGNER_HEADER: &str = "Murmur-Signer";
/// Header carrying the reply's detached signature.
pub const SIGNATURE_HEADER: &str = "Murmur-Signature";
/// Most round trips one catch-up may take.
const MAX_ROUNDS: u32 = 64;

/// The request subject for one document: `murmur.v1.{realm}.rpc.knowledge.{document}.sync`.
pub fn sync_subject(realm: &Token, document: &Token) -> Subject {
    murmur_subjects::roles::KNOWLEDGE_SYNC.subject(realm, document)
}

/// Every document's sync subject in a realm (what a server subscribes to).
pub fn sync_filter(realm: &Token) -> SubjectFilter {
    crate::rpc::rpc_filter(realm, &murmur_subjects::roles::KNOWLEDGE_SYNC)
}

pub(crate) use crate::repo::signed_bytes;

/// The serving side's protocol states, one per (session, document).
#[derive(Debug, Default)]
pub struct SyncServer {
    states: HashMap<(String, String), (sync::State, Instant)>,
}

impl SyncServer {
    /// A server with no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers one request: `body` is the peer's encoded sync message (empty: nothing to
    /// say). Returns the reply body (empty: nothing to send) and its signature.
    pub fn answer(
        &mut self,
        identity: &Identity,
        doc: &mut KnowledgeDoc,
        session: &str,
        document: &str,
        body: &[u8],
    ) -> Result<(Vec<u8>, String), KnowledgeError> {
        let now = Instant::now();
        self.states
            .retain(|_, (_, used)| now.duration_since(*used) < Duration::from_secs(120));
        let (state, used) = self
            .states
            .entry((session.to_string(), document.to_string()))
            .or_insert_with(|| (sync::State::new_read_only(), now));
        *used = now;
        if !body.is_empty() {
            let message = sync::Message::decode(body)
                .map_err(|e| KnowledgeError::Request(format!("bad sync message: {e}")))?;
            doc.automerge()
                .sync()
                .receive_sync_message(state, message)
                .map_err(KnowledgeError::Automerge)?;
        }
        let reply = doc
            .automerge()
            .sync()
            .generate_sync_message(state)
            .map(sync::Message::encode)
            .unwrap_or_default();
        let signature = identity.sign_detached(&signed_bytes(session, document, &reply));
        Ok((reply, signature))
    }
}

/// What a catch-up cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Request/reply round trips.
    pub rounds: u32,
    /// Bytes sent in requests.
    pub bytes_sent: u64,
    /// Bytes received in replies.
    pub bytes_received: u64,
    /// Changes taken from the peer.
    pub changes_applied: usize,
}

/// Catches `document` of `replica` up with whichever replica answers on its sync subject.
pub async fn catch_up(
    replica: &mut KnowledgeReplica,
    document: &str,
    timeout: Duration,
) -> Result<SyncReport, KnowledgeError> {
    let (space, _) = parse_document(document)
        .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
    let space = space.to_string();
    replica.commit_pending(&space)?;
    let token = Token::new(document).map_err(|e| KnowledgeError::UnknownDocument(e.to_string()))?;
    let subject = sync_subject(replica.log().realm(), &token).to_string();
    let client = replica.log().client().clone();
    let session = uuid::Uuid::new_v4().to_string();
    let verifier = SignatureVerifier::new();
    let mut state = sync::State::new();
    let mut report = SyncReport::default();
    let mut peer_done = false;
    while report.rounds < MAX_ROUNDS {
        let doc = replica
            .document_mut(document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
        let ours = doc.automerge().sync().generate_sync_message(&mut state);
        if ours.is_none() && peer_done {
            return Ok(report);
        }
        let body = ours.map(sync::Message::encode).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SESSION_HEADER, session.as_str());
        report.rounds += 1;
        report.bytes_sent += body.len() as u64;
        let reply = tokio::time::timeout(
            timeout,
            client.request_with_headers(subject.clone(), headers, body.into()),
        )
        .await
        .map_err(|_| {
            KnowledgeError::Request(format!("no sync reply on {subject} within {timeout:?}"))
        })?
        .map_err(|e| KnowledgeError::Request(format!("sync request on {subject}: {e}")))?;
        report.bytes_received += reply.payload.len() as u64;

        let (signer, signature) = (
            crate::rpc::header(&reply, SIGNER_HEADER),
            crate::rpc::header(&reply, SIGNATURE_HEADER),
        );
        verifier
            .verify_detached(
                &signer,
                &signed_bytes(&session, document, &reply.payload),
                &signature,
            )
            .map_err(|e| KnowledgeError::Request(format!("sync reply refused: {e}")))?;
        let access = replica
            .base()
            .space(&space)
            .cloned()
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.clone()))?;
        if !access.holds(&signer, AccessRole::Replica, u64::MAX) {
            return Err(KnowledgeError::NotAllowed {
                agent: signer,
                action: "answer sync requests".into(),
                space,
            });
        }
        let max = access.settings.max_fact_bytes as usize;
        if reply.payload.is_empty() {
            peer_done = true;
            continue;
        }
        peer_done = false;
        let message = sync::Message::decode(&reply.payload)
            .map_err(|e| KnowledgeError::Request(format!("bad sync message: {e}")))?;
        let doc = replica
            .document_mut(document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.to_string()))?;
        // Check what the message would add on a fork first.
        let mut fork = doc.automerge().fork();
        let mut trial = state.clone();
        fork.sync()
            .receive_sync_message(&mut trial, message.clone())
            .map_err(KnowledgeError::Automerge)?;
        let added = doc.automerge().get_changes_added(&mut fork);
        for change in &added {
            let author = author_of(change.actor_id()).unwrap_or_default();
            if !access.can_write(&author, u64::MAX) {
                return Err(KnowledgeError::NoWriteAccess {
                    agent: author,
                    space,
                });
            }
            check_change(change, &author, max)?;
        }
        report.changes_applied += added.len();
        doc.automerge()
            .sync()
            .receive_sync_message(&mut state, message)
            .map_err(KnowledgeError::Automerge)?;
    }
    Err(KnowledgeError::Request(format!(
        "sync of {document} did not converge in {MAX_ROUNDS} rounds"
    )))
}

/// Pure, in-process sync between two documents with the standard protocol, both sides
/// writable: returns (round trips, bytes exchanged). Used by the benchmark to measure what
/// converging two diverged replicas costs on the wire.
pub fn sync_in_process(
    a: &mut KnowledgeDoc,
    b: &mut KnowledgeDoc,
) -> Result<(u32, u64), KnowledgeError> {
    let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
    let (mut rounds, mut bytes) = (0u32, 0u64);
    loop {
        let to_b = a.automerge().sync().generate_sync_message(&mut sa);
        let to_a = b.automerge().sync().generate_sync_message(&mut sb);
        if to_b.is_none() && to_a.is_none() {
            return Ok((rounds, bytes));
        }
        rounds += 1;
        if let Some(m) = to_b {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            let m = sync::Message::decode(&encoded)
                .map_err(|e| KnowledgeError::Request(e.to_string()))?;
            b.automerge().sync().receive_sync_message(&mut sb, m)?;
        }
        if let Some(m) = to_a {
            let encoded = m.encode();
            bytes += encoded.len() as u64;
            let m = sync::Message::decode(&encoded)
                .map_err(|e| KnowledgeError::Request(e.to_string()))?;
            a.automerge().sync().receive_sync_message(&mut sa, m)?;
        }
        if rounds > MAX_ROUNDS {
            return Err(KnowledgeError::Request(
                "in-process sync did not converge".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::{FactDraft, Value};

    #[test]
    fn two_diverged_documents_converge() {
        let (ka, kb) = (Identity::generate(), Identity::generate());
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("t");
        let mut a = KnowledgeDoc::new(ka.public_key(), [1; 8], 4096);
        let mut b = KnowledgeDoc::new(kb.public_key(), [2; 8], 4096);
        for i in 0..50 {
            a.assert_fact(&FactDraft::new(format!("s{i}"), "p", Value::Int(i)), now)
                .expect("a");
            b.assert_fact(&FactDraft::new(format!("t{i}"), "p", Value::Int(i)), now)
                .expect("b");
        }
        a.commit(now);
        b.commit(now);
        let (rounds, bytes) = sync_in_process(&mut a, &mut b).expect("sync");
        assert!(rounds >= 1 && bytes > 0);
        assert_eq!(a.heads_hex(), b.heads_hex());
        assert_eq!(a.len(), 100);
    }

    #[test]
    fn read_only_server_answers_and_signs() {
        let (ks, kc) = (Identity::generate(), Identity::generate());
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("t");
        let mut server_doc = KnowledgeDoc::new(ks.public_key(), [1; 8], 4096);
        server_doc
            .assert_fact(&FactDraft::new("s", "p", Value::Int(1)), now)
            .expect("a");
        server_doc.commit(now);
        let mut client_doc = KnowledgeDoc::new(kc.public_key(), [2; 8], 4096);
        client_doc
            .assert_fact(&FactDraft::new("c", "p", Value::Int(2)), now)
            .expect("a");
        client_doc.commit(now);
        let mut server = SyncServer::new();
        let mut state = sync::State::new();
        let verifier = SignatureVerifier::new();
        for _ in 0..10 {
            let body = client_doc
                .automerge()
                .sync()
                .generate_sync_message(&mut state)
                .map(sync::Message::encode)
                .unwrap_or_default();
            let (reply, sig) = server
                .answer(&ks, &mut server_doc, "sess", "s-0", &body)
                .expect("answer");
            verifier
                .verify_detached(ks.public_key(), &signed_bytes("sess", "s-0", &reply), &sig)
                .expect("signed");
            assert!(
                verifier
                    .verify_detached(kc.public_key(), &signed_bytes("sess", "s-0", &reply), &sig)
                    .is_err()
            );
            if reply.is_empty() && body.is_empty() {
                break;
            }
            if !reply.is_empty() {
                let m = sync::Message::decode(&reply).expect("decode");
                client_doc
                    .automerge()
                    .sync()
                    .receive_sync_message(&mut state, m)
                    .expect("receive");
            }
        }
        assert_eq!(client_doc.len(), 2, "client got the server's fact");
        assert_eq!(
            server_doc.len(),
            1,
            "a read-only server takes nothing from a sync peer"
        );
    }
}
