//! The event types murmur declares, with their payloads.
//!
//! Each payload implements [`Payload`], which ties it to its CloudEvent `type`, its subject
//! (plane, domain, verb) and its schema version. [`crate::catalog::Catalog::standard`] lists
//! them all.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::{Payload, PayloadError};
use crate::roles::Role;
use crate::subject::{Domain, Plane};

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

/// A voter's answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// For.
    Approve,
    /// Against.
    Reject,
    /// Counted for quorum, not for the outcome.
    Abstain,
}

/// How a proposal is decided. Fractions are `numerator/denominator` of the counted weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// More approve than reject weight (ties reject).
    SimpleMajority,
    /// Approve weight ≥ numerator/denominator of approve + reject weight.
    Qualified {
        /// Numerator, e.g. 2.
        numerator: u32,
        /// Denominator, e.g. 3.
        denominator: u32,
    },
    /// Simple majority over the weights fixed in the proposal.
    Weighted,
    /// Every voter in the set approves.
    Unanimous,
    /// Response thresholds: a voter answers only when the proposal's stimulus reaches its
    /// threshold for the category; `rule` counts those who answered, and at least
    /// `min_responders` must answer.
    AdaptiveThreshold {
        /// Counting rule over responders (`simple_majority` or `qualified`).
        rule: Box<Protocol>,
        /// Fewest responders for a decision.
        min_responders: u32,
    },
}

/// `dev.murmur.proposal.opened`: a question put to a set of voters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalOpened {
    /// The question, for people.
    pub question: String,
    /// What is being decided (free-form, read by voter policies).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Counting rule.
    pub protocol: Protocol,
    /// Voters (public keys) and their weights (1 unless weighted).
    pub voters: BTreeMap<String, u32>,
    /// Fewest votes (by count, abstentions included) for a decision.
    pub quorum: u32,
    /// Votes stored after this (by the stream's clock) never count.
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// Category, for response thresholds.
    #[serde(default)]
    pub category: String,
    /// Urgency/value in 0..=1, compared with voters' thresholds.
    #[serde(default)]
    pub stimulus: f64,
}

impl Payload for ProposalOpened {
    const TYPE: &'static str = "dev.murmur.proposal.opened";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "opened";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a question put to a set of voters";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
}

/// `dev.murmur.proposal.vote_cast`: a vote; the voter is the event's verified emitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VoteCast {
    /// The answer.
    pub choice: Choice,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

impl Payload for VoteCast {
    const TYPE: &'static str = "dev.murmur.proposal.vote_cast";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "vote_cast";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a vote, tied to the voter's verified identity";
    const EMITTED_BY: &'static [Role] = &[Role::Voter, Role::Submitter];
}

/// `dev.murmur.proposal.decided`: the outcome and the tally that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalDecided {
    /// `approved`, `rejected`, `no_quorum` (too few votes by the deadline, or too few voters
    /// left to reach the quorum) or `expired` (the deadline passed with no vote at all).
    pub outcome: String,
    /// Approve weight counted.
    pub approve: u64,
    /// Reject weight counted.
    pub reject: u64,
    /// Abstentions counted.
    pub abstain: u64,
    /// Votes counted (by count).
    pub votes: u32,
    /// The voters whose votes were counted. The adaptive protocol's thresholds move with
    /// them, so a fold that does not read every vote (a voter agent's) adapts the same way.
    /// Absent in decisions from talliers before it existed: folds then use the votes they
    /// read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<std::collections::BTreeSet<String>>,
}

impl Payload for ProposalDecided {
    const TYPE: &'static str = "dev.murmur.proposal.decided";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "decided";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a proposal's outcome with its tally";
    const EMITTED_BY: &'static [Role] = &[Role::Tallier];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.proposal.withdrawn`: the proposer took the question back before a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalWithdrawn {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

impl Payload for ProposalWithdrawn {
    const TYPE: &'static str = "dev.murmur.proposal.withdrawn";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "withdrawn";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the proposer withdrew a proposal";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
}

/// `dev.murmur.proposal.deadline_passed`: written by a tallier once its clock passed the
/// deadline; its *stored* time (the server's) is what closes the proposal, so the decision
/// stays a function of the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalDeadlinePassed {}

impl Payload for ProposalDeadlinePassed {
    const TYPE: &'static str = "dev.murmur.proposal.deadline_passed";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "deadline_passed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a tallier saw a proposal's deadline pass";
    const EMITTED_BY: &'static [Role] = &[Role::Tallier];
    const ROLE_CHECKED: bool = true;
}

/// What an access grant allows in a knowledge space.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// May publish changes to the space's documents.
    Writer,
    /// May publish snapshots and answer sync requests for the space (a memory agent).
    Replica,
}

