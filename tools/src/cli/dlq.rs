//! `murmur dlq`: list, show and redrive dead letters.

use std::ops::ControlFlow;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_subjects::events::{DeadLettered, Redriven};
use murmur_subjects::{Draft, EventLog, Payload, StartAt, SubjectFilter, Token};

use crate::settings::Settings;

/// `murmur dlq ...`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    Ls {
        /// Only this reason (e.g. bad_signature).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show one dead letter by its sequence in the dead-letter stream.
    Show {
        /// Sequence.
        seq: u64,
    },
    /// Re-publish a dead letter's original message to its original subject.
    Redrive {
        /// Sequence.
        seq: u64,
    },
}

/// Runs `murmur dlq ...`.
pub async fn run(settings: &Settings, command: DlqCommand) -> Result<()> {
    let log = settings.open_log("murmur-dlq").await?;
    match command {
        DlqCommand::Ls { reason } => {
            let mut filter = SubjectFilter::plane(murmur_subjects::Plane::Dlq);
            if let Some(realm) = settings.read_realm() {
                filter = filter.realm(realm.clone());
            }
            if let Some(r) = &reason {
                filter = filter.aggregate(Token::new(r.as_str())?);
            }
            let mut rows = Vec::new();
            log.read_dead_letters(&filter, StartAt::Beginning, None, |stored| {
                rows.push(stored);
                ControlFlow::Continue(())
            })
            .await?;
            for stored in rows {
                match log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at)) {
                    Ok(ev) if ev.record.ty == DeadLettered::TYPE => {
                        let d: DeadLettered = ev.payload()?;
                        if settings.json {
                            out!(
                                "{}",
                                serde_json::json!({"sequence": stored.sequence, "stored_at": stored.stored_at, "dead_letter": d})
                            );
                        } else {
                            out!(
                                "{:>6} {} {:<18} {:<48} {} bytes  {}",
                                stored.sequence,
                                stored.stored_at.format("%Y-%m-%d %H:%M:%S"),
                                d.reason,
                                d.original_subject.chars().take(48).collect::<String>(),
                                d.original_size,
                                d.detail.chars().take(100).collect::<String>()
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => out!("{:>6} unreadable dead letter: {e}", stored.sequence),
                }
            }
        }
        DlqCommand::Show { seq } => {
            let d = load_dead_letter(&log, seq).await?;
            out!("{}", serde_json::to_string_pretty(&d)?);
        }
        DlqCommand::Redrive { seq } => {
            let subject = redrive(&log, seq).await?;
            out!("redrove dead letter {seq} to {subject}");
        }
    }
    Ok(())
}

/// Re-publishes dead letter `seq`'s original message (same subject, headers and bytes) and
/// records a `sys.redriven` event. Returns the subject it went to.
pub async fn redrive(log: &EventLog, seq: u64) -> Result<String> {
    let d = load_dead_letter(log, seq).await?;
    let Some(b64) = &d.body_base64 else {
        bail!(
            "dead letter {seq} kept only a prefix ({} bytes, sha256 {}): it cannot be redriven",
            d.original_size,
            d.sha256
        );
    };
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in &d.original_headers {
        headers.append(k.as_str(), v.as_str());
    }
    log.client()
        .publish_with_headers(d.original_subject.clone(), headers, body.into())
        .await?;
    log.client().flush().await?;
    let note = Draft::new(
        Token::new("redrive")?,
        &Redriven {
            dead_letter_sequence: seq,
            subject: d.original_subject.clone(),
        },
    )?;
    log.append(note).await?;
    Ok(d.original_subject)
}

/// Loads dead letter `seq` from the dead-letter stream.
pub async fn load_dead_letter(log: &EventLog, seq: u64) -> Result<DeadLettered> {
    let event = log
        .dead_letter_at(seq)
        .await?
        .with_context(|| format!("no dead letter at sequence {seq}"))?;
    Ok(event.payload()?)
}
