//! `murmur status`: one summary of a realm — agents, their live counters, queues (and those
//! no online agent serves), tasks per state, proposals per state and recent throughput.
//!
//! Agents and tasks come from the log (the same projections the coordinator folds); live
//! counters from a `$SRV.STATS` scatter-gather (every running agent answers with its
//! [`MetricsSnapshot`]); throughput from the stored times of recent `task.completed` events.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use murmur_agents::metrics::MetricsSnapshot;
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::registry::AgentStatus;
use murmur_coordination::tasks::TaskState;
use murmur_subjects::{Domain, Plane, Projector, StartAt, SubjectFilter, Token};
use serde::Serialize;

use crate::settings::Settings;

/// How long `$SRV.STATS` replies are collected.
const GATHER: Duration = Duration::from_millis(500);

/// The summary, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Realm.
    pub realm: String,
    /// Agents per registry status.
    pub agents: BTreeMap<&'static str, usize>,
    /// Online agents with their live counters (when they answered `$SRV.STATS`).
    pub online: Vec<OnlineAgent>,
    /// Tasks per state.
    pub tasks: BTreeMap<&'static str, usize>,
    /// Pending tasks per required capability.
    pub queues: BTreeMap<String, usize>,
    /// Capabilities with pending tasks that no online agent running tasks offers: those
    /// tasks wait until one joins.
    pub unserved: Vec<String>,
    /// Proposals per state: `open`, `withdrawn`, `refused` (at open) or the decision's
    /// outcome.
    pub proposals: BTreeMap<String, usize>,
    /// How full the history stream is against its retention limits.
    pub history: Option<HistoryUsage>,
    /// `task.completed` events stored in the window.
    pub completed_in_window: u64,
    /// The window, in seconds.
    pub window_s: u64,
}

/// The history stream against its limits: past either, the server drops the oldest
/// events, which are the truth every projection is folded from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryUsage {
    /// Bytes stored.
    pub bytes: u64,
    /// The byte limit (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// Events stored.
    pub messages: u64,
    /// Age of the oldest stored event, in seconds.
    pub oldest_age_s: u64,
    /// The age limit in seconds (`None`: unlimited).
    pub max_age_s: Option<u64>,
    /// Set when either limit is 80% reached: what to do before events are dropped.
    pub warning: Option<String>,
}

/// Share of a retention limit past which `murmur status` warns.
pub const RETENTION_WARNING: f64 = 0.8;

impl HistoryUsage {
    /// The usage, with a warning when `bytes` or `oldest_age_s` has reached
    /// [`RETENTION_WARNING`] of its limit.
    pub fn new(
        bytes: u64,
        max_bytes: Option<u64>,
        messages: u64,
        oldest_age_s: u64,
        max_age_s: Option<u64>,
    ) -> Self {
        let near = |used: u64, limit: Option<u64>| {
            limit.filter(|&l| l > 0 && used as f64 >= l as f64 * RETENTION_WARNING)
        };
        let mut reasons = Vec::new();
        if let Some(limit) = near(bytes, max_bytes) {
            reasons.push(format!("{bytes} of {limit} bytes"));
        }
        if let Some(limit) = near(oldest_age_s, max_age_s) {
            reasons.push(format!(
                "the oldest event is {} of {} days old",
                oldest_age_s / 86_400,
                limit / 86_400
            ));
        }
        let warning = (!reasons.is_empty()).then(|| {
            format!(
                "the history stream is near its retention limit ({}): past it the server drops the oldest events; keep an archive with `murmur up --archive-dir DIR`, or raise max_bytes / max_age in the config's [log] section",
                reasons.join(", ")
            )
        });
        Self {
            bytes,
            max_bytes,
            messages,
            oldest_age_s,
            max_age_s,
            warning,
        }
    }
}

