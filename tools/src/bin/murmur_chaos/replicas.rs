//! Every node's copy of the streams once nothing writes: each stream's replica state on
//! each node (the monitoring port's `/jsz`), and the history stream read message by message
//! through each node in turn as its leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::ClusterInfo;
use murmur_subjects::EventLog;
use murmur_testkit::TestCluster;

use crate::check::{ReplicaCheck, ReplicaState, compare_copies, differing_replicas};

/// Compares the nodes' copies: the replica states until they agree or `deadline` passes,
/// then the history stream through each node as leader. The node whose store was
/// `damaged` last is read last and keeps the lead while the checker reads the log (the
/// checker's consumers may still be led by any node: placement is the server's).
pub async fn compare(
    cluster: &TestCluster,
    owner: &EventLog,
    damaged: Option<usize>,
    deadline: Duration,
) -> ReplicaCheck {
    let mut replicas = replicas_agreeing(cluster, deadline).await;
    eprintln!(
        "  replicas compared in {:.0} s{}",
        replicas.waited_s,
        if replicas.differing.is_empty() {
            String::new()
        } else {
            format!("; differing: {}", replicas.differing.join(", "))
        }
    );
    let phase = Instant::now();
    // Each copy of the history stream, read message by message through its node as leader.
    // Where the cluster has more nodes than the stream has replicas (a membership change
    // moved one), a node holding none is not read; otherwise every node must hold one.
    let history = &owner.config().history_stream;
    let spare_nodes = replicas
        .wanted
        .get(history)
        .is_some_and(|&wanted| cluster.cluster.nodes.len() > wanted);
    let holds_history = |n: usize| {
        !spare_nodes
            || replicas
                .streams
                .get(history)
                .is_none_or(|copies| copies.get(n).is_some_and(Option::is_some))
    };
    let mut readers: Vec<usize> = (0..cluster.cluster.nodes.len())
        .filter(|n| Some(*n) != damaged && holds_history(*n))
        .collect();
    readers.extend(damaged.filter(|n| holds_history(*n)));
    let last_seq = replicas
        .streams
        .get(&owner.config().history_stream)
        .and_then(|r| r.iter().flatten().map(|s| s.last_seq).max())
        .unwrap_or_default();
    let mut copies = Vec::new();
    for node in readers {
        // A leader election meanwhile (the cluster's own doing) spoils a read: tried again.
        let mut copy = history_as_held_by(owner, node, last_seq).await;
        for _ in 0..2 {
            if copy.is_ok() {
                break;
            }
            copy = history_as_held_by(owner, node, last_seq).await;
        }
        copies.push((node, copy));
    }
    (replicas.history_read, replicas.history_differing) = compare_copies(&copies);
    eprintln!(
        "  history read through each node in {:.0} s{}",
        phase.elapsed().as_secs_f64(),
        if replicas.history_differing.is_empty() {
            String::new()
        } else {
            format!("; differing: {}", replicas.history_differing.join("; "))
        }
    );
    replicas
}

