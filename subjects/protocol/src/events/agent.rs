//! Agents: joining with a manifest, leaving, liveness verdicts, heartbeats and load.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::{Payload, PayloadError};
use crate::roles::Role;
use crate::subject::{Domain, Plane};

use super::TaskAssigned;

/// Hardware an agent offers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Hardware {
    /// Logical CPU cores.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Accelerators (GPU model names), empty when none.
    #[serde(default)]
    pub accelerators: Vec<String>,
    /// Accelerator memory in MiB, summed.
    #[serde(default)]
    pub vram_mib: u64,
    /// CPU features the inference kernels choose between (`avx2`, `fma`, `asimd`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu_features: Vec<String>,
}

/// `dev.murmur.agent.joined` v2: an agent joined the cluster and announces its manifest.
///
/// v1 carried only `name`, `kind` and `capabilities`; v1 events are upgraded with empty labels,
/// `agent_version = "unknown"`, zeroed hardware, one slot and no declared event types.
/// `slots` and `handles` were added to v2 as optional fields: a v2 event without them means
/// one slot and event types not declared, and readers that predate them ignore them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentJoined {
    /// Human-readable name (not an identity: the identity is the event's signing key).
    pub name: String,
    /// Agent kind: planner, compiler, executor, tool, memory, inference, ...
    pub kind: String,
    /// Capabilities, e.g. `compiler.rust`.
    pub capabilities: Vec<String>,
    /// Free-form labels used by routing constraints.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The agent's software version.
    pub agent_version: String,
    /// Hardware offered.
    pub hardware: Hardware,
    /// Tasks it runs at once: coordinators assign it at most this many attempts in flight.
    #[serde(default = "one_slot")]
    pub slots: u32,
    /// The CloudEvent types it handles (e.g. `dev.murmur.task.assigned`), sorted; every one
    /// is in the catalog. `None`: not declared (an agent older than this field). An agent
    /// that declares its types without `dev.murmur.task.assigned` is never assigned a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handles: Option<Vec<String>>,
}

impl AgentJoined {
    /// Whether it runs tasks: it declared `dev.murmur.task.assigned`, or declared nothing.
    pub fn takes_tasks(&self) -> bool {
        takes_tasks(self.handles.as_deref())
    }
}

/// Whether an agent whose manifest declared `handles` runs tasks: the types include
/// `dev.murmur.task.assigned`, or none were declared (an agent older than `handles`).
pub fn takes_tasks(handles: Option<&[String]>) -> bool {
    handles.is_none_or(|h| h.iter().any(|t| t == TaskAssigned::TYPE))
}

fn one_slot() -> u32 {
    1
}

/// The v1 shape of [`AgentJoined`], kept so old events decode on replay.
#[derive(Debug, Clone, Deserialize)]
struct AgentJoinedV1 {
    name: String,
    kind: String,
    capabilities: Vec<String>,
}

impl Payload for AgentJoined {
    const TYPE: &'static str = "dev.murmur.agent.joined";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "joined";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 2;
    const DESCRIPTION: &'static str = "an agent joined and announced its manifest";
    const EMITTED_BY: &'static [Role] = Role::AGENTS;
    const OWN_AGGREGATE: bool = true;

    fn upcast(version: u32, data: &[u8]) -> Result<Self, PayloadError> {
        match version {
            1 => {
                let v1: AgentJoinedV1 =
                    serde_json::from_slice(data).map_err(|source| PayloadError::Schema {
                        ty: Self::TYPE,
                        version,
                        source,
                    })?;
                Ok(AgentJoined {
                    name: v1.name,
                    kind: v1.kind,
                    capabilities: v1.capabilities,
                    labels: BTreeMap::new(),
                    agent_version: "unknown".into(),
                    hardware: Hardware::default(),
                    slots: 1,
                    handles: None,
                })
            }
            found => Err(PayloadError::UnsupportedVersion {
                ty: Self::TYPE,
                found,
                current: Self::VERSION,
            }),
        }
    }
}

