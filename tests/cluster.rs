//! The event log on a 3-node cluster with R3 streams: losing the node a client is connected
//! to, and the stream leader, loses no event, and the projection built live through the
//! failures equals a full replay. On a 4-node cluster, the history stream moved off its
//! leader onto the fourth node while written (a membership change), alone and through a
//! partition, keeps every acknowledged event once on every new peer; and a dead node
//! replaced by a new one (added, then the dead one removed from the meta group), alone and
//! through a partition, does too, with every other stream, bucket and object store moved
//! onto the new node and read back. A power failure of every node at once (stores on lazy
//! disks that drop what was not synced) keeps every acknowledged event, dead letter,
//! checkpoint and snapshot with `sync_interval: always`; with the server's default the loss
//! is counted, stream by stream. A cluster being upgraded from 2.11 or 2.12, led by its
//! older node, runs the log, its buckets and its object stores for a participant on a
//! newer node.

use std::time::Duration;

use anyhow::{Context, Result};
use murmur_e2e::{DEADLINE, submitted};
use murmur_subjects::log::Appended;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventLog, Identity, Projector, SealedEvent, Token};
use murmur_tools::overview::OverviewProjection;

/// A log on the cluster through the servers at `urls` only, with operator credentials.
async fn open(
    cluster: &murmur_testkit::TestCluster,
    urls: &str,
    replicas: usize,
) -> Result<EventLog> {
    use murmur_subjects::connect::{Auth, ConnectOptions};
    let identity = Identity::generate();
    let creds = cluster.creds_for("acme", Role::Operator, &identity)?;
    let client = ConnectOptions::servers(urls)
        .auth(Auth::CredsFile { path: creds })
        .connect()
        .await?;
    let options =
        EventLog::options(identity, Token::new("acme")?).config(murmur_subjects::LogConfig {
            replicas,
            ..Default::default()
        });
    // As a participant does (`Settings::open_log_as`): a cluster still electing its
    // JetStream leaders times requests out for a few seconds; that is waited out.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match options.clone().open(client.clone()).await {
            Ok(log) => return Ok(log),
            Err(e) if e.is_transient() && tokio::time::Instant::now() < until => {
                note_retry(&e.to_string());
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
    Ok(three_current_peers(log, HISTORY, None)
        .await?
        .swap_remove(0))
}

/// Which node to stop mid-run.
enum Victim {
    /// The node the writing client is connected to.
    ConnectedNode,
    /// The history stream's leader.
    StreamLeader,
}

async fn survives_losing(victim: Victim) -> Result<()> {
    let (mut cluster, log) = murmur_e2e::r3_cluster(Identity::generate()).await?;
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
    murmur_e2e::ensure_r3(&log).await?;
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

    // Nothing lost, nothing doubled.
    let (last, replay) = read_back(&log).await?;
    assert_eq!(last, 60);
    assert_eq!(replay.state().tasks.len(), 60);
    assert_eq!(replay.stats().applied, 60);

    // The stopped node comes back, catches up, and a reader connected to it alone replays
    // the same state.
    cluster.restart(stopped).await?;
    let other = open(&cluster, &cluster.cluster.nodes[stopped].url(), 3).await?;
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

/// The history stream's last sequence and a replay of it from the start. JetStream API
/// calls may time out while the cluster settles after a fault; reading is idempotent, so
/// it is retried until the deadline.
async fn read_back(log: &EventLog) -> Result<(u64, Projector<OverviewProjection>)> {
    retried("reading the history back", || async {
        let last = log.last_sequence(HISTORY).await?;
        let mut replay = Projector::new(
            log.clone(),
            OverviewProjection {
                realm: Token::new("acme")?,
            },
        );
        replay.catch_up().await?;
        Ok((last, replay))
    })
    .await
}

/// Runs `attempt` until it succeeds, up to [`DEADLINE`]: JetStream API requests time out
/// while a cluster settles after a fault (or writes each synced on a FUSE disk), and what
/// is retried here only reads or writes the same again.
async fn retried<T, F>(what: &str, mut attempt: impl FnMut() -> F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < until => note_retry(&format!("{what}: {e}")),
            Err(e) => return Err(e.context(what.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The current leader, without requiring every replica to be current (one is down).
async fn stream_leader_any(log: &EventLog) -> Result<String> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(leader) = stream_leader_once(log).await {
            return Ok(leader);
        }
        anyhow::ensure!(tokio::time::Instant::now() < until, "stream has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One 3-node cluster at a time: with two or three clusters (and agents) at once on a
/// 2-core machine, a restarted node's JetStream took over a minute to answer, which blurs
/// what the tests are about.
/// (An async mutex: each test has its own runtime, and a failed test releases it.)
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().await
}

#[tokio::test]
async fn r3_log_survives_losing_the_connected_node() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    survives_losing(Victim::ConnectedNode).await
}

#[tokio::test]
async fn r3_log_survives_losing_the_stream_leader() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    survives_losing(Victim::StreamLeader).await
}

/// The `task.completed` events stored per task (`sequence:event id`), with retries while
/// the cluster settles.
async fn completions(log: &EventLog) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
    use murmur_subjects::StartAt;
    let filter = murmur_subjects::SubjectFilter::plane(murmur_subjects::Plane::Evt)
        .realm(Token::new("acme")?)
        .domain(murmur_subjects::Domain::Task)
        .verb(Token::new("completed")?);
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut counts = std::collections::BTreeMap::new();
        let read = log
            .read(&filter, StartAt::Beginning, None, |m| {
                let subject = murmur_subjects::Subject::parse(m.message.subject.as_str());
                if let Ok(s) = subject {
                    let id = m
                        .message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    counts
                        .entry(s.aggregate().to_string())
                        .or_insert_with(Vec::new)
                        .push(format!("{}:{id}", m.sequence));
                }
                std::ops::ControlFlow::Continue(())
            })
            .await;
        match read {
            Ok(_) => return Ok(counts),
            Err(e) if tokio::time::Instant::now() < until => note_retry(&e.to_string()),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker agent process connected to one node keeps working when that node (or the
/// stream leader) is stopped: it fails over to another node, and every task completes
/// exactly once.
async fn agent_keeps_working_after_losing(victim: Victim) -> Result<()> {
    use murmur_coordination::coordinator::{CoordinatorConfig, run_coordinator};
    use murmur_subjects::clock::SystemClock;

    // Warnings from the in-process coordinator (retries, recreated consumers) show up in
    // the test's output when it fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("MURMUR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let (mut cluster, log) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    let leader: usize = stream_leader(&log)
        .await?
        .trim_start_matches('n')
        .parse::<usize>()?
        - 1;
    // The agent's node: the one to stop, or (stream-leader case) one that is not the leader.
    let (agent_node, stopped) = match victim {
        Victim::ConnectedNode => {
            let n = (leader + 1) % 3;
            (n, n)
        }
        Victim::StreamLeader => ((leader + 1) % 3, leader),
    };
    let data = tempfile::tempdir()?;
    let config = data.path().join("murmur.toml");
    std::fs::write(&config, "[log]\nreplicas = 3\n")?;
    let who = cluster
        .issuer()
        .process_args(&Token::new("acme")?, Role::Worker, "worker", data.path())
        .await?;
    let mut agent = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", &cluster.cluster.nodes[agent_node].url()])
        .args(["--realm", "acme", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .args(&who)
        .args(["agent", "run", "tester", "--capability", "test.run"])
        .args(["--heartbeat-ms", "200", "--builtin-handler"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    {
        use tokio::io::AsyncBufReadExt;
        let stdout = agent.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .context("agent did not join")??
            .context("agent exited before joining")?;
    }

    // The coordinator is connected to every node, so it fails over too.
    let coordinator_log = cluster
        .issuer()
        .participant(&Token::new("acme")?, Role::Coordinator, "coordinator")
        .await?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let coordinator = tokio::spawn(run_coordinator(
        coordinator_log,
        std::sync::Arc::new(SystemClock),
        CoordinatorConfig::default(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));

    const TASKS: u64 = 40;
    for n in 0..TASKS {
        let mut payload = submitted(n);
        payload.capability = "test.run".into();
        payload.input = serde_json::json!({ "n": n, "sleep_ms": 50 });
        payload.lease_ms = Some(5_000);
        let draft = Draft::new(Token::new(format!("job{n}"))?, &payload)?;
        append_until_stored(&log, &log.seal(draft)).await?;
    }
    let until = tokio::time::Instant::now() + DEADLINE;
    while completions(&log).await?.len() < 10 {
        anyhow::ensure!(tokio::time::Instant::now() < until, "work never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    murmur_e2e::ensure_r3(&log).await?;
    cluster.stop(stopped).await?;

    // Losing the stream leader means a Raft election; on a loaded 2-core machine it has
    // taken up to ~30 s before publishes were answered again.
    let until = tokio::time::Instant::now() + DEADLINE * 4;
    let counts = loop {
        let counts = completions(&log).await?;
        if counts.len() as u64 == TASKS {
            break counts;
        }
        if tokio::time::Instant::now() >= until {
            let mut view = Projector::new(
                log.clone(),
                murmur_coordination::coordinator::CoordinatorProjection::new(Token::new("acme")?),
            );
            view.catch_up().await?;
            let stuck: Vec<String> = view
                .state()
                .tasks
                .tasks
                .iter()
                .filter(|(id, _)| !counts.contains_key(*id))
                .map(|(id, t)| format!("{id}: {:?} attempt {}", t.state, t.attempt))
                .collect();
            anyhow::bail!(
                "only {} of {TASKS} tasks completed after the node stopped; the rest: {stuck:?}; agents: {:?}",
                counts.len(),
                view.state()
                    .registry
                    .agents
                    .values()
                    .map(|a| a.status)
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Exactly once is the projection's promise: a second stored completion (a late result
    // whose conflict check raced a leader change on the server, or a re-send the new leader
    // did not recognise as a duplicate) is refused by the fold. Replaying from sequence 1
    // must show every task completed once and every extra completion refused.
    let extras: usize = counts.values().map(|v| v.len() - 1).sum();
    if extras > 0 {
        eprintln!(
            "completions stored more than once: {:?}",
            counts
                .iter()
                .filter(|(_, v)| v.len() > 1)
                .collect::<Vec<_>>()
        );
    }
    let until = tokio::time::Instant::now() + DEADLINE;
    let replay = loop {
        let mut replay = Projector::new(
            log.clone(),
            murmur_coordination::coordinator::CoordinatorProjection::new(Token::new("acme")?),
        );
        match replay.catch_up().await {
            Ok(_) => break replay,
            Err(e) if tokio::time::Instant::now() < until => note_retry(&e.to_string()),
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let tasks = &replay.state().tasks.tasks;
    assert_eq!(tasks.len() as u64, TASKS);
    assert!(
        tasks.values().all(|t| t.state.name() == "completed"),
        "every task completed: {:?}",
        tasks.values().map(|t| t.state.name()).collect::<Vec<_>>()
    );
    assert!(
        replay.stats().refused >= extras as u64,
        "every extra completion was refused ({} refused, {extras} extra)",
        replay.stats().refused
    );
    assert!(
        agent.try_wait()?.is_none(),
        "the agent process kept running through the failover"
    );
    let _ = stop_tx.send(true);
    coordinator.await??;
    Ok(())
}

/// Both scenarios in one test, one cluster at a time. A late result from a lost lease is
/// refused by the fold but counted by the server in the task's last sequence, so the
/// coordinator's expected sequence must count it too (`Projection::observe`), or a task's
/// writes conflict forever after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_keep_working_when_their_node_or_the_stream_leader_stops() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    agent_keeps_working_after_losing(Victim::ConnectedNode).await?;
    agent_keeps_working_after_losing(Victim::StreamLeader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_with_other_settings_does_not_rewrite_the_clusters_streams() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let (cluster, owner) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    let before = murmur_e2e::stream_config(&owner, HISTORY).await?;
    // What `murmur agent run --server URL` without a config file brings: one replica, and
    // here a far shorter retention too.
    let settings = murmur_subjects::LogConfig {
        max_age: Duration::from_secs(3600),
        ..Default::default()
    };
    assert_eq!(settings.replicas, 1);
    let joiner = Identity::generate();
    let client = murmur_subjects::connect::ConnectOptions::servers(&cluster.cluster.nodes[0].url())
        .auth(murmur_subjects::connect::Auth::CredsFile {
            path: cluster.creds_for("acme", Role::Operator, &joiner)?,
        })
        .connect()
        .await?;
    let _joiner = EventLog::options(joiner, Token::new("acme")?)
        .config(settings)
        .open(client)
        .await?;
    // Scaled down, it fails here ("MURMUR_HISTORY is R1, not R3").
    murmur_e2e::ensure_r3(&owner).await?;
    let after = murmur_e2e::stream_config(&owner, HISTORY).await?;
    assert_eq!(after.max_age, before.max_age, "the retention was rewritten");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_started_while_jetstream_has_no_quorum_waits_for_it() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let (mut cluster, _owner) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    // Enrolled (its grant written) while the cluster takes writes.
    let data = tempfile::tempdir()?;
    let who = cluster
        .issuer()
        .process_args(&Token::new("acme")?, Role::Tallier, "tallier", data.path())
        .await?;
    // Two of three nodes down: the remaining one cannot answer JetStream requests.
    cluster.stop(1).await?;
    cluster.stop(2).await?;
    let (mut tallier, log_path) =
        murmur_e2e::tallier_process(&cluster.cluster.nodes[0].url(), data.path(), &who, "info")?;
    // Which request meets the lost quorum first depends on how soon the remaining node
    // notices: opening the log (stream info) or, when that was still answered, the first
    // read of the proposals. Either way it retries instead of exiting.
    murmur_e2e::wait_for_any_line(
        &log_path,
        &[
            "the event log is unavailable; retrying",
            "proposals unavailable; retrying",
        ],
        DEADLINE,
    )
    .await?;
    anyhow::ensure!(
        tallier.try_wait()?.is_none(),
        "the tallier gave up while JetStream had no quorum"
    );
    cluster.restart(1).await?;
    murmur_e2e::wait_for_line(&log_path, "tallier running for realm acme", DEADLINE).await?;
    tallier.kill().await?;
    Ok(())
}

/// A participant whose server is cut off from the rest of its cluster (its routes cut, its
/// own connection kept: the minority side of a partition, which still answers pings)
/// leaves it for another server and follows the log again while the cut lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_leaves_a_server_cut_off_from_its_cluster() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let cluster = murmur_testkit::TestCluster::start_with(&murmur_testkit::ClusterOptions {
        linked_routes: true,
        ..Default::default()
    })
    .await?;
    let node = |i: usize| cluster.cluster.nodes[i].url();
    // The writer reaches nodes 2 and 3 only; the follower is given node 1 alone (it learns
    // the others from the server, as a participant pinned to one node does).
    let writer = open(&cluster, &format!("{},{}", node(1), node(2)), 3).await?;
    murmur_e2e::ensure_r3(&writer).await?;
    let follower = open(&cluster, &node(0), 3).await?;
    let first = follower.client().server_info().server_name;
    let seal = |n: u64| -> Result<SealedEvent> {
        Ok(writer.seal(Draft::new(Token::new(format!("t{n}"))?, &submitted(n))?))
    };
    let mut view = Projector::new(
        follower.clone(),
        OverviewProjection {
            realm: Token::new("acme")?,
        },
    );
    append_until_stored(&writer, &seal(0)?).await?;
    anyhow::ensure!(
        view.follow_until(DEADLINE, |s| s.tasks.len() == 1).await?,
        "the follower never saw the first task"
    );

    cluster.cluster.isolate(0);
    for n in 1..=10 {
        append_until_stored(&writer, &seal(n)?).await?;
    }
    let followed = view.follow_until(DEADLINE, |s| s.tasks.len() == 11).await?;
    let now = follower.client().server_info().server_name;
    cluster
        .cluster
        .set_all_links(murmur_testkit::links::LinkState::Up);
    anyhow::ensure!(
        followed,
        "the follower on the cut-off node {first} never saw the tasks written on the others (it is on {now}; {:?})",
        view.stats()
    );
    assert_ne!(now, first, "the follower moved to another server");
    assert!(view.stats().servers_left >= 1, "{:?}", view.stats());
    Ok(())
}

/// The step the coordinator takes when its view diverged: a replay from sequence 1. Cut off
/// by a lost quorum (two of three nodes down), the replay fails with an error the services
/// wait out (`is_transient`), not one that ends them; the view keeps a prefix of the log,
/// and polling on once the quorum is back reaches exactly the state a fresh replay builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_cut_off_by_a_lost_quorum_reads_on_to_the_replays_state() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let (mut cluster, log) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    let realm = Token::new("acme")?;
    for n in 0..20 {
        let sealed = log.seal(Draft::new(Token::new(format!("t{n}"))?, &submitted(n))?);
        append_until_stored(&log, &sealed).await?;
    }
    let mut view = Projector::new(
        log.clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |s| s.tasks.len() == 20).await?,
        "the view never saw the 20 tasks"
    );
    let folded = view.position();

    cluster.stop(1).await?;
    cluster.stop(2).await?;
    // The remaining node answers JetStream requests only until it notices the lost quorum.
    let until = tokio::time::Instant::now() + DEADLINE;
    while stream_leader_once(&log).await.is_some() {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "the remaining node kept a stream leader without a quorum"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let replayed = tokio::time::timeout(DEADLINE, view.rebuild())
        .await
        .context("the replay neither finished nor failed")?;
    let error = replayed
        .err()
        .context("a replay without a quorum succeeded")?;
    assert!(error.is_transient(), "not a failure to wait out: {error}");
    assert!(
        view.position() < folded,
        "the replay started over ({} of {folded})",
        view.position()
    );

    cluster.restart(1).await?;
    cluster.restart(2).await?;
    anyhow::ensure!(
        view.follow_until(DEADLINE, |s| s.tasks.len() == 20).await?,
        "reading on after the quorum came back never reached the 20 tasks ({:?})",
        view.stats()
    );
    let mut fresh = Projector::new(log.clone(), OverviewProjection { realm });
    anyhow::ensure!(
        fresh
            .follow_until(DEADLINE, |s| s.tasks.len() == 20)
            .await?,
        "a fresh replay never reached the 20 tasks"
    );
    assert_eq!(view.position(), fresh.position());
    assert_eq!(view.state(), fresh.state());
    Ok(())
}

/// The history stream's leader now, if it has one (one request, short deadline).
async fn stream_leader_once(log: &EventLog) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(3), stream_peers(log, HISTORY))
        .await
        .ok()
        .flatten()
        .map(|(leader, _)| leader)
}

/// The history stream.
const HISTORY: &str = "MURMUR_HISTORY";

/// The JetStream API request that removes a peer from the history stream.
const PEER_REMOVE: &str = "$JS.API.STREAM.PEER.REMOVE.MURMUR_HISTORY";

/// Stream `name`'s peers: its leader and its other replicas (whether current), by server
/// name.
async fn stream_peers(log: &EventLog, name: &str) -> Option<(String, Vec<(String, bool)>)> {
    let mut stream = async_nats::jetstream::new(log.client().clone())
        .get_stream(name)
        .await
        .ok()?;
    let info = stream.info().await.ok()?;
    let cluster = info.cluster.as_ref()?;
    let replicas = cluster
        .replicas
        .iter()
        .map(|r| (r.name.clone(), r.current))
        .collect();
    Some((cluster.leader.clone()?, replicas))
}

/// How long a membership change may take to give a stream three current peers
/// again. Measured 10–23 s on the 2-core VM alone; under CI's load a partitioned change
/// once took over 30 s. The time taken is reported, not asserted.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(120);

/// Stream `name`'s leader and its two replicas, by server name, once all three are
/// current and none is `without`; waits up to [`MEMBERSHIP_DEADLINE`].
async fn three_current_peers(
    log: &EventLog,
    name: &str,
    without: Option<&str>,
) -> Result<Vec<String>> {
    three_current_peers_asking_again(log, name, without, None).await
}

/// How often a peer's removal is asked for again while the peer is still listed: longer
/// than a removal that was not lost takes to show (about 10 s after a partition heals,
/// on the 2-core VM alone).
const ASK_AGAIN_EVERY: Duration = Duration::from_secs(30);

/// [`three_current_peers`], sending `removal` (a JetStream API subject and request) again
/// every [`ASK_AGAIN_EVERY`] while `without` is still among the stream's peers.
/// nats-server answers a stream peer removal once its meta leader has proposed the change,
/// not once the meta group has committed it: a meta leader cut off right after answering
/// loses it, and the stream keeps its old peers for good. A removal asked for again while
/// the first is under way is refused (the peer is no longer a member, or the peers would
/// not change).
async fn three_current_peers_asking_again(
    log: &EventLog,
    name: &str,
    without: Option<&str>,
    removal: Option<(&str, &serde_json::Value)>,
) -> Result<Vec<String>> {
    let until = tokio::time::Instant::now() + MEMBERSHIP_DEADLINE;
    let mut asked = tokio::time::Instant::now();
    loop {
        let seen = stream_peers(log, name).await;
        if let Some((leader, replicas)) = seen.clone() {
            let mut peers = vec![leader];
            peers.extend(replicas.iter().map(|(name, _)| name.clone()));
            let gone_listed = without.is_some_and(|gone| peers.iter().any(|p| p == gone));
            if replicas.len() == 2 && replicas.iter().all(|(_, current)| *current) && !gone_listed {
                return Ok(peers);
            }
            if let Some((subject, request)) = removal
                && gone_listed
                && asked.elapsed() >= ASK_AGAIN_EVERY
            {
                let answer = tokio::time::timeout(
                    Duration::from_secs(5),
                    log.client()
                        .request(subject.to_string(), request.to_string().into()),
                )
                .await;
                let said = match answer {
                    Ok(Ok(message)) => String::from_utf8_lossy(&message.payload).into_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 5 s".into(),
                };
                eprintln!(
                    "{} still among {name}'s peers {seen:?} {ASK_AGAIN_EVERY:?} after its \
                     removal was asked for; asked again: {said}",
                    without.unwrap_or_default()
                );
                asked = tokio::time::Instant::now();
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{name} never had three current peers{} within {MEMBERSHIP_DEADLINE:?}; \
             last seen (leader, [(replica, current)]): {seen:?}",
            without.map_or(String::new(), |gone| format!(" without {gone}"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`three_current_peers`] without `gone`, as node indices.
async fn three_current_nodes(log: &EventLog, name: &str, gone: &str) -> Result<Vec<usize>> {
    as_nodes(three_current_peers(log, name, Some(gone)).await?)
}

/// Server names as node indices.
fn as_nodes(peers: Vec<String>) -> Result<Vec<usize>> {
    peers.iter().map(|peer| node_of(peer)).collect()
}

/// Cuts node `node` off from the others for 5 s (longer than Raft's election timeout; its
/// end is what is tested), then heals every link.
async fn cut_off_for_a_while(cluster: &murmur_testkit::TestCluster, node: usize) {
    cluster.cluster.isolate(node);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster
        .cluster
        .set_all_links(murmur_testkit::links::LinkState::Up);
}

/// Node index of a server named `n1`, `n2` …
fn node_of(name: &str) -> Result<usize> {
    let n: usize = name
        .trim_start_matches('n')
        .parse()
        .with_context(|| format!("server name {name}"))?;
    Ok(n - 1)
}

/// Each node's copy of stream `name` as its monitoring port reports it: `(messages, last
/// sequence)`, `None` where the node holds no replica.
async fn copies(cluster: &murmur_testkit::TestCluster, name: &str) -> Vec<Option<(u64, u64)>> {
    let mut copies = Vec::new();
    for node in &cluster.cluster.nodes {
        let jsz = murmur_testkit::server::monitor_json(
            node.monitor_port,
            "/jsz?accounts=true&streams=true",
        )
        .await
        .unwrap_or_default();
        let copy = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == name)
            .map(|s| {
                let state = &s["state"];
                (
                    state["messages"].as_u64().unwrap_or_default(),
                    state["last_seq"].as_u64().unwrap_or_default(),
                )
            });
        copies.push(copy);
    }
    copies
}

/// The checker after a membership change: the log's last sequence and the replay hold the
/// `written` acknowledged events, each once, and each of `peers` has a copy of them all
/// (waited for up to the deadline), `gone` (a removed node still running) none.
async fn every_copy_holds(
    cluster: &murmur_testkit::TestCluster,
    (last, replay): (u64, &Projector<OverviewProjection>),
    written: u64,
    peers: &[usize],
    gone: Option<usize>,
) -> Result<()> {
    assert_eq!(last, written, "stored events = acknowledged events");
    assert_eq!(
        replay.state().tasks.len() as u64,
        written,
        "every acknowledged event, once"
    );
    copies_until(
        cluster,
        HISTORY,
        &format!("agree on {written} events (peers {peers:?}, removed {gone:?})"),
        |copies| {
            peers.iter().all(|&p| copies[p] == Some((written, written)))
                && gone.is_none_or(|g| copies[g].is_none())
        },
    )
    .await
}

/// Waits up to [`DEADLINE`] until every node's copy of stream `name` (see [`copies`]) is
/// `as_wanted`; fails saying they never would `what`.
async fn copies_until(
    cluster: &murmur_testkit::TestCluster,
    name: &str,
    what: &str,
    as_wanted: impl Fn(&[Option<(u64, u64)>]) -> bool,
) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let copies = copies(cluster, name).await;
        if as_wanted(&copies) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{name}'s copies never would {what}: {copies:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends a JetStream API request until its answer says `"success": true` (a meta group or
/// stream electing its leader refuses or does not answer for a while), up to `until`.
async fn until_success(
    client: &async_nats::Client,
    subject: &'static str,
    request: serde_json::Value,
    until: tokio::time::Instant,
) -> Result<()> {
    loop {
        let answer = client.request(subject, request.to_string().into()).await;
        // A reply that is no JSON (a status without a body) is retried like an error.
        let body: serde_json::Value = match &answer {
            Ok(message) => serde_json::from_slice(&message.payload).unwrap_or_else(
                |e| serde_json::json!({ "error": format!("{e}: {:?}", message.status) }),
            ),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        if body["success"] == true {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{subject} was refused: {body}"
        );
        note_retry(&body.to_string());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A writer appending one event at a time, each retried until acknowledged (the same id,
/// so a retry the server already stored is dropped as a duplicate).
struct Writer {
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(u64, Duration)>>,
}

impl Writer {
    fn start(log: &EventLog) -> Self {
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn({
            let (log, acked) = (log.clone(), acked.clone());
            async move {
                let mut longest = Duration::ZERO;
                let mut n = 0u64;
                while !*stopped.borrow() {
                    let sealed = log.seal(Draft::new(Token::new(format!("t{n}"))?, &submitted(n))?);
                    let started = tokio::time::Instant::now();
                    append_until_stored(&log, &sealed).await?;
                    longest = longest.max(started.elapsed());
                    n += 1;
                    acked.store(n, std::sync::atomic::Ordering::SeqCst);
                }
                Ok((n, longest))
            }
        });
        Self { acked, stop, task }
    }

    /// Events acknowledged so far.
    fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` events are acknowledged (up to [`MEMBERSHIP_DEADLINE`]: the writer
    /// runs through membership changes).
    async fn acked_at_least(&self, n: u64) -> Result<()> {
        let until = tokio::time::Instant::now() + MEMBERSHIP_DEADLINE;
        while self.acked() < n {
            anyhow::ensure!(
                tokio::time::Instant::now() < until,
                "the writer stalled below {n} events"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops it; returns the events acknowledged and the longest wait for one.
    async fn stop(self) -> Result<(u64, Duration)> {
        self.stop.send(true)?;
        self.task.await?
    }
}

/// A membership change under writes: on a 4-node cluster the R3 history stream sits on
/// three nodes. While a writer appends, its leader is removed from the stream's peers (what
/// `nats stream cluster peer-remove` sends), so JetStream places a replica on the fourth
/// node and catches it up from the others. With `partition`, one of the two remaining
/// peers is also cut off from the cluster for a while right after the removal, so the new
/// peer must be caught up before the stream has a quorum again. Every acknowledged event
/// is stored exactly once, the three new peers' copies agree, and the removed node holds
/// none. Prints what it measured (events, time until three current peers, longest wait
/// for an acknowledgement).
async fn a_replica_moves_to_a_new_node_while_written(partition: bool) -> Result<()> {
    let cluster = murmur_testkit::TestCluster::start_nodes(
        4,
        &murmur_testkit::ClusterOptions {
            linked_routes: true,
            ..Default::default()
        },
    )
    .await?;
    let log = murmur_e2e::open_cluster_log(&cluster, Identity::generate(), 3).await?;
    let old_peers = three_current_peers(&log, HISTORY, None).await?;
    let leader = old_peers[0].clone();
    let removed = node_of(&leader)?;
    let old_peers: Vec<usize> = old_peers
        .iter()
        .map(|name| node_of(name))
        .collect::<Result<_>>()?;
    let spare = (0..4)
        .find(|n| !old_peers.contains(n))
        .context("a node without a replica")?;

    let writer = Writer::start(&log);
    writer.acked_at_least(200).await?;

    // The leader leaves the stream's peers.
    let moved_from = tokio::time::Instant::now();
    let until = moved_from + DEADLINE;
    let removal = serde_json::json!({ "peer": leader });
    until_success(log.client(), PEER_REMOVE, removal.clone(), until).await?;
    let cut = if partition {
        // One of the two peers left (the leader was first).
        let cut = old_peers[1];
        cut_off_for_a_while(&cluster, cut).await;
        Some(cut)
    } else {
        None
    };
    // Three current peers again, the removed node not among them.
    let new_peers = as_nodes(
        three_current_peers_asking_again(
            &log,
            HISTORY,
            Some(&leader),
            Some((PEER_REMOVE, &removal)),
        )
        .await?,
    )?;
    let moved_in = moved_from.elapsed();
    writer.acked_at_least(writer.acked() + 200).await?;
    let (written, longest) = writer.stop().await?;

    // Every acknowledged event stored once, in the log as read and on every new peer.
    let (last, replay) = read_back(&log).await?;
    every_copy_holds(
        &cluster,
        (last, &replay),
        written,
        &new_peers,
        Some(removed),
    )
    .await?;
    assert!(
        new_peers.contains(&spare),
        "the new replica is on the spare node"
    );
    eprintln!(
        "membership change{}: {written} events acknowledged, {} stored, 0 lost, 0 duplicated; \
         three current peers {:.2} s after the removal of n{}{}; longest wait for an acknowledgement {:.2} s",
        if partition { " with a partition" } else { "" },
        last,
        moved_in.as_secs_f64(),
        removed + 1,
        cut.map_or(String::new(), |c| format!(" (n{} cut off for 5 s)", c + 1)),
        longest.as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn the_history_stream_moves_off_its_leader_onto_a_new_node_while_written() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    a_replica_moves_to_a_new_node_while_written(false).await
}

#[tokio::test]
async fn the_history_stream_moves_onto_a_new_node_through_a_partition() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    a_replica_moves_to_a_new_node_while_written(true).await
}

/// The nodes the JetStream meta group lists, as its leader reports them when node `at`
/// knows it (`/jsz`: the leader and its peers, offline ones included), with `at` itself.
async fn meta_members(
    cluster: &murmur_testkit::TestCluster,
    at: usize,
) -> std::collections::BTreeSet<String> {
    let jsz_of = |n: usize| {
        murmur_testkit::server::monitor_json(cluster.cluster.nodes[n].monitor_port, "/jsz")
    };
    let mut jsz = jsz_of(at).await.unwrap_or_default();
    // nats-server 2.11 lists the meta group's replicas only on its leader: ask the leader.
    if let Some(leader) = jsz["meta_cluster"]["leader"].as_str().map(str::to_string)
        && let Ok(l) = node_of(&leader)
        && l != at
        && l < cluster.cluster.nodes.len()
        && let Ok(there) = jsz_of(l).await
    {
        jsz = there;
    }
    let meta = &jsz["meta_cluster"];
    meta["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .chain(meta["leader"].as_str().map(str::to_string))
        .chain(std::iter::once(format!("n{}", at + 1)))
        .collect()
}

/// The streams of the log's other assets: the dead letters, the key-value buckets and the
/// object stores (each bucket and store is a stream).
fn other_assets() -> [String; 5] {
    use murmur_subjects::roles::{
        ARTIFACT_BUCKET, CHECKPOINT_BUCKET, KNOWLEDGE_BUCKET, PRESENCE_BUCKET,
    };
    [
        "MURMUR_DLQ".to_string(),
        format!("KV_{PRESENCE_BUCKET}"),
        format!("KV_{CHECKPOINT_BUCKET}"),
        format!("OBJ_{ARTIFACT_BUCKET}"),
        format!("OBJ_{KNOWLEDGE_BUCKET}"),
    ]
}

/// What [`fill_other_assets`] writes besides the history.
const CHECKPOINT_KEY: &str = "overview";
const CHECKPOINT: &[u8] = b"at sequence 1";
const SNAPSHOT_NAME: &str = "space-acme";
const SNAPSHOT: &[u8] = b"an automerge snapshot";

/// Creates every other asset (R3, as the log) and writes one acknowledged thing where a
/// user's data goes: a dead letter, a checkpoint, a knowledge snapshot. Presence entries
/// expire within seconds, so that bucket only has to keep its peers.
async fn fill_other_assets(log: &EventLog) -> Result<()> {
    retried("provisioning", || async { Ok(log.provision().await?) }).await?;
    // Written once: a retry could store a second dead letter.
    log.dead_letter(
        "cluster test",
        &murmur_subjects::IngestError::UnknownType("test.unknown".into()),
        murmur_subjects::RefusedMessage {
            subject: "test.refused",
            headers: None,
            body: b"{}",
            stream_sequence: None,
        },
    )
    .await?;
    retried("writing a checkpoint and a snapshot", || async {
        log.checkpoint_bucket()
            .await?
            .put(CHECKPOINT_KEY, CHECKPOINT.into())
            .await?;
        let mut snapshot = SNAPSHOT;
        log.knowledge_store()
            .await?
            .put(SNAPSHOT_NAME, &mut snapshot)
            .await?;
        Ok(())
    })
    .await
}

/// Which of [`fill_other_assets`]' writes read back as written: the dead letter, the
/// checkpoint, the snapshot. A bucket or store that is gone reads as absent.
async fn other_assets_read_back(log: &EventLog) -> Result<[bool; 3]> {
    retried("reading the other assets back", || {
        other_assets_read_back_once(log)
    })
    .await
}

async fn other_assets_read_back_once(log: &EventLog) -> Result<[bool; 3]> {
    use murmur_subjects::roles::{CHECKPOINT_BUCKET, KNOWLEDGE_BUCKET};
    use tokio::io::AsyncReadExt;
    let js = async_nats::jetstream::new(log.client().clone());
    let dead_letter = log.dead_letter_at(1).await?.is_some();
    let checkpoint = match js.get_key_value(CHECKPOINT_BUCKET).await {
        Ok(kv) => kv.get(CHECKPOINT_KEY).await?.as_deref() == Some(CHECKPOINT),
        Err(_)
            if stream_state_once(log, &format!("KV_{CHECKPOINT_BUCKET}"))
                .await?
                .is_none() =>
        {
            false
        }
        Err(e) => return Err(e.into()),
    };
    let snapshot = match js.get_object_store(KNOWLEDGE_BUCKET).await {
        Ok(store) => match store.get(SNAPSHOT_NAME).await {
            Ok(mut object) => {
                let mut bytes = Vec::new();
                object.read_to_end(&mut bytes).await?;
                bytes == SNAPSHOT
            }
            Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
                false
            }
            Err(e) => return Err(e.into()),
        },
        Err(_)
            if stream_state_once(log, &format!("OBJ_{KNOWLEDGE_BUCKET}"))
                .await?
                .is_none() =>
        {
            false
        }
        Err(e) => return Err(e.into()),
    };
    Ok([dead_letter, checkpoint, snapshot])
}

/// Stream `name`'s creation time and message count, `None` when the server has no such
/// stream.
async fn stream_state(
    log: &EventLog,
    name: &str,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, u64)>> {
    retried(&format!("reading {name}'s state"), || {
        stream_state_once(log, name)
    })
    .await
}

async fn stream_state_once(
    log: &EventLog,
    name: &str,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, u64)>> {
    let Some(mut stream) = log.find_stream(name).await? else {
        return Ok(None);
    };
    let info = stream.info().await?;
    Ok(Some((info.created, info.state.messages)))
}

/// Waits until stream `name` has three current peers, none of them `gone`, whose copies
/// (messages, last sequence) are equal; returns the peers.
async fn three_equal_copies(
    cluster: &murmur_testkit::TestCluster,
    log: &EventLog,
    name: &str,
    gone: &str,
) -> Result<Vec<usize>> {
    let peers = three_current_nodes(log, name, gone).await?;
    copies_until(
        cluster,
        name,
        &format!("be equal on the peers {peers:?}"),
        |copies| {
            let first = copies[peers[0]];
            first.is_some() && peers.iter().all(|&p| copies[p] == first)
        },
    )
    .await?;
    Ok(peers)
}

/// A dead node replaced, as an operator does it: on a 3-node cluster, while a writer
/// appends, a fourth node with an empty store joins (`n4`), the history stream's leader is
/// killed (kill -9), and the system account removes it from the JetStream meta group
/// (`$JS.API.SERVER.REMOVE`, what `nats server raft peer-remove` sends). JetStream then
/// places a third replica of every stream on the new node (the history, the dead letters,
/// each bucket and object store) and catches it up from the two survivors while the writer
/// goes on. With `partition`, one survivor is cut off from the others for 5 s right after
/// the removal, so no stream has a quorum until the new node is caught up. Every
/// acknowledged event is stored once, the new node's copy holds them all, every other
/// asset has three equal copies without the dead node and reads back what was written,
/// and the meta group no longer lists the dead node.
async fn replace_a_dead_node(partition: bool) -> Result<()> {
    let mut cluster = murmur_testkit::TestCluster::start_nodes(
        3,
        &murmur_testkit::ClusterOptions {
            linked_routes: partition,
            ..Default::default()
        },
    )
    .await?;
    let log = murmur_e2e::open_cluster_log(&cluster, Identity::generate(), 3).await?;
    fill_other_assets(&log).await?;
    let old_peers = three_current_peers(&log, HISTORY, None).await?;
    let dead_name = old_peers[0].clone();
    let dead = node_of(&dead_name)?;
    let writer = Writer::start(&log);
    writer.acked_at_least(200).await?;

    // The replacement joins first, so the meta group has somewhere to put the replicas.
    let new = cluster.cluster.add_node("n4").await?;
    let survivor = (0..3).find(|&n| n != dead).context("a survivor")?;
    let until = tokio::time::Instant::now() + DEADLINE;
    while !meta_members(&cluster, survivor).await.contains("n4") {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "n4 never joined the meta group: {:?}",
            meta_members(&cluster, survivor).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop(dead).await?;
    let killed_at = tokio::time::Instant::now();
    // Dead, it is still a member (offline) until it is removed: what the check below tells.
    let members = meta_members(&cluster, survivor).await;
    assert!(
        members.contains(&dead_name),
        "{dead_name} listed before its removal: {members:?}"
    );

    // The system account removes the dead server (retried while the meta group elects).
    let system = async_nats::ConnectOptions::with_credentials_file(cluster.system_creds())
        .await?
        .connect(cluster.cluster.nodes[survivor].url())
        .await?;
    until_success(
        &system,
        "$JS.API.SERVER.REMOVE",
        serde_json::json!({ "peer": dead_name }),
        tokio::time::Instant::now() + MEMBERSHIP_DEADLINE,
    )
    .await?;
    let cut = if partition {
        // The meta group (two survivors and n4) keeps its quorum without one survivor;
        // the streams, whose third replica n4 has yet to catch up, do not.
        let cut = (0..3)
            .find(|&n| n != dead && n != survivor)
            .context("a second survivor")?;
        cut_off_for_a_while(&cluster, cut).await;
        Some(cut)
    } else {
        None
    };

    // Three current peers again: the two survivors and the new node.
    let new_peers = three_current_nodes(&log, HISTORY, &dead_name).await?;
    let replaced_in = killed_at.elapsed();
    assert!(
        new_peers.contains(&new),
        "the new replica is on n4: {new_peers:?}"
    );
    writer.acked_at_least(writer.acked() + 200).await?;
    let (written, longest) = writer.stop().await?;

    let reading = tokio::time::Instant::now();
    let (last, replay) = read_back(&log).await?;
    let read_in = reading.elapsed();
    // The dead node's copy cannot be read: only the new peers' are checked.
    every_copy_holds(&cluster, (last, &replay), written, &new_peers, None).await?;
    // Every other asset moved too, and kept what was written to it.
    for asset in other_assets() {
        let peers = three_equal_copies(&cluster, &log, &asset, &dead_name).await?;
        assert!(
            peers.contains(&new),
            "{asset} has a replica on n4: {peers:?}"
        );
    }
    let read = other_assets_read_back(&log).await?;
    assert_eq!(
        read, [true; 3],
        "the dead letter, the checkpoint and the snapshot read back"
    );
    let all_in = killed_at.elapsed();
    let members = meta_members(&cluster, survivor).await;
    assert!(
        !members.contains(&dead_name) && members.contains("n4"),
        "the meta group without {dead_name}, with n4: {members:?}"
    );
    eprintln!(
        "node replaced{}: {written} events acknowledged, {last} stored, 0 lost, 0 duplicated; \
         three current peers {:.2} s after kill -9 of {dead_name} (the stream leader){}; \
         all 6 streams on n4 with equal copies, their writes read back, {:.2} s after it; \
         longest wait for an acknowledgement {:.2} s; read back in {:.1} s; meta group now {members:?}",
        if partition {
            " through a partition"
        } else {
            ""
        },
        replaced_in.as_secs_f64(),
        cut.map_or(String::new(), |c| format!(" (n{} cut off for 5 s)", c + 1)),
        all_in.as_secs_f64(),
        longest.as_secs_f64(),
        read_in.as_secs_f64()
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_node_is_replaced_by_a_new_one_while_written() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    replace_a_dead_node(false).await
}

#[tokio::test]
async fn a_dead_node_is_replaced_through_a_partition() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    replace_a_dead_node(true).await
}

/// What a power failure of every node at once left of the acknowledged events: the
/// cluster's stores are on lazy disks that forget what their node had not synced.
struct AfterPowerFailure {
    /// What the disks dropped.
    lost: murmur_testkit::lazy_disk::PowerLoss,
    /// Acknowledged events still in the history stream, once each.
    present: usize,
    /// Whether every event acknowledged before the disks were last all synced is present.
    synced_kept: bool,
    /// The history stream's last sequence once the nodes were back.
    last: u64,
    /// Whether the history stream itself was gone, and made anew when the log was opened.
    stream_made_anew: bool,
    /// Each other asset's stream: its messages before the cut, and what was left of it.
    other_assets: Vec<(String, u64, StreamAfter)>,
    /// Whether the dead letter, the checkpoint and the snapshot read back as written.
    other_writes: [bool; 3],
}

/// What a power failure left of a stream.
#[derive(Debug, PartialEq)]
enum StreamAfter {
    /// Gone from the server.
    Gone,
    /// Gone, and made anew (empty) when the log was opened again.
    MadeAnew,
    /// Still there, with this many messages.
    Kept(u64),
}

/// A 3-node cluster with `sync_interval` (`None`: the server's default) on lazy disks: every
/// other asset filled, `synced` events acknowledged and then left until the disks hold
/// nothing unsynced (the servers' periodic sync has run), `n` more acknowledged, then the
/// power cut and every node restarted.
async fn power_failure(
    sync_interval: Option<&str>,
    synced: u64,
    n: u64,
) -> Result<AfterPowerFailure> {
    let mut cluster = murmur_testkit::TestCluster::start_with(&murmur_testkit::ClusterOptions {
        sync_interval: sync_interval.map(str::to_string),
        lazy_disks: true,
        ..Default::default()
    })
    .await?;
    let log = murmur_e2e::open_cluster_log(&cluster, Identity::generate(), 3).await?;
    murmur_e2e::ensure_r3(&log).await?;
    fill_other_assets(&log).await?;
    let append = |k: u64| {
        let log = log.clone();
        async move {
            let sealed = log.seal(Draft::new(Token::new(format!("t{k}"))?, &submitted(k))?);
            append_until_stored(&log, &sealed).await
        }
    };
    for k in 0..synced {
        append(k).await?;
    }
    let mut never_synced = Vec::new();
    if synced > 0 {
        // The servers' periodic sync covers the streams' message blocks; other files
        // (listed in the report) may stay unsynced.
        let until = tokio::time::Instant::now() + MEMBERSHIP_DEADLINE;
        loop {
            let files = cluster.cluster.unsynced_files()?;
            let blocks: Vec<_> = files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "blk"))
                .collect();
            if blocks.is_empty() {
                never_synced = files;
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < until,
                "the servers never synced {} message blocks within {MEMBERSHIP_DEADLINE:?}: {blocks:?}",
                blocks.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for k in synced..synced + n {
        append(k).await?;
    }
    let mut before = Vec::new();
    for asset in other_assets() {
        let (_, messages) = stream_state(&log, &asset)
            .await?
            .with_context(|| format!("{asset} before the cut"))?;
        before.push((asset, messages));
    }
    drop(log);
    if !never_synced.is_empty() {
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for file in &never_synced {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            *kinds.entry(name.unwrap_or_default()).or_default() += 1;
        }
        eprintln!("unsynced after the servers' sync, by file name: {kinds:?}");
    }
    let cut_at = chrono::Utc::now();
    let lost = cluster.cluster.cut_power().await?;
    // All launched before any is waited for, so a majority can form.
    for node in &mut cluster.cluster.nodes {
        node.restart().await?;
    }
    for node in &mut cluster.cluster.nodes {
        node.wait_ready(MEMBERSHIP_DEADLINE).await?;
    }
    let log = open(&cluster, &cluster.urls(), 3).await?;
    let (last, replay) = read_back(&log).await?;
    let (created, _) = stream_state(&log, HISTORY)
        .await?
        .context("the history stream, opened")?;
    let mut other_assets = Vec::new();
    for (asset, messages) in before {
        let after = match stream_state(&log, &asset).await? {
            None => StreamAfter::Gone,
            Some((created, _)) if created > cut_at => StreamAfter::MadeAnew,
            Some((_, kept)) => StreamAfter::Kept(kept),
        };
        other_assets.push((asset, messages, after));
    }
    let other_writes = other_assets_read_back(&log).await?;
    let present = replay.state().tasks.len();
    let synced_kept = (0..synced).all(|k| replay.state().tasks.contains_key(&format!("t{k}")));
    anyhow::ensure!(
        replay.stats().applied as usize == present,
        "an event is there twice: {} applied for {present} tasks",
        replay.stats().applied
    );
    let after = AfterPowerFailure {
        lost,
        present,
        synced_kept,
        last,
        stream_made_anew: created > cut_at,
        other_assets,
        other_writes,
    };
    eprintln!(
        "sync_interval {}: {} of {} acknowledged events after the power failure ({synced} acknowledged before the last sync, all kept: {}; \
         last sequence {}, stream made anew: {}); \
         other streams (messages before, after): {:?}; the dead letter, checkpoint and snapshot read back: {:?}; \
         the disks dropped {} unsynced bytes in {} files",
        sync_interval.unwrap_or("default (2 min)"),
        after.present,
        synced + n,
        after.synced_kept,
        after.last,
        after.stream_made_anew,
        after.other_assets,
        after.other_writes,
        after.lost.bytes,
        after.lost.files
    );
    Ok(after)
}

#[tokio::test]
async fn a_power_failure_loses_no_acknowledged_event_when_every_write_is_synced() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let n = 100;
    let after = power_failure(Some("always"), 0, n).await?;
    assert_eq!(after.present as u64, n, "acknowledged events lost");
    for (asset, before, kept) in &after.other_assets {
        assert_eq!(*kept, StreamAfter::Kept(*before), "{asset}");
    }
    assert_eq!(
        after.other_writes, [true; 3],
        "the dead letter, the checkpoint and the snapshot read back"
    );
    Ok(())
}

#[tokio::test]
async fn a_power_failure_with_the_default_sync_interval_is_counted() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let n = 100;
    let after = power_failure(None, 0, n).await?;
    // The fault is real: what the servers wrote and did not sync is gone.
    assert!(after.lost.bytes > 0, "the power failure dropped nothing");
    Ok(())
}

/// With a short `sync_interval`, a power failure takes only what came after the servers'
/// last sync: 100 events acknowledged and synced (every lazy disk holds nothing unsynced),
/// 100 more acknowledged, then the cut.
#[tokio::test]
async fn a_power_failure_loses_only_what_came_after_the_last_sync() -> Result<()> {
    let _turn = one_cluster_at_a_time().await;
    let after = power_failure(Some("1s"), 100, 100).await?;
    assert!(
        after.synced_kept,
        "an event acknowledged before the sync was lost"
    );
    for (asset, before, kept) in &after.other_assets {
        assert_eq!(*kept, StreamAfter::Kept(*before), "{asset}");
    }
    Ok(())
}

/// The meta group's leader as node `at` sees it.
async fn meta_leader(cluster: &murmur_testkit::TestCluster, at: usize) -> Option<String> {
    let jsz = murmur_testkit::server::monitor_json(cluster.cluster.nodes[at].monitor_port, "/jsz")
        .await
        .ok()?;
    jsz["meta_cluster"]["leader"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_upgraded_from_2_12_runs_murmur_while_a_2_12_node_leads() -> Result<()> {
    upgraded_node_by_node_while_an_older_node_leads("2.12").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_upgraded_from_2_11_runs_murmur_while_a_2_11_node_leads() -> Result<()> {
    upgraded_node_by_node_while_an_older_node_leads("2.11").await
}

async fn upgraded_node_by_node_while_an_older_node_leads(older: &str) -> Result<()> {
    let _one = one_cluster_at_a_time().await;
    // n1 still runs the older server, n2 and n3 the pinned one: a cluster being upgraded.
    let older = murmur_testkit::server::older_nats_server(older)?;
    let cluster = murmur_testkit::TestCluster::start_with(&murmur_testkit::ClusterOptions {
        binaries: vec![older],
        ..Default::default()
    })
    .await?;
    // The older node leads the meta group, so it parses every stream's configuration
    // (2.12 refuses a field it does not know; 2.11 drops it).
    let system = async_nats::ConnectOptions::with_credentials_file(cluster.system_creds())
        .await?
        .connect(cluster.cluster.nodes[1].url())
        .await?;
    lead_meta_group(&cluster, &system, "n1").await?;
    // A participant on a newer node (which knows fast-ingest batches) opens the log.
    let url = cluster.cluster.nodes[1].url();
    let log = open(&cluster, &url, 3).await?;
    assert!(
        murmur_subjects::log::stores_fast_ingest_batches(&log.client().server_info().version),
        "the participant's node should be one that knows fast-ingest batches"
    );
    let history = murmur_e2e::stream_config(&log, &log.config().history_stream).await?;
    assert!(!history.allow_batch_publish, "{history:?}");
    // What `murmur up` creates besides: the buckets and object stores.
    retried("provisioning the buckets and stores", || async {
        Ok(log.provision().await?)
    })
    .await?;
    // The log takes events, through a bulk writer too (one by one: no batches here).
    append_until_stored(
        &log,
        &Draft::new(Token::new("t0")?, &submitted(0))?.seal(log.identity(), log.realm()),
    )
    .await?;
    let mut writer = log.bulk_writer().await?;
    writer
        .append(
            (1..=100)
                .map(|k| Ok(Draft::new(Token::new(format!("t{k}"))?, &submitted(k))?))
                .collect::<Result<Vec<_>>>()?,
        )
        .await?;
    let stored = writer.finish().await?;
    assert_eq!((stored.events, stored.batched), (100, 0), "{stored:?}");
    let (_, replay) = read_back(&log).await?;
    assert_eq!(replay.state().tasks.len(), 101);
    // Once a newer node leads the meta group, the operator's next provisioning (the next
    // `murmur up`) turns fast ingest on.
    lead_meta_group(&cluster, &system, "n2").await?;
    retried("provisioning once a newer node leads", || async {
        Ok(log.provision().await?)
    })
    .await?;
    let history = murmur_e2e::stream_config(&log, &log.config().history_stream).await?;
    assert!(history.allow_batch_publish, "{history:?}");
    Ok(())
}

/// Asks for meta-group stepdowns (as the system account) until `node` leads.
async fn lead_meta_group(
    cluster: &murmur_testkit::TestCluster,
    system: &async_nats::Client,
    node: &str,
) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    while meta_leader(cluster, 1).await.as_deref() != Some(node) {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{node} never led the meta group (leader: {:?})",
            meta_leader(cluster, 1).await
        );
        let _ = system
            .request(
                "$JS.API.META.LEADER.STEPDOWN",
                serde_json::to_vec(&serde_json::json!({ "placement": { "preferred": node } }))?
                    .into(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
