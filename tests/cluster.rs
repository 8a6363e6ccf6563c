//! The event log on a 3-node cluster with R3 streams: losing the node a client is connected
//! to, and the stream leader, loses no event, and the projection built live through the
//! failures equals a full replay.

use std::time::Duration;

use anyhow::{Context, Result};
use murmur_e2e::{DEADLINE, submitted};
use murmur_subjects::connect::ConnectOptions;
use murmur_subjects::log::Appended;
use murmur_subjects::{
    Draft, EventCodec, EventLog, Identity, LogConfig, Projector, SealedEvent, Token,
};
use murmur_tools::overview::OverviewProjection;
use murmur_tools::testkit::TestCluster;

async fn open(urls: &str, replicas: usize) -> Result<EventLog> {
    let client = ConnectOptions::servers(urls).connect().await?;
    let config = LogConfig {
        replicas,
        ..LogConfig::default()
    };
    // Stream creation needs a JetStream meta leader; retry until the cluster has one.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match EventLog::open(
            client.clone(),
            Identity::generate(),
            Token::new("acme")?,
            config.clone(),
            EventCodec::default(),
        )
        .await
        {
            Ok(log) => return Ok(log),
            Err(e) if tokio::time::Instant::now() < until => {
                note_retry(&e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn note_retry(msg: &str) {
    eprintln!("retrying: {msg}");
}

/// Appends with retries through failover; the event id makes retries idempotent.
async fn append_until_stored(log: &EventLog, sealed: &SealedEvent) -> Result<Appended> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let attempt = async { log.append_sealed(sealed).await?.wait().await };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(a)) => return Ok(a),
            Ok(Err(e)) if tokio::time::Instant::now() < until => note_retry(&e.to_string()),
            Err(_) if tokio::time::Instant::now() < until => note_retry("ack timed out"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("no ack for {} within {DEADLINE:?}", sealed.record.id),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_leader(log: &EventLog) -> Result<String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(mut s) = log.jetstream().get_stream("MURMUR_HISTORY").await
            && let Ok(info) = s.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
            && info
                .cluster
                .as_ref()
                .is_some_and(|c| c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current))
        {
            return Ok(leader);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "stream has no leader with current replicas"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which node to stop mid-run.
enum Victim {
    /// The node the writing client is connected to.
    ConnectedNode,
    /// The history stream's leader.
    StreamLeader,
}

async fn survives_losing(victim: Victim) -> Result<()> {
    let mut cluster = TestCluster::start().await?;
    let log = open(&cluster.urls(), 3).await?;
    let mut s = log.jetstream().get_stream("MURMUR_HISTORY").await?;
    assert_eq!(
        s.info().await?.config.num_replicas,
        3,
        "history stream is R3"
    );
    let leader = stream_leader(&log).await?;
    let seal = |n: u64| -> Result<SealedEvent> {
        Ok(log.seal(Draft::new(Token::new(format!("t{n}"))?, &submitted(n))?))
    };

    for n in 0..30 {
        append_until_stored(&log, &seal(n)?).await?;
    }
    let port = log.client().server_info().port;
    let stopped = match victim {
        Victim::ConnectedNode => cluster.cluster.nodes.iter().position(|n| n.port == port),
        Victim::StreamLeader => leader
            .trim_start_matches('n')
            .parse::<usize>()
            .ok()
            .map(|i| i - 1),
    }
    .context("victim node not found")?;
    cluster.stop(stopped).await?;
    for n in 30..60 {
        append_until_stored(&log, &seal(n)?).await?;
    }
    match victim {
        Victim::ConnectedNode => {
            assert_ne!(log.client().server_info().port, port, "client failed over")
        }
        Victim::StreamLeader => assert_ne!(
            stream_leader_any(&log).await?,
            leader,
            "a new leader took over"
        ),
    }

    // Nothing lost, nothing doubled. JetStream API calls may time out while the cluster
    // settles after losing a node; reading is idempotent, so retry until the deadline.
    let until = tokio::time::Instant::now() + DEADLINE;
    let replay = loop {
        let attempt = async {
            let last = log.last_sequence("MURMUR_HISTORY").await?;
            let mut replay = Projector::new(
                log.clone(),
                OverviewProjection {
                    realm: Token::new("acme")?,
                },
            );
            replay.catch_up().await?;
            Ok::<_, anyhow::Error>((last, replay))
        };
        match attempt.await {
            Ok(r) => break r,
            Err(e) if tokio::time::Instant::now() < until => note_retry(&e.to_string()),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (last, replay) = replay;
    assert_eq!(last, 60);
    assert_eq!(replay.state().tasks.len(), 60);
    assert_eq!(replay.stats().applied, 60);

    // The stopped node comes back, catches up, and a reader connected to it alone replays
    // the same state.
    cluster.restart(stopped).await?;
    let other = open(&cluster.cluster.nodes[stopped].url(), 3).await?;
    let mut again = Projector::new(
        other,
        OverviewProjection {
            realm: Token::new("acme")?,
        },
    );
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if again.catch_up().await.is_ok() && again.state() == replay.state() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "restarted node never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The current leader, without requiring every replica to be current (one is down).
async fn stream_leader_any(log: &EventLog) -> Result<String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(mut s) = log.jetstream().get_stream("MURMUR_HISTORY").await
            && let Ok(info) = s.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return Ok(leader);
        }
        anyhow::ensure!(tokio::time::Instant::now() < until, "stream has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn r3_log_survives_losing_the_connected_node() -> Result<()> {
    survives_losing(Victim::ConnectedNode).await
}

#[tokio::test]
async fn r3_log_survives_losing_the_stream_leader() -> Result<()> {
    survives_losing(Victim::StreamLeader).await
}