/// `dev.murmur.agent.left`: an agent left on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentLeft {
    /// Why it left (shutdown, drain, ...).
    pub reason: String,
}

impl Payload for AgentLeft {
    const TYPE: &'static str = "dev.murmur.agent.left";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "left";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an agent left on purpose";
    const EMITTED_BY: &'static [Role] = Role::AGENTS;
    const OWN_AGGREGATE: bool = true;
}

/// `dev.murmur.agent.offline`: a liveness monitor stopped hearing an agent's heartbeats (no
/// `left` event came). Its id is derived from the agent and its last beat, so several monitors
/// detecting the same silence write one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentOffline {
    /// Time of the last heartbeat heard (RFC 3339).
    pub last_seen: String,
    /// Heartbeat interval the agent had announced, in milliseconds.
    pub interval_ms: u64,
    /// How many intervals passed without a beat when it was declared offline.
    pub missed_intervals: u32,
}

impl Payload for AgentOffline {
    const TYPE: &'static str = "dev.murmur.agent.offline";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "offline";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an agent's heartbeats stopped without a left event";
    const EMITTED_BY: &'static [Role] = &[Role::Monitor];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.agent.resumed`: a liveness monitor heard heartbeats again from an agent it
/// had recorded offline (e.g. after a network partition healed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentResumed {
    /// Id of the heartbeat event that was heard.
    pub heartbeat_id: String,
}

impl Payload for AgentResumed {
    const TYPE: &'static str = "dev.murmur.agent.resumed";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "resumed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an agent recorded offline is heard again";
    const EMITTED_BY: &'static [Role] = &[Role::Monitor];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.agent.heartbeat`: liveness and load, on core NATS only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentHeartbeat {
    /// The interval the agent promises between beats, in milliseconds.
    pub interval_ms: u64,
    /// Current load, 0.0 ..= 1.0 per core.
    pub load: f32,
    /// Tasks queued locally.
    pub queue_depth: u32,
}

impl Payload for AgentHeartbeat {
    const TYPE: &'static str = "dev.murmur.agent.heartbeat";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "heartbeat";
    const PLANE: Plane = Plane::Live;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "liveness and load, core NATS only (never persisted)";
    const EMITTED_BY: &'static [Role] = Role::AGENTS;
    const OWN_AGGREGATE: bool = true;
    const SUBSCRIBED_BY: &'static [Role] = &[
        Role::Monitor,
        Role::Coordinator,
        Role::Auditor,
        Role::Observer,
    ];
}

/// `dev.murmur.agent.load_changed`: an agent's load, queue depth or lame-duck state changed
/// significantly (logged, unlike heartbeats, so routing decisions replay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentLoadChanged {
    /// Current load, 0.0 ..= 1.0 per core.
    pub load: f32,
    /// Attempts running or queued on the agent.
    pub queue_depth: u32,
    /// Whether it refuses new work.
    pub lame_duck: bool,
}

impl AgentLoadChanged {
    /// Whether `now` differs enough from the last logged report to be logged: lame duck
    /// entered, queue empty ↔ busy, queue depth moved by 8 or more, or load by 0.25 or more.
    pub fn significant_change(&self, now: &AgentLoadChanged) -> bool {
        self.lame_duck != now.lame_duck
            || (self.queue_depth == 0) != (now.queue_depth == 0)
            || self.queue_depth.abs_diff(now.queue_depth) >= 8
            || (self.load - now.load).abs() >= 0.25
    }
}

impl Payload for AgentLoadChanged {
    const TYPE: &'static str = "dev.murmur.agent.load_changed";
    const DOMAIN: Domain = Domain::Agent;
    const VERB: &'static str = "load_changed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "an agent's load, queue depth or lame-duck state changed significantly";
    const EMITTED_BY: &'static [Role] = Role::AGENTS;
    const OWN_AGGREGATE: bool = true;
}
