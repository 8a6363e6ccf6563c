//! Projections: state derived from the log by a pure fold.
//!
//! A [`Projection`] is `apply(&mut state, &event)` plus the subject filter it reads. A
//! [`Projector`] feeds it — from a start point for replay (pull consumer, no acks) or live
//! (ordered consumer) — with the same `apply`, tracks its position (the last stream sequence
//! applied), and can checkpoint state + position in a KV bucket and resume from there.

use std::fmt::Debug;
use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use crate::codec::{DECODED_TOGETHER, IngestError, VerifiedEvent};
use crate::grants::RoleBook;
use crate::log::{EventLog, LogError};
pub use crate::read::{
    StartAt, StoredMessage, read_aggregate, read_roles, read_stream, read_stream_any,
};
use crate::read::{consumer_filters, fold_role_event, leader_last_matching};
use crate::subject::{Domain, Plane, Subject, SubjectFilter};
pub use murmur_protocol::{Projection, Refusal};

/// Counters a projector keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionStats {
    /// Events applied.
    pub applied: u64,
    /// Events the fold refused.
    pub refused: u64,
    /// Stored messages that failed decoding or verification (the log auditor dead-letters
    /// them; projections skip them and count them here).
    pub invalid: u64,
    /// Times the live consumer looked stalled and was recreated.
    #[serde(default)]
    pub consumers_recreated: u64,
    /// Messages delivered again at or below the position already folded (a consumer
    /// recreated behind its predecessor), skipped: each sequence is folded once.
    #[serde(default)]
    pub redelivered: u64,
    /// Times the projector moved its connection to another server because the log had
    /// been unavailable on its own for a while.
    #[serde(default)]
    pub servers_left: u64,
    /// Deliveries passed over undecoded because their `Murmur-Recipient` header names
    /// another participant than the projection's [`Projection::recipient`].
    #[serde(default)]
    pub addressed_elsewhere: u64,
    /// Times the live feed fenced the realm's grants (its consumer leaves them out): one
    /// request for the realm's last grant per batch of deliveries.
    #[serde(default)]
    pub grant_fences: u64,
    /// Fences that found a grant newer than those known and read the new ones from the
    /// stream.
    #[serde(default)]
    pub grant_scans: u64,
    /// Times the live consumer was remade without the grants' filter because the stream
    /// came to hold the subjects of [`Projector::grants_on_the_consumer_below`]: the grants
    /// are fenced from then on.
    #[serde(default)]
    pub grants_moved_to_fence: u64,
    /// Times the realm's grants were read with a filtered read of the role subjects
    /// because the grants book was behind the position: at a catch-up, or when a live
    /// consumer that leaves them out was made.
    #[serde(default)]
    pub grant_reads: u64,
}

/// Why a delivery is passed over undecoded ([`Projector::passes_over`]).
enum PassOver {
    /// A live filter wider than the projection's delivered it.
    BeyondFilters,
    /// Addressed to another participant; its subject is observed.
    AddressedElsewhere(Subject),
}

#[derive(Serialize, Deserialize)]
struct Checkpoint<S> {
    position: u64,
    state: S,
    #[serde(default)]
    roles: RoleBook,
}

/// Feeds a projection from the log.
///
/// Every projector also folds its realm's grants ([`RoleBook`]) and passes each event
/// through [`RoleBook::admit`] before the projection sees it: a decision from an identity
/// without the role its type needs at its position is refused whatever the projection.
/// When the projection's own filters do not cover the `role.*` events, catching up reads
/// them first with a filter of their own. Live, on a single-replica stream, the consumer
/// keeps the projection's filters only and the grants are fenced: before events past the
/// book's position are folded, the stream is asked for the grants after it (a direct get,
/// answered by the one server that stores the stream). On a replicated stream, where a
/// replica that is behind could answer "none", the consumer adds the grants' filter
/// instead, as it does for a projection that asks for it while the stream is small
/// ([`Projector::grants_on_the_consumer_below`]).
pub struct Projector<P: Projection> {
    log: EventLog,
    projection: P,
    /// The projection's filters, and whether they cover the role events.
    filters: Vec<SubjectFilter>,
    roles_inline: bool,
    /// The projection's [`Projection::live_filter`]: what the live consumer reads instead.
    live_filter: Option<SubjectFilter>,
    /// Whether the live consumer leaves the grants out and [`Projector::fence_roles`]
    /// reads them (decided when the consumer is made).
    roles_fenced: bool,
    /// Below how many subjects in the stream the live consumer reads the grants.
    grants_on_the_consumer_below: u64,
    /// With fenced grants: through which sequence the grants are known (folded, or waiting
    /// in `grants_ahead`).
    roles_known: u64,
    /// Grants read by the fence and not yet folded: each is folded just before the first
    /// event stored after it.
    grants_ahead: std::collections::VecDeque<StoredMessage>,
    state: P::State,
    position: u64,
    roles: RoleBook,
    stats: ProjectionStats,
    live: Option<LiveFeed>,
    /// Since when the live consumer could not be made, if it cannot.
    unavailable_since: Option<tokio::time::Instant>,
    /// When the projector last moved its connection to another server.
    left_at: Option<tokio::time::Instant>,
}

