//! Bulk appends: many events that depend on no prior state (no expected sequence), written
//! through one JetStream fast-ingest batch (ADR-50, nats-server 2.14+), where the server
//! acknowledges every few hundred messages instead of each one.
//!
//! A batch runs in the "gap fail" mode: the server stores its messages in order and ends
//! the batch at the first one it cannot store, so an acknowledged batch sequence means
//! every message up to it is stored. Whatever the batch did not confirm (the server does
//! not allow fast batches on the stream, an older server, a message refused, acks lost)
//! is sent again one by one with an ack each; events keep their ids, so the server's
//! dedupe stores each once. Nothing handed to a [`BulkWriter`] is dropped without an error.
//!
//! The protocol is written here rather than taken from `jetstream-extra` (Synadia's
//! async-nats extensions), whose fast publisher is built on async-nats 0.48 while murmur
//! uses 0.51.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::{HeaderMap, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::Deserialize;

use crate::codec::{Draft, SealedEvent};
use crate::log::{APPENDS_IN_FLIGHT, EventLog, LogError, PendingAppend};

/// The writer asks for a flow ack every this many messages; the server may ask for fewer
/// (at most 500) and tells the writer so in each ack.
const FLOW: u16 = 500;
/// Flow acks the writer may be waiting for before it stops sending (ADR-50's advice: while
/// the server stores one stretch, the next is on its way). Eight were tried: no faster
/// for the writer, more server CPU per message for the raw baseline.
const OUTSTANDING_ACKS: u64 = 2;
/// How long the writer waits for an ack it needs; a third of it passes between pings,
/// which ask the server to send its latest ack again.
const ACK_TIMEOUT: Duration = Duration::from_secs(6);

/// What a bulk write stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkAppended {
    /// Events acknowledged as stored (those the server already held count too: dedupe).
    pub events: u64,
    /// The highest stream sequence the server acknowledged.
    pub last_sequence: u64,
    /// Of [`BulkAppended::events`], those a fast-ingest batch confirmed; the rest were
    /// acknowledged one by one.
    pub batched: u64,
    /// Why the writer went on one by one, when it did.
    pub fell_back: Option<String>,
}

/// Writes events in bulk through a fast-ingest batch (see the module documentation).
/// Open one with [`EventLog::bulk_writer`], append, then [`BulkWriter::finish`]: until it
/// returns, an event is not known to be stored. Events are independent: one the server
/// refuses (over the stream's message size, say) is the error of the call that learns of
/// it, and the others are stored all the same; write them all again to be sure (their ids
/// dedupe).
pub struct BulkWriter {
    log: EventLog,
    mode: Mode,
    report: BulkAppended,
}

enum Mode {
    Fast(Box<FastIngestBatch>),
    OneByOne(VecDeque<PendingAppend>),
}

/// A message as it was sent, kept until the batch confirms it.
type Sent = (String, HeaderMap, Bytes);

/// One fast-ingest batch of any messages on a stream that allows them (`allow_batched`):
/// its inbox, where the server acknowledges, and what it has not confirmed yet. What
/// [`BulkWriter`] sends events through; on its own, the protocol without murmur's envelope
/// (the benchmark's raw baseline).
pub struct FastIngestBatch {
    client: async_nats::Client,
    inbox: Subscriber,
    /// `<inbox>.<flow>.fail.`: each message's reply subject is this, its batch sequence,
    /// its operation and `$FI`.
    prefix: String,
    first_subject: Option<String>,
    /// The batch sequence of the last message sent.
    sent: u64,
    /// The highest batch sequence the server acknowledged as stored.
    acked: u64,
    /// The server acknowledges every this many messages.
    every: u16,
    /// Sent (or being sent) and not yet confirmed, in batch order: `unconfirmed[0]` is
    /// `acked + 1`.
    unconfirmed: VecDeque<Sent>,
    flow_acks: u64,
}

/// A reply on the batch's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// Every message up to batch sequence `sequence` is stored; from now on the server
    /// acknowledges every `every` messages.
    Flow { sequence: u64, every: u16 },
    /// A gap or a refused message: in "gap fail" mode the batch ends before it.
    Broken(String),
    /// The batch's final ack: `count` messages stored, the last at stream sequence
    /// `sequence`.
    Done { sequence: u64, count: u64 },
    /// An ordinary publish ack, without a batch: a server that knows no fast ingest
    /// stored the message as a plain publish.
    Plain { sequence: u64 },
    /// An API error instead of an ack: the stream does not allow fast batches, too many
    /// batches in flight, a message over the stream's limits.
    Refused(String),
}

