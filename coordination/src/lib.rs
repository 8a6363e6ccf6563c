//! # murmur-coordination
//!
//! Who is online and where work should go, derived from the log:
//!
//! - [`registry`]: the agent registry, a projection of `agent.joined` / `agent.left` /
//!   `agent.offline` events (pure fold, same live and on replay).
//! - [`routing`]: the documented routing score (pure, no I/O).
//! - [`liveness`]: heartbeat tracking with an injectable clock (pure) and the monitor that
//!   turns missed heartbeats into `agent.offline` events with deterministic ids (I/O edge).
//!
//! - [`tasks`]: the task lifecycle as a projection (submitted → assigned → started →
//!   completed | failed → retried | dead-lettered | cancelled; idempotent completion) and the
//!   coordinator's decisions (leases, retries with backoff, priorities with fair share) as a
//!   pure function.
//!
//! - [`coordinator`]: the coordinator worker that writes those decisions (I/O edge).
//!
//! - [`graph`]: task graphs (petgraph DAG): validation naming every cycle path and missing
//!   dependency, release order, descendants (pure). Submitted graphs are `task.submitted`
//!   events with `depends_on`, held by [`tasks::decide`] until their parents complete.
//!
//! - [`assignments`]: what a worker reads — its own assignments and the cancellations,
//!   each one event type filtered on the server — and the fetch of the work an assignment
//!   names (I/O edge).
//!
//! - [`submit`]: submitting a validated graph as `task.submitted` events (I/O edge).
//!
//! - [`consensus`]: proposals, votes and decisions, pure: counting rules (simple, qualified,
//!   weighted, unanimous, adaptive response thresholds), early decision, typed vote
//!   refusals, and the proposal projection the tallier folds (the tallier service, voter
//!   agents and CLI live in `murmur-agents` and `murmur-tools`).

pub mod assignments;
pub mod backpressure;
pub mod consensus;
pub mod coordinator;
pub mod follow;
pub mod graph;
pub mod liveness;
pub mod registry;
pub mod routing;
pub mod submit;
pub mod tallier;
pub mod tasks;
#[cfg(test)]
mod test_log;