/// What the ordered consumer yields (`None`: it ended).
type Delivery = Option<<consumer::pull::Ordered as futures::Stream>::Item>;

/// The ordered consumer a projector follows, with what the stall watchdog needs.
struct LiveFeed {
    messages: consumer::pull::Ordered,
    /// Deliveries taken from the consumer and not yet folded: with fenced grants, those the
    /// client already held are taken together so that one fence covers them all.
    held: std::collections::VecDeque<Delivery>,
    /// Deliveries decoded ahead of their turn, by stream sequence: those the client held
    /// together, decoded together so that their signatures are checked in one batch.
    decoded_ahead: std::collections::HashMap<u64, Result<VerifiedEvent, IngestError>>,
    /// The stream, for the grants fence.
    stream: jetstream::stream::Stream<()>,
    /// With the grants' filter on the consumer only because the stream holds few
    /// subjects: the stream sequence from which it may hold
    /// [`Projector::grants_on_the_consumer_below`] (each stored message adds one subject at
    /// most), and the projector asks again.
    count_subjects_at: Option<u64>,
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    /// Last delivery, or creation.
    quiet_since: tokio::time::Instant,
    /// Last time the watchdog asked the server.
    checked_at: tokio::time::Instant,
}

/// After this long without a delivery, the projector asks the server whether its consumer
/// still exists and has nothing pending. An ordered consumer can stall silently when the
/// node serving it is lost (seen on a 3-node cluster with a client failing over); the
/// projector then recreates it from its own position, so nothing is skipped or read twice.
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Longest a live consumer's creation may take before the poll gives up and the next one
/// tries again.
const LIVE_SETUP: Duration = Duration::from_secs(3);

/// Most deliveries one grants fence covers.
const FENCE_BATCH: usize = 512;

/// The stream size to give [`Projector::grants_on_the_consumer_below`]. nats-server's
/// filestore walks its subject index for a filtered consumer each time the consumer's next
/// match is past the block it reads: for one filter with a wildcard only below 65,536
/// subjects (`wcMaxSizeToCheck` in `server/filestore.go`), for several filters up to
/// 1,000,000. Below this count the grants' filter beside the projection's adds no walk the
/// projection's alone does not make.
pub const SMALL_STREAM_SUBJECTS: u64 = 64 * 1024;

/// `stream`'s info (`name` for the error), bounded like a live consumer's creation, for the
/// same reason: the request waits for a stream leader.
async fn stream_info(
    stream: &jetstream::stream::Stream<()>,
    name: &str,
) -> Result<jetstream::stream::Info, LogError> {
    tokio::time::timeout(LIVE_SETUP, stream.get_info())
        .await
        .map_err(|_| {
            LogError::Consumer(format!("no stream leader answered within {LIVE_SETUP:?}").into())
        })?
        .map_err(|e| LogError::Stream {
            stream: name.to_string(),
            source: e.into(),
        })
}

/// After this long without being able to follow the log on its server, a projector moves
/// its connection to another server: longer than most leader elections take.
const LEAVE_AFTER: Duration = Duration::from_secs(5);

impl<P: Projection> Debug for Projector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("projection", &self.projection.name())
            .field("position", &self.position)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// KV bucket holding projection checkpoints.
pub const CHECKPOINT_BUCKET: &str = crate::roles::CHECKPOINT_BUCKET;

impl<P: Projection> Projector<P> {
    /// A projector at the beginning of the log with default state.
    pub fn new(log: EventLog, projection: P) -> Self {
        let filters = projection.filters();
        let live_filter = projection.live_filter();
        let roles_inline = filters
            .iter()
            .any(|f| f.admits(Plane::Evt, Domain::Role, "granted"));
        Self {
            log,
            projection,
            filters,
            roles_inline,
            live_filter,
            roles_fenced: false,
            grants_on_the_consumer_below: 0,
            roles_known: 0,
            grants_ahead: Default::default(),
            state: P::State::default(),
            position: 0,
            roles: RoleBook::default(),
            stats: ProjectionStats::default(),
            live: None,
            unavailable_since: None,
            left_at: None,
        }
    }

    /// Has the live consumer read the realm's grants beside the projection's events, with
    /// no fence, while the stream holds fewer than `subjects` subjects (give it
    /// [`SMALL_STREAM_SUBJECTS`]); from there on the grants are fenced. By default (0) they
    /// are always fenced. Only the cost depends on it; the fold is the same either way.
    ///
    /// For a projection whose deliveries come one at a time and each wait on a fence's
    /// round trip before anything is decided: a voter, a tallier. Not for one that many
    /// participants follow over a busy domain: the server then matches every message
    /// against two filters for each of their consumers, which with 32 workers cost it up
    /// to twice the CPU per task.
    pub fn grants_on_the_consumer_below(mut self, subjects: u64) -> Self {
        self.grants_on_the_consumer_below = subjects;
        self
    }

    /// What the live consumer reads: the projection's filters, plus the role events when
    /// they do not cover them.
    fn read_filters(&self) -> Vec<SubjectFilter> {
        let mut filters = match &self.live_filter {
            Some(wide) => vec![wide.clone()],
            None => self.filters.clone(),
        };
        if !self.live_reads_roles() && !self.roles_fenced {
            filters.push(crate::grants::filter(self.log.realm()));
        }
        filters
    }

