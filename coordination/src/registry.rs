//! The agent registry: a pure fold over agent events.

use std::collections::{BTreeMap, BTreeSet};

use murmur_subjects::events::{
    AgentJoined, AgentLeft, AgentLoadChanged, AgentOffline, AgentResumed, Hardware,
};
use murmur_subjects::projection::{Projection, Refusal};
use murmur_subjects::{Domain, Payload, Plane, SubjectFilter, Token, VerifiedEvent};
use serde::{Deserialize, Serialize};

/// Where an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Joined and not known to be gone.
    Online,
    /// Heartbeats stopped without a `left` event.
    Offline,
    /// Left on purpose.
    Left,
}

/// One agent as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// Announced name.
    pub name: String,
    /// Kind (planner, compiler, ...).
    pub kind: String,
    /// Capabilities.
    pub capabilities: BTreeSet<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Software version.
    pub agent_version: String,
    /// Hardware offered.
    pub hardware: Hardware,
    /// Tasks it runs at once (from its manifest).
    #[serde(default = "one_slot")]
    pub slots: u32,
    /// The event types its manifest declares it handles; `None`: not declared.
    #[serde(default)]
    pub handles: Option<Vec<String>>,
    /// Status.
    pub status: AgentStatus,
    /// Stream sequence of the last event about it.
    pub last_sequence: u64,
    /// How many times it joined.
    pub joins: u32,
    /// Load from its last `agent.load_changed` (0.0 ..= 1.0 per core).
    #[serde(default)]
    pub load: f32,
    /// Queue depth from its last `agent.load_changed`.
    #[serde(default)]
    pub queue_depth: u32,
    /// Whether it announced lame duck (refuses new work).
    #[serde(default)]
    pub lame_duck: bool,
}

fn one_slot() -> u32 {
    1
}

impl AgentEntry {
    /// Whether it runs tasks: its manifest declares `dev.murmur.task.assigned`, or declares
    /// no event types at all (an agent older than `handles`).
    pub fn takes_tasks(&self) -> bool {
        murmur_subjects::events::takes_tasks(self.handles.as_deref())
    }
}

/// The registry state: agents by public key (sorted, so output is deterministic).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Agents by public key.
    pub agents: BTreeMap<String, AgentEntry>,
}

impl Registry {
    /// Online agents offering `capability`, sorted by id.
    pub fn online_with<'a>(
        &'a self,
        capability: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a AgentEntry)> + 'a {
        self.agents.iter().filter(move |(_, a)| {
            a.status == AgentStatus::Online && a.capabilities.contains(capability)
        })
    }

    /// Number of agents in `status`.
    pub fn count(&self, status: AgentStatus) -> usize {
        self.agents.values().filter(|a| a.status == status).count()
    }
}

/// The registry projection for one realm.
#[derive(Debug, Clone)]
pub struct RegistryProjection {
    /// Realm it reads.
    pub realm: Token,
}

/// Liveness verdicts count only from an identity holding the monitor role then: anyone
/// else could take agents out of routing.
fn monitor(event: &VerifiedEvent) -> Result<(), Refusal> {
    if event.roles.contains(murmur_subjects::roles::Role::Monitor) {
        Ok(())
    } else {
        Err(Refusal(format!(
            "{} did not hold the monitor role at {}",
            event.emitter(),
            event.stream_sequence.unwrap_or(0)
        )))
    }
}

impl Projection for RegistryProjection {
    type State = Registry;

    fn name(&self) -> &str {
        "registry"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt)
            .realm(self.realm.clone())
            .domain(Domain::Agent)
    }

    fn apply(&self, state: &mut Registry, event: &VerifiedEvent) -> Result<(), Refusal> {
        let id = event.subject.aggregate().as_str();
        let seq = event.stream_sequence.unwrap_or(0);
        let bad = |e: murmur_subjects::payload::PayloadError| Refusal(e.to_string());
        match event.record.ty.as_str() {
            AgentJoined::TYPE => {
                // Only an agent can announce itself: the aggregate is its verified key.
                if id != event.emitter() {
                    return Err(Refusal(format!(
                        "{} tried to announce agent {id}",
                        event.emitter()
                    )));
                }
                let p: AgentJoined = event.payload().map_err(bad)?;
                let joins = state.agents.get(id).map_or(0, |a| a.joins) + 1;
                state.agents.insert(
                    id.to_string(),
                    AgentEntry {
                        name: p.name,
                        kind: p.kind,
                        capabilities: p.capabilities.into_iter().collect(),
                        labels: p.labels,
                        agent_version: p.agent_version,
                        hardware: p.hardware,
                        slots: p.slots.max(1),
                        handles: p.handles,
                        status: AgentStatus::Online,
                        last_sequence: seq,
                        joins,
                        load: 0.0,
                        queue_depth: 0,
                        lame_duck: false,
                    },
                );
            }
            AgentLeft::TYPE => {
                if id != event.emitter() {
                    return Err(Refusal(format!(
                        "{} tried to make agent {id} leave",
                        event.emitter()
                    )));
                }
                let _: AgentLeft = event.payload().map_err(bad)?;
                let agent = state
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| Refusal(format!("unknown agent {id}")))?;
                agent.status = AgentStatus::Left;
                agent.last_sequence = seq;
            }
            AgentOffline::TYPE => {
                monitor(event)?;
                let _: AgentOffline = event.payload().map_err(bad)?;
                let agent = state
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| Refusal(format!("unknown agent {id}")))?;
                // A late offline verdict never overrides a deliberate leave.
                if agent.status == AgentStatus::Online {
                    agent.status = AgentStatus::Offline;
                }
                agent.last_sequence = seq;
            }
            AgentLoadChanged::TYPE => {
                if id != event.emitter() {
                    return Err(Refusal(format!(
                        "{} tried to report load for agent {id}",
                        event.emitter()
                    )));
                }
                let p: AgentLoadChanged = event.payload().map_err(bad)?;
                let agent = state
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| Refusal(format!("unknown agent {id}")))?;
                agent.load = p.load;
                agent.queue_depth = p.queue_depth;
                agent.lame_duck = p.lame_duck;
                agent.last_sequence = seq;
            }
            AgentResumed::TYPE => {
                monitor(event)?;
                let _: AgentResumed = event.payload().map_err(bad)?;
                let agent = state
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| Refusal(format!("unknown agent {id}")))?;
                if agent.status == AgentStatus::Offline {
                    agent.status = AgentStatus::Online;
                }
                agent.last_sequence = seq;
            }
            _ => {}
        }
        Ok(())
    }
}