/// `dev.murmur.space.opened`: a knowledge space was created; its emitter is the owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceOpened {
    /// For people.
    #[serde(default)]
    pub title: String,
    /// How many Automerge documents the space is split into (fixed for its life: a fact's
    /// document is derived from its id).
    pub shards: u16,
    /// Largest accepted fact (its JSON), in bytes.
    pub max_fact_bytes: u32,
}

impl Payload for SpaceOpened {
    const TYPE: &'static str = "dev.murmur.space.opened";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "opened";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a knowledge space was created; the emitter owns it";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.access_granted`: the owner let an agent write (or replicate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceAccessGranted {
    /// The agent's public key.
    pub agent: String,
    /// What it may do.
    pub role: AccessRole,
}

impl Payload for SpaceAccessGranted {
    const TYPE: &'static str = "dev.murmur.space.access_granted";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "access_granted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the space owner granted an agent a role";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.access_revoked`: the owner took a role back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceAccessRevoked {
    /// The agent's public key.
    pub agent: String,
    /// The role taken back.
    pub role: AccessRole,
}

impl Payload for SpaceAccessRevoked {
    const TYPE: &'static str = "dev.murmur.space.access_revoked";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "access_revoked";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the space owner revoked an agent's role";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.space.snapshotted`: a compacted document was stored in the Object Store;
/// changes up to `stream_sequence` may be purged from the document's change subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpaceSnapshotted {
    /// The document (its aggregate token).
    pub document: String,
    /// Object name in the knowledge object store.
    pub object: String,
    /// Hex change hashes of the document's heads in the snapshot.
    pub heads: Vec<String>,
    /// The last history sequence the snapshot covers.
    pub stream_sequence: u64,
    /// Size of the saved document in bytes.
    pub size: u64,
    /// Hex SHA-256 of the saved document.
    pub sha256: String,
}

impl Payload for SpaceSnapshotted {
    const TYPE: &'static str = "dev.murmur.space.snapshotted";
    const DOMAIN: Domain = Domain::Space;
    const VERB: &'static str = "snapshotted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a compacted knowledge document was saved";
    const EMITTED_BY: &'static [Role] = &[Role::Memory, Role::Submitter];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.knowledge.changed`: one Automerge change to one knowledge document. The event
/// id is derived from the change hash (server dedupe); the change's actor must be its
/// emitter's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KnowledgeChanged {
    /// The space the document belongs to.
    pub space: String,
    /// The Automerge change bytes, base64.
    pub change: String,
}

impl Payload for KnowledgeChanged {
    const TYPE: &'static str = "dev.murmur.knowledge.changed";
    const DOMAIN: Domain = Domain::Knowledge;
    const VERB: &'static str = "changed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an Automerge change to a knowledge document";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Memory];
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Memory];
}

/// `dev.murmur.task.submitted`: a task entered the system. The submitter is the event's
/// verified emitter. (`labels`, `max_attempts`, `lease_ms`, `depends_on` and
/// `on_dependency_failure` were added as optional members with defaults: an additive change,
/// so the schema version stayed 1.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskSubmitted {
    /// Capability an agent needs to run it, e.g. `compiler.rust`.
    pub capability: String,
    /// Task input.
    pub input: serde_json::Value,
    /// Priority, higher first.
    #[serde(default)]
    pub priority: u8,
    /// Labels the agent must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Attempts before the task is dead-lettered (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Lease per attempt in milliseconds (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Ids of tasks (same realm) that must complete first; the task then receives their
    /// outputs. Set by task-graph submission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// When a dependency fails: `cancel` (default) or `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<String>,
    /// Who sent the prompt this task answers, as the agent-protocol gateway that submitted
    /// it established from the prompt's `Agent-Sender` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<crate::agent_sender::PromptSender>,
}

/// `dev.murmur.task.assigned`: a coordinator leased an attempt to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskAssigned {
    /// The agent's public key.
    pub agent: String,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Lease length in milliseconds, counted from the event's stored time.
    pub lease_ms: u64,
    /// What the attempt runs on, carried so the worker need not read the submission back;
    /// absent when it is large (the worker then reads it from the log) and in events from
    /// coordinators before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<AssignedWork>,
}

/// The work a `task.assigned` event carries: what the coordinator's fold of the task holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssignedWork {
    /// The handler's input: the submitted input, or for a task with dependencies
    /// `{"input": ..., "parents": {id: output, ...}}`.
    pub input: serde_json::Value,
    /// The task's submitter (whose cancellation counts).
    pub submitter: String,
    /// The capability the task asked for, so an agent offering several runs the right
    /// one; empty in events from coordinators before it was carried.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capability: String,
}

