//! automerge-repo peers: a memory agent's gateway speaks the automerge-repo network protocol
//! (the CBOR messages of `@automerge/automerge-repo` and `samod`) over NATS,
//! so an automerge-repo `Repo` can read and edit a knowledge space's documents. Pure: the
//! NATS edge is in the memory agent.
//!
//! The protocol is spoken here at the message level rather than through `samod`'s `Repo`:
//! samod applies a read-write peer's changes before the application sees them (and keeps its
//! codec private), while murmur must check each change — and put it in the log — before any
//! replica takes it.
//!
//! One connection per (peer key, session): the peer publishes each frame on the gateway's
//! `knowledge.{gateway key}.repo` subject, signed with its nkey over the session and the
//! frame ([`signed_bytes`]); the gateway answers on the peer's own inbox
//! (`murmur_protocol::roles::repo_inbox`), signing the same way. A frame that would add
//! changes is checked on a fork first — the peer's own changes, the layout, write access —
//! and then relayed into the log as it was signed (`knowledge.relayed`), so the fold counts
//! the changes as the peer's from its signature, not from the gateway's word
//! ([`relayed_changes`]). A refused frame gets a typed error; the caller dead-letters it and
//! tells the peer with an `error` message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use murmur_protocol::events::KnowledgeRelayed;
use murmur_protocol::identity::SignatureVerifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::KnowledgeBase;
use crate::error::KnowledgeError;
use crate::layout::check_change;
use crate::space::{author_of, parse_document};

/// The automerge-repo network protocol version spoken.
pub const PROTOCOL_VERSION: &str = "1";
/// Largest frame a gateway takes (a relayed frame must fit an event, base64 included).
pub const MAX_FRAME_BYTES: usize = 512 * 1024;
/// Most connections a gateway keeps; the least recently used goes first.
pub const MAX_CONNECTIONS: usize = 1024;
/// What the frame signatures name as their context (beside the session).
const SIGNED_CONTEXT: &str = "repo";

/// What a detached signature over a request or reply covers: a session (or nonce), a context
/// (a document, a space, `repo`) and the body, newline-separated.
pub fn signed_bytes(session: &str, context: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(session.len() + context.len() + body.len() + 2);
    out.extend_from_slice(session.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(context.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// What a repo frame's signature covers.
pub fn frame_signed_bytes(session: &str, frame: &[u8]) -> Vec<u8> {
    signed_bytes(session, SIGNED_CONTEXT, frame)
}

/// The automerge-repo document id of a knowledge document: 16 bytes derived from the realm
/// and the document name, in automerge-repo's base58check text.
pub fn document_id(realm: &str, document: &str) -> String {
    let digest = Sha256::digest(format!("murmur knowledge {realm} {document}"));
    bs58::encode(&digest[..16]).with_check().into_string()
}

/// The `automerge:` URL a peer opens a knowledge document with.
pub fn automerge_url(realm: &str, document: &str) -> String {
    format!("automerge:{}", document_id(realm, document))
}

/// A peer's metadata as automerge-repo sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerMetadata {
    /// The peer's storage id, when it stores documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<String>,
    /// Whether the peer keeps nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_ephemeral: Option<bool>,
}

/// One automerge-repo network message (CBOR map). Fields of message kinds the gateway does
/// not read (ephemeral counts, remote heads) are skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireMessage {
    /// `join`, `peer`, `request`, `sync`, `doc-unavailable`, `ephemeral`, `error`, `leave`…
    #[serde(rename = "type")]
    pub kind: String,
    /// The sender's automerge-repo peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// The receiver's peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// The document (base58check id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// An encoded Automerge sync message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_bytes::ByteBuf>,
    /// `join` and `peer`: who the sender is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_metadata: Option<PeerMetadata>,
    /// `join`: the protocol versions the sender speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_protocol_versions: Option<Vec<String>>,
    /// `peer`: the version chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_protocol_version: Option<String>,
    /// `error`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl WireMessage {
    /// Decodes a CBOR frame.
    pub fn decode(frame: &[u8]) -> Result<Self, KnowledgeError> {
        ciborium::from_reader(frame)
            .map_err(|e| KnowledgeError::BadFrame(format!("not an automerge-repo message: {e}")))
    }

    /// Encodes it as CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing plain strings, bytes and maps into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// An `error` message.
    pub fn error(sender: &str, message: &str) -> Self {
        Self {
            kind: "error".into(),
            sender_id: Some(sender.into()),
            message: Some(message.into()),
            ..Self::default()
        }
    }
}

/// The changes a relayed frame carries, once its signature verified against its peer: each
/// change's bytes, in frame order. Pure and independent of any document, so every replica
/// reads the same changes from the same event.
pub fn relayed_changes(relayed: &KnowledgeRelayed) -> Result<Vec<Vec<u8>>, KnowledgeError> {
    let frame = B64
        .decode(relayed.frame.as_bytes())
        .map_err(|e| KnowledgeError::BadFrame(format!("frame is not base64: {e}")))?;
    SignatureVerifier::new()
        .verify_detached(
            &relayed.peer,
            &frame_signed_bytes(&relayed.session, &frame),
            &relayed.signature,
        )
        .map_err(|e| KnowledgeError::UnsignedFrame(e.to_string()))?;
    let message = WireMessage::decode(&frame)?;
    let Some(data) = message.data.filter(|_| is_sync(&message.kind)) else {
        return Err(KnowledgeError::BadFrame(format!(
            "a {:?} message carries no changes",
            message.kind
        )));
    };
    let sync = sync::Message::decode(&data)
        .map_err(|e| KnowledgeError::BadFrame(format!("bad sync message: {e}")))?;
    let mut changes = Vec::new();
    for chunk in sync.changes.iter() {
        for (kind, bytes) in storage_chunks(chunk)? {
            if kind == DOCUMENT_CHUNK {
                let doc = Automerge::load(bytes)
                    .map_err(|e| KnowledgeError::CorruptChange(e.to_string()))?;
                changes.extend(doc.get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()));
            } else {
                changes.push(bytes.to_vec());
            }
        }
    }
    Ok(changes)
}

