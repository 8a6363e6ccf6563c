//! The one way to write an agent: register what it does on [`EventHandlers`], join with
//! `handles: Some(handlers.types())`, and [`run_handlers`] until shutdown.
//!
//! What an agent can register:
//! - one typed handler per payload type ([`EventHandlers::on`]): events of that type stored
//!   after it joined, each decoded into the handler's own payload type together with the
//!   event's verified [`EventContext`];
//! - the tasks leased to it ([`EventHandlers::tasks`]): the worker, which follows its own
//!   `task.assigned` and the realm's `task.cancelled`, writes `started` and the result with
//!   expected sequences and drains on shutdown (tool, inference, pipeline, MCP and bridge
//!   agents are this with their own task handler);
//! - a vote on each proposal it is asked ([`EventHandlers::votes`]): the voter, which folds
//!   `proposal.opened`, `decided` and `withdrawn` from the start of the log;
//! - the knowledge spaces ([`EventHandlers::knowledge`]): the memory agent's replica of every
//!   space, serving queries and sync.
//!
//! [`EventHandlers::types`] is the union of what is registered, so the manifest's `handles`
//! (what the coordinator routes by) is exactly what the agent runs; [`run_handlers`] refuses
//! to run a registration whose types the agent did not declare.
//!
//! The events come from the log through a [`Projector`] (an ordered consumer that the server
//! filters to the declared types), so a handler sees them in log order, once each while it
//! runs, and a message that does not decode or verify never reaches it: the projector skips
//! it with a warning and the log auditor dead-letters it.
//!
//! ```no_run
//! # async fn example(agent: murmur_agents::Agent) -> Result<(), murmur_agents::AgentError> {
//! use murmur_agents::handlers::{EventHandlers, run_handlers};
//! use murmur_subjects::events::ProposalOpened;
//!
//! let handlers = EventHandlers::new().on(|p: ProposalOpened, ctx| async move {
//!     println!("{} asks {:?}", ctx.emitter, p.question);
//!     Ok(())
//! });
//! // The agent joined with `handles: Some(handlers.types())` in its manifest.
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! let stats = run_handlers(&agent, &handlers, stop).await?;
//! println!("handled {}, failed {}", stats.handled, stats.failed);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use murmur_subjects::payload::PayloadError;
use murmur_subjects::projection::SMALL_STREAM_SUBJECTS;
use murmur_subjects::{
    Draft, EventType, Payload, Projection, Projector, Refusal, SubjectFilter, Token, VerifiedEvent,
};
use serde::{Deserialize, Serialize};

use crate::memory::{MemoryOptions, MemoryStats};
use crate::runtime::{Agent, AgentError};
use crate::voter::Voter;

/// What a handler knows about its event besides the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventContext {
    /// The event's id.
    pub id: String,
    /// Its CloudEvent type.
    pub ty: String,
    /// The subject it was stored on.
    pub subject: String,
    /// Its aggregate (the subject's id token).
    pub aggregate: String,
    /// Who signed it: the verified emitter's public key.
    pub emitter: String,
    /// Its workflow's correlation id.
    pub correlation_id: Option<String>,
    /// The event that caused it.
    pub causation_id: Option<String>,
    /// Its stream sequence.
    pub sequence: u64,
    /// When the stream stored it (the log's clock).
    pub stored_at: Option<DateTime<Utc>>,
}

impl EventContext {
    fn of(event: &VerifiedEvent) -> Self {
        Self {
            id: event.record.id.clone(),
            ty: event.record.ty.clone(),
            subject: event.subject.to_string(),
            aggregate: event.subject.aggregate().to_string(),
            emitter: event.emitter().to_string(),
            correlation_id: event.record.correlation_id.clone(),
            causation_id: event.record.causation_id.clone(),
            sequence: event.stream_sequence.unwrap_or(0),
            stored_at: event.stored_at,
        }
    }

    /// `draft` as part of this event's flow: its correlation id, caused by this event.
    pub fn continue_flow(&self, draft: Draft) -> Draft {
        let correlation = self
            .correlation_id
            .clone()
            .unwrap_or_else(|| self.id.clone());
        draft.caused_by_ids(correlation, self.id.clone(), None)
    }
}

/// What a handler returns: `Err` with why it could not handle the event.
pub type HandlerResult = Result<(), String>;

type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// Decodes the payload into the handler's type and starts the handler.
type Dispatch =
    Arc<dyn Fn(&[u8], EventContext) -> Result<HandlerFuture, PayloadError> + Send + Sync>;

/// What one agent does: typed handlers, one per event type, and the built-in behaviours
/// (tasks, votes, knowledge) it takes on.
#[derive(Clone, Default)]
pub struct EventHandlers {
    by_type: BTreeMap<&'static str, (EventType, Dispatch)>,
    tasks: Option<(crate::worker::Handler, Duration)>,
    voter: Option<Arc<dyn Voter>>,
    knowledge: Option<MemoryOptions>,
}

