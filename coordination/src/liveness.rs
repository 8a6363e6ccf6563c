//! Liveness: an agent is offline after three heartbeat intervals without a beat.
//!
//! [`LivenessTracker`] is pure (time comes from a [`Clock`] the caller injects); the
//! [`run_monitor`] edge feeds it verified heartbeats from core NATS (those that arrive
//! together decoded together, their signatures checked in one batch) and appends `agent.offline`
//! events. The offline event's id is derived from the agent and its last beat, so several
//! monitors that see the same silence write one event (server dedupe). Liveness is judged only
//! while the monitor itself is connected: a monitor that lost NATS declares nobody dead.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use murmur_subjects::clock::Clock;
use murmur_subjects::codec::DECODED_TOGETHER;
use murmur_subjects::events::{AgentHeartbeat, AgentOffline, AgentResumed};
use murmur_subjects::{Draft, EventLog, EventType, IngestError, LogError, Token, VerifiedEvent};
use sha2::{Digest, Sha256};

/// Missed intervals after which an agent is offline.
pub const MISSED_INTERVALS: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
struct Beat {
    /// When this tracker heard it (its own clock).
    heard_at: DateTime<Utc>,
    interval: Duration,
    declared: bool,
    /// The heartbeat event's id, correlation id and time (the agent's clock).
    event_id: String,
    correlation: Option<String>,
    sent_at: DateTime<Utc>,
}

/// A verdict: this agent went silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Agent public key.
    pub agent: String,
    /// Id of the last heartbeat event heard (every monitor that heard it agrees on it).
    pub last_beat_id: String,
    /// That heartbeat's correlation id (the agent's `agent.joined`), when it had one.
    pub last_beat_correlation: Option<String>,
    /// Time of the last beat, as the agent stamped it.
    pub last_seen: DateTime<Utc>,
    /// Its announced interval.
    pub interval: Duration,
    /// Intervals missed so far.
    pub missed: u32,
}

/// Tracks the last beat per agent. Pure.
#[derive(Debug, Default, Clone)]
pub struct LivenessTracker {
    beats: BTreeMap<String, Beat>,
}

impl LivenessTracker {
    /// Records heartbeat event `event_id` in flow `correlation` (stamped `sent_at` by the
    /// agent), heard at `heard_at` on this tracker's clock. Returns true when the agent had
    /// been declared silent: it is back.
    pub fn beat(
        &mut self,
        agent: &str,
        heard_at: DateTime<Utc>,
        interval: Duration,
        event_id: &str,
        correlation: Option<&str>,
        sent_at: DateTime<Utc>,
    ) -> bool {
        let was_declared = self.beats.get(agent).is_some_and(|b| b.declared);
        self.beats.insert(
            agent.to_string(),
            Beat {
                heard_at,
                interval,
                declared: false,
                event_id: event_id.to_string(),
                correlation: correlation.map(str::to_string),
                sent_at,
            },
        );
        was_declared
    }

    /// Forgets an agent (it left).
    pub fn forget(&mut self, agent: &str) {
        self.beats.remove(agent);
    }