fn is_sync(kind: &str) -> bool {
    matches!(kind, "sync" | "request")
}

/// Automerge's storage chunk types.
const DOCUMENT_CHUNK: u8 = 0;
const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Splits concatenated Automerge storage chunks (magic, checksum, type, LEB128 length,
/// data): a version 2 sync message carries its changes, or a whole document, that way.
fn storage_chunks(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, KnowledgeError> {
    let corrupt = |why: &str| KnowledgeError::CorruptChange(why.to_string());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 9 || bytes[..4] != MAGIC {
            return Err(corrupt("not an Automerge chunk"));
        }
        let kind = bytes[8];
        let (mut length, mut shift, mut at) = (0usize, 0u32, 9usize);
        loop {
            let byte = *bytes
                .get(at)
                .ok_or_else(|| corrupt("truncated chunk length"))?;
            at += 1;
            if shift > 56 {
                return Err(corrupt("chunk length overflows"));
            }
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let end = at
            .checked_add(length)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| corrupt("truncated chunk"))?;
        out.push((kind, &bytes[..end]));
        bytes = &bytes[end..];
    }
    Ok(out)
}

/// One document a connection syncs.
#[derive(Debug)]
struct DocLink {
    document_id: String,
    state: sync::State,
}

/// One peer connection.
#[derive(Debug)]
struct Connection {
    /// The peer's automerge-repo peer id.
    remote: String,
    docs: BTreeMap<String, DocLink>,
    /// Documents this connection was refused on: told `doc-unavailable` from then on.
    refused: BTreeSet<String>,
    touched: Instant,
}

/// A frame to send to one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The peer's key.
    pub peer: String,
    /// The connection's session.
    pub session: String,
    /// The CBOR frame.
    pub frame: Vec<u8>,
}

/// A frame the gateway checked and may apply; when it adds changes the caller relays it
/// into the log first ([`Checked::relay`]), then calls [`RepoGateway::apply`].
#[derive(Debug)]
pub struct Checked {
    peer: String,
    session: String,
    message: WireMessage,
    frame: Vec<u8>,
    signature: String,
    sync: Option<(String, sync::Message)>,
    relay: Option<KnowledgeRelayed>,
    replies: Vec<Vec<u8>>,
}

