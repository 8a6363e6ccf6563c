//! Reading the streams completely: a read from a start position up to the stream leader's
//! last matching message (a consumer on a lagging replica reports "nothing pending" early),
//! with several filters applied client-side when the server would pay a quadratic scan, and
//! the log's read API built on it ([`EventLog::read`], [`EventLog::tail`], …).

use std::fmt::Debug;
use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::codec::{IngestError, VerifiedEvent};
use crate::grants::RoleBook;
use crate::log::{EventLog, LogError};
use crate::subject::{Subject, SubjectFilter};

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first event in the stream.
    Beginning,
    /// The first event at or after this stream sequence.
    Sequence(u64),
    /// The first event stored at or after this time.
    Time(DateTime<Utc>),
}

impl StartAt {
    pub(crate) fn deliver_policy(self) -> consumer::DeliverPolicy {
        match self {
            StartAt::Beginning | StartAt::Sequence(0) => consumer::DeliverPolicy::All,
            StartAt::Sequence(start_sequence) => {
                consumer::DeliverPolicy::ByStartSequence { start_sequence }
            }
            StartAt::Time(start_time) => consumer::DeliverPolicy::ByStartTime { start_time },
        }
    }
}

/// One message read from a stream, before decoding.
#[derive(Debug)]
pub struct StoredMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// When the stream stored it.
    pub stored_at: DateTime<Utc>,
    /// Messages still pending after this one for the reading consumer.
    pub pending: u64,
    /// The message.
    pub message: async_nats::Message,
}

impl From<async_nats::jetstream::message::StreamMessage> for StoredMessage {
    /// A message got by sequence or subject (a message get or a direct get).
    fn from(raw: async_nats::jetstream::message::StreamMessage) -> Self {
        StoredMessage {
            sequence: raw.sequence,
            stored_at: raw.time,
            pending: 0,
            message: async_nats::Message {
                subject: raw.subject,
                reply: None,
                length: raw.payload.len(),
                payload: raw.payload,
                headers: Some(raw.headers),
                status: None,
                description: None,
            },
        }
    }
}

/// Folds one stored role event into `book` and moves its position there; one that does not
/// decode or that the book refuses is skipped (logged), as every reader of the grants does.
pub(crate) fn fold_role_event(log: &EventLog, book: &mut RoleBook, stored: &StoredMessage) {
    match log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at)) {
        Ok(event) => {
            if let Err(refusal) = book.apply(&event) {
                tracing::info!(sequence = stored.sequence, %refusal, "role event refused");
            }
        }
        Err(error) => {
            tracing::debug!(sequence = stored.sequence, %error, "skipping invalid role event")
        }
    }
    book.advance(stored.sequence);
}

/// Reads `stream` from `start`, filtered, calling `on_message` until it breaks, the consumer
/// has nothing pending, or a message past `until_sequence` arrives. Returns how many messages
/// were handed over. Uses an ephemeral pull consumer without acks: the fastest replay path.
///
/// A consumer reads its own replica of the stream, and in a cluster that replica can be
/// behind the leader (a node catching up after a restart or a leader change): it then
/// reports nothing pending while the stream holds more. So the read first asks the stream
/// leader for the last sequence matching `filter`. When the consumer runs dry short of it
/// (and of `until_sequence`), the leader is asked for the next matching message after what
/// was read: none up to the target means the rest was purged meanwhile and the read is
/// complete; one means the read goes on from there with a new consumer. After a few tries
/// it fails with [`LogError::Consumer`] rather than report a short read as complete.
/// Callers that record "read up to N" can rely on it.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    filter: &SubjectFilter,
    start: StartAt,
    until_sequence: Option<u64>,
    on_message: impl FnMut(StoredMessage) -> ControlFlow<()>,
) -> Result<u64, LogError> {
    read_stream_any(
        js,
        stream,
        std::slice::from_ref(filter),
        start,
        until_sequence,
        on_message,
    )
    .await
}

impl EventLog {
    /// Reads the history stream from `start` through `until_sequence` (default: its last
    /// message matching `filter` now), calling `on_message` in order until it breaks; see
    /// [`read_stream`] for what makes the read complete. Returns the last sequence read.
    pub async fn read(
        &self,
        filter: &SubjectFilter,
        start: StartAt,
        until_sequence: Option<u64>,
        on_message: impl FnMut(StoredMessage) -> ControlFlow<()>,
    ) -> Result<u64, LogError> {
        let stream = &self.config().history_stream;
        read_stream(
            self.jetstream(),
            stream,
            filter,
            start,
            until_sequence,
            on_message,
        )
        .await
    }

