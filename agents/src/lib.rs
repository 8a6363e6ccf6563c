//! # murmur-agents
//!
//! The agent runtime (join, announce capabilities and hardware, heartbeat, handle events,
//! leave) and the agent kinds. Its work is tracked in issue 3; today the crate only fixes its
//! place in the workspace and its dependency on `murmur-subjects`, whose event catalog already
//! declares the agent events (`agent.joined` v2, `agent.left`, `agent.heartbeat`).
