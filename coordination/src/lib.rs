//! # murmur-coordination
//!
//! Registry, task routing, leases and retries, task graphs and consensus, all as projections
//! of the JetStream log (`murmur_subjects::projection`). Its work is tracked in issues 3 and 4;
//! today the crate only fixes its place in the workspace.
