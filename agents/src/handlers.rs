//! Typed event handlers. An agent registers one handler per payload type
//! ([`EventHandlers::on`]); those types are what its manifest declares it handles
//! ([`EventHandlers::types`] → `agent.joined`'s `handles`), and [`run_handlers`] feeds it only
//! events of those types, stored after it joined, each decoded into the handler's own payload
//! type together with the event's verified [`EventContext`].
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
use murmur_subjects::projection::{Projection, Refusal};
use murmur_subjects::{Draft, EventType, Payload, Projector, SubjectFilter, Token, VerifiedEvent};
use serde::{Deserialize, Serialize};

use crate::runtime::{Agent, AgentError};

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

/// The handlers of one agent, one per event type.
#[derive(Clone, Default)]
pub struct EventHandlers {
    by_type: BTreeMap<&'static str, (EventType, Dispatch)>,
}

impl std::fmt::Debug for EventHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHandlers")
            .field("types", &self.by_type.keys().collect::<Vec<_>>())
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

    /// The event types handled, sorted: what the agent's manifest declares (`handles`).
    pub fn types(&self) -> Vec<String> {
        self.by_type.keys().map(|t| t.to_string()).collect()
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
    /// Events a handler handled (`Ok`).
    pub handled: u64,
    /// Events a handler failed on (`Err`, logged at warn level with the reason).
    pub failed: u64,
}

/// Runs `handlers` for `agent` until `shutdown`: every event of a handled type stored in the
/// agent's realm after it joined goes to its handler, one at a time in log order (a handler
/// running when `shutdown` resolves finishes first). Refused with
/// [`AgentError::UndeclaredHandler`] when a handler's type is not in the manifest the agent
/// joined with: the types an agent handles are the ones it declared.
pub async fn run_handlers(
    agent: &Agent,
    handlers: &EventHandlers,
    shutdown: impl Future<Output = ()>,
) -> Result<HandlerStats, AgentError> {
    let declared = agent.handles().unwrap_or_default();
    if let Some(ty) = handlers
        .by_type
        .keys()
        .find(|t| !declared.iter().any(|d| d == *t))
    {
        return Err(AgentError::UndeclaredHandler(ty.to_string()));
    }
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
    let mut feed = Projector::new(log, inbox).starting_after(agent.joined_sequence());
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
