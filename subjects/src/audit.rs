//! The log auditor: reads everything that reaches the history stream (and the live plane)
//! and dead-letters what cannot be decoded, validated or verified, with the reason and the
//! original bytes. JetStream stores whatever is published to a captured subject; the auditor
//! is what turns bad input into a dead letter instead of a silent skip.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::log::{EventLog, LogError};

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
        .map_err(|e| LogError::Consumer(e.to_string()))?;
    let mut stored = durable
        .messages()
        .await
        .map_err(|e| LogError::Consumer(e.to_string()))?;
    let mut live = log
        .client()
        .queue_subscribe("murmur.v1.*.live.>", AUDITOR_CONSUMER.to_string())
        .await
        .map_err(|e| LogError::Consumer(e.to_string()))?;
    let mut totals = AuditStats::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = stored.next() => {
                let Some(next) = next else { break };
                let message = match next {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "auditor consumer error");
                        continue;
                    }
                };
                let sequence = message.info().map(|i| i.stream_sequence).ok();
                let verdict = log.codec().decode(message.subject.as_str(), message.headers.as_ref(), &message.payload);
                match verdict {
                    Ok(_) => totals.valid += 1,
                    Err(error) => {
                        log.dead_letter("auditor", &error, message.subject.as_str(), message.headers.as_ref(), &message.payload, sequence).await?;
                        totals.dead_lettered += 1;
                    }
                }
                if let Err(e) = message.ack().await {
                    tracing::warn!(error = %e, "auditor ack failed; the message will be redelivered");
                }
            }
            next = live.next() => {
                let Some(message) = next else { break };
                match log.codec().decode(message.subject.as_str(), message.headers.as_ref(), &message.payload) {
                    Ok(_) => totals.valid += 1,
                    Err(error) => {
                        log.dead_letter("auditor", &error, message.subject.as_str(), message.headers.as_ref(), &message.payload, None).await?;
                        totals.dead_lettered += 1;
                    }
                }
            }
        }
        if let Some(tx) = &stats {
            tx.send_replace(totals.clone());
        }
    }
    Ok(totals)
}