impl Checked {
    /// The event to append before applying: the frame adds changes to this document.
    pub fn relay(&self) -> Option<(&str, &KnowledgeRelayed)> {
        let document = self.sync.as_ref().map(|(d, _)| d.as_str())?;
        self.relay.as_ref().map(|r| (document, r))
    }
}

/// The gateway's connections and their sync states. One per memory agent.
#[derive(Debug)]
pub struct RepoGateway {
    realm: String,
    me: String,
    connections: HashMap<(String, String), Connection>,
    ids: HashMap<String, String>,
    verifier: SignatureVerifier,
}

impl RepoGateway {
    /// A gateway for `realm` whose automerge-repo peer id is derived from `key`.
    pub fn new(realm: &str, key: &str) -> Self {
        Self {
            realm: realm.to_string(),
            me: format!("murmur-memory-{key}"),
            connections: HashMap::new(),
            ids: HashMap::new(),
            verifier: SignatureVerifier::new(),
        }
    }

    /// Its automerge-repo peer id.
    pub fn peer_id(&self) -> &str {
        &self.me
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Forgets connections that sent nothing for `idle` (a peer that went away without
    /// `leave`); returns how many.
    pub fn forget_idle(&mut self, now: Instant, idle: Duration) -> usize {
        let before = self.connections.len();
        self.connections
            .retain(|_, c| now.saturating_duration_since(c.touched) < idle);
        before - self.connections.len()
    }

    /// Checks one frame from `peer` on `session`, received at `now`: its signature, its
    /// message, and the changes it would add (on a fork). `Err` is a refusal to dead-letter;
    /// the caller tells the peer with [`WireMessage::error`].
    pub fn check(
        &mut self,
        base: &mut KnowledgeBase,
        peer: &str,
        session: &str,
        frame: &[u8],
        signature: &str,
        now: Instant,
    ) -> Result<Checked, KnowledgeError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(KnowledgeError::FrameTooLarge {
                size: frame.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        self.verifier
            .verify_detached(peer, &frame_signed_bytes(session, frame), signature)
            .map_err(|e| KnowledgeError::UnsignedFrame(e.to_string()))?;
        let message = WireMessage::decode(frame)?;
        let kind = message.kind.clone();
        let mut checked = Checked {
            peer: peer.to_string(),
            session: session.to_string(),
            message,
            frame: frame.to_vec(),
            signature: signature.to_string(),
            sync: None,
            relay: None,
            replies: Vec::new(),
        };
        let key = (peer.to_string(), session.to_string());
        match kind.as_str() {
            "join" => {
                let remote = checked
                    .message
                    .sender_id
                    .clone()
                    .ok_or_else(|| KnowledgeError::BadFrame("join without senderId".into()))?;
                let speaks = checked
                    .message
                    .supported_protocol_versions
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|v| v == PROTOCOL_VERSION));
                if !speaks {
                    return Err(KnowledgeError::BadFrame(format!(
                        "the peer does not speak protocol version {PROTOCOL_VERSION}"
                    )));
                }
                self.evict_if_full();
                self.connections.insert(
                    key,
                    Connection {
                        remote: remote.clone(),
                        docs: BTreeMap::new(),
                        refused: BTreeSet::new(),
                        touched: now,
                    },
                );
                checked.replies.push(
                    WireMessage {
                        kind: "peer".into(),
                        sender_id: Some(self.me.clone()),
                        target_id: Some(remote),
                        peer_metadata: Some(PeerMetadata {
                            storage_id: None,
                            is_ephemeral: Some(false),
                        }),
                        selected_protocol_version: Some(PROTOCOL_VERSION.into()),
                        ..WireMessage::default()
                    }
                    .encode(),
                );
            }
            "leave" => {
                self.connections.remove(&key);
            }
            kind if is_sync(kind) => self.check_sync(base, &mut checked, now)?,
            // Presence and remote-heads subscriptions carry no document changes; a peer's
            // doc-unavailable answers nothing the gateway asked.
            "ephemeral"
            | "remote-subscription-change"
            | "remote-heads-changed"
            | "doc-unavailable"
            | "error" => {}
            other => {
                return Err(KnowledgeError::BadFrame(format!(
                    "unknown message type {other:?}"
                )));
            }
        }
        Ok(checked)
    }

    fn check_sync(
        &mut self,
        base: &mut KnowledgeBase,
        checked: &mut Checked,
        now: Instant,
    ) -> Result<(), KnowledgeError> {
        let key = (checked.peer.clone(), checked.session.clone());
        let Some(connection) = self.connections.get_mut(&key) else {
            return Err(KnowledgeError::UnknownConnection);
        };
        connection.touched = now;
        let remote = connection.remote.clone();
        let document_id = checked
            .message
            .document_id
            .clone()
            .ok_or_else(|| KnowledgeError::BadFrame("sync without documentId".into()))?;
        let unavailable = |me: &str| {
            WireMessage {
                kind: "doc-unavailable".into(),
                sender_id: Some(me.to_string()),
                target_id: Some(remote.clone()),
                document_id: Some(document_id.clone()),
                ..WireMessage::default()
            }
            .encode()
        };
        let Some(document) = self.document_named(base, &document_id) else {
            checked.replies.push(unavailable(&self.me));
            return Ok(());
        };
        let Some(connection) = self.connections.get_mut(&key) else {
            return Ok(());
        };
        if connection.refused.contains(&document) {
            checked.replies.push(unavailable(&self.me));
            return Ok(());
        }
        let data = checked.message.data.clone().unwrap_or_default();
        let message = sync::Message::decode(&data)
            .map_err(|e| KnowledgeError::BadFrame(format!("bad sync message: {e}")))?;
        let (space, _) = parse_document(&document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.clone()))?;
        let space = space.to_string();
        let access = base
            .space(&space)
            .cloned()
            .ok_or_else(|| KnowledgeError::UnknownSpace(space.clone()))?;
        let link = connection
            .docs
            .entry(document.clone())
            .or_insert_with(|| DocLink {
                document_id: document_id.clone(),
                state: sync::State::new(),
            });
        let state = base
            .document_mut(&document)
            .ok_or_else(|| KnowledgeError::UnknownDocument(document.clone()))?;
        // What the message would add, on a fork.
        let mut fork = state.doc.automerge().fork();
        let mut trial = link.state.clone();
        fork.sync()
            .receive_sync_message(&mut trial, message.clone())
            .map_err(KnowledgeError::Automerge)?;
        let added = state.doc.automerge().get_changes_added(&mut fork);
        let verdict = added
            .iter()
            .try_for_each(|change| check_peer_change(change, &checked.peer, &access, &space));
        if let Err(e) = verdict {
            connection.refused.insert(document.clone());
            connection.docs.remove(&document);
            return Err(e);
        }
        if !added.is_empty() {
            checked.relay = Some(KnowledgeRelayed {
                space,
                peer: checked.peer.clone(),
                session: checked.session.clone(),
                frame: B64.encode(&checked.frame),
                signature: checked.signature.clone(),
            });
        }
        checked.sync = Some((document, message));
        Ok(())
    }