    /// Follows the history stream from now on (what is stored after the call), filtered:
    /// each new message with its sequence and stored time, undecoded (decode it with
    /// [`EventLog::decode_stored`], so an invalid one can still be shown).
    pub async fn tail(
        &self,
        filter: &SubjectFilter,
    ) -> Result<impl futures::Stream<Item = Result<StoredMessage, LogError>> + use<>, LogError>
    {
        let stream_name = self.config().history_stream.clone();
        let err = |e: crate::log::BoxError| LogError::Stream {
            stream: stream_name.clone(),
            source: e,
        };
        let stream = self
            .jetstream()
            .get_stream(&stream_name)
            .await
            .map_err(|e| err(e.into()))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.into()))?;
        let messages = consumer.messages().await.map_err(|e| err(e.into()))?;
        Ok(messages.map(|m| {
            let m = m.map_err(|e| LogError::Consumer(e.into()))?;
            let info = m.info().map_err(LogError::Consumer)?;
            let (sequence, stored_at, pending) =
                (info.stream_sequence, info.published, info.pending);
            Ok(StoredMessage {
                sequence,
                stored_at,
                pending,
                message: m.message,
            })
        }))
    }

    /// The dead letter stored at `sequence` in the dead-letter stream, decoded and verified
    /// (`None` when there is none).
    pub async fn dead_letter_at(&self, sequence: u64) -> Result<Option<VerifiedEvent>, LogError> {
        let name = self.config().dlq_stream.clone();
        let Some(stored) = self.stored_at(&name, sequence).await? else {
            return Ok(None);
        };
        self.decode_stored(&stored.message, sequence, Some(stored.stored_at))
            .map(Some)
            .map_err(|e| LogError::Undecodable {
                subject: stored.message.subject.to_string(),
                reason: e.to_string(),
            })
    }

    /// The message stored at `sequence` in the history stream, undecoded (decode it with
    /// [`EventLog::decode_stored`], so one that fails verification can still be shown with
    /// its reason); `None` when there is none.
    pub async fn history_at(&self, sequence: u64) -> Result<Option<StoredMessage>, LogError> {
        let name = self.config().history_stream.clone();
        self.stored_at(&name, sequence).await
    }

    async fn stored_at(
        &self,
        stream_name: &str,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, LogError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        let err = |e: crate::log::BoxError| LogError::Stream {
            stream: stream_name.to_string(),
            source: e,
        };
        let stream = self
            .jetstream()
            .get_stream_no_info(stream_name)
            .await
            .map_err(|e| err(e.into()))?;
        let raw = match stream.get_raw_message(sequence).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        Ok(Some(StoredMessage::from(raw)))
    }

    /// [`EventLog::read`] over the dead-letter stream.
    pub async fn read_dead_letters(
        &self,
        filter: &SubjectFilter,
        start: StartAt,
        until_sequence: Option<u64>,
        on_message: impl FnMut(StoredMessage) -> ControlFlow<()>,
    ) -> Result<u64, LogError> {
        let stream = &self.config().dlq_stream;
        read_stream(
            self.jetstream(),
            stream,
            filter,
            start,
            until_sequence,
            on_message,
        )
        .await
    }
}

/// Every stored event of one aggregate in `log`'s realm (`domain`, `aggregate`), in log
/// order, each with its stream sequence, decoded and verified (or why it is not an event):
/// an aggregate's timeline, read without folding anything else.
pub async fn read_aggregate(
    log: &EventLog,
    domain: crate::Domain,
    aggregate: &crate::Token,
) -> Result<Vec<(u64, Result<VerifiedEvent, IngestError>)>, LogError> {
    let filter = SubjectFilter::plane(crate::Plane::Evt)
        .realm(log.realm().clone())
        .domain(domain)
        .aggregate(aggregate.clone());
    let mut events = Vec::new();
    read_stream(
        log.jetstream(),
        &log.config().history_stream,
        &filter,
        StartAt::Beginning,
        None,
        |stored| {
            let event = log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at));
            events.push((stored.sequence, event));
            ControlFlow::Continue(())
        },
    )
    .await?;
    Ok(events)
}

/// Folds `log`'s realm's `role.*` events after `book`'s position up to `until` (the
/// stream's end when `None`) into `book`: a reader that judges decisions one by one
/// (`task show`, `vote show`) reads the grants first. Refused role events are skipped.
pub async fn read_roles(
    log: &EventLog,
    book: &mut RoleBook,
    until: Option<u64>,
) -> Result<(), LogError> {
    let stream = log.config().history_stream.clone();
    let end = match until {
        Some(until) => until,
        None => log.last_sequence(&stream).await?,
    };
    if end <= book.position() {
        return Ok(());
    }
    let mut stored = Vec::new();
    read_stream(
        log.jetstream(),
        &stream,
        &crate::grants::filter(log.realm()),
        StartAt::Sequence(book.position() + 1),
        Some(end),
        |m| {
            stored.push(m);
            ControlFlow::Continue(())
        },
    )
    .await?;
    for m in stored.iter().take_while(|m| m.sequence <= end) {
        fold_role_event(log, book, m);
    }
    book.advance(end);
    Ok(())
}