/// The history stream's cluster view (leader and followers), or `None` when none answers
/// within 5 s.
async fn history_cluster(log: &EventLog) -> Option<ClusterInfo> {
    let ask = async {
        let mut stream = async_nats::jetstream::new(log.client().clone())
            .get_stream(log.config().history_stream.clone())
            .await
            .ok()?;
        stream.info().await.ok()?.cluster.clone()
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}

/// A node's index (0-based) from its server name (`n1`…).
fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix('n')?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// The history stream's leader and its other peers (0-based), or `None` when no leader
/// answers within 5 s.
pub async fn stream_peers_now(log: &EventLog) -> Option<(usize, Vec<usize>)> {
    let cluster = history_cluster(log).await?;
    let leader = cluster.leader.as_deref().and_then(node_index)?;
    let followers = cluster
        .replicas
        .iter()
        .filter_map(|r| node_index(&r.name))
        .collect();
    Some((leader, followers))
}

/// The history stream's peers that are current (its leader and the replicas caught up),
/// sorted, or `None` when no leader answers within 5 s.
pub async fn current_peers(log: &EventLog) -> Option<Vec<usize>> {
    let cluster = history_cluster(log).await?;
    let mut peers = vec![cluster.leader.as_deref().and_then(node_index)?];
    peers.extend(
        cluster
            .replicas
            .iter()
            .filter(|r| r.current && !r.offline)
            .filter_map(|r| node_index(&r.name)),
    );
    peers.sort_unstable();
    Some(peers)
}

/// The history stream's leader (0-based), or `None` when none answers within 5 s.
pub async fn stream_leader_now(log: &EventLog) -> Option<usize> {
    history_cluster(log)
        .await?
        .leader
        .as_deref()
        .and_then(node_index)
}

/// The history stream as node `node` holds it: the lead handed to it, then every sequence
/// up to `last_seq` fetched with the message-get API, which the stream's leader answers
/// from its own store. Each sequence's digest (subject, headers, payload, stored time);
/// `None` for a sequence it does not hold. `Err` says why it could not be read.
async fn history_as_held_by(
    log: &EventLog,
    node: usize,
    last_seq: u64,
) -> Result<Vec<Option<u64>>, String> {
    use futures::StreamExt;
    use std::hash::{Hash, Hasher};
    lead_from(log, node).await?;
    let stream = async_nats::jetstream::new(log.client().clone())
        .get_stream(log.config().history_stream.clone())
        .await
        .map_err(|e| e.to_string())?;
    let digests = futures::stream::iter(1..=last_seq)
        .map(|seq| {
            let stream = &stream;
            async move {
                let message = stream.get_raw_message(seq).await.ok()?;
                let mut headers: Vec<(String, Vec<String>)> = message
                    .headers
                    .iter()
                    .map(|(name, values)| {
                        (
                            name.to_string(),
                            values.iter().map(|v| v.to_string()).collect(),
                        )
                    })
                    .collect();
                headers.sort();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                (
                    message.subject.as_str(),
                    headers,
                    message.payload.as_ref(),
                    message.time.timestamp_nanos_opt(),
                )
                    .hash(&mut hasher);
                Some(hasher.finish())
            }
        })
        .buffered(32)
        .collect::<Vec<_>>()
        .await;
    if stream_leader_now(log).await != Some(node) {
        return Err(format!("n{} lost the lead while it was read", node + 1));
    }
    Ok(digests)
}

/// Hands the history stream's leadership to node `node` (a leader step-down naming it as
/// preferred), asking again until it leads or 60 s pass: so what it serves after its store
/// was damaged is what the platform and the checker read. It is asked only once the node's
/// replica is current: a step-down towards a node still catching up moves the lead to
/// another node instead, and each such election stalls the catch-up. Says how it went:
/// `Ok` once the node leads.
pub async fn lead_from(log: &EventLog, node: usize) -> Result<String, String> {
    let name = format!("n{}", node + 1);
    // The server's own API: async-nats has no call for a step-down.
    let subject = format!(
        "$JS.API.STREAM.LEADER.STEPDOWN.{}",
        log.config().history_stream
    );
    let body = serde_json::json!({ "placement": { "preferred": name } }).to_string();
    let began = Instant::now();
    let until = began + Duration::from_secs(60);
    let mut refused = String::from("its replica did not become current");
    let mut current_after = None;
    while Instant::now() < until {
        let (leader, current) = lead_and_currency(log, &name).await;
        if leader == Some(node) {
            return Ok(match current_after {
                Some(s) if s >= 1.0 => {
                    format!("{name} was current again after {s:.0} s, then led the history stream")
                }
                _ => format!("{name} then led the history stream"),
            });
        }
        if !current {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        current_after.get_or_insert(began.elapsed().as_secs_f64());
        match log
            .client()
            .request(subject.clone(), body.clone().into())
            .await
        {
            Ok(reply) => {
                let answer: serde_json::Value =
                    serde_json::from_slice(&reply.payload).unwrap_or_default();
                match answer.get("error") {
                    Some(error) => {
                        refused = error["description"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    }
                    // Stepped down: an election follows. Asking again before it is over
                    // would make the new leader step down too, whoever it is.
                    None => {
                        let elected = Instant::now() + Duration::from_secs(5);
                        while Instant::now() < elected {
                            let now = stream_leader_now(log).await;
                            if now.is_some() && now != leader {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        continue;
                    }
                }
            }
            Err(e) => refused = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!(
        "{name} did not take the history stream's lead within 60 s ({refused})"
    ))
}

/// The history stream's leader (0-based) and whether node `name`'s replica is current (a
/// follower caught up with the leader), asked with a short deadline.
async fn lead_and_currency(log: &EventLog, name: &str) -> (Option<usize>, bool) {
    match history_cluster(log).await {
        Some(cluster) => (
            cluster.leader.as_deref().and_then(node_index),
            cluster.replicas.iter().any(|r| r.name == name && r.current),
        ),
        None => (None, false),
    }
}

/// Every stream's replicas on every node, read from the nodes' monitoring ports, again
/// every half second until they agree or `deadline` passes.
async fn replicas_agreeing(cluster: &TestCluster, deadline: Duration) -> ReplicaCheck {
    let began = Instant::now();
    loop {
        let (streams, wanted) = replica_states(cluster).await;
        let differing = differing_replicas(&streams, &wanted);
        if differing.is_empty() || began.elapsed() > deadline {
            return ReplicaCheck {
                streams,
                wanted,
                differing,
                waited_s: began.elapsed().as_secs_f64(),
                ..ReplicaCheck::default()
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each node's `/jsz` view of the streams it holds a replica of, and how many replicas each
/// stream's configuration asks for. A node that does not answer holds none.
async fn replica_states(
    cluster: &TestCluster,
) -> (
    BTreeMap<String, Vec<Option<ReplicaState>>>,
    BTreeMap<String, usize>,
) {
    let nodes = cluster.cluster.nodes.len();
    let (mut streams, mut wanted) = (BTreeMap::new(), BTreeMap::<String, usize>::new());
    for (i, node) in cluster.cluster.nodes.iter().enumerate() {
        let Ok(jsz) = murmur_testkit::server::monitor_json(
            node.monitor_port,
            "/jsz?accounts=true&streams=true",
        )
        .await
        else {
            continue;
        };
        let accounts = jsz["account_details"].as_array().into_iter().flatten();
        for stream in accounts.flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()) {
            let Some(name) = stream["name"].as_str() else {
                continue;
            };
            let state = &stream["state"];
            let count = |field: &str| state[field].as_u64().unwrap_or_default();
            streams
                .entry(name.to_string())
                .or_insert_with(|| vec![None; nodes])[i] = Some(ReplicaState {
                messages: count("messages"),
                first_seq: count("first_seq"),
                last_seq: count("last_seq"),
            });
            let asked = 1 + stream["cluster"]["replicas"].as_array().map_or(0, Vec::len);
            let most = wanted.entry(name.to_string()).or_default();
            *most = (*most).max(asked);
        }
    }
    (streams, wanted)
}