impl std::fmt::Debug for EventHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandlers")
            .field("types", &self.types())
            .field("tasks", &self.tasks.is_some())
            .field("votes", &self.voter.is_some())
            .field("knowledge", &self.knowledge)
            .finish()
    }
}

impl EventHandlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles events of `P`'s type with `handler`, which gets the payload as a `P`. A second
    /// handler for the same type replaces the first.
    pub fn on<P, F, Fut>(mut self, handler: F) -> Self
    where
        P: Payload,
        F: Fn(P, EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let dispatch: Dispatch = Arc::new(move |data, context| {
            let payload = murmur_subjects::payload::decode::<P>(data)?;
            Ok(Box::pin(handler(payload, context)) as HandlerFuture)
        });
        self.by_type
            .insert(P::TYPE, (EventType::of::<P>(), dispatch));
        self
    }

    /// Runs the tasks leased to the agent through `handler` (see [`crate::worker`]); on
    /// shutdown the attempts already running get `drain_grace` to finish and report.
    /// Handles `task.assigned` and `task.cancelled`.
    pub fn tasks(mut self, handler: crate::worker::Handler, drain_grace: Duration) -> Self {
        self.tasks = Some((handler, drain_grace));
        self
    }

    /// Votes with `voter` on every open proposal whose electorate holds the agent (see
    /// [`crate::voter`]). Handles `proposal.opened`, `decided` and `withdrawn`.
    pub fn votes(mut self, voter: Arc<dyn Voter>) -> Self {
        self.voter = Some(voter);
        self
    }

    /// Replicates every knowledge space and serves queries and sync (see
    /// [`crate::memory`]). Handles the space and knowledge events.
    pub fn knowledge(mut self, options: MemoryOptions) -> Self {
        self.knowledge = Some(options);
        self
    }

    /// Whether nothing is registered: such an agent joins, heartbeats and leaves, and is
    /// never routed a task.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
            && self.tasks.is_none()
            && self.voter.is_none()
            && self.knowledge.is_none()
    }

    /// The event types handled, sorted: what the agent's manifest declares (`handles`).
    pub fn types(&self) -> Vec<String> {
        let mut types: BTreeSet<String> = self.by_type.keys().map(|t| t.to_string()).collect();
        if self.tasks.is_some() {
            types.extend(crate::worker::handled_types());
        }
        if self.voter.is_some() {
            types.extend(crate::voter::handled_types());
        }
        if self.knowledge.is_some() {
            types.extend(crate::memory::handled_types());
        }
        types.into_iter().collect()
    }
}

/// One event waiting for its handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// The event.
    pub context: EventContext,
    /// Its payload, as stored.
    pub data: Vec<u8>,
}

/// Events read since the handlers last took them, in log order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbox(pub Vec<Received>);

/// The projection feeding [`run_handlers`]: the declared types in one realm, collected.
#[derive(Debug, Clone)]
struct HandlerInbox {
    filters: Vec<SubjectFilter>,
    types: BTreeSet<&'static str>,
}

impl Projection for HandlerInbox {
    type State = Inbox;

    fn name(&self) -> &str {
        "handlers"
    }

    fn filter(&self) -> SubjectFilter {
        // Never used alone: `filters` names every declared type.
        self.filters
            .first()
            .cloned()
            .unwrap_or_else(SubjectFilter::any)
    }

    fn filters(&self) -> Vec<SubjectFilter> {
        self.filters.clone()
    }

    fn apply(&self, inbox: &mut Inbox, event: &VerifiedEvent) -> Result<(), Refusal> {
        if self.types.contains(event.record.ty.as_str()) {
            inbox.0.push(Received {
                context: EventContext::of(event),
                data: event.record.data.as_deref().unwrap_or_default().to_vec(),
            });
        }
        Ok(())
    }
}

/// What [`run_handlers`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerStats {
    /// Events a typed handler handled (`Ok`).
    pub handled: u64,
    /// Events a typed handler failed on (`Err`, logged at warn level with the reason).
    pub failed: u64,
    /// Attempts the worker completed and reported.
    pub tasks_completed: u64,
    /// Votes the voter cast.
    pub votes_cast: u64,
    /// What the knowledge replica did.
    pub knowledge: MemoryStats,
}