    /// Whether the live consumer's own filter delivers the role events.
    fn live_reads_roles(&self) -> bool {
        self.roles_inline
            || self
                .live_filter
                .as_ref()
                .is_some_and(|f| f.admits(Plane::Evt, Domain::Role, "granted"))
    }

    /// Reads the role events up to `until` when the book is behind (they are not in the
    /// projection's own read).
    async fn sync_roles(&mut self, until: u64) -> Result<(), LogError> {
        if self.roles_inline || self.roles.position() >= until {
            return Ok(());
        }
        self.stats.grant_reads += 1;
        read_roles(&self.log, &mut self.roles, Some(until)).await
    }

    /// The realm's grants as folded so far.
    pub fn roles(&self) -> &RoleBook {
        &self.roles
    }

    /// Whether the live consumer looks stalled, and why: quiet for [`STALL_CHECK`] while the
    /// server says it is gone or has messages pending.
    async fn live_stalled(&mut self) -> Option<String> {
        let feed = self.live.as_mut()?;
        if feed.quiet_since.elapsed() < STALL_CHECK || feed.checked_at.elapsed() < STALL_CHECK {
            return None;
        }
        feed.checked_at = tokio::time::Instant::now();
        let info = tokio::time::timeout(Duration::from_secs(2), feed.consumer.get_info()).await;
        let delivered = match info {
            Ok(Ok(info)) if info.num_pending == 0 => info.delivered.stream_sequence,
            Ok(Ok(info)) => {
                return Some(format!(
                    "{} pending, delivered up to {}, read up to {}",
                    info.num_pending, info.delivered.stream_sequence, self.position
                ));
            }
            Ok(Err(e)) => return Some(format!("consumer info: {e}")),
            Err(_) => return Some("consumer info took over 2 s".into()),
        };
        if feed.quiet_since.elapsed() < STALL_CHECK * 3 {
            return None;
        }
        // After a leader change the consumer can sit on a replica that fell behind and report
        // nothing pending. Ask the stream leader for the last message *matching this
        // filter*: one stored after what the consumer delivered means a fresh consumer will
        // find it. (Comparing with the stream's last sequence instead recreated the consumer
        // of every sparse projection — cancellations, proposals — every 3 × STALL_CHECK,
        // since other subjects always move the stream on.)
        let name = self.log.config().history_stream.clone();
        let filters = self.read_filters();
        let log = self.log.clone();
        let leader_last = tokio::time::timeout(Duration::from_secs(2), async move {
            let stream = log
                .jetstream()
                .get_stream_no_info(&name)
                .await
                .map_err(|e| e.to_string())?;
            leader_last_matching(&stream, &filters).await
        })
        .await;
        match leader_last {
            Ok(Ok(Some(last))) if last > delivered.max(self.position) => Some(format!(
                "nothing pending, but the stream leader holds {last} past {}",
                delivered.max(self.position)
            )),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("stream leader: {e}")),
            Err(_) => Some("the stream leader took over 2 s".into()),
        }
    }

    /// Forgets the state and replays the log from the beginning. For a long-running
    /// service whose writes keep conflicting although it reads nothing new: its view has
    /// diverged from the log (seen once after a stream leader change), and a replay is the
    /// truth.
    pub async fn rebuild(&mut self) -> Result<u64, LogError> {
        self.state = P::State::default();
        self.position = 0;
        self.roles = RoleBook::default();
        self.roles_known = 0;
        self.grants_ahead.clear();
        self.stats = ProjectionStats::default();
        self.live = None;
        self.catch_up().await
    }

    /// Reads only what is stored after `position` (with the default state): for a service
    /// that acts on new events rather than one that folds the whole history.
    pub fn starting_after(mut self, position: u64) -> Self {
        self.position = position;
        self
    }

    /// Current state.
    pub fn state(&self) -> &P::State {
        &self.state
    }

    /// Takes the state out, leaving the default in its place; the position stays. For a
    /// projection whose state is work collected for its owner (an inbox of events to
    /// handle) rather than a view.
    pub fn take_state(&mut self) -> P::State {
        std::mem::take(&mut self.state)
    }
    /// Last stream sequence applied (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }
    /// Counters.
    pub fn stats(&self) -> &ProjectionStats {
        &self.stats
    }
    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Whether the projection itself reads `subject` (the live consumer also delivers the
    /// role events it does not).
    fn projection_reads(&self, subject: &Subject) -> bool {
        if self.live_filter.is_some() {
            return self.filters.iter().any(|f| f.matches(subject));
        }
        self.roles_inline
            || subject.domain() != Domain::Role
            || self.filters.iter().any(|f| f.matches(subject))
    }

    /// Folds one stored message the caller read itself (its own consumer, an archive's
    /// lines) exactly as the projector's own reads do: decoded and verified, admitted by the
    /// realm's grants, applied. A sequence at or below the position was folded already; it
    /// is skipped and counted in [`ProjectionStats::redelivered`], so each sequence counts
    /// once however often it arrives.
    pub fn fold_stored(&mut self, stored: &StoredMessage) {
        let pass = self.passes_over(&stored.message);
        self.fold_checked(stored, pass, None);
    }

    /// [`Projector::fold_stored`] for messages read together, in order: those it decodes
    /// are decoded together ([`EventLog::decode_stored_many`]), so their signatures are
    /// checked in one batch.
    pub fn fold_stored_many(&mut self, stored: &[StoredMessage]) {
        let passes: Vec<Option<PassOver>> = stored
            .iter()
            .map(|s| self.passes_over(&s.message))
            .collect();
        // Sequences increase through a read: one at or below the position is a redelivery.
        let decodes: Vec<bool> = stored
            .iter()
            .zip(&passes)
            .map(|(s, pass)| pass.is_none() && s.sequence > self.position)
            .collect();
        let to_decode: Vec<&StoredMessage> = stored
            .iter()
            .zip(&decodes)
            .filter(|(_, decodes)| **decodes)
            .map(|(s, _)| s)
            .collect();
        let mut decoded = self.log.decode_stored_many(&to_decode).into_iter();
        for ((s, pass), decodes) in stored.iter().zip(passes).zip(decodes) {
            let event = if decodes { decoded.next() } else { None };
            self.fold_checked(s, pass, event);
        }
    }

    /// [`Projector::fold_stored`] once [`Projector::passes_over`] has judged the message,
    /// with the message's decoding when it was decoded ahead.
    fn fold_checked(
        &mut self,
        stored: &StoredMessage,
        pass: Option<PassOver>,
        decoded: Option<Result<VerifiedEvent, IngestError>>,
    ) {
        if stored.sequence <= self.position {
            self.stats.redelivered += 1;
            tracing::debug!(
                projection = self.projection.name(),
                sequence = stored.sequence,
                position = self.position,
                "already folded; skipped"
            );
            return;
        }
        match pass {
            Some(PassOver::BeyondFilters) => {
                self.position = stored.sequence;
                return;
            }
            Some(PassOver::AddressedElsewhere(subject)) => {
                self.projection
                    .observe(&mut self.state, &subject, stored.sequence);
                self.stats.addressed_elsewhere += 1;
                self.position = stored.sequence;
                return;
            }
            None => {}
        }
        let decoded = decoded.unwrap_or_else(|| {
            self.log
                .decode_stored(&stored.message, stored.sequence, Some(stored.stored_at))
        });
        match decoded {
            Ok(mut event) => {
                if event.subject.domain() == Domain::Role
                    && let Err(refusal) = self.roles.apply(&event)
                {
                    tracing::info!(projection = self.projection.name(), sequence = stored.sequence, %refusal, "role event refused");
                }
                if !self.projection_reads(&event.subject) {
                    return;
                }
                self.position = stored.sequence;
                self.projection
                    .observe(&mut self.state, &event.subject, stored.sequence);
                let verdict = self
                    .roles
                    .admit(&mut event)
                    .and_then(|()| self.projection.apply(&mut self.state, &event));
                match verdict {
                    Ok(()) => self.stats.applied += 1,
                    Err(refusal) => {
                        self.stats.refused += 1;
                        tracing::info!(projection = self.projection.name(), sequence = stored.sequence, %refusal, "event refused");
                    }
                }
            }
            Err(error) => {
                // Not an event, but stored on its subject all the same.
                if let Ok(subject) = Subject::parse(stored.message.subject.as_str()) {
                    if !self.projection_reads(&subject) {
                        return;
                    }
                    self.projection
                        .observe(&mut self.state, &subject, stored.sequence);
                }
                self.position = stored.sequence;
                self.note_invalid(stored.sequence, &error);
            }
        }
    }

    fn note_invalid(&mut self, sequence: u64, error: &IngestError) {
        self.stats.invalid += 1;
        // The auditor dead-letters the message with its reason (the record an operator reads
        // with `murmur dlq ls`); every projection skipping it again is not news.
        tracing::debug!(
            projection = self.projection.name(),
            sequence,
            reason = %error.reason(),
            %error,
            "skipping invalid stored message"
        );
    }

    /// [`Projector::catch_up`] at a service's start: a transient failure (a stream without
    /// quorum, a leader election) is logged as `{what} unavailable; retrying` and waited out
    /// for `pause`, as the service's own loop does later, instead of ending the service.
    /// `Ok(false)` when `shutdown` comes first.
    pub async fn catch_up_patiently<F: std::future::Future<Output = ()>>(
        &mut self,
        what: &str,
        pause: Duration,
        mut shutdown: std::pin::Pin<&mut F>,
    ) -> Result<bool, LogError> {
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(false),
                caught = self.catch_up() => match caught {
                    Ok(_) => return Ok(true),
                    Err(e) => e.wait_out_if_transient(what, pause).await?,
                },
            }
        }
    }

    /// Replays everything after the current position up to the stream's end as of now.
    pub async fn catch_up(&mut self) -> Result<u64, LogError> {
        self.catch_up_to(u64::MAX).await
    }

    /// Replays everything after the current position through stream sequence `last` (or the
    /// stream's end as of now, when that comes first): the state as of a chosen position,
    /// for a replay scrubber or an audit of what a decision saw.
    pub async fn catch_up_to(&mut self, last: u64) -> Result<u64, LogError> {
        let stream = self.log.config().history_stream.clone();
        let end = self.log.last_sequence(&stream).await?.min(last);
        if end <= self.position {
            return Ok(0);
        }
        self.sync_roles(end).await?;
        let js = self.log.jetstream().clone();
        let filters = self.filters.clone();
        let start = StartAt::Sequence(self.position + 1);
        // With several filters this is one linear pass over the stream (see
        // `read_stream_any`); the live consumer afterwards keeps the server's filters, since
        // near the stream's end the server walks the few new messages instead.
        let mut together = Vec::with_capacity(DECODED_TOGETHER);
        let read = read_stream_any(&js, &stream, &filters, start, Some(end), |stored| {
            together.push(stored);
            if together.len() == DECODED_TOGETHER {
                self.fold_stored_many(&together);
                together.clear();
            }
            ControlFlow::Continue(())
        })
        .await;
        // What was read is folded even when the read failed later: the position says so.
        self.fold_stored_many(&together);
        let read = read?;
        // Everything up to `end` matching the filters was read, whether or not the last
        // match was at `end`.
        self.position = self.position.max(end);
        Ok(read)
    }

    /// Makes the live consumer from the projector's position.
    async fn start_live(&mut self) -> Result<LiveFeed, LogError> {
        // Bounded like the consumer's creation below: both ask the stream leader.
        tokio::time::timeout(LIVE_SETUP, self.sync_roles(self.position))
            .await
            .map_err(|_| {
                LogError::Consumer(
                    format!("the realm's grants were not read within {LIVE_SETUP:?}").into(),
                )
            })??;
        let stream_name = self.log.config().history_stream.clone();
        // No stream info first: that request waits for a stream leader too, and each
        // request that cannot be answered costs the client's whole request timeout.
        let stream = self
            .log
            .jetstream()
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| LogError::Stream {
                stream: stream_name.clone(),
                source: e.into(),
            })?;
        let mut count_subjects_at = None;
        if !self.live_reads_roles() {
            // Whether grants can be fenced: only where one server stores the stream.
            let info = stream_info(&stream, &stream_name).await?;
            let fenceable = info.config.num_replicas <= 1 && info.config.allow_direct;
            count_subjects_at = self.next_subject_count(&info.state).filter(|_| fenceable);
            self.roles_fenced = fenceable && count_subjects_at.is_none();
            if self.roles_fenced {
                // The book holds every grant through the position: read before it, fenced,
                // or delivered with the events.
                self.roles_known = self.roles_known.max(self.position);
            } else {
                // The consumer delivers the grants after the position again.
                self.grants_ahead.clear();
                self.roles_known = 0;
            }
        }
        let (filter_subject, filter_subjects) = consumer_filters(&self.read_filters());
        let create = stream.create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            filter_subjects,
            deliver_policy: StartAt::Sequence(self.position + 1).deliver_policy(),
            ..Default::default()
        });
        // While the stream elects a leader the request goes unanswered: given up after
        // LIVE_SETUP and tried again on the next poll, so the feed resumes within
        // moments of the election instead of a 10 s request timeout later.
        let consumer = tokio::time::timeout(LIVE_SETUP, create)
            .await
            .map_err(|_| {
                LogError::Consumer(
                    format!("no stream leader answered within {LIVE_SETUP:?}").into(),
                )
            })?
            .map_err(|e| LogError::Consumer(e.into()))?;
        let messages = consumer
            .clone()
            .messages()
            .await
            .map_err(|e| LogError::Consumer(e.into()))?;
        let now = tokio::time::Instant::now();
        Ok(LiveFeed {
            messages,
            held: Default::default(),
            decoded_ahead: Default::default(),
            stream,
            count_subjects_at,
            consumer,
            quiet_since: now,
            checked_at: now,
        })
    }

    /// While `state`'s stream holds fewer than [`Projector::grants_on_the_consumer_below`]
    /// subjects: the sequence from which it may hold that many, when they are to be counted
    /// again. Not before a sixteenth of the threshold more has been stored, so that a stream
    /// staying just below it is not asked after every delivery.
    fn next_subject_count(&self, state: &jetstream::stream::State) -> Option<u64> {
        let limit = self.grants_on_the_consumer_below;
        (state.subjects_count < limit)
            .then(|| state.last_sequence + (limit - state.subjects_count).max(limit / 16))
    }

    /// Whether the live consumer, which reads the grants only because the stream held few
    /// subjects, is to be remade to fence them: asked of the stream once a delivery reaches
    /// the sequence from which it may hold [`Projector::grants_on_the_consumer_below`]
    /// subjects. Otherwise the sequence to ask again from moves on.
    async fn stream_outgrew_small(&mut self) -> Result<bool, LogError> {
        let Some(stream) = self.live.as_ref().map(|live| live.stream.clone()) else {
            return Ok(false);
        };
        let name = self.log.config().history_stream.clone();
        let info = stream_info(&stream, &name).await?;
        let next = self.next_subject_count(&info.state);
        if let Some(live) = self.live.as_mut() {
            live.count_subjects_at = next;
        }
        Ok(next.is_none())
    }

    /// Moves the connection to another server when this one has not let the projector
    /// follow the log for [`LEAVE_AFTER`]: a server cut off from the rest of its cluster
    /// still answers pings, so its clients would otherwise wait on it until the cut heals.
    /// At most once per three such spans.
    async fn leave_server_if_unavailable(&mut self) {
        let now = tokio::time::Instant::now();
        let since = *self.unavailable_since.get_or_insert(now);
        if now.duration_since(since) < LEAVE_AFTER
            || self
                .left_at
                .is_some_and(|at| now.duration_since(at) < LEAVE_AFTER * 3)
        {
            return;
        }
        self.left_at = Some(now);
        self.unavailable_since = Some(now);
        let client = self.log.client();
        let info = client.server_info();
        // The pool without this server, so the reconnect cannot land on it again (the
        // client chooses at random). The pool knows addresses, the server only its port:
        // where every server listens on the same port (one per host) they cannot be told
        // apart, and the reconnect is left to chance among them all.
        let pool: Vec<String> = client
            .server_pool()
            .await
            .map(|pool| {
                pool.iter()
                    .map(|server| server.addr.as_url_str().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if pool.len() < 2 {
            tracing::debug!("the log is unavailable and no other server is known: staying");
            return;
        }
        let others: Vec<String> = pool
            .iter()
            .filter(|url| !url.ends_with(&format!(":{}", info.port)))
            .cloned()
            .collect();
        self.stats.servers_left += 1;
        tracing::warn!(
            projection = self.projection.name(),
            server = %info.server_name,
            "the log has been unavailable on this server for {LEAVE_AFTER:?}: reconnecting to another one"
        );
        let moved = async {
            if !others.is_empty() {
                client.set_server_pool(others.as_slice()).await?;
            }
            client.force_reconnect().await?;
            Ok::<_, async_nats::Error>(())
        };
        if let Err(e) = moved.await {
            tracing::debug!(error = %e, "reconnecting failed; the client keeps trying");
        }
    }

    /// Applies whatever arrives live within `window` (at least one wait of `window` when
    /// nothing is pending), keeping one ordered consumer across calls. Returns how many
    /// events were read. The loop of a long-running service: `loop { p.poll(d).await?; ... }`.
    pub async fn poll(&mut self, window: Duration) -> Result<u64, LogError> {
        self.poll_until(window, |_| false).await
    }

    /// [`Projector::poll`], returning early as soon as `stop` holds after an event (a
    /// service that acts on a condition — a tallier on a decidable proposal — acts on the
    /// event that made it true instead of after the whole backlog).
    pub async fn poll_until(
        &mut self,
        window: Duration,
        mut stop: impl FnMut(&P::State) -> bool,
    ) -> Result<u64, LogError> {
        if self.live.is_none() {
            match self.start_live().await {
                Ok(feed) => {
                    self.live = Some(feed);
                    self.unavailable_since = None;
                }
                Err(e) => {
                    self.leave_server_if_unavailable().await;
                    return Err(e);
                }
            }
        }
        let until = tokio::time::Instant::now() + window;
        let mut read = 0;
        // Set once a message left the server with nothing pending behind it. The client may
        // still hold messages it fetched in the same batch (the server counts those as
        // delivered, so they too say "nothing pending"): read those without waiting, then
        // return. Returning after the first one made every poll of a busy log read one
        // event, and a worker's loop fell hundreds of milliseconds behind its assignments.
        let mut server_drained = false;
        while let Some(live) = self.live.as_mut() {
            let next = if let Some(held) = live.held.pop_front() {
                Ok(held)
            } else if server_drained {
                if tokio::time::Instant::now() >= until {
                    break;
                }
                match live.messages.next().now_or_never() {
                    Some(next) => Ok(next),
                    None => break,
                }
            } else {
                tokio::time::timeout_at(until, live.messages.next()).await
            };
            let next = match next {
                Err(_) => {
                    if read == 0
                        && let Some(why) = self.live_stalled().await
                    {
                        tracing::warn!(
                            projection = self.projection.name(),
                            position = self.position,
                            %why,
                            "live consumer stalled; recreating it"
                        );
                        self.live = None;
                        self.stats.consumers_recreated += 1;
                    }
                    break;
                }
                Ok(None) => {
                    self.live = None;
                    return Err(LogError::Consumer("ordered consumer ended".into()));
                }
                Ok(Some(Err(e))) => {
                    self.live = None;
                    return Err(LogError::Consumer(e.into()));
                }
                Ok(Some(Ok(m))) => {
                    live.quiet_since = tokio::time::Instant::now();
                    m
                }
            };
            let info = next.info().map_err(LogError::Consumer)?;
            let (sequence, stored_at, pending) =
                (info.stream_sequence, info.published, info.pending);
            if let Some(live) = self.live.as_mut()
                && live.count_subjects_at.is_some_and(|at| sequence >= at)
            {
                // Held while the stream is asked, as for a fence.
                live.held.push_front(Some(Ok(next)));
                if self.stream_outgrew_small().await? {
                    // The new consumer starts after the position: the deliveries in hand
                    // come again through it.
                    tracing::debug!(
                        projection = self.projection.name(),
                        position = self.position,
                        "the stream holds {} subjects or more: fencing the grants from here",
                        self.grants_on_the_consumer_below
                    );
                    self.live = None;
                    self.stats.grants_moved_to_fence += 1;
                    break;
                }
                // Counted again only further on: the held delivery is folded next.
                continue;
            }
            let pass = self.passes_over(&next);
            if self.roles_fenced && pass.is_none() {
                if self.grants_known_through() + 1 < sequence {
                    // Held while the fence is read: a poll may be dropped at any await (a
                    // service's `select!`), and a delivery taken from the consumer must not
                    // be dropped with it.
                    if let Some(live) = self.live.as_mut() {
                        live.held.push_front(Some(Ok(next)));
                    }
                    self.fence_roles(sequence).await?;
                    continue;
                }
                self.fold_grants_before(sequence);
            }
            let decoded = match pass {
                None => self.decode_ahead(&next, sequence, stored_at),
                Some(_) => None,
            };
            let stored = StoredMessage {
                sequence,
                stored_at,
                pending,
                message: next.split().0,
            };
            self.fold_checked(&stored, pass, decoded);
            if !self.roles_fenced {
                // The consumer delivers the grants in stream order with the rest: the book
                // holds every grant through this delivery. Noted, so that a consumer made
                // again from here (moving to the fence, after a stall) reads none of them.
                self.roles.advance(sequence);
            }
            read += 1;
            if stop(&self.state) {
                break;
            }
            server_drained |= pending == 0;
        }
        Ok(read)
    }

    /// The decoding of `next` (delivery `sequence`), decoded with the deliveries the client
    /// already holds behind it, which are taken from the consumer (up to
    /// [`DECODED_TOGETHER`]) and kept, decoded, for their turn. `None` when the client holds
    /// nothing to decode with it (or there is no live feed): it is decoded in its turn.
    fn decode_ahead(
        &mut self,
        next: &jetstream::Message,
        sequence: u64,
        stored_at: chrono::DateTime<chrono::Utc>,
    ) -> Option<Result<VerifiedEvent, IngestError>> {
        let live = self.live.as_mut()?;
        if let Some(decoded) = live.decoded_ahead.remove(&sequence) {
            return Some(decoded);
        }
        // Any left behind were passed over after all (a redelivery, a consumer made again).
        live.decoded_ahead.retain(|ahead, _| *ahead > sequence);
        while live.held.len() + 1 < DECODED_TOGETHER {
            match live.messages.next().now_or_never() {
                Some(delivery @ Some(Ok(_))) => live.held.push_back(delivery),
                // An error or the end: handled in order when its turn comes.
                Some(delivery) => {
                    live.held.push_back(delivery);
                    break;
                }
                None => break,
            }
        }
        let live = self.live.as_ref()?;
        let mut together = vec![(&next.message, sequence, stored_at)];
        for delivery in &live.held {
            if let Some(Ok(held)) = delivery
                && let Ok(info) = held.info()
                && !live.decoded_ahead.contains_key(&info.stream_sequence)
                && self.passes_over(&held.message).is_none()
            {
                together.push((&held.message, info.stream_sequence, info.published));
            }
        }
        if together.len() == 1 {
            // Alone: decoded in its turn, as before.
            return None;
        }
        let sequences: Vec<u64> = together.iter().map(|(_, seq, _)| *seq).collect();
        let decoded = self.log.decode_messages_many(&together);
        let mut decoded = sequences.into_iter().zip(decoded);
        let (_, first) = decoded.next()?;
        let live = self.live.as_mut()?;
        live.decoded_ahead.extend(decoded);
        Some(first)
    }

    /// Reads the grants up to `sequence` (a delivery not yet folded) when the live consumer
    /// leaves them out. The deliveries the client already holds are taken too, and the
    /// stream is asked for the grants up to the last of them: one fence for the whole batch.
    /// Each step keeps what it read, so a poll dropped midway loses nothing.
    async fn fence_roles(&mut self, sequence: u64) -> Result<(), LogError> {
        let known = self.grants_known_through();
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let mut through = sequence - 1;
        while live.held.len() < FENCE_BATCH {
            let Some(delivery) = live.messages.next().now_or_never() else {
                break;
            };
            let last = match &delivery {
                Some(Ok(m)) => m.info().map(|i| i.stream_sequence).ok(),
                _ => None,
            };
            live.held.push_back(delivery);
            match last {
                Some(last) => through = through.max(last - 1),
                // An error or the end: handled in order when its turn comes.
                None => break,
            }
        }
        let stream = live.stream.clone();
        self.read_grants_ahead(&stream, known, through).await
    }

    /// Whether `message` is passed over undecoded, and why. Never a role event: the book
    /// reads those.
    /// - What a live filter delivers beyond the projection's filters.
    /// - A delivery addressed to another participant than the one the projection follows
    ///   (its `Murmur-Recipient` header). Its subject is still observed, as every stored
    ///   message the projection reads is.
    ///
    /// Neither is judged by the realm's grants, so the live feed does not fence them.
    fn passes_over(&self, message: &async_nats::Message) -> Option<PassOver> {
        if self.live_filter.is_some()
            && let Ok(subject) = Subject::parse(message.subject.as_str())
            && subject.domain() != Domain::Role
            && !self.projection_reads(&subject)
        {
            return Some(PassOver::BeyondFilters);
        }
        let me = self.projection.recipient()?;
        let to = message
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::headers::RECIPIENT))?;
        if to.as_str() == me {
            return None;
        }
        match Subject::parse(message.subject.as_str()) {
            Ok(subject) if subject.domain() != Domain::Role && self.projection_reads(&subject) => {
                Some(PassOver::AddressedElsewhere(subject))
            }
            _ => None,
        }
    }

    /// Through which sequence the grants are known: folded into the book, or read by the
    /// fence and waiting in `grants_ahead`.
    fn grants_known_through(&self) -> u64 {
        self.roles_known.max(self.roles.position())
    }

    /// Folds the fenced grants stored before `sequence`, the next event to fold.
    fn fold_grants_before(&mut self, sequence: u64) {
        while let Some(grant) = self.grants_ahead.front()
            && grant.sequence < sequence
        {
            let grant = self.grants_ahead.pop_front().expect("front exists");
            if grant.sequence > self.roles.position() {
                fold_role_event(&self.log, &mut self.roles, &grant);
            }
        }
        self.roles.advance(sequence - 1);
    }

    /// Reads the grants stored after `known` through `through` (and the first one after,
    /// when there is one) into `grants_ahead`. "None" from the only server storing the
    /// stream is an answer about everything it stored before the request came, so about
    /// everything through `through`.
    ///
    /// It first asks for the realm's last grant: the server answers from its subject index.
    /// Only when that grant is new does it read them one direct get each from `known`, a
    /// request the server answers by scanning the stored messages after `known` (with one
    /// fence per batch of deliveries and per projector, every projector's fences would
    /// scan every message once more).
    async fn read_grants_ahead(
        &mut self,
        stream: &jetstream::stream::Stream<()>,
        known: u64,
        through: u64,
    ) -> Result<(), LogError> {
        use jetstream::stream::DirectGetErrorKind;
        let filter = crate::grants::filter(self.log.realm()).to_string();
        let unreadable = |e: &dyn std::fmt::Display| LogError::Stream {
            stream: self.log.config().history_stream.clone(),
            source: format!("reading the realm's grants: {e}").into(),
        };
        self.stats.grant_fences += 1;
        match stream.direct_get_last_for_subject(filter.as_str()).await {
            Ok(last) if last.sequence > known => {}
            Ok(_) => {
                self.roles_known = self.roles_known.max(through);
                return Ok(());
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                self.roles_known = self.roles_known.max(through);
                return Ok(());
            }
            Err(e) => return Err(unreadable(&e)),
        }
        self.stats.grant_scans += 1;
        let mut next = known + 1;
        loop {
            match stream
                .direct_get_next_for_subject(filter.as_str(), Some(next))
                .await
            {
                Ok(grant) => {
                    self.roles_known = grant.sequence;
                    next = grant.sequence + 1;
                    let past = grant.sequence > through;
                    self.grants_ahead.push_back(StoredMessage::from(grant));
                    if past {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                    self.roles_known = self.roles_known.max(through);
                    return Ok(());
                }
                Err(e) => return Err(unreadable(&e)),
            }
        }
    }

    /// Follows the log live (ordered consumer from the current position) until `done`
    /// returns true for the state, or `deadline` passes (then `Ok(false)`). A transient
    /// failure ([`LogError::is_transient`]: the server lost, a stream leader election) is
    /// waited out within the deadline, the consumer made again on the next poll; one that
    /// lasts past the deadline is the error.
    pub async fn follow_until(
        &mut self,
        deadline: Duration,
        mut done: impl FnMut(&P::State) -> bool,
    ) -> Result<bool, LogError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if done(&self.state) {
                return Ok(true);
            }
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match self
                .poll_until(left.min(Duration::from_millis(250)), &mut done)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "following: the log is unavailable; retrying");
                    tokio::time::sleep(left.min(Duration::from_millis(200))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn bucket(&self) -> Result<jetstream::kv::Store, LogError> {
        self.log.checkpoint_bucket().await
    }

    /// Saves state and position under the projection's name.
    pub async fn save_checkpoint(&self) -> Result<(), LogError> {
        let kv = self.bucket().await?;
        let body = serde_json::to_vec(&Checkpoint {
            position: self.position,
            state: &self.state,
            roles: self.roles.clone(),
        })
        .map_err(|e| LogError::Consumer(format!("checkpoint encode: {e}").into()))?;
        kv.put(self.projection.name(), body.into())
            .await
            .map_err(|e| LogError::Stream {
                stream: CHECKPOINT_BUCKET.into(),
                source: e.into(),
            })?;
        Ok(())
    }

    /// Loads the saved checkpoint, if any; returns whether one was found.
    pub async fn load_checkpoint(&mut self) -> Result<bool, LogError> {
        let kv = self.bucket().await?;
        let entry = kv
            .get(self.projection.name())
            .await
            .map_err(|e| LogError::Stream {
                stream: CHECKPOINT_BUCKET.into(),
                source: e.into(),
            })?;
        let Some(bytes) = entry else {
            return Ok(false);
        };
        let cp: Checkpoint<P::State> = serde_json::from_slice(&bytes)
            .map_err(|e| LogError::Consumer(format!("checkpoint decode: {e}").into()))?;
        self.position = cp.position;
        self.state = cp.state;
        self.roles = cp.roles;
        Ok(true)
    }
}