    /// Applies a checked frame (after its relay, if any, is in the log) and returns the
    /// frames to send back.
    pub fn apply(
        &mut self,
        base: &mut KnowledgeBase,
        checked: Checked,
    ) -> Result<Vec<Outgoing>, KnowledgeError> {
        let mut frames = checked.replies;
        let key = (checked.peer.clone(), checked.session.clone());
        if let Some((document, message)) = checked.sync
            && let Some(connection) = self.connections.get_mut(&key)
            && let Some(link) = connection.docs.get_mut(&document)
            && let Some(state) = base.document_mut(&document)
        {
            state
                .doc
                .automerge()
                .sync()
                .receive_sync_message(&mut link.state, message)
                .map_err(KnowledgeError::Automerge)?;
            if let Some(reply) = state
                .doc
                .automerge()
                .sync()
                .generate_sync_message(&mut link.state)
            {
                frames.push(sync_frame(
                    &self.me,
                    &connection.remote,
                    &link.document_id,
                    reply,
                ));
            } else if checked.message.kind == "request" {
                // A request is answered even when there is nothing to add: the peer waits.
                frames.push(sync_frame(
                    &self.me,
                    &connection.remote,
                    &link.document_id,
                    sync::Message {
                        heads: state.doc.heads(),
                        need: Vec::new(),
                        have: Vec::new(),
                        changes: sync::ChunkList::empty(),
                        flags: None,
                        version: sync::MessageVersion::V1,
                    },
                ));
            }
        }
        Ok(frames
            .into_iter()
            .map(|frame| Outgoing {
                peer: checked.peer.clone(),
                session: checked.session.clone(),
                frame,
            })
            .collect())
    }

