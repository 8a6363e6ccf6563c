//! `murmur events tail`, and the one-line and JSON forms of an event every reading command
//! prints.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use futures::StreamExt;
use murmur_subjects::{Catalog, SubjectFilter, Token, VerifiedEvent};

use crate::settings::Settings;

/// `murmur events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow new events as they are stored.
    Tail {
        /// Subject filter (NATS wildcards).
        #[arg(long)]
        subject: Option<String>,
        /// CloudEvent type.
        #[arg(long = "type")]
        ty: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// One line describing an event.
pub fn describe(seq: Option<u64>, event: &VerifiedEvent) -> String {
    let short = |s: &str| s.chars().take(8).collect::<String>();
    // Event ids are UUIDv7s, whose leading characters are the time (the same for every id made
    // in the same minute); their tail is what tells two flows apart.
    let aggregate = event.subject.aggregate().as_str();
    let tail = |s: &str| {
        // Ids derived from the aggregate's (`prop-1-decided`, `t1.assign.2`): the part after
        // the aggregate is what tells them apart, and it reads better than a cut.
        if let Some(rest) = s.strip_prefix(aggregate)
            && let Some(rest) = rest.strip_prefix(['-', '.'])
            && !rest.is_empty()
        {
            return rest.to_string();
        }
        let n = s.chars().count();
        s.chars().skip(n.saturating_sub(8)).collect::<String>()
    };
    format!(
        // 35: the longest event type, `dev.murmur.proposal.deadline_passed`.
        "{:>6} {} {:<35} {:<22} id {} from {} corr {} cause {} {}",
        seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        event
            .record
            .time
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default(),
        event.record.ty,
        event
            .subject
            .aggregate()
            .as_str()
            .chars()
            .take(22)
            .collect::<String>(),
        // Its own id too, so a `cause` on a later line can be followed back to this one.
        tail(&event.record.id),
        short(event.emitter()),
        tail(event.record.correlation_id.as_deref().unwrap_or("")),
        tail(event.record.causation_id.as_deref().unwrap_or("")),
        String::from_utf8_lossy(event.record.data.as_deref().unwrap_or(b""))
            .chars()
            .take(100)
            .collect::<String>(),
    )
}

/// One aggregate's events from the log, one [`describe`] line each (an entry that does not
/// decode is shown as INVALID with the reason): the timeline `task show` and `vote show` print.
pub async fn aggregate_timeline(
    log: &murmur_subjects::EventLog,
    domain: murmur_subjects::Domain,
    id: &str,
) -> Result<Vec<String>> {
    let events =
        murmur_subjects::projection::read_aggregate(log, domain, &murmur_subjects::Token::new(id)?)
            .await?;
    Ok(events
        .into_iter()
        .map(|(sequence, event)| match event {
            Ok(ev) => describe(Some(sequence), &ev),
            Err(e) => format!("{sequence:>6} INVALID: {e}"),
        })
        .collect())
}

/// JSON form of an event for JSONL output.
pub fn event_json(
    seq: Option<u64>,
    stored_at: Option<DateTime<Utc>>,
    subject: &str,
    event: &VerifiedEvent,
) -> serde_json::Value {
    let data: serde_json::Value = event
        .record
        .data
        .as_deref()
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "sequence": seq,
        "stored_at": stored_at,
        "subject": subject,
        "id": event.record.id,
        "type": event.record.ty,
        "source": event.record.source,
        "time": event.record.time,
        "correlationid": event.record.correlation_id,
        "causationid": event.record.causation_id,
        "traceparent": event.record.traceparent,
        // The signature and the other extensions, for a reader that wants them. (`data` is
        // re-serialized here: checking the signature needs the stored bytes.)
        "murmursig": event.record.signature,
        "extensions": event.record.extensions.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "data": data,
    })
}

