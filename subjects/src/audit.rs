//! The log auditor: reads everything that reaches the history stream (and the live plane)
//! and dead-letters what cannot be decoded, validated or verified, with the reason and the
//! original bytes. JetStream stores whatever is published to a captured subject; the auditor
//! is what turns bad input into a dead letter instead of a silent skip. It also folds the
//! realm's grants and dead-letters, as `unauthorized`, what every fold refuses for want of
//! authority: a decision from an identity without the role at that position, a role event
//! signed by neither the owner nor an operator, an event on another identity's aggregate.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use crate::codec::{IngestError, RefusedMessage, VerifiedEvent};
use crate::events::DeadLetterReason;
use crate::grants::RoleBook;
use crate::log::{EventLog, LogError};
use crate::subject::Domain;

/// Durable consumer name of the auditor.
pub const AUDITOR_CONSUMER: &str = "murmur-auditor";

/// What the auditor has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStats {
    /// Messages that checked out.
    pub valid: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
}

/// Runs the auditor until `shutdown` completes. Several auditors may run at once (one per
/// `murmur up`): they share the durable consumer, so each stored message is checked once,
/// and dead-letter ids are derived from the message, so a redelivery dedupes.
pub async fn run_auditor(
    log: EventLog,
    shutdown: impl Future<Output = ()>,
    stats: Option<tokio::sync::watch::Sender<AuditStats>>,
) -> Result<AuditStats, LogError> {
    let stream_name = log.config().history_stream.clone();
    let stream = log.stream(&stream_name).await?;
    let durable: consumer::PullConsumer = stream
        .get_or_create_consumer(
            AUDITOR_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(AUDITOR_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    let mut stored = durable
        .messages()
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    let mut live = log
        .client()
        .queue_subscribe(
            format!("murmur.v1.{}.live.>", log.realm()),
            AUDITOR_CONSUMER.to_string(),
        )
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    let mut totals = AuditStats::default();
    let mut roles = RoleBook::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = stored.next() => {
                let Some(next) = next else { break };
                let (held, ended) = with_ready(next, &mut stored);
                let mut messages = Vec::with_capacity(held.len());
                for next in held {
                    match next {
                        Ok(m) => messages.push(m),
                        Err(e) => tracing::warn!(error = %e, "auditor consumer error"),
                    }
                }
                audit_stored(&log, &mut roles, &mut totals, &messages).await?;
                if ended {
                    break;
                }
            }
            next = live.next() => {
                let Some(next) = next else { break };
                let (messages, ended) = with_ready(next, &mut live);
                audit_live(&log, &roles, &mut totals, &messages).await?;
                if ended {
                    break;
                }
            }
        }
        if let Some(tx) = &stats {
            tx.send_replace(totals.clone());
        }
    }
    Ok(totals)
}

/// `first` and the items `stream` already holds behind it, up to
/// [`crate::codec::DECODED_TOGETHER`] in all, to be decoded together (their signatures
/// checked in one batch); and whether the stream ended.
fn with_ready<S: futures::Stream + Unpin>(first: S::Item, stream: &mut S) -> (Vec<S::Item>, bool) {
    let mut held = vec![first];
    while held.len() < crate::codec::DECODED_TOGETHER {
        match stream.next().now_or_never() {
            Some(Some(next)) => held.push(next),
            Some(None) => return (held, true),
            None => break,
        }
    }
    (held, false)
}

/// Checks stored messages that arrived together, in order: decoded together, each
/// authorized, dead-lettered when it fails, acknowledged.
async fn audit_stored(
    log: &EventLog,
    roles: &mut RoleBook,
    totals: &mut AuditStats,
    messages: &[async_nats::jetstream::Message],
) -> Result<(), LogError> {
    let decoded = log
        .codec()
        .decode_messages(messages.iter().map(|m| &m.message));
    for (message, verdict) in messages.iter().zip(decoded) {
        let info = message.info().ok();
        let sequence = info.as_ref().map(|i| i.stream_sequence);
        let stored_at = info.as_ref().map(|i| i.published);
        let verdict = match verdict {
            Ok(mut event) => {
                event.stream_sequence = sequence;
                event.stored_at = stored_at;
                authorize(log, roles, event).await?
            }
            Err(e) => Err(e),
        };
        tally(log, totals, verdict, RefusedMessage::of(message, sequence)).await?;
        if let Err(e) = message.ack().await {
            tracing::warn!(error = %e, "auditor ack failed; the message will be redelivered");
        }
    }
    Ok(())
}

/// Checks live-plane messages that arrived together: decoded together, each admitted by
/// the grants known, dead-lettered when it fails.
async fn audit_live(
    log: &EventLog,
    roles: &RoleBook,
    totals: &mut AuditStats,
    messages: &[async_nats::Message],
) -> Result<(), LogError> {
    let decoded = log.codec().decode_messages(messages);
    for (message, verdict) in messages.iter().zip(decoded) {
        let verdict = match verdict {
            Ok(mut event) => roles
                .admit(&mut event)
                .map_err(|refusal| IngestError::Refused {
                    reason: DeadLetterReason::Unauthorized,
                    detail: refusal.0,
                }),
            Err(e) => Err(e),
        };
        tally(log, totals, verdict, RefusedMessage::of(message, None)).await?;
    }
    Ok(())
}

/// Counts a verdict; a refusal is dead-lettered with the message it refused.
async fn tally(
    log: &EventLog,
    totals: &mut AuditStats,
    verdict: Result<(), IngestError>,
    refused: RefusedMessage<'_>,
) -> Result<(), LogError> {
    match verdict {
        Ok(()) => totals.valid += 1,
        Err(error) => {
            log.dead_letter("auditor", &error, refused).await?;
            totals.dead_lettered += 1;
        }
    }
    Ok(())
}

/// Whether a decoded stored event has the authority it needs; an `Err` is what to
/// dead-letter. Role events fold into `roles`. Auditors share one durable consumer, so this
/// one may not have seen every role event before the one it judges: before refusing, it
/// reads the role events it missed up to the event's position, and judges again.
async fn authorize(
    log: &EventLog,
    roles: &mut RoleBook,
    mut event: VerifiedEvent,
) -> Result<Result<(), IngestError>, LogError> {
    let unauthorized = |refusal: crate::projection::Refusal| IngestError::Refused {
        reason: DeadLetterReason::Unauthorized,
        detail: refusal.0,
    };
    let sequence = event.stream_sequence.unwrap_or(0);
    if event.subject.domain() == Domain::Role {
        if roles.position() + 1 < sequence {
            crate::projection::read_roles(log, roles, Some(sequence - 1)).await?;
        }
        return Ok(roles.apply(&event).map_err(unauthorized));
    }
    if roles.admit(&mut event).is_ok() {
        return Ok(Ok(()));
    }
    if roles.position() < sequence {
        crate::projection::read_roles(log, roles, Some(sequence)).await?;
    }
    Ok(roles.admit(&mut event).map_err(unauthorized))
}