impl Payload for TaskAssigned {
    const TYPE: &'static str = "dev.murmur.task.assigned";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "assigned";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a coordinator leased an attempt to an agent";
    const EMITTED_BY: &'static [Role] = &[Role::Coordinator];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.task.started`: the assigned agent began an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskStarted {
    /// Attempt number.
    pub attempt: u32,
}

impl Payload for TaskStarted {
    const TYPE: &'static str = "dev.murmur.task.started";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "started";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the assigned agent began an attempt";
    const EMITTED_BY: &'static [Role] = Role::TASK_RUNNERS;
}

/// `dev.murmur.task.progress`: how far a running attempt has come, on core NATS only (like
/// heartbeats, never persisted: the log keeps the lifecycle, watchers see the progress).
/// Readers count it only from the agent the task is assigned to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskProgress {
    /// Attempt number.
    pub attempt: u32,
    /// Units done so far (tokens generated, tests run …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Units in all, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What the attempt is doing, or its partial output (an inference agent's text so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Payload for TaskProgress {
    const TYPE: &'static str = "dev.murmur.task.progress";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "progress";
    const PLANE: Plane = Plane::Live;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "how far a running attempt has come, core NATS only (never persisted)";
    const EMITTED_BY: &'static [Role] = Role::TASK_RUNNERS;
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Submitter, Role::Auditor, Role::Observer];
}

/// `dev.murmur.task.lease_expired`: an attempt's lease ran out without a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskLeaseExpired {
    /// Attempt number.
    pub attempt: u32,
    /// The agent that held it.
    pub agent: String,
}

impl Payload for TaskLeaseExpired {
    const TYPE: &'static str = "dev.murmur.task.lease_expired";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "lease_expired";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an attempt's lease ran out without a result";
    const EMITTED_BY: &'static [Role] = &[Role::Coordinator];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.task.cancelled`: the task was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCancelled {
    /// Why.
    pub reason: String,
}

impl Payload for TaskCancelled {
    const TYPE: &'static str = "dev.murmur.task.cancelled";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "cancelled";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the task was cancelled";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Coordinator];
}

/// `dev.murmur.task.dead_lettered`: the task ran out of attempts; every reason is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskDeadLettered {
    /// The reason of each failed attempt, in order.
    pub reasons: Vec<String>,
}

impl Payload for TaskDeadLettered {
    const TYPE: &'static str = "dev.murmur.task.dead_lettered";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "dead_lettered";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the task ran out of attempts; all reasons kept";
    const EMITTED_BY: &'static [Role] = &[Role::Coordinator];
    const ROLE_CHECKED: bool = true;
}

impl Payload for TaskSubmitted {
    const TYPE: &'static str = "dev.murmur.task.submitted";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "submitted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a task entered the system";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Planner];
}

/// `dev.murmur.task.completed`: a worker finished a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCompleted {
    /// Task output.
    pub output: serde_json::Value,
    /// Attempt number that produced it (1-based).
    pub attempt: u32,
}

impl Payload for TaskCompleted {
    const TYPE: &'static str = "dev.murmur.task.completed";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "completed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a worker finished a task";
    const EMITTED_BY: &'static [Role] = Role::TASK_RUNNERS;
}

/// `dev.murmur.task.failed`: an attempt at a task failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskFailed {
    /// What went wrong, as the tool reported it.
    pub reason: String,
    /// Attempt number (1-based).
    pub attempt: u32,
}

impl Payload for TaskFailed {
    const TYPE: &'static str = "dev.murmur.task.failed";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "failed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an attempt at a task failed";
    const EMITTED_BY: &'static [Role] = Role::TASK_RUNNERS;
}

/// `dev.murmur.role.claimed`: an identity claims ownership of the realm. The first claim in
/// the log wins (written with an expected-last-sequence of nothing on the realm's claims);
/// the owner signs role grants and revocations, and holds the operator role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RealmClaimed {
    /// Who claims it, for people reading the log.
    pub name: String,
}

impl Payload for RealmClaimed {
    const TYPE: &'static str = "dev.murmur.role.claimed";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "claimed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "an identity claims the realm (the first claim wins): it owns the roles";
    const EMITTED_BY: &'static [Role] = &[];
    const OWN_AGGREGATE: bool = true;
}