/// The filter for `tail`/`replay`: an explicit subject, else the type's subjects, else every
/// history event; limited to the realm only when one was chosen.
pub(crate) fn filter_for(
    subject: Option<&str>,
    ty: Option<&str>,
    realm: Option<&Token>,
) -> Result<SubjectFilter> {
    if let Some(s) = subject {
        return Ok(SubjectFilter::parse(s)?);
    }
    if let Some(t) = ty {
        let et = Catalog::standard()
            .get(t)
            .with_context(|| format!("unknown event type {t:?}; see `murmur subjects`"))?;
        return Ok(et.filter(realm));
    }
    let all = SubjectFilter::plane(murmur_subjects::Plane::Evt);
    Ok(match realm {
        Some(r) => all.realm(r.clone()),
        None => all,
    })
}

async fn tail(
    settings: &Settings,
    subject: Option<String>,
    ty: Option<String>,
    count: Option<u64>,
) -> Result<()> {
    let log = settings.open_log("murmur-tail").await?;
    let filter = filter_for(subject.as_deref(), ty.as_deref(), settings.read_realm())?;
    let mut messages = std::pin::pin!(log.tail(&filter).await?);
    eprintln!("tailing {filter} (ctrl-c to stop)");
    let mut seen = 0;
    loop {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            n = messages.next() => n,
        };
        let Some(msg) = next else { break };
        let stored = msg?;
        let (seq, at, msg) = (stored.sequence, stored.stored_at, stored.message);
        match log.decode_stored(&msg, seq, Some(at)) {
            Ok(ev) => {
                if ty.as_deref().is_some_and(|t| t != ev.record.ty) {
                    continue;
                }
                if settings.json {
                    out!(
                        "{}",
                        event_json(Some(seq), Some(at), msg.subject.as_str(), &ev)
                    );
                } else {
                    out!("{}", describe(Some(seq), &ev));
                }
            }
            Err(e) => out!(
                "{seq:>6} INVALID on {}: {e} (dead-lettered by the auditor)",
                msg.subject
            ),
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

/// Runs `murmur events ...`.
pub async fn run(settings: &Settings, command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Tail { subject, ty, count } => tail(settings, subject, ty, count).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_subjects::events::VoteCast;
    use murmur_subjects::{Draft, EventCodec, Identity, Token};

    #[test]
    fn describe_shows_the_distinguishing_tail_of_correlation_and_causation_ids() {
        let identity = Identity::generate();
        let realm = Token::new("acme").expect("token");
        let vote = VoteCast {
            choice: murmur_subjects::events::Choice::Approve,
            reason: String::new(),
        };
        // Two UUIDv7 ids made in the same minute share their first 8 characters.
        let (corr, cause) = (
            "01a20c61-62ca-7785-b0b0-16521201d2a9",
            "01a20c61-7000-7000-8000-0000c0ffee00",
        );
        let sealed = Draft::new(Token::new("p1").expect("token"), &vote)
            .expect("draft")
            .caused_by_ids(corr, cause, None)
            .seal(&identity, &realm);
        let codec = EventCodec::default();
        let (headers, body) = codec.encode(&sealed).expect("encode");
        let event = codec
            .decode(sealed.subject.as_str(), Some(&headers), &body)
            .expect("decode");
        let line = describe(Some(7), &event);
        assert!(line.contains("corr 1201d2a9 cause c0ffee00"), "{line}");
        let id = &sealed.record.id;
        assert!(
            line.contains(&format!(" id {} from ", &id[id.len() - 8..])),
            "{line}"
        );
        // An id derived from the aggregate's shows what follows the aggregate, and so does a
        // cause that names one.
        let sealed = Draft::new(Token::new("p1").expect("token"), &vote)
            .expect("draft")
            .with_id("p1-decided")
            .caused_by_ids(corr, "p1-deadline-0", None)
            .seal(&identity, &realm);
        let (headers, body) = codec.encode(&sealed).expect("encode");
        let event = codec
            .decode(sealed.subject.as_str(), Some(&headers), &body)
            .expect("decode");
        let line = describe(Some(8), &event);
        assert!(line.contains(" id decided from "), "{line}");
        assert!(line.contains(" cause deadline-0 "), "{line}");
    }
}
