//! Tasks: submitted, assigned, started, progress, completed, failed, lease expired, cancelled, dead-lettered.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::roles::Role;
use crate::subject::{Domain, Plane};

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

    fn recipient(&self) -> Option<&str> {
        Some(&self.agent)
    }
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

/// `dev.murmur.task.question_asked`: the agent running an attempt asks the task's submitter
/// something it needs to go on (the Synadia Agent Protocol's mid-stream `query`). Counted
/// only from the agent holding the attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskQuestionAsked {
    /// Attempt number.
    pub attempt: u32,
    /// The question's id, unique within the task.
    pub question: String,
    /// What is asked.
    pub prompt: String,
}

impl Payload for TaskQuestionAsked {
    const TYPE: &'static str = "dev.murmur.task.question_asked";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "question_asked";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the running attempt asks the task's submitter a question";
    const EMITTED_BY: &'static [Role] = Role::TASK_RUNNERS;
    const SUBSCRIBED_BY: &'static [Role] = &[Role::Submitter, Role::Orchestrator];
}

/// `dev.murmur.task.question_answered`: the task's submitter answers a question of the
/// running attempt. Counted only from the submitter, once per question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskQuestionAnswered {
    /// The question's id.
    pub question: String,
    /// The answer.
    pub answer: String,
}

impl Payload for TaskQuestionAnswered {
    const TYPE: &'static str = "dev.murmur.task.question_answered";
    const DOMAIN: Domain = Domain::Task;
    const VERB: &'static str = "question_answered";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the task's submitter answers the running attempt's question";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Orchestrator];
    const SUBSCRIBED_BY: &'static [Role] = Role::TASK_RUNNERS;
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
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Planner, Role::Orchestrator];
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
