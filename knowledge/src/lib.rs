//! Shared knowledge: facts with provenance in Automerge documents, one set of documents per
//! knowledge space, synced between agents through the JetStream log.
//!
//! Pure document logic ([`fact`], [`document`], [`layout`], [`access`], [`base`], [`query`])
//! does no I/O; the NATS/JetStream edge is [`replica`] (read the log, write changes,
//! snapshots in the Object Store) and [`sync`] (the Automerge sync protocol over NATS
//! request/reply, to catch a peer up).
//!
//! Performance notes that shaped the design (measured, see `../shared/notes`): applying remote
//! changes one at a time is slow on large documents, so the fold applies each document's
//! changes of a read batch in one call; a large space is split into bounded documents; each
//! fact's immutable part is one JSON string (one operation).
#![deny(missing_docs)]

pub mod access;
pub mod base;
pub mod compaction;
pub mod document;
pub mod error;
pub mod fact;
pub mod layout;
mod outbox;
pub mod query;
pub mod replica;
pub mod rpc;
pub mod space;
pub mod sync;

pub use base::KnowledgeBase;
pub use document::{FactView, KnowledgeDoc, ResolutionPolicy};
pub use error::KnowledgeError;
pub use fact::{FactDraft, FactId, Value};
pub use query::Query;
pub use replica::{KnowledgeReplica, ReplicaConfig};
