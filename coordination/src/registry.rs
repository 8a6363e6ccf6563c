//! The agent registry: a pure fold over agent events.

use std::collections::{BTreeMap, BTreeSet};

use murmur_subjects::events::{
    AgentJoined, AgentLeft, AgentLoadChanged, AgentOffline, AgentResumed, Hardware,
};
use murmur_subjects::{
    Domain, EventLog, LogError, Payload, Plane, Projection, Projector, Refusal, SubjectFilter,
    Token, VerifiedEvent,
};
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

/// An agent event, decoded once from its stored form.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// `agent.joined`: the agent announces itself.
    Joined(AgentJoined),
    /// `agent.left`: it leaves on purpose.
    Left(AgentLeft),
    /// `agent.offline` (a monitor's verdict).
    Offline(AgentOffline),
    /// `agent.resumed` (a monitor's verdict).
    Resumed(AgentResumed),
    /// `agent.load_changed`: the agent reports its load.
    LoadChanged(AgentLoadChanged),
}

impl AgentEvent {
    /// Decodes `event` by its type; `UnknownType` for a type the registry does not fold
    /// (heartbeats travel on the live plane and are never stored).
    pub fn decode(event: &VerifiedEvent) -> Result<Self, RegistryRefusal> {
        let bad =
            |e: murmur_subjects::payload::PayloadError| RegistryRefusal::Payload(e.to_string());
        Ok(match event.record.ty.as_str() {
            AgentJoined::TYPE => Self::Joined(event.payload().map_err(bad)?),
            AgentLeft::TYPE => Self::Left(event.payload().map_err(bad)?),
            AgentOffline::TYPE => Self::Offline(event.payload().map_err(bad)?),
            AgentResumed::TYPE => Self::Resumed(event.payload().map_err(bad)?),
            AgentLoadChanged::TYPE => Self::LoadChanged(event.payload().map_err(bad)?),
            other => return Err(RegistryRefusal::UnknownType(other.to_string())),
        })
    }
}

/// Why the registry fold refused an event; the registry is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryRefusal {
    /// The payload does not decode as its type.
    #[error("{0}")]
    Payload(String),
    /// A type the registry does not fold.
    #[error("{0} is not a stored agent event")]
    UnknownType(String),
    /// An agent event about another agent than its signer: only an agent speaks for itself.
    #[error("{emitter} tried to {action} agent {agent}")]
    NotSelf {
        /// Who signed it.
        emitter: String,
        /// The agent it is about.
        agent: String,
        /// What it tried.
        action: &'static str,
    },
    /// An event about an agent that never joined.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// A liveness verdict from a key without the monitor role at that position.
    #[error("{emitter} did not hold the monitor role at {sequence}")]
    NotMonitor {
        /// Who wrote it.
        emitter: String,
        /// Where.
        sequence: u64,
    },
}

impl From<RegistryRefusal> for Refusal {
    fn from(r: RegistryRefusal) -> Self {
        Refusal(r.to_string())
    }
}

/// Liveness verdicts count only from an identity holding the monitor role then: anyone
/// else could take agents out of routing.
fn monitor(event: &VerifiedEvent) -> Result<(), RegistryRefusal> {
    if event.roles.contains(murmur_subjects::roles::Role::Monitor) {
        Ok(())
    } else {
        Err(RegistryRefusal::NotMonitor {
            emitter: event.emitter().to_string(),
            sequence: event.stream_sequence.unwrap_or(0),
        })
    }
}

/// The entry of agent `id`, which must have joined.
fn known<'a>(state: &'a mut Registry, id: &str) -> Result<&'a mut AgentEntry, RegistryRefusal> {
    state
        .agents
        .get_mut(id)
        .ok_or_else(|| RegistryRefusal::UnknownAgent(id.to_string()))
}

/// Only the agent itself may say `action` about agent `id`.
fn itself(event: &VerifiedEvent, id: &str, action: &'static str) -> Result<(), RegistryRefusal> {
    if id == event.emitter() {
        Ok(())
    } else {
        Err(RegistryRefusal::NotSelf {
            emitter: event.emitter().to_string(),
            agent: id.to_string(),
            action,
        })
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
        apply_agent_event(state, event).map_err(Refusal::from)
    }
}

/// The registry as the log holds it at each question, for a process that asks more than
/// once (an orchestrator before each step, `murmur chat` before each line): the first
/// question replays the realm's agent events, later ones read only what was stored since.
#[derive(Debug)]
pub struct LiveRegistry {
    projector: tokio::sync::Mutex<Projector<RegistryProjection>>,
}

impl LiveRegistry {
    /// The registry of `log`'s realm; nothing is read until the first question.
    pub fn new(log: EventLog) -> Self {
        let realm = log.realm().clone();
        Self {
            projector: tokio::sync::Mutex::new(Projector::new(log, RegistryProjection { realm })),
        }
    }

    /// Reads what the log stored since the last question, then answers `question` from the
    /// registry as of now.
    pub async fn now<T>(&self, question: impl FnOnce(&Registry) -> T) -> Result<T, LogError> {
        let mut projector = self.projector.lock().await;
        projector.catch_up().await?;
        Ok(question(projector.state()))
    }