/// [`read_stream`] for the messages matching any of `filters`, in stream order.
///
/// With several filters the stream is read whole and the filters are applied here, by
/// subject: messages that match none are skipped, never decoded or verified. The server
/// serves a consumer with several filter subjects by intersecting each message block's
/// subject index with them for every message it delivers (nats-server 2.11–2.15,
/// `firstMatchingMulti`): the matching messages times the distinct subjects of a block.
/// With one subject per proposal, 100 voters starting on a log of 1,000 proposals kept the
/// server's core busy for about 50 s. Read whole, the range is one linear pass.
pub async fn read_stream_any(
    js: &jetstream::Context,
    stream: &str,
    filters: &[SubjectFilter],
    start: StartAt,
    until_sequence: Option<u64>,
    mut on_message: impl FnMut(StoredMessage) -> ControlFlow<()>,
) -> Result<u64, LogError> {
    const ATTEMPTS: u32 = 6;
    let stream_err = |e: crate::log::BoxError| LogError::Stream {
        stream: stream.to_string(),
        source: e,
    };
    // No stream info: the reads below ask the leader themselves, and a request nobody
    // answers (a leader election) costs the client's whole request timeout.
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| stream_err(e.into()))?;
    // What must be read: up to the leader's last matching message (bounded by `until`).
    // A start by time has no sequence to compare with; such reads are taken as delivered.
    let target = match start {
        StartAt::Time(_) => None,
        StartAt::Beginning | StartAt::Sequence(_) => {
            let first = match start {
                StartAt::Sequence(s) => s.max(1),
                _ => 1,
            };
            leader_last_matching(&handle, filters)
                .await
                .map_err(|e| stream_err(e.into()))?
                .map(|last| until_sequence.map_or(last, |until| last.min(until)))
                .filter(|target| *target >= first)
        }
    };
    if target.is_none() && !matches!(start, StartAt::Time(_)) {
        // The leader holds nothing to read in the range: no consumer needed.
        return Ok(0);
    }
    let mut from = start;
    let mut count = 0;
    let mut seen: Option<u64> = None;
    for attempt in 1..=ATTEMPTS {
        let read = read_once(&handle, filters, from, until_sequence, &mut |m| {
            seen = Some(m.sequence);
            count += 1;
            on_message(m)
        })
        .await?;
        let done = match (read, target) {
            (ReadEnd::Stopped, _) | (ReadEnd::RanDry, None) => true,
            (ReadEnd::RanDry, Some(target)) => seen.is_some_and(|s| s >= target),
        };
        if done {
            return Ok(count);
        }
        // Ran dry short of the target. Either this replica is behind, or what was left in
        // the range is gone: a purge (a knowledge snapshot drops the changes it covers) can
        // remove it after the target was taken, on a single server too. Ask the leader for
        // the next matching message after what was read: none up to the target means the
        // read is complete; one means read on from exactly there.
        let after = seen.map_or(
            match from {
                StartAt::Sequence(s) => s.max(1),
                _ => 1,
            },
            |s| s + 1,
        );
        let next = leader_next_matching(&handle, filters, after)
            .await
            .map_err(|e| stream_err(e.into()))?;
        match (next, target) {
            (Some(next), Some(target)) if next <= target => from = StartAt::Sequence(next),
            _ => return Ok(count),
        }
        tracing::warn!(
            stream,
            filter = %filters.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            read_up_to = seen.unwrap_or(0),
            leader_has = target.unwrap_or(0),
            attempt,
            "a consumer's replica is behind the stream leader; reading on"
        );
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    Err(LogError::Consumer(format!(
        "{stream}: the replicas serving reads stay behind the leader (read up to {}, the leader has {})",
        seen.unwrap_or(0),
        target.unwrap_or(0)
    ).into()))
}

/// How long a read waits for its next message before it asks the server what is pending.
pub(crate) const READ_SILENCE: Duration = Duration::from_secs(1);
/// Silences in a row, with messages still pending, after which a read starts over.
pub(crate) const READ_SILENCES: u32 = 10;

/// Why one consumer's read ended.
pub(crate) enum ReadEnd {
    /// The caller broke off, or `until` was reached or passed.
    Stopped,
    /// The consumer had nothing more pending.
    RanDry,
}