/// `dev.murmur.role.granted`: the realm's owner (or an operator) grants a participant key a
/// role, from this event's position in the log until revoked or `expires_at`. The
/// aggregate is the participant's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleGranted {
    /// The role granted.
    pub role: Role,
    /// A name for the participant (the credentials' name).
    pub name: String,
    /// When the grant ends, if it does (its credentials expire then too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Payload for RoleGranted {
    const TYPE: &'static str = "dev.murmur.role.granted";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "granted";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the realm's owner or an operator granted a key a role";
    const EMITTED_BY: &'static [Role] = &[];
}

/// `dev.murmur.role.revoked`: the realm's owner (or an operator) revokes a participant's
/// role (every role it holds when `role` is `None`) from this event's position on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleRevoked {
    /// The role revoked; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Why, for people reading the log.
    pub reason: String,
}

impl Payload for RoleRevoked {
    const TYPE: &'static str = "dev.murmur.role.revoked";
    const DOMAIN: Domain = Domain::Role;
    const VERB: &'static str = "revoked";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the realm's owner or an operator revoked a key's role";
    const EMITTED_BY: &'static [Role] = &[];
}

/// Why a message was dead-lettered. The token doubles as the subject's domain-local
/// aggregate-free part: dead letters are filed under `murmur.v1.{realm}.dlq.sys.{reason}.dead_lettered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Body is not valid JSON / not a CloudEvent structure.
    Malformed,
    /// A required CloudEvent attribute is missing or empty.
    MissingAttribute,
    /// `specversion` is not `1.0`.
    WrongSpecVersion,
    /// The `type` is not in the catalog.
    UnknownType,
    /// The payload does not match its schema.
    SchemaViolation,
    /// The NATS subject is invalid or does not match the event.
    BadSubject,
    /// The message exceeds murmur's event size limit.
    Oversized,
    /// The signature is missing or does not verify against `source`.
    BadSignature,
    /// A handler refused the event (e.g. not allowed for this sender).
    Refused,
    /// A decision from an identity that did not hold the role it needs at its position in
    /// the log.
    Unauthorized,
}

impl DeadLetterReason {
    /// All reasons.
    pub const ALL: [DeadLetterReason; 10] = [
        DeadLetterReason::Malformed,
        DeadLetterReason::MissingAttribute,
        DeadLetterReason::WrongSpecVersion,
        DeadLetterReason::UnknownType,
        DeadLetterReason::SchemaViolation,
        DeadLetterReason::BadSubject,
        DeadLetterReason::Oversized,
        DeadLetterReason::BadSignature,
        DeadLetterReason::Refused,
        DeadLetterReason::Unauthorized,
    ];

    /// The subject token for this reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::MissingAttribute => "missing_attribute",
            DeadLetterReason::WrongSpecVersion => "wrong_specversion",
            DeadLetterReason::UnknownType => "unknown_type",
            DeadLetterReason::SchemaViolation => "schema_violation",
            DeadLetterReason::BadSubject => "bad_subject",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::BadSignature => "bad_signature",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `dev.murmur.sys.dead_lettered`: a message could not be accepted. Keeps the original
/// bytes (or, when over the size limit, its size, SHA-256 and a prefix) so an operator can
/// inspect and redrive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLettered {
    /// Machine-readable reason.
    pub reason: DeadLetterReason,
    /// Human-readable detail (the typed error's message).
    pub detail: String,
    /// NATS subject the message arrived on.
    pub original_subject: String,
    /// Its headers, in order.
    pub original_headers: Vec<(String, String)>,
    /// Its body size in bytes.
    pub original_size: usize,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// The whole body, base64, when it is within the size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The first bytes of the body, base64, when the whole body was too large to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_base64: Option<String>,
    /// Stream sequence of the original, when it came from a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// Which component dead-lettered it.
    pub detected_by: String,
}

impl Payload for DeadLettered {
    const TYPE: &'static str = "dev.murmur.sys.dead_lettered";
    const DOMAIN: Domain = Domain::Sys;
    const VERB: &'static str = "dead_lettered";
    const PLANE: Plane = Plane::Dlq;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "a message could not be accepted; keeps the reason and original bytes";
    const EMITTED_BY: &'static [Role] = &[Role::Auditor, Role::Memory];
}

/// `dev.murmur.sys.redriven`: an operator re-published a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Redriven {
    /// Stream sequence of the dead letter in the dead-letter stream.
    pub dead_letter_sequence: u64,
    /// Subject the original was re-published to.
    pub subject: String,
}

