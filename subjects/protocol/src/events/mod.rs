//! The event types murmur declares, with their payloads.
//!
//! Each payload implements [`Payload`](crate::Payload), which ties it to its CloudEvent `type`, its subject
//! (plane, domain, verb) and its schema version. [`crate::catalog::Catalog::standard`] lists
//! them all.

mod agent;
mod knowledge;
mod proposal;
mod role;
mod sys;
mod task;
#[cfg(test)]
mod tests;

pub use agent::*;
pub use knowledge::*;
pub use proposal::*;
pub use role::*;
pub use sys::*;
pub use task::*;