/// Reads the history stream's state and limits.
pub(crate) async fn history_usage(log: &murmur_subjects::EventLog) -> Result<HistoryUsage> {
    let mut stream = log.stream(&log.config().history_stream).await?;
    let info = stream.info().await?;
    let limit = |v: i64| u64::try_from(v).ok().filter(|&v| v > 0);
    let oldest = if info.state.messages == 0 {
        0
    } else {
        (chrono::Utc::now() - info.state.first_timestamp)
            .num_seconds()
            .max(0) as u64
    };
    Ok(HistoryUsage::new(
        info.state.bytes,
        limit(info.config.max_bytes),
        info.state.messages,
        oldest,
        Some(info.config.max_age.as_secs()).filter(|&s| s > 0),
    ))
}

/// One online agent.
#[derive(Debug, Serialize)]
pub struct OnlineAgent {
    /// Public key.
    pub id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Tasks it runs at once (its manifest's slots).
    pub slots: u32,
    /// Whether it runs tasks at all (its manifest declares `task.assigned`, or nothing).
    pub takes_tasks: bool,
    /// Live counters from `$SRV.STATS`.
    pub live: Option<MetricsSnapshot>,
}

/// Asks every micro service for its stats and keeps the murmur agents' snapshots.
async fn gather_stats(client: &async_nats::Client) -> Result<BTreeMap<String, MetricsSnapshot>> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply("$SRV.STATS", inbox, "".into())
        .await?;
    client.flush().await?;
    let mut out = BTreeMap::new();
    let deadline = tokio::time::sleep(GATHER);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            msg = replies.next() => {
                let Some(msg) = msg else { break };
                let Ok(stats) = serde_json::from_slice::<async_nats::service::Stats>(&msg.payload) else {
                    continue;
                };
                for endpoint in stats.endpoints {
                    if let Some(Ok(snapshot)) = endpoint.data.map(serde_json::from_value::<MetricsSnapshot>) {
                        out.insert(snapshot.agent.clone(), snapshot);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Builds the summary of `realm`.
pub async fn collect(settings: &Settings, window: Duration) -> Result<Status> {
    let log = settings.open_log("murmur-status").await?;
    let realm: Token = settings.realm.clone();
    let mut view = Projector::new(log.clone(), CoordinatorProjection::new(realm.clone()));
    view.catch_up().await?;
    let live = gather_stats(log.client()).await?;
    let history = history_usage(&log).await.ok();
    let state = view.state();
    let mut agents = BTreeMap::new();
    let mut online = Vec::new();
    for (id, a) in &state.registry.agents {
        let status = match a.status {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Left => "left",
        };
        *agents.entry(status).or_insert(0) += 1;
        if a.status == AgentStatus::Online {
            online.push(OnlineAgent {
                id: id.clone(),
                name: a.name.clone(),
                kind: a.kind.clone(),
                capabilities: a.capabilities.iter().cloned().collect(),
                slots: a.slots,
                takes_tasks: a.takes_tasks(),
                live: live.get(id).cloned(),
            });
        }
    }
    let mut queues = BTreeMap::new();
    for t in state.tasks.tasks.values() {
        if matches!(t.state, TaskState::Pending { .. }) {
            *queues.entry(t.requirements.capability.clone()).or_insert(0) += 1;
        }
    }
    let unserved = queues
        .keys()
        .filter(|c| {
            !state.registry.agents.values().any(|a| {
                a.status == AgentStatus::Online && a.takes_tasks() && a.capabilities.contains(*c)
            })
        })
        .cloned()
        .collect();
    let mut consensus = Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    consensus.catch_up().await?;
    let mut proposals = BTreeMap::new();
    for p in consensus.state().proposals.values() {
        *proposals.entry(p.state_name().to_string()).or_insert(0) += 1;
    }
    if !consensus.state().refused_proposals.is_empty() {
        proposals.insert("refused".into(), consensus.state().refused_proposals.len());
    }
    let since = chrono::Utc::now() - chrono::Duration::from_std(window)?;
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(realm.clone())
        .domain(Domain::Task)
        .verb(Token::new("completed")?);
    let mut completed_in_window = 0;
    log.read(&filter, StartAt::Time(since), None, |_| {
        completed_in_window += 1;
        ControlFlow::Continue(())
    })
    .await?;
    Ok(Status {
        realm: realm.to_string(),
        agents,
        online,
        tasks: state.tasks.counts(),
        queues,
        unserved,
        proposals,
        history,
        completed_in_window,
        window_s: window.as_secs(),
    })
}

/// `murmur status`.
pub async fn run(settings: &Settings, window_s: u64) -> Result<()> {
    let s = collect(settings, Duration::from_secs(window_s.max(1))).await?;
    if settings.json {
        out!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let join = |m: &BTreeMap<&'static str, usize>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out!("realm {}", s.realm);
    if let Some(h) = &s.history {
        out!(
            "history: {} events, {} bytes of {}, oldest {} days old of {}",
            h.messages,
            h.bytes,
            h.max_bytes.map_or("unlimited".into(), |b| b.to_string()),
            h.oldest_age_s / 86_400,
            h.max_age_s
                .map_or("unlimited".into(), |a| format!("{} days", a / 86_400))
        );
        if let Some(warning) = &h.warning {
            eprintln!("warning: {warning}");
        }
    }
    out!("agents: {}", join(&s.agents));
    for a in &s.online {
        let live = match &a.live {
            Some(m) if !a.takes_tasks => format!(
                "takes no tasks{}",
                if m.lame_duck { " · lame duck" } else { "" }
            ),
            Some(m) => format!(
                "running {}/{} · completed {} · failed {} · cancelled {}{}{}",
                m.running,
                a.slots,
                m.attempts_completed,
                m.attempts_failed,
                m.attempts_cancelled,
                m.generation
                    .as_ref()
                    .map(|g| format!(
                        " · {} tokens generated, {:.1} tokens/s",
                        g.generated_tokens,
                        g.tokens_per_second()
                    ))
                    .unwrap_or_default(),
                if m.lame_duck { " · lame duck" } else { "" }
            ),
            None => "no $SRV.STATS reply".into(),
        };
        out!(
            "  {}… {:<12} {:<10} {:<28} {live}",
            &a.id[..12.min(a.id.len())],
            a.name,
            a.kind,
            a.capabilities.join(",")
        );
    }
    out!("tasks: {}", join(&s.tasks));
    if s.queues.is_empty() {
        out!("queues: empty");
    } else {
        out!(
            "queues: {}",
            s.queues
                .iter()
                .map(|(c, n)| {
                    if s.unserved.contains(c) {
                        format!("{c} {n} waiting (no online agent runs {c} tasks)")
                    } else {
                        format!("{c} {n} waiting")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out!(
        "proposals: {}",
        if s.proposals.is_empty() {
            "none".to_string()
        } else {
            s.proposals
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    out!(
        "throughput: {} completed in the last {} s ({:.2}/s)",
        s.completed_in_window,
        s.window_s,
        s.completed_in_window as f64 / s.window_s as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_warns_at_eighty_percent_of_either_limit() {
        let day = 86_400;
        let quiet = HistoryUsage::new(100, Some(1000), 5, day, Some(365 * day));
        assert_eq!(quiet.warning, None);
        let full = HistoryUsage::new(800, Some(1000), 5, day, Some(365 * day));
        assert!(
            full.warning
                .as_deref()
                .is_some_and(|w| w.contains("800 of 1000 bytes"))
        );
        let old = HistoryUsage::new(1, Some(1000), 5, 300 * day, Some(365 * day));
        assert!(
            old.warning
                .as_deref()
                .is_some_and(|w| w.contains("300 of 365 days"))
        );
        let unlimited = HistoryUsage::new(u64::MAX, None, 5, u64::MAX, None);
        assert_eq!(unlimited.warning, None);
    }
}