/// The stream leader's last sequence matching any of `filters`, if any (message-get
/// requests, which only the leader answers).
pub(crate) async fn leader_last_matching<I>(
    handle: &jetstream::stream::Stream<I>,
    filters: &[SubjectFilter],
) -> Result<Option<u64>, String> {
    use jetstream::stream::LastRawMessageErrorKind;
    let mut last = None;
    for filter in filters {
        match handle
            .get_last_raw_message_by_subject(&filter.to_string())
            .await
        {
            Ok(message) => last = last.max(Some(message.sequence)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(last)
}

/// The stream leader's first sequence at or after `after` matching any of `filters`, if any.
pub(crate) async fn leader_next_matching<I>(
    handle: &jetstream::stream::Stream<I>,
    filters: &[SubjectFilter],
    after: u64,
) -> Result<Option<u64>, String> {
    use jetstream::stream::LastRawMessageErrorKind;
    let mut next: Option<u64> = None;
    for filter in filters {
        match handle
            .get_first_raw_message_by_subject(filter.to_string(), after)
            .await
        {
            Ok(message) => next = Some(next.map_or(message.sequence, |n| n.min(message.sequence))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(next)
}

/// `filter_subject` for one filter, `filter_subjects` for several (as consumer configs want).
pub(crate) fn consumer_filters(filters: &[SubjectFilter]) -> (String, Vec<String>) {
    match filters {
        [one] => (one.to_string(), Vec::new()),
        many => (
            String::new(),
            many.iter().map(ToString::to_string).collect(),
        ),
    }
}

pub(crate) async fn read_once<I>(
    handle: &jetstream::stream::Stream<I>,
    filters: &[SubjectFilter],
    start: StartAt,
    until_sequence: Option<u64>,
    on_message: &mut impl FnMut(StoredMessage) -> ControlFlow<()>,
) -> Result<ReadEnd, LogError> {
    // One filter: the server's. Several: none on the consumer, a subject check here (see
    // `read_stream_any`).
    let on_client = filters.len() > 1;
    let (filter_subject, filter_subjects) = match filters {
        [one] => (one.to_string(), Vec::new()),
        _ => (String::new(), Vec::new()),
    };
    let wanted = |subject: &str| {
        !on_client || Subject::parse(subject).is_ok_and(|s| filters.iter().any(|f| f.matches(&s)))
    };
    let mut consumer: consumer::PullConsumer = handle
        .create_consumer(consumer::pull::Config {
            deliver_policy: start.deliver_policy(),
            ack_policy: consumer::AckPolicy::None,
            filter_subject,
            filter_subjects,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    if info.num_pending == 0 {
        return Ok(ReadEnd::RanDry);
    }
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(10_000)
        .messages()
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    // Checks of the consumer after a silence, in a row.
    let mut silences = 0;
    loop {
        let next = match tokio::time::timeout(READ_SILENCE, messages.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) => {
                // Nothing delivered for a while. What was pending when the consumer was made
                // (or when the last message came) may be gone: a purge (a knowledge snapshot
                // drops the changes it covers) can remove it at any moment. Waiting for it
                // would never end; ask the server what is still pending.
                let info = consumer
                    .get_info()
                    .await
                    .map_err(|e| LogError::Consumer(e.into()))?;
                silences += 1;
                // Nothing left, or a consumer that stays silent with messages pending: end
                // this read; the caller compares with the leader and reads on from there.
                if info.num_pending == 0 || silences >= READ_SILENCES {
                    return Ok(ReadEnd::RanDry);
                }
                continue;
            }
        };
        silences = 0;
        let message = next.map_err(|e| LogError::Consumer(e.into()))?;
        let (sequence, stored_at, pending) = {
            let info = message.info().map_err(LogError::Consumer)?;
            (info.stream_sequence, info.published, info.pending)
        };
        if until_sequence.is_some_and(|end| sequence > end) {
            return Ok(ReadEnd::Stopped);
        }
        if !wanted(message.subject.as_str()) {
            if until_sequence == Some(sequence) {
                return Ok(ReadEnd::Stopped);
            }
            if pending == 0 {
                return Ok(ReadEnd::RanDry);
            }
            continue;
        }
        let flow = on_message(StoredMessage {
            sequence,
            stored_at,
            pending,
            message: message.split().0,
        });
        if flow.is_break() || until_sequence == Some(sequence) {
            return Ok(ReadEnd::Stopped);
        }
        if pending == 0 {
            return Ok(ReadEnd::RanDry);
        }
    }
    Ok(ReadEnd::RanDry)
}