    /// Agents silent for [`MISSED_INTERVALS`] intervals at `now`, each reported once per
    /// silence. Reports nothing while `connected` is false.
    pub fn silent(&mut self, now: DateTime<Utc>, connected: bool) -> Vec<Silence> {
        if !connected {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (agent, beat) in &mut self.beats {
            if beat.declared {
                continue;
            }
            let interval = chrono::Duration::from_std(beat.interval).unwrap_or_default();
            let elapsed = now - beat.heard_at;
            if interval > chrono::Duration::zero() && elapsed >= interval * MISSED_INTERVALS as i32
            {
                beat.declared = true;
                out.push(Silence {
                    agent: agent.clone(),
                    last_beat_id: beat.event_id.clone(),
                    last_beat_correlation: beat.correlation.clone(),
                    last_seen: beat.sent_at,
                    interval: beat.interval,
                    missed: (elapsed.num_milliseconds() / interval.num_milliseconds().max(1))
                        as u32,
                });
            }
        }
        out
    }
}

/// The deterministic id of the offline event for one silence: derived from the agent and the
/// id of the last heartbeat heard, which every monitor that heard it agrees on.
pub fn offline_event_id(agent: &str, last_beat_id: &str) -> String {
    let digest = Sha256::digest(format!("agent.offline\n{agent}\n{last_beat_id}"));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Hears heartbeats that arrived together: decoded together, so the signatures of many
/// agents' beats (each signed by its own agent) are checked in one batch.
async fn hear_all(
    log: &EventLog,
    tracker: &mut LivenessTracker,
    clock: &dyn Clock,
    beats: &[async_nats::Message],
) -> Result<(), LogError> {
    for decoded in log.codec().decode_messages(beats) {
        hear(log, tracker, clock, decoded).await?;
    }
    Ok(())
}

/// The beats the subscription holds now, after `first`: up to [`DECODED_TOGETHER`] in all.
fn with_ready(
    first: async_nats::Message,
    beats: &mut async_nats::Subscriber,
) -> Vec<async_nats::Message> {
    let mut together = vec![first];
    while together.len() < DECODED_TOGETHER
        && let Some(Some(next)) = beats.next().now_or_never()
    {
        together.push(next);
    }
    together
}

async fn hear(
    log: &EventLog,
    tracker: &mut LivenessTracker,
    clock: &dyn Clock,
    decoded: Result<VerifiedEvent, IngestError>,
) -> Result<(), LogError> {
    match decoded {
        Ok(ev) => {
            // Only an agent can beat for itself.
            if let Ok(hb) = ev.payload::<AgentHeartbeat>()
                && ev.subject.aggregate().as_str() == ev.emitter()
            {
                let sent_at = ev.record.time.unwrap_or_else(|| clock.now());
                let back = tracker.beat(
                    ev.emitter(),
                    clock.now(),
                    Duration::from_millis(hb.interval_ms),
                    &ev.record.id,
                    ev.record.correlation_id.as_deref(),
                    sent_at,
                );
                if back {
                    let draft = Draft::new(
                        ev.subject.aggregate().clone(),
                        &AgentResumed {
                            heartbeat_id: ev.record.id.clone(),
                        },
                    )?
                    .with_id(format!("resumed-{}", ev.record.id))
                    .caused_by(&ev.record);
                    match log.append(draft).await {
                        Ok(_) => tracing::info!(agent = ev.emitter(), "agent resumed"),
                        // The log without a leader for a moment: the monitor stays up.
                        Err(e) if e.is_transient() => tracing::warn!(
                            agent = ev.emitter(),
                            error = %e,
                            "agent resumed, not recorded: the log is unavailable"
                        ),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // The auditor dead-letters bad live messages; the monitor just ignores them.
        Err(e) => tracing::debug!(error = %e, "ignoring unverifiable heartbeat"),
    }
    Ok(())
}

/// Runs a liveness monitor until `shutdown`: verifies heartbeats of `log`'s realm and appends
/// `agent.offline` for agents silent three intervals. Returns how many it declared.
pub async fn run_monitor(
    log: EventLog,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogError> {
    let mut roles = murmur_subjects::grants::RoleBook::default();
    murmur_subjects::projection::read_roles(&log, &mut roles, None).await?;
    crate::coordinator::warn_without_role(&roles, &log, murmur_subjects::roles::Role::Monitor);
    let filter = EventType::of::<AgentHeartbeat>().filter(Some(log.realm()));
    let mut beats = log
        .client()
        .subscribe(filter.to_string())
        .await
        .map_err(|e| LogError::Consumer(e.into()))?;
    let mut tracker = LivenessTracker::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut declared = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            msg = beats.next() => {
                let Some(msg) = msg else { break };
                let together = with_ready(msg, &mut beats);
                hear_all(&log, &mut tracker, clock.as_ref(), &together).await?;
            }
            _ = tick.tick() => {
                // Judge only after every beat already delivered has been heard: a busy
                // monitor must not mistake its own backlog for silence.
                while let Some(Some(msg)) = beats.next().now_or_never() {
                    let together = with_ready(msg, &mut beats);
                    hear_all(&log, &mut tracker, clock.as_ref(), &together).await?;
                }
                let connected = matches!(log.client().connection_state(), async_nats::connection::State::Connected);
                for s in tracker.silent(clock.now(), connected) {
                    let Ok(agent) = Token::new(s.agent.as_str()) else { continue };
                    let payload = AgentOffline {
                        last_seen: murmur_subjects::envelope::format_time(s.last_seen),
                        interval_ms: s.interval.as_millis() as u64,
                        missed_intervals: s.missed,
                    };
                    // In the agent's flow, caused by the last beat heard: every monitor that
                    // heard it writes the same event, deduplicated by the id.
                    let draft = Draft::new(agent, &payload)?
                        .with_id(offline_event_id(&s.agent, &s.last_beat_id))
                        .caused_by_ids(
                            s.last_beat_correlation.clone().unwrap_or_else(|| s.last_beat_id.clone()),
                            s.last_beat_id.clone(),
                            None,
                        );
                    let appended = match log.append(draft).await {
                        Ok((_, appended)) => appended,
                        // The log without a leader for a moment: the monitor stays up (leases
                        // still take the agent's tasks back).
                        Err(e) if e.is_transient() => {
                            tracing::warn!(agent = %s.agent, error = %e, "agent offline, not recorded: the log is unavailable");
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if !appended.duplicate {
                        declared += 1;
                    }
                    tracing::info!(agent = %s.agent, duplicate = appended.duplicate, "agent offline");
                }
            }
        }
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_subjects::clock::ManualClock;

    /// Agent `a` beats once (event `b1`, 1 s interval), heard now.
    fn beat_b1(tr: &mut LivenessTracker, clock: &ManualClock) -> bool {
        tr.beat(
            "a",
            clock.now(),
            Duration::from_secs(1),
            "b1",
            None,
            clock.now(),
        )
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn offline_after_three_missed_intervals_once() {
        let clock = ManualClock::new(t0());
        let mut tr = LivenessTracker::default();
        let _ = beat_b1(&mut tr, &clock);
        clock.advance(Duration::from_millis(2_900));
        assert!(tr.silent(clock.now(), true).is_empty());
        clock.advance(Duration::from_millis(100));
        let s = tr.silent(clock.now(), true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].agent, "a");
        assert_eq!(s[0].missed, 3);
        clock.advance(Duration::from_secs(10));
        assert!(
            tr.silent(clock.now(), true).is_empty(),
            "reported once per silence"
        );
        // A new beat starts a new silence.
        assert!(
            beat_b1(&mut tr, &clock),
            "a beat after a declared silence means the agent is back"
        );
        clock.advance(Duration::from_secs(3));
        assert_eq!(tr.silent(clock.now(), true).len(), 1);
    }

    #[test]
    fn a_disconnected_judge_declares_nobody() {
        let clock = ManualClock::new(t0());
        let mut tr = LivenessTracker::default();
        let _ = beat_b1(&mut tr, &clock);
        clock.advance(Duration::from_secs(60));
        assert!(tr.silent(clock.now(), false).is_empty());
        assert_eq!(tr.silent(clock.now(), true).len(), 1);
    }

    #[test]
    fn offline_ids_are_deterministic() {
        assert_eq!(
            offline_event_id("a", "beat-1"),
            offline_event_id("a", "beat-1")
        );
        assert_ne!(
            offline_event_id("a", "beat-1"),
            offline_event_id("b", "beat-1")
        );
        assert_ne!(
            offline_event_id("a", "beat-1"),
            offline_event_id("a", "beat-2")
        );
        assert_eq!(offline_event_id("a", "beat-1").len(), 32);
    }
}
