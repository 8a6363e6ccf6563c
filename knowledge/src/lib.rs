//! Shared knowledge: facts with provenance in Automerge documents, one set of documents per
//! knowledge space, synced between agents through the JetStream log.
//!
//! Pure document logic ([`fact`], [`document`], [`layout`], [`access`], [`base`], [`query`])
//! does no I/O; the NATS/JetStream edge is [`replica`] (read the log, write changes,
//! snapshots in the Object Store) and [`sync`] (the Automerge sync protocol over NATS
//! request/reply, to catch a peer up), with [`rpc`] and [`compaction`]. The edge is the
//! default `nats` feature; without it the crate is the pure core alone and builds on
//! `murmur-protocol` without async-nats and tokio. [`repo`] (pure) lets automerge-repo peers
//! (the JavaScript `Repo`, `samod`) read and edit documents through a memory agent; the
//! `samod` feature adds `samod_nats`, the dialer a samod `Repo` reaches the gateway with.
//!
//! Performance notes that shaped the design (measured, see `../shared/notes`): applying remote
//! changes one at a time is slow on large documents, so the fold applies each document's
//! changes of a read batch in one call; a large space is split into bounded documents; each
//! fact's immutable part is one JSON string (one operation).
#![deny(missing_docs)]

pub mod access;
pub mod base;
#[cfg(feature = "nats")]
pub mod compaction;
pub mod document;
pub mod error;
pub mod fact;
pub mod layout;
#[cfg(feature = "nats")]
mod outbox;
pub mod query;
#[cfg(feature = "nats")]
pub mod replica;
pub mod repo;
#[cfg(feature = "nats")]
pub mod rpc;
#[cfg(feature = "samod")]
pub mod samod_nats;
pub mod space;
#[cfg(feature = "nats")]
pub mod sync;

pub use base::KnowledgeBase;
pub use document::{FactView, KnowledgeDoc, ResolutionPolicy};
pub use error::KnowledgeError;
pub use fact::{FactDraft, FactId, Value};
pub use query::Query;
#[cfg(feature = "nats")]
pub use replica::{KnowledgeReplica, ReplicaConfig};
