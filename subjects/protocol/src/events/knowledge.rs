//! Knowledge spaces: opened, access granted and revoked, snapshots, Automerge changes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::roles::Role;
use crate::subject::{Domain, Plane};

/// What an access grant allows in a knowledge space.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// May publish changes to the space's documents.
    Writer,
    /// May publish snapshots and answer sync requests for the space (a memory agent).
    Replica,
}

/// `dev.murmur.space.opened`: a knowledge space was created; its emitter is the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceOpened {
    /// For people.
    #[serde(default)]
    pub title: String,
    /// How many Automerge documents the space is split into (fixed for its life: a fact's
    /// document is derived from its id).
    pub shards: u16,
    /// Largest accepted fact (its JSON), in bytes.
    pub max_fact_bytes: u32,
}

impl Payload for SpaceOpened {
    const TYPE: &'static str = "dev.murmur.space.opened";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "opened";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a knowledge space was created; the emitter owns it";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Orchestrator];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.access_granted`: the owner let an agent write (or replicate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceAccessGranted {
    /// The agent's public key.
    pub agent: String,
    /// What it may do.
    pub role: AccessRole,
}

impl Payload for SpaceAccessGranted {
    const TYPE: &'static str = "dev.murmur.space.access_granted";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "access_granted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the space owner granted an agent a role";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.access_revoked`: the owner took a role back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceAccessRevoked {
    /// The agent's public key.
    pub agent: String,
    /// The role taken back.
    pub role: AccessRole,
}

impl Payload for SpaceAccessRevoked {
    const TYPE: &'static str = "dev.murmur.space.access_revoked";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "access_revoked";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the space owner revoked an agent's role";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.snapshotted`: a compacted document was stored in the Object Store;
/// changes up to `stream_sequence` may be purged from the document's change subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceSnapshotted {
    /// The document (its aggregate token).
    pub document: String,
    /// Object name in the knowledge object store.
    pub object: String,
    /// Hex change hashes of the document's heads in the snapshot.
    pub heads: Vec<String>,
    /// The last history sequence the snapshot covers.
    pub stream_sequence: u64,
    /// Size of the saved document in bytes.
    pub size: u64,
    /// Hex SHA-256 of the saved document.
    pub sha256: String,
}

impl Payload for SpaceSnapshotted {
    const TYPE: &'static str = "dev.murmur.space.snapshotted";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "snapshotted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a compacted knowledge document was saved";
    const EMITTED_BY: &'static [Role] = &[Role::Memory, Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.knowledge.changed`: one Automerge change to one knowledge document. The event
/// id is derived from the change hash (server dedupe); the change's actor must be its
/// emitter's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KnowledgeChanged {
    /// The space the document belongs to.
    pub space: String,
    /// The Automerge change bytes, base64.
    pub change: String,
}

impl Payload for KnowledgeChanged {
    const TYPE: &'static str = "dev.murmur.knowledge.changed";
    const DOMAIN: Domain = Domain::Knowledge;
    const VERB: &'static str = "changed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an Automerge change to a knowledge document";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Memory, Role::Orchestrator];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.knowledge.relayed`: a sync frame an automerge-repo peer sent a memory agent's
/// gateway, with the peer's signature over it. The fold reads the Automerge changes the frame
/// carries and counts them as the **peer's**: the signature must verify against `peer`, and
/// each new change must be the peer's own and keep the layout, from a peer holding write
/// access at that log position. The relaying agent is trusted for nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KnowledgeRelayed {
    /// The space the document belongs to.
    pub space: String,
    /// The peer's public key (the frame's signer).
    pub peer: String,
    /// The peer's connection session (covered by the signature).
    pub session: String,
    /// The frame as the peer sent it (CBOR, automerge-repo's message), base64.
    pub frame: String,
    /// The peer's detached signature over `session`, the gateway subject's verb and `frame`.
    pub signature: String,
}

impl Payload for KnowledgeRelayed {
    const TYPE: &'static str = "dev.murmur.knowledge.relayed";
    const DOMAIN: Domain = Domain::Knowledge;
    const VERB: &'static str = "relayed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "an automerge-repo peer's signed sync frame, relayed by a memory agent";
    const EMITTED_BY: &'static [Role] = &[Role::Memory];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}
