//! # murmur-knowledge
//!
//! The Automerge fact store, synced over NATS and persisted in JetStream. Its work is tracked
//! in issue 5; today the crate only fixes its place in the workspace.