#[derive(Deserialize)]
struct RawReply {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    msgs: Option<u16>,
    last_seq: Option<u64>,
    batch: Option<String>,
    count: Option<u64>,
    error: Option<serde_json::Value>,
}

impl Reply {
    fn parse(payload: &[u8]) -> Reply {
        let Ok(raw) = serde_json::from_slice::<RawReply>(payload) else {
            return Reply::Refused(format!(
                "unreadable reply: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ));
        };
        match (raw.kind.as_deref(), raw.error, raw.seq) {
            (Some("ack"), _, Some(sequence)) => Reply::Flow {
                sequence,
                every: raw.msgs.unwrap_or(1).max(1),
            },
            (Some("gap"), _, seq) => Reply::Broken(format!(
                "gap: expected batch message {}, got {}",
                raw.last_seq.unwrap_or_default(),
                seq.unwrap_or_default()
            )),
            (Some("err"), error, seq) => Reply::Broken(format!(
                "batch message {} refused: {}",
                seq.unwrap_or_default(),
                error.map(|e| e.to_string()).unwrap_or_default()
            )),
            (_, Some(error), _) => Reply::Refused(error.to_string()),
            (None, None, Some(sequence)) => match (raw.batch, raw.count) {
                (Some(_), Some(count)) => Reply::Done { sequence, count },
                _ => Reply::Plain { sequence },
            },
            _ => Reply::Refused(format!(
                "unexpected reply: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            )),
        }
    }
}

/// How a batch ended early: how many of its messages are known stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEnded {
    /// Its first this many messages are stored.
    pub stored: u64,
    /// The stream sequence of the last one stored, when the server said.
    pub last_sequence: Option<u64>,
    /// Why it ended.
    pub reason: String,
}

impl FastIngestBatch {
    /// Opens a batch: subscribes to its inbox. Nothing is sent yet.
    pub async fn open(client: &async_nats::Client) -> Result<Self, LogError> {
        let inbox = client.new_inbox();
        let subscriber =
            client
                .subscribe(format!("{inbox}.>"))
                .await
                .map_err(|e| LogError::Publish {
                    subject: inbox.clone(),
                    source: e.into(),
                })?;
        Ok(FastIngestBatch {
            client: client.clone(),
            inbox: subscriber,
            prefix: format!("{inbox}.{FLOW}.fail."),
            first_subject: None,
            sent: 0,
            acked: 0,
            every: FLOW,
            unconfirmed: VecDeque::new(),
            flow_acks: 0,
        })
    }

    fn reply_subject(&self, sequence: u64, operation: u8) -> String {
        format!("{}{sequence}.{operation}.$FI", self.prefix)
    }

    /// Takes a flow ack.
    fn flow(&mut self, sequence: u64, every: u16) {
        self.flow_acks += 1;
        self.every = every;
        self.confirm(sequence);
    }

    /// Every message up to batch sequence `sequence` is stored: they leave `unconfirmed`.
    fn confirm(&mut self, sequence: u64) {
        let sequence = sequence.min(self.sent);
        while self.acked < sequence {
            self.unconfirmed.pop_front();
            self.acked += 1;
        }
    }

    /// Applies the replies already here, without waiting; `Err` when one ends the batch.
    fn take_ready(&mut self) -> Result<(), Reply> {
        while let Some(Some(message)) = self.inbox.next().now_or_never() {
            match Reply::parse(&message.payload) {
                Reply::Flow { sequence, every } => self.flow(sequence, every),
                other => return Err(other),
            }
        }
        Ok(())
    }

    /// Waits for the next reply, pinging the server for its latest ack when none comes
    /// for a third of `ACK_TIMEOUT`; `None` when none came in all of it.
    async fn next_reply(&mut self) -> Option<Reply> {
        for attempt in 0..3 {
            if attempt > 0
                && let Some(subject) = self.first_subject.clone()
            {
                let ping = self.reply_subject(self.sent, 4);
                self.client
                    .publish_with_reply(subject, ping, Bytes::new())
                    .await
                    .ok()?;
            }
            match tokio::time::timeout(ACK_TIMEOUT / 3, self.inbox.next()).await {
                Ok(Some(message)) => return Some(Reply::parse(&message.payload)),
                Ok(None) => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// Sends one message in the batch, first waiting while the server is two flow acks
    /// behind. On `Err` the batch is over: the message is among
    /// its unconfirmed ones.
    pub async fn send(
        &mut self,
        subject: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(), BatchEnded> {
        // Kept from the start: whatever ends the batch, this message is among those to send
        // again.
        self.unconfirmed
            .push_back((subject.to_string(), headers.clone(), body.clone()));
        self.take_ready().map_err(|reply| self.end_after(reply))?;
        while self.acked + u64::from(self.every) * OUTSTANDING_ACKS <= self.sent + 1 {
            match self.next_reply().await {
                Some(Reply::Flow { sequence, every }) => self.flow(sequence, every),
                Some(other) => return Err(self.end_after(other)),
                None => return Err(self.ended("no flow ack (after two pings)")),
            }
        }
        self.sent += 1;
        let operation = if self.sent == 1 { 0 } else { 1 };
        let reply = self.reply_subject(self.sent, operation);
        if self.first_subject.is_none() {
            self.first_subject = Some(subject.to_string());
        }
        if let Err(e) = self
            .client
            .publish_with_reply_and_headers(subject.to_string(), reply, headers, body)
            .await
        {
            return Err(self.ended(&format!("publish failed: {e}")));
        }
        if self.sent == 1 {
            // The server answers a batch's first message at once: its flow, or why not.
            match self.next_reply().await {
                Some(Reply::Flow { sequence, every }) => self.flow(sequence, every),
                Some(other) => return Err(self.end_after(other)),
                None => return Err(self.ended("no answer to the batch's first message")),
            }
        }
        Ok(())
    }

    /// The batch ended with `reply` (anything but a flow ack): what it stored.
    fn end_after(&mut self, reply: Reply) -> BatchEnded {
        match reply {
            Reply::Done { sequence, count } => {
                self.confirm(count);
                BatchEnded {
                    stored: self.acked,
                    last_sequence: Some(sequence),
                    reason: "the server ended the batch".into(),
                }
            }
            Reply::Plain { sequence } => {
                // Stored as a plain publish: the first message; send it again anyway, the
                // server dedupes it.
                BatchEnded {
                    stored: self.acked,
                    last_sequence: Some(sequence),
                    reason: "the server stores no fast-ingest batches (nats-server 2.14+ does)"
                        .into(),
                }
            }
            Reply::Refused(why) | Reply::Broken(why) => self.ended(&why),
            Reply::Flow { sequence, .. } => {
                self.ended(&format!("an unexpected flow ack ({sequence})"))
            }
        }
    }

    fn ended(&self, why: &str) -> BatchEnded {
        BatchEnded {
            stored: self.acked,
            last_sequence: None,
            reason: why.to_string(),
        }
    }

    /// Ends the batch (a commit that stores nothing more) and waits for its final ack:
    /// how many messages it stored, and the stream sequence of the last.
    pub async fn commit(&mut self) -> Result<(u64, u64), BatchEnded> {
        let Some(subject) = self.first_subject.clone() else {
            return Ok((0, 0));
        };
        self.take_ready().map_err(|reply| self.end_after(reply))?;
        let end = self.reply_subject(self.sent + 1, 3);
        if let Err(e) = self
            .client
            .publish_with_reply(subject, end, Bytes::new())
            .await
        {
            return Err(self.ended(&format!("publish failed: {e}")));
        }
        loop {
            match self.next_reply().await {
                Some(Reply::Flow { sequence, every }) => self.flow(sequence, every),
                Some(Reply::Done { sequence, count }) if count >= self.sent => {
                    self.confirm(count);
                    return Ok((count, sequence));
                }
                Some(other) => return Err(self.end_after(other)),
                None => return Err(self.ended("no final ack")),
            }
        }
    }
}

impl EventLog {
    /// A writer for events that depend on no prior state, sent in bulk through a
    /// JetStream fast-ingest batch ([`crate::bulk`]).
    pub async fn bulk_writer(&self) -> Result<BulkWriter, LogError> {
        Ok(BulkWriter {
            log: self.clone(),
            mode: Mode::Fast(Box::new(FastIngestBatch::open(self.client()).await?)),
            report: BulkAppended::default(),
        })
    }
}

impl BulkWriter {
    /// Signs `drafts` with batch signatures (one Ed25519 signature per 256) and sends them.
    pub async fn append(
        &mut self,
        drafts: impl IntoIterator<Item = Draft>,
    ) -> Result<Vec<SealedEvent>, LogError> {
        let sealed = self.log.seal_many(drafts);
        self.append_sealed(&sealed).await?;
        Ok(sealed)
    }

    /// Sends events already sealed.
    pub async fn append_sealed(&mut self, sealed: &[SealedEvent]) -> Result<(), LogError> {
        for ev in sealed {
            let (headers, body) = self.log.persisted_headers(ev)?;
            self.send(ev.subject.as_str(), headers, body).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        subject: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(), LogError> {
        match &mut self.mode {
            Mode::Fast(batch) => {
                if let Err(ended) = batch.send(subject, headers, body).await {
                    self.fall_back(ended).await?;
                }
                Ok(())
            }
            Mode::OneByOne(pending) => {
                pending.push_back(self.log.send(subject, headers, body, None).await?);
                while pending.len() > APPENDS_IN_FLIGHT {
                    let appended = pending.pop_front().expect("over the window").wait().await?;
                    self.report.events += 1;
                    self.report.last_sequence = self.report.last_sequence.max(appended.sequence);
                }
                Ok(())
            }
        }
    }

    /// Counts what the batch stored and sends the rest of its messages one by one.
    async fn fall_back(&mut self, ended: BatchEnded) -> Result<(), LogError> {
        let Mode::Fast(batch) = std::mem::replace(&mut self.mode, Mode::OneByOne(VecDeque::new()))
        else {
            return Ok(());
        };
        tracing::debug!(reason = %ended.reason, stored = ended.stored, "fast-ingest batch ended; sending the rest with an ack each");
        self.report.events += ended.stored;
        self.report.batched += ended.stored;
        if let Some(sequence) = ended.last_sequence {
            self.report.last_sequence = self.report.last_sequence.max(sequence);
        }
        self.report.fell_back = Some(ended.reason);
        let FastIngestBatch {
            unconfirmed,
            mut inbox,
            ..
        } = *batch;
        inbox.unsubscribe().await.ok();
        for (subject, headers, body) in unconfirmed {
            Box::pin(self.send(&subject, headers, body)).await?;
        }
        Ok(())
    }

    /// Waits until every event sent is acknowledged, and says what was stored.
    pub async fn finish(mut self) -> Result<BulkAppended, LogError> {
        if let Mode::Fast(batch) = &mut self.mode {
            match batch.commit().await {
                Ok((count, sequence)) => {
                    self.report.events += count;
                    self.report.batched += count;
                    self.report.last_sequence = self.report.last_sequence.max(sequence);
                    batch.inbox.unsubscribe().await.ok();
                    return Ok(self.report);
                }
                Err(ended) => self.fall_back(ended).await?,
            }
        }
        // Every send settles before the call returns, refused or not; the first refusal is
        // the error.
        let mut refused = None;
        if let Mode::OneByOne(pending) = &mut self.mode {
            while let Some(p) = pending.pop_front() {
                match p.wait().await {
                    Ok(appended) => {
                        self.report.events += 1;
                        self.report.last_sequence =
                            self.report.last_sequence.max(appended.sequence);
                    }
                    Err(e) => {
                        refused.get_or_insert(e);
                    }
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(self.report),
        }
    }

    /// Flow acks received so far from the batch (0 once it fell back).
    pub fn flow_acks(&self) -> u64 {
        match &self.mode {
            Mode::Fast(batch) => batch.flow_acks,
            Mode::OneByOne(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_replies_are_told_apart() {
        assert_eq!(
            Reply::parse(br#"{"type":"ack","seq":500,"msgs":250}"#),
            Reply::Flow {
                sequence: 500,
                every: 250
            }
        );
        assert_eq!(
            Reply::parse(br#"{"type":"ack","seq":0,"msgs":0}"#),
            Reply::Flow {
                sequence: 0,
                every: 1
            }
        );
        assert!(matches!(
            Reply::parse(br#"{"type":"gap","last_seq":10,"seq":15}"#),
            Reply::Broken(why) if why.contains("10") && why.contains("15")
        ));
        assert!(matches!(
            Reply::parse(br#"{"type":"err","seq":7,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}"#),
            Reply::Broken(why) if why.contains("wrong last sequence")
        ));
        assert_eq!(
            Reply::parse(br#"{"stream":"H","seq":1234,"batch":"abc","count":3000}"#),
            Reply::Done {
                sequence: 1234,
                count: 3000
            }
        );
        assert_eq!(
            Reply::parse(br#"{"stream":"H","seq":9, "duplicate": true,"batch":"abc","count":2}"#),
            Reply::Done {
                sequence: 9,
                count: 2
            }
        );
        assert_eq!(
            Reply::parse(br#"{"stream":"H","seq":42}"#),
            Reply::Plain { sequence: 42 }
        );
        assert!(matches!(
            Reply::parse(br#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"H","seq":0}"#),
            Reply::Refused(why) if why.contains("10205")
        ));
        assert!(matches!(Reply::parse(b"-ERR"), Reply::Refused(_)));
    }
}
