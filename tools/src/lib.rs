//! # murmur-tools
//!
//! The `murmur` command line ([`cli`]) and the public test kit ([`testkit`]): a real
//! nats-server with JetStream for tests — in a container when a Docker engine is reachable,
//! else the local binary — plus a 3-node cluster with stop/restart.

pub mod cli;
pub mod config;
pub mod demo;
pub mod nats_server;
pub mod overview;
pub mod testkit;