impl Payload for Redriven {
    const TYPE: &'static str = "dev.murmur.sys.redriven";
    const DOMAIN: Domain = Domain::Sys;
    const VERB: &'static str = "redriven";
    const PLANE: Plane = Plane::Dlq;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an operator re-published a dead letter";
    const EMITTED_BY: &'static [Role] = &[];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_changes_are_significant_only_past_thresholds() {
        let idle = AgentLoadChanged::default();
        let busy = AgentLoadChanged {
            queue_depth: 1,
            ..Default::default()
        };
        assert!(idle.significant_change(&busy), "empty → busy");
        assert!(!busy.significant_change(&AgentLoadChanged {
            queue_depth: 5,
            ..busy.clone()
        }));
        assert!(busy.significant_change(&AgentLoadChanged {
            queue_depth: 9,
            ..busy.clone()
        }));
        assert!(!idle.significant_change(&AgentLoadChanged {
            load: 0.2,
            ..idle.clone()
        }));
        assert!(idle.significant_change(&AgentLoadChanged {
            load: 0.3,
            ..idle.clone()
        }));
        assert!(idle.significant_change(&AgentLoadChanged {
            lame_duck: true,
            ..idle.clone()
        }));
    }
    use crate::payload::{decode, encode, json_schema, schema_version};

    #[test]
    fn current_version_round_trips() {
        let joined = AgentJoined {
            name: "c1".into(),
            kind: "compiler".into(),
            capabilities: vec!["compiler.rust".into()],
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            agent_version: "0.1.0".into(),
            hardware: Hardware {
                cores: 2,
                memory_mib: 1024,
                accelerators: vec![],
                vram_mib: 0,
                cpu_features: vec![],
            },
            slots: 4,
            handles: Some(vec![TaskAssigned::TYPE.into(), TaskCancelled::TYPE.into()]),
        };
        let bytes = encode(&joined).expect("encode");
        assert!(bytes.starts_with(b"{\"v\":2,\"name\""));
        assert_eq!(schema_version(AgentJoined::TYPE, &bytes).expect("v"), 2);
        assert_eq!(decode::<AgentJoined>(&bytes).expect("decode"), joined);
    }

    #[test]
    fn v1_agent_joined_upgrades_to_v2() {
        let v1 = br#"{"v":1,"name":"old","kind":"executor","capabilities":["executor.test"]}"#;
        let joined = decode::<AgentJoined>(v1).expect("v1 decodes");
        assert_eq!(joined.name, "old");
        assert_eq!(joined.agent_version, "unknown");
        assert_eq!(joined.hardware, Hardware::default());
        assert_eq!(joined.slots, 1);
        // Version not first, as another language might write it.
        let v1b = br#"{"name":"old","capabilities":[],"kind":"x","v":1}"#;
        assert_eq!(decode::<AgentJoined>(v1b).expect("decodes").kind, "x");
    }

    #[test]
    fn a_v2_agent_joined_written_before_slots_and_handles_runs_one_task_at_once() {
        let v2 = br#"{"v":2,"name":"w","kind":"tool","capabilities":["tool.fs"],"agent_version":"0.1.0","hardware":{"cores":8,"memory_mib":1024}}"#;
        let joined = decode::<AgentJoined>(v2).expect("decodes");
        assert_eq!(joined.slots, 1);
        assert_eq!(joined.handles, None);
        assert!(
            joined.takes_tasks(),
            "undeclared types: as before, it takes tasks"
        );
        let declared = |types: &[&str]| AgentJoined {
            handles: Some(types.iter().map(|t| t.to_string()).collect()),
            ..joined.clone()
        };
        assert!(declared(&[TaskAssigned::TYPE]).takes_tasks());
        assert!(!declared(&[ProposalOpened::TYPE]).takes_tasks());
        assert!(!declared(&[]).takes_tasks());
    }

    #[test]
    fn unknown_and_missing_versions_are_typed_errors() {
        assert!(matches!(
            decode::<AgentJoined>(br#"{"v":3,"name":"x"}"#),
            Err(PayloadError::UnsupportedVersion { found: 3, .. })
        ));
        assert!(matches!(
            decode::<AgentLeft>(br#"{"reason":"x"}"#),
            Err(PayloadError::MissingVersion { .. })
        ));
        assert!(matches!(
            decode::<AgentLeft>(br#"{"v":1,"reason":5}"#),
            Err(PayloadError::Schema { .. })
        ));
        assert!(matches!(
            decode::<AgentLeft>(b"not json"),
            Err(PayloadError::Schema { .. })
        ));
    }

    #[test]
    fn schemas_require_the_version() {
        let schema = json_schema::<AgentJoined>();
        assert_eq!(schema["properties"]["v"]["const"], 2);
        assert_eq!(schema["required"][0], "v");
        assert_eq!(schema["$id"], "urn:murmur:schema:dev.murmur.agent.joined:2");
    }
}
