//! The three workloads a run keeps going while faults come and go: tasks submitted, proposals
//! opened, knowledge facts written by three writers. Each write is retried with its own
//! event id until acknowledged, and every acknowledgement is recorded for the checker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use anyhow::Result;
use murmur_knowledge::{FactDraft, FactId, KnowledgeReplica, ReplicaConfig, Value};
use murmur_subjects::events::{ProposalOpened, Protocol, TaskSubmitted};
use murmur_subjects::{Draft, EventLog, Token};
use tokio::sync::watch;

use crate::check::Acked;

/// The knowledge space the writers write to.
pub(crate) const SPACE: &str = "chaos";
/// The lease of every task: shorter than the pause-agents fault, so paused work is retried.
pub(crate) const LEASE_MS: u64 = 3_000;

/// Shared between the workloads and the nemesis.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) acked: Arc<Mutex<Vec<Acked>>>,
    /// When each acknowledgement (of any workload) arrived.
    pub(crate) ack_times: Arc<Mutex<Vec<Instant>>>,
    pub(crate) last_ack: Arc<watch::Sender<Instant>>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn record(&self, id: &str, sequence: u64) {
        if let Ok(mut acked) = self.acked.lock() {
            acked.push(Acked {
                id: id.to_string(),
                sequence,
            });
        }
        self.acknowledged();
    }

    pub(crate) fn acknowledged(&self) {
        let now = Instant::now();
        if let Ok(mut times) = self.ack_times.lock() {
            times.push(now);
        }
        self.last_ack.send_replace(now);
    }

    pub(crate) fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Appends `draft` until acknowledged (same event id on every try, so the server stores it
/// once) or the workloads stop; the acknowledged sequence, or `None`.
pub(crate) async fn append_until_acked(
    log: &EventLog,
    draft: Draft,
    shared: &Shared,
) -> Option<u64> {
    let sealed = log.seal(draft);
    loop {
        let attempt = async { log.append_sealed(&sealed).await?.wait().await };
        if let Ok(Ok(appended)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
            shared.record(&sealed.record.id, appended.sequence);
            return Some(appended.sequence);
        }
        if shared.stopped() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn submit_tasks(log: EventLog, shared: Shared) -> Result<(Vec<String>, usize)> {
    let (mut acked, mut unacked) = (Vec::new(), 0);
    let mut n = 0u64;
    while !shared.stopped() {
        let id = format!("t{n}");
        let payload = TaskSubmitted {
            capability: "test.run".into(),
            input: serde_json::json!({ "n": n, "sleep_ms": 20 }),
            lease_ms: Some(LEASE_MS),
            max_attempts: Some(10),
            ..Default::default()
        };
        match append_until_acked(
            &log,
            Draft::new(Token::new(id.as_str())?, &payload)?,
            &shared,
        )
        .await
        {
            Some(_) => acked.push(id),
            None => unacked += 1,
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((acked, unacked))
}

pub(crate) async fn open_proposals(
    log: EventLog,
    voters: BTreeMap<String, u32>,
    shared: Shared,
) -> Result<Vec<String>> {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !shared.stopped() {
        let id = format!("p{n}");
        let opened = ProposalOpened {
            question: format!("chaos proposal {n}"),
            payload: serde_json::Value::Null,
            protocol: Protocol::SimpleMajority,
            voters: voters.clone(),
            quorum: 2,
            deadline: chrono::Utc::now() + chrono::Duration::seconds(30),
            category: "chaos".into(),
            stimulus: 1.0,
        };
        if append_until_acked(
            &log,
            Draft::new(Token::new(id.as_str())?, &opened)?,
            &shared,
        )
        .await
        .is_some()
        {
            acked.push(id);
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    Ok(acked)
}

/// One knowledge writer: a fact every 300 ms, flushed at once; facts count as acknowledged
/// once a flush after them succeeds. After the workloads stop it keeps flushing (up to
/// `settle`) so nothing it wrote stays unsent.
pub(crate) async fn write_facts(
    log: EventLog,
    writer: usize,
    shared: Shared,
    settle: Duration,
) -> Result<(KnowledgeReplica, Vec<FactId>)> {
    let mut replica = loop {
        match KnowledgeReplica::open(log.clone(), ReplicaConfig::space(SPACE)).await {
            Ok(r) => break r,
            Err(_) if !shared.stopped() => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => return Err(e.into()),
        }
    };
    let (mut acked, mut pending) = (Vec::new(), Vec::new());
    let mut n = 0i64;
    while !shared.stopped() {
        pending.push(replica.put(
            SPACE,
            &FactDraft::new(format!("w{writer}:{n}"), "n", Value::Int(n)),
        )?);
        n += 1;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), replica.flush()).await {
            acked.append(&mut pending);
            shared.acknowledged();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let until = Instant::now() + settle;
    while !pending.is_empty() && Instant::now() < until {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(15), replica.flush()).await {
            acked.append(&mut pending);
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok((replica, acked))
}
