//! A deliberately small projection of agents and tasks, with no lifecycle rules, that the
//! event-log suites fold to compare live and replayed state over arbitrary event mixes. (The
//! real registry and task lifecycle live in `coordination/`.)

use std::collections::BTreeMap;

use murmur_subjects::events::{AgentJoined, AgentLeft, TaskCompleted, TaskFailed, TaskSubmitted};
use murmur_subjects::{Payload, Plane, Projection, Refusal, SubjectFilter, Token, VerifiedEvent};
use serde::{Deserialize, Serialize};

/// One agent as the overview sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Announced name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Whether it has joined and not left.
    pub online: bool,
}

/// One task as the overview sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// `submitted`, `failed` or `completed`.
    pub state: String,
    /// Required capability.
    pub capability: String,
    /// Failed attempts.
    pub failures: u32,
    /// Public key of the agent that completed it.
    pub completed_by: Option<String>,
    /// Stream sequence of the task's last event (for optimistic concurrency).
    pub last_sequence: u64,
}

/// The overview's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// Agents by public key.
    pub agents: BTreeMap<String, AgentView>,
    /// Tasks by id.
    pub tasks: BTreeMap<String, TaskView>,
    /// Events folded.
    pub events: u64,
}

impl Overview {
    /// Tasks in `state`.
    pub fn count(&self, state: &str) -> usize {
        self.tasks.values().filter(|t| t.state == state).count()
    }
}

/// The projection.
#[derive(Debug, Clone)]
pub struct OverviewProjection {
    /// Realm it reads.
    pub realm: Token,
}

impl Projection for OverviewProjection {
    type State = Overview;

    fn name(&self) -> &str {
        "overview"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.realm.clone())
    }

    fn apply(&self, state: &mut Overview, event: &VerifiedEvent) -> Result<(), Refusal> {
        let refuse = |e: murmur_subjects::payload::PayloadError| Refusal(e.to_string());
        let id = event.subject.aggregate().as_str().to_string();
        let seq = event.stream_sequence.unwrap_or(0);
        match event.record.ty.as_str() {
            AgentJoined::TYPE => {
                let p: AgentJoined = event.payload().map_err(refuse)?;
                if id != event.emitter() {
                    return Err(Refusal("an agent can only announce itself".into()));
                }
                state.agents.insert(
                    id,
                    AgentView {
                        name: p.name,
                        kind: p.kind,
                        online: true,
                    },
                );
            }
            AgentLeft::TYPE => {
                if id != event.emitter() {
                    return Err(Refusal("an agent can only leave as itself".into()));
                }
                let _: AgentLeft = event.payload().map_err(refuse)?;
                if let Some(a) = state.agents.get_mut(&id) {
                    a.online = false;
                }
            }
            TaskSubmitted::TYPE => {
                let p: TaskSubmitted = event.payload().map_err(refuse)?;
                state.tasks.insert(
                    id,
                    TaskView {
                        state: "submitted".into(),
                        capability: p.capability,
                        failures: 0,
                        completed_by: None,
                        last_sequence: seq,
                    },
                );
            }
            TaskFailed::TYPE => {
                let _: TaskFailed = event.payload().map_err(refuse)?;
                let t = state
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| Refusal("unknown task".into()))?;
                t.failures += 1;
                t.state = "failed".into();
                t.last_sequence = seq;
            }
            TaskCompleted::TYPE => {
                let _: TaskCompleted = event.payload().map_err(refuse)?;
                let t = state
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| Refusal("unknown task".into()))?;
                if t.state == "completed" {
                    return Err(Refusal("task already completed".into()));
                }
                t.state = "completed".into();
                t.completed_by = Some(event.emitter().to_string());
                t.last_sequence = seq;
            }
            _ => {}
        }
        state.events += 1;
        Ok(())
    }
}
