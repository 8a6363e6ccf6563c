//! The knowledge crate's errors.

use murmur_protocol::IngestError;
use murmur_protocol::events::DeadLetterReason;
#[cfg(feature = "nats")]
use murmur_subjects::LogError;

use crate::fact::FactId;

/// Why a knowledge operation or an incoming change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnowledgeError {
    /// The fact is not well formed.
    #[error("invalid fact: {0}")]
    InvalidFact(String),
    /// The fact's JSON exceeds the space's limit.
    #[error("fact is {size} bytes; this space accepts at most {limit}")]
    FactTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a fact id.
    #[error("{0:?} is not a fact id (32 hex characters)")]
    InvalidFactId(String),
    /// No such fact in the space.
    #[error("no fact {0} in this space")]
    UnknownFact(FactId),
    /// A resolution was asked for a field that has no concurrent values.
    #[error("field {field:?} of fact {fact} has no conflicting values")]
    NotInConflict {
        /// The fact.
        fact: FactId,
        /// The field.
        field: String,
    },
    /// Not a valid space name.
    #[error("invalid space name {0:?}: {1}")]
    InvalidSpace(String, String),
    /// The space was never opened.
    #[error("unknown knowledge space {0:?}")]
    UnknownSpace(String),
    /// A change names a document that no opened space has.
    #[error("unknown knowledge document {0:?}")]
    UnknownDocument(String),
    /// `space.opened` was written twice.
    #[error("space {0:?} already exists")]
    SpaceExists(String),
    /// The writer holds no write access.
    #[error("agent {agent} has no write access to space {space:?}")]
    NoWriteAccess {
        /// The agent.
        agent: String,
        /// The space.
        space: String,
    },
    /// The change builds on a change that was refused, so it can never apply (Automerge
    /// would wait for the missing dependency forever).
    #[error("change {change} depends on refused change {dependency}")]
    DependsOnRefused {
        /// The change (hex hash).
        change: String,
        /// The refused dependency (hex hash).
        dependency: String,
    },
    /// Only the owner may grant, revoke or (with replicas) snapshot.
    #[error("agent {agent} may not {action} in space {space:?}")]
    NotAllowed {
        /// The agent.
        agent: String,
        /// What it tried.
        action: String,
        /// The space.
        space: String,
    },
    /// The outbox folder could not be read or written.
    #[error("outbox {path}: {reason}")]
    Outbox {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The change bytes do not decode.
    #[error("corrupt change bytes: {0}")]
    CorruptChange(String),
    /// The change's Automerge actor is not its emitter.
    #[error("change made by actor {actor} was published by {emitter}")]
    ForgedChange {
        /// The author the change claims.
        actor: String,
        /// The verified emitter.
        emitter: String,
    },
    /// The change breaks the document layout (deletes, foreign keys, unknown keys).
    #[error("change breaks the knowledge layout: {0}")]
    Layout(String),
    /// Automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A snapshot is missing, damaged or does not match its record.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The event log failed.
    #[cfg(feature = "nats")]
    #[error(transparent)]
    Log(#[from] LogError),
    /// An event could not be decoded.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The Object Store failed.
    #[error("object store: {0}")]
    Store(String),
    /// A sync or query request failed.
    #[error("request: {0}")]
    Request(String),
    /// An automerge-repo frame is not one the gateway can read.
    #[error("automerge-repo frame: {0}")]
    BadFrame(String),
    /// An automerge-repo frame's signature does not verify against its peer.
    #[error("automerge-repo frame is not signed by its peer: {0}")]
    UnsignedFrame(String),
    /// An automerge-repo frame for a connection the gateway does not know (it restarted, or
    /// forgot an idle one): the peer joins again. Not bad input, so not dead-lettered.
    #[error("unknown connection: join again")]
    UnknownConnection,
    /// An automerge-repo frame is larger than a gateway takes.
    #[error("automerge-repo frame is {size} bytes; a gateway takes at most {limit}")]
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl KnowledgeError {
    /// The dead-letter reason a refused incoming change is filed under.
    pub fn dead_letter_reason(&self) -> DeadLetterReason {
        match self {
            KnowledgeError::CorruptChange(_) | KnowledgeError::BadFrame(_) => {
                DeadLetterReason::Malformed
            }
            KnowledgeError::FactTooLarge { .. } | KnowledgeError::FrameTooLarge { .. } => {
                DeadLetterReason::Oversized
            }
            KnowledgeError::ForgedChange { .. } | KnowledgeError::UnsignedFrame(_) => {
                DeadLetterReason::BadSignature
            }
            KnowledgeError::Layout(_) | KnowledgeError::InvalidFact(_) => {
                DeadLetterReason::SchemaViolation
            }
            KnowledgeError::Ingest(e) => e.reason(),
            _ => DeadLetterReason::Refused,
        }
    }

    /// This error as an [`IngestError`] for the dead-letter stream.
    pub fn to_ingest_error(&self) -> IngestError {
        IngestError::Refused {
            reason: self.dead_letter_reason(),
            detail: self.to_string(),
        }
    }
}
