//! # murmur-agents
//!
//! The agent runtime ([`runtime`]): an agent joins with its manifest (kind, capabilities,
//! labels, version, hardware) as a signed `agent.joined` event, registers as a NATS micro
//! service so stock `$SRV.PING|INFO|STATS` discovery finds it, heartbeats on core NATS and
//! into a presence KV bucket whose entries expire, can enter a one-way lame-duck mode, and
//! leaves with a signed `agent.left` event. [`handlers`] is how every agent says what it does
//! — typed handlers, the tasks leased to it ([`worker`]), votes ([`voter`]), the knowledge
//! spaces ([`memory`]) — and runs it; the manifest declares exactly those event types. [`pipeline`] holds the distributed-compilation kinds (planner,
//! compiler, executor); [`artifacts`] the content-addressed Object Store they exchange
//! source and binaries through. [`inference`] (feature `inference`) runs GGUF language models
//! with candle for `llm.generate` tasks. [`tool`] holds the tool kind: `tool.fs`, file
//! operations confined to one directory; [`exec`] `tool.exec`, allowlisted programs run under
//! limits in a private directory. [`hardware`] detects what the machine offers. [`assistant`] holds the
//! decisions of `murmur ask`'s plan (a constrained tool call, a tool task, an answer).

pub mod agent_protocol;
pub mod artifacts;
pub mod assistant;
pub mod exec;
pub mod handlers;
pub mod hardware;
#[cfg(feature = "inference")]
pub mod inference;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod pipeline;
mod process_group;
pub mod questions;
pub mod recall;
pub mod runtime;
pub mod tool;
pub mod voter;
pub mod worker;

pub use runtime::{Agent, AgentError, AgentSpec};