    /// Whether an online agent offers `capability` now.
    pub async fn offers(&self, capability: &str) -> Result<bool, LogError> {
        self.now(|registry| registry.online_with(capability).next().is_some())
            .await
    }

    /// Events read over all questions so far: the first question reads the realm's agent
    /// events, each later one only those stored since the one before.
    pub async fn events_read(&self) -> u64 {
        let projector = self.projector.lock().await;
        let stats = projector.stats();
        stats.applied + stats.refused + stats.invalid
    }
}

/// The registry fold: one stored agent event applied to `state`, or a typed refusal that
/// leaves it unchanged.
pub fn apply_agent_event(
    state: &mut Registry,
    event: &VerifiedEvent,
) -> Result<(), RegistryRefusal> {
    let id = event.subject.aggregate().as_str();
    let seq = event.stream_sequence.unwrap_or(0);
    match AgentEvent::decode(event)? {
        AgentEvent::Joined(p) => {
            // Only an agent can announce itself: the aggregate is its verified key.
            itself(event, id, "announce")?;
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
        AgentEvent::Left(_) => {
            itself(event, id, "make leave")?;
            let agent = known(state, id)?;
            agent.status = AgentStatus::Left;
            agent.last_sequence = seq;
        }
        AgentEvent::Offline(_) => {
            monitor(event)?;
            let agent = known(state, id)?;
            // A late offline verdict never overrides a deliberate leave.
            if agent.status == AgentStatus::Online {
                agent.status = AgentStatus::Offline;
            }
            agent.last_sequence = seq;
        }
        AgentEvent::LoadChanged(p) => {
            itself(event, id, "report load for")?;
            let agent = known(state, id)?;
            agent.load = p.load;
            agent.queue_depth = p.queue_depth;
            agent.lame_duck = p.lame_duck;
            agent.last_sequence = seq;
        }
        AgentEvent::Resumed(_) => {
            monitor(event)?;
            let agent = known(state, id)?;
            if agent.status == AgentStatus::Offline {
                agent.status = AgentStatus::Online;
            }
            agent.last_sequence = seq;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use murmur_subjects::Identity;
    use murmur_subjects::roles::Role;

    use super::*;
    use crate::test_log::Log;

    fn joined() -> AgentJoined {
        AgentJoined {
            name: "w".into(),
            kind: "worker".into(),
            capabilities: vec!["echo".into()],
            labels: BTreeMap::new(),
            agent_version: "0".into(),
            hardware: Hardware::default(),
            slots: 1,
            handles: None,
        }
    }

    #[test]
    fn refusals_are_typed_and_leave_the_registry_as_it_was() {
        let (agent, stranger, monitor) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let key = agent.public_key().to_string();
        let mut log = Log::new();
        log.grant(&monitor, Role::Monitor);
        let mut registry = Registry::default();
        let refusal = |registry: &mut Registry, event: &VerifiedEvent| {
            let before = registry.clone();
            let refused = apply_agent_event(registry, event).expect_err("refused");
            assert_eq!(*registry, before, "{refused}: the registry did not change");
            refused
        };
        let offline = AgentOffline {
            last_seen: "x".into(),
            interval_ms: 1_000,
            missed_intervals: 3,
        };
        assert_eq!(
            refusal(&mut registry, &log.event(&monitor, &key, &offline, 0)),
            RegistryRefusal::UnknownAgent(key.clone())
        );
        assert_eq!(
            refusal(&mut registry, &log.event(&stranger, &key, &joined(), 1)),
            RegistryRefusal::NotSelf {
                emitter: stranger.public_key().into(),
                agent: key.clone(),
                action: "announce"
            }
        );
        apply_agent_event(&mut registry, &log.event(&agent, &key, &joined(), 2)).expect("joined");
        assert!(matches!(
            refusal(&mut registry, &log.event(&stranger, &key, &offline, 3)),
            RegistryRefusal::NotMonitor { sequence: 4, .. }
        ));
        let load = AgentLoadChanged {
            load: 0.5,
            ..Default::default()
        };
        assert!(matches!(
            refusal(&mut registry, &log.event(&stranger, &key, &load, 4)),
            RegistryRefusal::NotSelf {
                action: "report load for",
                ..
            }
        ));
        let left = AgentLeft {
            reason: "done".into(),
        };
        assert!(matches!(
            refusal(&mut registry, &log.event(&stranger, &key, &left, 5)),
            RegistryRefusal::NotSelf {
                action: "make leave",
                ..
            }
        ));
        // What the monitor and the agent itself may say counts.
        apply_agent_event(&mut registry, &log.event(&monitor, &key, &offline, 6)).expect("offline");
        assert_eq!(registry.agents[&key].status, AgentStatus::Offline);
        apply_agent_event(&mut registry, &log.event(&agent, &key, &left, 7)).expect("left");
        assert_eq!(registry.agents[&key].status, AgentStatus::Left);
    }
}