    /// The frames every connection is owed after the documents changed (the log moved).
    pub fn pending(&mut self, base: &mut KnowledgeBase) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for ((peer, session), connection) in &mut self.connections {
            for (document, link) in &mut connection.docs {
                let Some(state) = base.document_mut(document) else {
                    continue;
                };
                if let Some(message) = state
                    .doc
                    .automerge()
                    .sync()
                    .generate_sync_message(&mut link.state)
                {
                    out.push(Outgoing {
                        peer: peer.clone(),
                        session: session.clone(),
                        frame: sync_frame(&self.me, &connection.remote, &link.document_id, message),
                    });
                }
            }
        }
        out
    }

    /// The knowledge document an automerge-repo document id names, if any.
    fn document_named(&mut self, base: &KnowledgeBase, document_id: &str) -> Option<String> {
        if !self.ids.contains_key(document_id) {
            for space in base.spaces() {
                for document in base.documents_of(&space.space) {
                    self.ids
                        .insert(crate::repo::document_id(&self.realm, &document), document);
                }
            }
        }
        self.ids.get(document_id).cloned()
    }

    fn evict_if_full(&mut self) {
        while self.connections.len() >= MAX_CONNECTIONS {
            let Some(oldest) = self
                .connections
                .iter()
                .min_by_key(|(_, c)| c.touched)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.connections.remove(&oldest);
        }
    }
}

fn sync_frame(me: &str, remote: &str, document_id: &str, message: sync::Message) -> Vec<u8> {
    WireMessage {
        kind: "sync".into(),
        sender_id: Some(me.to_string()),
        target_id: Some(remote.to_string()),
        document_id: Some(document_id.to_string()),
        data: Some(serde_bytes::ByteBuf::from(message.encode())),
        ..WireMessage::default()
    }
    .encode()
}