/// Runs what `handlers` registers for `agent` until `shutdown`, all at once: every event of a
/// typed handler's type stored in the agent's realm after it joined goes to its handler, one
/// at a time in log order (a handler running when `shutdown` resolves finishes first); the
/// worker, the voter and the knowledge replica run as their modules describe, and the worker
/// drains. Refused with [`AgentError::UndeclaredHandler`] when a registered type is not in
/// the manifest the agent joined with: the types an agent handles are the ones it declared.
/// An error of one part ends them all.
pub async fn run_handlers(
    agent: &Agent,
    handlers: &EventHandlers,
    shutdown: impl Future<Output = ()>,
) -> Result<HandlerStats, AgentError> {
    let declared = agent.handles().unwrap_or_default();
    if let Some(ty) = handlers
        .types()
        .into_iter()
        .find(|t| !declared.iter().any(|d| d == t))
    {
        return Err(AgentError::UndeclaredHandler(ty));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            // An error means the sender is gone, which is a stop too.
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let driver = async move {
        shutdown.await;
        let _ = stop.send(true);
        Ok::<_, AgentError>(())
    };
    let typed = run_typed(agent, handlers, until_stopped());
    let tasks = async {
        match &handlers.tasks {
            Some((handler, grace)) => {
                crate::worker::run_worker(agent, handler.clone(), until_stopped(), *grace).await
            }
            None => Ok(0),
        }
    };
    let votes = async {
        match &handlers.voter {
            Some(voter) => crate::voter::run_voter(agent, voter.as_ref(), until_stopped()).await,
            None => Ok(0),
        }
    };
    let knowledge = async {
        match &handlers.knowledge {
            Some(options) => {
                crate::memory::run_memory(agent, options.clone(), until_stopped()).await
            }
            None => Ok(MemoryStats::default()),
        }
    };
    let ((), typed, tasks_completed, votes_cast, knowledge) =
        tokio::try_join!(driver, typed, tasks, votes, knowledge)?;
    Ok(HandlerStats {
        tasks_completed,
        votes_cast,
        knowledge,
        ..typed
    })
}

/// The typed handlers' part of [`run_handlers`].
async fn run_typed(
    agent: &Agent,
    handlers: &EventHandlers,
    shutdown: impl Future<Output = ()>,
) -> Result<HandlerStats, AgentError> {
    let log = agent.log().clone();
    let realm: Token = log.realm().clone();
    let inbox = HandlerInbox {
        filters: handlers
            .by_type
            .values()
            .map(|(ty, _)| ty.filter(Some(&realm)))
            .collect(),
        types: handlers.by_type.keys().copied().collect(),
    };
    let mut stats = HandlerStats::default();
    if inbox.types.is_empty() {
        shutdown.await;
        return Ok(stats);
    }
    // Handled events come one at a time and each waits on what the handler writes (a
    // vote): the grants come on the consumer while the stream is small, not by a fence.
    let mut feed = Projector::new(log, inbox)
        .starting_after(agent.joined_sequence())
        .grants_on_the_consumer_below(SMALL_STREAM_SUBJECTS);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            polled = feed.poll(Duration::from_millis(100)) => {
                if let Err(e) = polled {
                    e.wait_out_if_transient("handled events", Duration::from_millis(250)).await?;
                    continue;
                }
            }
        }
        for received in feed.take_state().0 {
            let Some((_, dispatch)) = handlers.by_type.get(received.context.ty.as_str()) else {
                continue;
            };
            let (id, ty) = (received.context.id.clone(), received.context.ty.clone());
            // The codec checked the payload against the catalog's schema for this type, so a
            // payload that does not decode here means the handler's type and the catalog's
            // disagree: a failure of this handler, reported like any other.
            let outcome = match dispatch(&received.data, received.context) {
                Ok(handling) => handling.await,
                Err(e) => Err(format!("payload does not decode: {e}")),
            };
            match outcome {
                Ok(()) => stats.handled += 1,
                Err(reason) => {
                    stats.failed += 1;
                    tracing::warn!(event = %id, ty = %ty, %reason, "handler failed");
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_subjects::events::{ProposalOpened, TaskSubmitted};

    #[test]
    fn the_manifest_declares_exactly_what_is_registered() {
        assert!(EventHandlers::new().is_empty());
        assert!(EventHandlers::new().types().is_empty());
        let worker = EventHandlers::new().tasks(
            crate::worker::handler(|ctx| async move { Ok(ctx.input) }),
            Duration::from_secs(1),
        );
        assert_eq!(
            worker.types(),
            ["dev.murmur.task.assigned", "dev.murmur.task.cancelled"]
        );
        let voter = EventHandlers::new().votes(Arc::new(crate::voter::PolicyVoter {
            default: None,
            rules: vec![],
        }));
        assert_eq!(
            voter.types(),
            [
                "dev.murmur.proposal.decided",
                "dev.murmur.proposal.opened",
                "dev.murmur.proposal.withdrawn"
            ]
        );
        let memory = EventHandlers::new().knowledge(MemoryOptions::default());
        assert!(
            memory
                .types()
                .iter()
                .all(|t| t.starts_with("dev.murmur.space.")
                    || t.starts_with("dev.murmur.knowledge."))
        );
        assert_eq!(memory.types().len(), 6);
        // Registrations add up, each type once, sorted.
        let both = voter
            .clone()
            .on(|_: ProposalOpened, _| async { Ok(()) })
            .on(|_: TaskSubmitted, _| async { Ok(()) });
        assert_eq!(
            both.types(),
            [
                "dev.murmur.proposal.decided",
                "dev.murmur.proposal.opened",
                "dev.murmur.proposal.withdrawn",
                "dev.murmur.task.submitted"
            ]
        );
        assert!(!both.is_empty());
    }
}