/// A change a peer sends must be its own, keep the layout, and come from a writer.
fn check_peer_change(
    change: &Change,
    peer: &str,
    access: &crate::access::SpaceAccess,
    space: &str,
) -> Result<(), KnowledgeError> {
    let author = author_of(change.actor_id()).unwrap_or_else(|| change.actor_id().to_string());
    if author != peer {
        return Err(KnowledgeError::ForgedChange {
            actor: author,
            emitter: peer.to_string(),
        });
    }
    if !access.can_write(peer, u64::MAX) {
        return Err(KnowledgeError::NoWriteAccess {
            agent: peer.to_string(),
            space: space.to_string(),
        });
    }
    check_change(change, peer, access.settings.max_fact_bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::IncomingChange;
    use crate::document::KnowledgeDoc;
    use crate::fact::{FactDraft, Value};
    use murmur_protocol::events::{SpaceAccessGranted, SpaceOpened};
    use murmur_protocol::{Draft, EventCodec, Identity, Payload, Token, VerifiedEvent};

    const REALM: &str = "acme";
    const DOC: &str = "notes-0";

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("t")
    }

    fn event<P: Payload>(who: &Identity, aggregate: &str, p: &P, seq: u64) -> VerifiedEvent {
        let codec = EventCodec::new(murmur_protocol::Catalog::standard().clone());
        let sealed = Draft::new(Token::new(aggregate).expect("token"), p)
            .expect("draft")
            .seal(who, &Token::new(REALM).expect("token"));
        let (h, b) = codec.encode(&sealed).expect("encode");
        let mut ev = codec
            .decode(sealed.subject.as_str(), Some(&h), &b)
            .expect("decode");
        ev.stream_sequence = Some(seq);
        ev
    }

    /// A base holding space `notes` (one shard) opened by `owner`, with `writer` granted
    /// write access, and one fact by the owner.
    fn base(owner: &Identity, writer: Option<&Identity>) -> KnowledgeBase {
        let mut base = KnowledgeBase::new(owner.public_key(), [9; 8]);
        let opened = SpaceOpened {
            title: String::new(),
            shards: 1,
            max_fact_bytes: 4096,
        };
        base.apply_space_event(1, &event(owner, "notes", &opened, 1))
            .expect("opened");
        if let Some(w) = writer {
            let grant = SpaceAccessGranted {
                agent: w.public_key().to_string(),
                role: AccessRole::Writer,
            };
            base.apply_space_event(2, &event(owner, "notes", &grant, 2))
                .expect("granted");
        }
        let state = base.document_mut(DOC).expect("doc");
        state
            .doc
            .assert_fact(
                &FactDraft::new("murmur", "speaks", Value::Text("automerge-repo".into())),
                now(),
            )
            .expect("fact");
        state.doc.commit(now());
        base
    }

    use murmur_protocol::events::AccessRole;

    /// An automerge-repo peer as the JavaScript one behaves, on a knowledge document.
    struct Peer {
        key: Identity,
        session: String,
        doc: KnowledgeDoc,
        state: sync::State,
    }

    impl Peer {
        fn new() -> Self {
            let key = Identity::generate();
            let doc = KnowledgeDoc::new(key.public_key(), [5; 8], 4096);
            Self {
                key,
                session: "s1".into(),
                doc,
                state: sync::State::new(),
            }
        }

        fn signed(&self, message: &WireMessage) -> (Vec<u8>, String) {
            let frame = message.encode();
            let signature = self
                .key
                .sign_detached(&frame_signed_bytes(&self.session, &frame));
            (frame, signature)
        }

        /// Signs `message` and hands it to the gateway at `now`.
        fn send(
            &self,
            gw: &mut RepoGateway,
            base: &mut KnowledgeBase,
            message: &WireMessage,
            now: Instant,
        ) -> Result<Checked, KnowledgeError> {
            let (frame, signature) = self.signed(message);
            gw.check(
                base,
                self.key.public_key(),
                &self.session,
                &frame,
                &signature,
                now,
            )
        }

        fn join(&self) -> WireMessage {
            WireMessage {
                kind: "join".into(),
                sender_id: Some("js-peer".into()),
                supported_protocol_versions: Some(vec!["1".into()]),
                ..WireMessage::default()
            }
        }

        fn sync(&mut self, kind: &str) -> Option<WireMessage> {
            let message = self
                .doc
                .automerge()
                .sync()
                .generate_sync_message(&mut self.state)?;
            Some(WireMessage {
                kind: kind.into(),
                sender_id: Some("js-peer".into()),
                target_id: Some("murmur-memory-GW".to_string()),
                document_id: Some(document_id(REALM, DOC)),
                data: Some(serde_bytes::ByteBuf::from(message.encode())),
                ..WireMessage::default()
            })
        }

        fn receive(&mut self, frames: &[Outgoing]) -> Vec<String> {
            let mut kinds = Vec::new();
            for out in frames {
                let message = WireMessage::decode(&out.frame).expect("decodes");
                kinds.push(message.kind.clone());
                if let Some(data) = message.data {
                    let m = sync::Message::decode(&data).expect("sync message");
                    self.doc
                        .automerge()
                        .sync()
                        .receive_sync_message(&mut self.state, m)
                        .expect("received");
                }
            }
            kinds
        }
    }

    fn exchange(
        gw: &mut RepoGateway,
        base: &mut KnowledgeBase,
        peer: &mut Peer,
        kind: &str,
    ) -> (Vec<String>, Vec<KnowledgeRelayed>) {
        let mut kinds = Vec::new();
        let mut relays = Vec::new();
        let mut kind = kind.to_string();
        for _ in 0..10 {
            let Some(message) = peer.sync(&kind) else {
                break;
            };
            kind = "sync".into();
            let (frame, signature) = peer.signed(&message);
            let checked = gw
                .check(
                    base,
                    peer.key.public_key(),
                    &peer.session,
                    &frame,
                    &signature,
                    Instant::now(),
                )
                .expect("checked");
            if let Some((_, relay)) = checked.relay() {
                relays.push(relay.clone());
            }
            let out = gw.apply(base, checked).expect("applied");
            kinds.extend(peer.receive(&out));
        }
        (kinds, relays)
    }

    #[test]
    fn document_ids_are_automerge_repo_ids() {
        let id = document_id(REALM, DOC);
        let raw = bs58::decode(&id)
            .with_check(None)
            .into_vec()
            .expect("base58check");
        assert_eq!(raw.len(), 16);
        assert_eq!(id, document_id(REALM, DOC), "stable");
        assert_ne!(id, document_id("other", DOC));
        assert_eq!(automerge_url(REALM, DOC), format!("automerge:{id}"));
    }

    #[test]
    fn a_writer_peer_reads_the_space_and_its_edit_is_relayed_as_its_own() {
        let owner = Identity::generate();
        let mut peer = Peer::new();
        let mut base = base(&owner, Some(&peer.key));
        let mut gw = RepoGateway::new(REALM, "GW");

        let checked = peer
            .send(&mut gw, &mut base, &peer.join(), Instant::now())
            .expect("join");
        let out = gw.apply(&mut base, checked).expect("peer");
        assert_eq!(peer.receive(&out), ["peer"]);

        let (kinds, relays) = exchange(&mut gw, &mut base, &mut peer, "request");
        assert!(kinds.iter().all(|k| k == "sync"), "{kinds:?}");
        assert!(relays.is_empty(), "reading adds nothing");
        let facts = peer.doc.facts_at(None).expect("facts");
        assert_eq!(facts.len(), 1, "the peer has the owner's fact");

        // The peer edits; its frame is relayed, and any replica's fold reads the change as
        // the peer's from the frame's signature.
        let id = facts[0].id.clone();
        peer.doc
            .set_field(&id, "via", Value::Text("js".into()), now())
            .expect("edit");
        peer.doc.commit(now());
        let (_, relays) = exchange(&mut gw, &mut base, &mut peer, "sync");
        assert_eq!(relays.len(), 1);
        let changes = relayed_changes(&relays[0]).expect("verified");
        // A frame may also carry changes the gateway already has (here the owner's): the
        // fold skips those; the peer's own is the new one.
        let by_peer = changes
            .iter()
            .filter(|c| {
                let change = Change::from_bytes(c.to_vec()).expect("change");
                author_of(change.actor_id()).as_deref() == Some(peer.key.public_key())
            })
            .count();
        assert_eq!(by_peer, 1);

        let mut replica = self::base(&owner, Some(&peer.key));
        let incoming: Vec<IncomingChange> = changes
            .into_iter()
            .map(|bytes| IncomingChange {
                sequence: 10,
                document: DOC.into(),
                space: "notes".into(),
                emitter: relays[0].peer.clone(),
                event_id: "kr-1".into(),
                bytes: Ok(bytes),
                relayed: true,
            })
            .collect();
        // The replica has its own copy of the owner's fact: the owner's change is not in
        // the frame, only the peer's.
        let refused = replica.ingest(incoming);
        assert!(refused.is_empty(), "{refused:?}");
        let fact = replica
            .document(DOC)
            .expect("doc")
            .doc
            .fact(&id)
            .expect("read");
        assert!(fact.is_some_and(|f| f.fields.contains_key("via")));

        // A tampered relay is not the peer's.
        let mut tampered = relays[0].clone();
        tampered.session = "s2".into();
        assert!(matches!(
            relayed_changes(&tampered),
            Err(KnowledgeError::UnsignedFrame(_))
        ));
    }

    #[test]
    fn a_peer_without_write_access_is_refused_and_told_unavailable_after() {
        let owner = Identity::generate();
        let mut peer = Peer::new();
        let mut base = base(&owner, None);
        let mut gw = RepoGateway::new(REALM, "GW");
        let checked = peer
            .send(&mut gw, &mut base, &peer.join(), Instant::now())
            .expect("join");
        gw.apply(&mut base, checked).expect("peer");
        let (_, relays) = exchange(&mut gw, &mut base, &mut peer, "request");
        assert!(relays.is_empty());
        let id = peer.doc.facts_at(None).expect("facts")[0].id.clone();
        peer.doc
            .set_field(&id, "via", Value::Text("js".into()), now())
            .expect("edit");
        peer.doc.commit(now());
        // The change goes out in the first message or, when the peer's Bloom filter check
        // gave a false positive, once the gateway asks for it: a few rounds at most.
        let (mut frame, mut signature) = (Vec::new(), String::new());
        let mut refused = Err(KnowledgeError::BadFrame("nothing sent".into()));
        for _ in 0..10 {
            let Some(message) = peer.sync("sync") else {
                break;
            };
            (frame, signature) = peer.signed(&message);
            refused = gw.check(
                &mut base,
                peer.key.public_key(),
                &peer.session,
                &frame,
                &signature,
                Instant::now(),
            );
            let Ok(checked) = refused else { break };
            let out = gw.apply(&mut base, checked).expect("applied");
            peer.receive(&out);
            refused = Err(KnowledgeError::BadFrame("the change was never sent".into()));
        }
        assert!(
            matches!(refused, Err(KnowledgeError::NoWriteAccess { .. })),
            "{refused:?}"
        );
        assert_eq!(base.document(DOC).expect("doc").doc.len(), 1);

        let checked = gw
            .check(
                &mut base,
                peer.key.public_key(),
                &peer.session,
                &frame,
                &signature,
                Instant::now(),
            )
            .expect("answered");
        let out = gw.apply(&mut base, checked).expect("applied");
        assert_eq!(peer.receive(&out), ["doc-unavailable"]);
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        let owner = Identity::generate();
        let peer = Peer::new();
        let mut base = base(&owner, Some(&peer.key));
        let mut gw = RepoGateway::new(REALM, "GW");
        let (frame, _) = peer.signed(&peer.join());
        let forged = Identity::generate().sign_detached(&frame_signed_bytes(&peer.session, &frame));
        assert!(matches!(
            gw.check(
                &mut base,
                peer.key.public_key(),
                &peer.session,
                &frame,
                &forged,
                Instant::now()
            ),
            Err(KnowledgeError::UnsignedFrame(_))
        ));
        let junk = b"not cbor at all".to_vec();
        let signature = peer
            .key
            .sign_detached(&frame_signed_bytes(&peer.session, &junk));
        assert!(matches!(
            gw.check(
                &mut base,
                peer.key.public_key(),
                &peer.session,
                &junk,
                &signature,
                Instant::now()
            ),
            Err(KnowledgeError::BadFrame(_))
        ));
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        assert!(matches!(
            gw.check(
                &mut base,
                peer.key.public_key(),
                &peer.session,
                &big,
                "x",
                Instant::now()
            ),
            Err(KnowledgeError::FrameTooLarge { .. })
        ));
        // A sync before join.
        let mut early = Peer::new();
        early.key = peer.key.clone();
        let message = WireMessage {
            kind: "sync".into(),
            document_id: Some(document_id(REALM, DOC)),
            data: Some(serde_bytes::ByteBuf::from(Vec::new())),
            ..WireMessage::default()
        };
        let (frame, signature) = early.signed(&message);
        assert!(matches!(
            gw.check(
                &mut base,
                peer.key.public_key(),
                &early.session,
                &frame,
                &signature,
                Instant::now()
            ),
            Err(KnowledgeError::UnknownConnection)
        ));
    }

    #[test]
    fn idle_connections_are_forgotten() {
        let owner = Identity::generate();
        let peer = Peer::new();
        let mut base = base(&owner, Some(&peer.key));
        let mut gw = RepoGateway::new(REALM, "GW");
        let start = Instant::now();
        peer.send(&mut gw, &mut base, &peer.join(), start)
            .expect("join");
        assert_eq!(gw.connections(), 1);
        let idle = Duration::from_secs(600);
        assert_eq!(gw.forget_idle(start + Duration::from_secs(599), idle), 0);
        assert_eq!(gw.forget_idle(start + idle, idle), 1);
        assert_eq!(gw.connections(), 0);
    }

    #[test]
    fn storage_chunks_split_changes_and_documents() {
        let k = Identity::generate();
        let mut doc = KnowledgeDoc::new(k.public_key(), [1; 8], 4096);
        let mut raw = Vec::new();
        for i in 0..3 {
            doc.assert_fact(&FactDraft::new(format!("s{i}"), "p", Value::Int(i)), now())
                .expect("a");
            raw.extend_from_slice(doc.commit(now()).expect("c").raw_bytes());
        }
        let chunks = storage_chunks(&raw).expect("split");
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|(kind, _)| *kind != DOCUMENT_CHUNK));
        let saved = doc.save();
        let chunks = storage_chunks(&saved).expect("split");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].0, DOCUMENT_CHUNK);
        assert!(storage_chunks(&raw[..raw.len() - 1]).is_err());
        assert!(storage_chunks(b"garbage!!").is_err());
    }
}
