//! Failures during a vote: a node lost, a voter agent restarted, a tallier that cannot write
//! its decision.

use super::*;

/// Voter processes spread over a 3-node cluster (R3 streams), one per node and pinned to it,
/// plus voters held by the test, one per node; a tallier process that fails over. One node
/// stops mid-vote: the proposal whose quorum is still reachable decides (approved by the
/// five reachable voters), the one that needed every voter ends `no_quorum` at its
/// deadline; neither hangs, the cut-off voter's vote never counts, and a replay of the log
/// decides the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_mid_vote_decides_or_ends_without_quorum() -> Result<()> {
    use murmur_subjects::connect::ConnectOptions;
    let (mut cluster, owner) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    let urls: Vec<String> = cluster.cluster.nodes.iter().map(|n| n.url()).collect();
    let data = tempfile::tempdir()?;
    let policy = data.path().join("policy.toml");
    std::fs::write(&policy, "default = \"approve\"\n")?;

    // One voter process per node, each pinned to its node.
    let mut processes = Vec::new();
    let mut keys = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let dir = data.path().join(format!("v{i}"));
        std::fs::create_dir_all(&dir)?;
        let who = cluster
            .issuer()
            .process_args(&Token::new("acme")?, Role::Voter, &format!("v{i}"), &dir)
            .await?;
        let (child, id) = spawn_voter(url, &dir, &who, &format!("v{i}"), &policy, true).await?;
        keys.push(id);
        processes.push(child);
    }
    // The tallier process starts on the node that will stop, and may fail over. Its log goes
    // to a file that a failure below prints.
    let tallier_dir = data.path().join("tallier");
    std::fs::create_dir_all(&tallier_dir)?;
    let tallier_who = cluster
        .issuer()
        .process_args(&Token::new("acme")?, Role::Tallier, "tallier", &tallier_dir)
        .await?;
    let (mut tallier, tallier_log) =
        murmur_e2e::tallier_process(&urls[2], &tallier_dir, &tallier_who, "info")?;
    let tallier_said = || {
        let log = std::fs::read_to_string(&tallier_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    // Voters held by the test, one per node, pinned too.
    let mut held = Vec::new();
    for url in &urls {
        let identity = Identity::generate();
        let creds = cluster.creds_for("acme", Role::Voter, &identity)?;
        let client = ConnectOptions::servers(url)
            .listed_servers_only(true)
            .auth(murmur_subjects::connect::Auth::CredsFile { path: creds })
            .connect()
            .await?;
        let log = murmur_subjects::EventLog::options(identity, Token::new("acme")?)
            .config(murmur_subjects::LogConfig {
                replicas: 3,
                ..Default::default()
            })
            .open(client)
            .await?;
        keys.push(log.identity().public_key().to_string());
        held.push(log);
    }
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // "reachable": 5 of 6 are enough. "everyone": needs all 6, closes at its deadline.
    let reachable = proposal(&key_refs, 5, Duration::from_secs(300));
    let everyone = proposal(&key_refs, 6, Duration::from_secs(25));
    owner
        .append(Draft::new(Token::new("reachable")?, &reachable)?)
        .await?;
    owner
        .append(Draft::new(Token::new("everyone")?, &everyone)?)
        .await?;

    // The three voter processes vote; then node 3 stops with both proposals open.
    let mut view = consensus_view(&owner)?;
    anyhow::ensure!(
        view.follow_until(DEADLINE, |c: &Consensus| ["reachable", "everyone"]
            .iter()
            .all(|id| c.proposals.get(*id).is_some_and(|p| p.votes.len() == 3)))
            .await?,
        "voter processes did not vote"
    );
    murmur_e2e::ensure_r3(&owner).await?;
    // The tallier must be connected to the node before it stops: started late on a loaded
    // machine, its first connect otherwise meets the stopping node and the process exits.
    murmur_e2e::wait_for_line(&tallier_log, "tallier running for realm", DEADLINE).await?;
    cluster.stop(2).await?;

    let approve = VoteCast {
        choice: Choice::Approve,
        reason: "reachable".into(),
    };
    // The voter on the stopped node cannot get its vote stored.
    let cut_off = held[2].seal(Draft::new(Token::new("reachable")?, &approve)?);
    let attempt = tokio::time::timeout(Duration::from_secs(10), async {
        held[2].append_sealed(&cut_off).await?.wait().await
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a voter on a stopped node got its vote stored: {attempt:?}"
    );
    // The others vote on both, through the election if node 3 led the stream.
    for log in &held[..2] {
        let sealed = log.seal_many(vec![
            Draft::new(Token::new("reachable")?, &approve)?,
            Draft::new(Token::new("everyone")?, &approve)?,
        ]);
        log.append_sealed_patiently(&sealed, DEADLINE * 2).await?;
    }

    let until = DEADLINE * 4;
    anyhow::ensure!(
        view.follow_until(until, |c: &Consensus| ["reachable", "everyone"]
            .iter()
            .all(|id| c.proposals.get(*id).is_some_and(|p| p.decided.is_some())))
            .await?,
        "a proposal never decided after the node stopped (tallier exited: {:?}); the \
         tallier's last log lines:\n{}",
        tallier.try_wait(),
        tallier_said()
    );
    let state = view.state().clone();
    let decided = |id: &str| state.proposals[id].decided.clone().expect("decided");
    let r = decided("reachable");
    assert_eq!(
        (r.outcome.as_str(), r.approve, r.reject),
        ("approved", 5, 0),
        "the five reachable voters decided"
    );
    let e = decided("everyone");
    assert_eq!(
        (e.outcome.as_str(), e.approve),
        ("no_quorum", 5),
        "one voter short of the quorum at the deadline"
    );
    assert!(
        !state.proposals["reachable"].votes.contains_key(&keys[5]),
        "the cut-off voter's vote never counted"
    );

    // A fresh replay of the log decides the same. Its consumer is made just after the node
    // stopped: on nats-server 2.11 and 2.12 that request can go unanswered until the cluster
    // has noticed (a service waits such failures out, `is_transient`; so does this test).
    let until = tokio::time::Instant::now() + DEADLINE * 2;
    let replay = loop {
        let mut replay = consensus_view(&owner)?;
        match replay.catch_up().await {
            Ok(_) => break replay,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < until => {
                eprintln!("replay after the node stopped: {e}; again");
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(replay.state().proposals, state.proposals);
    for mut p in processes {
        p.kill().await.ok();
    }
    Ok(())
}

/// A voter agent follows only opened, decided and withdrawn events, so it remembers its own
/// votes. Restarted with the same identity, it finds its vote on a proposal still open in
/// the log and does not vote again (a second vote would be refused and recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_voter_agent_does_not_vote_twice() -> Result<()> {
    use murmur_agents::handlers::{EventHandlers, run_handlers};
    use murmur_agents::voter::PolicyVoter;
    use murmur_agents::{Agent, AgentSpec};

    let nats = TestNats::start().await?;
    let opener = nats.event_log("acme").await?;
    let me = Identity::generate();
    // The other voter stays silent: with quorum 2 the proposals stay open.
    let silent = Identity::generate();
    let keys = [me.public_key(), silent.public_key()];
    let start_voter = |identity: Identity| {
        let nats = &nats;
        async move {
            let log = nats.event_log_as(identity, "acme").await?;
            let handlers = EventHandlers::new().votes(std::sync::Arc::new(PolicyVoter {
                default: Some(Choice::Approve),
                rules: vec![],
            }));
            let agent = Agent::join(
                log,
                AgentSpec {
                    manifest: murmur_subjects::events::AgentJoined {
                        handles: Some(handlers.types()),
                        ..murmur_e2e::joined("voter")
                    },
                    heartbeat: Duration::from_secs(1),
                },
            )
            .await?;
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(async move {
                let mut stopped = stopped;
                run_handlers(&agent, &handlers, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .map(|stats| stats.votes_cast)
            });
            anyhow::Ok((stop, task))
        }
    };
    let mut view = consensus_view(&opener)?;
    let voted_on = |id: &'static str, key: String| {
        move |c: &Consensus| {
            c.proposals
                .get(id)
                .is_some_and(|p| p.votes.contains_key(&key))
        }
    };

    let (stop, first) = start_voter(me.clone()).await?;
    opener
        .append(Draft::new(
            Token::new("p1")?,
            &proposal(&keys, 2, Duration::from_secs(120)),
        )?)
        .await?;
    anyhow::ensure!(
        view.follow_until(DEADLINE, voted_on("p1", me.public_key().to_string()))
            .await?,
        "the voter never voted on p1"
    );
    stop.send_replace(true);
    assert_eq!(first.await??, 1, "one vote cast");

    let (stop, second) = start_voter(me.clone()).await?;
    opener
        .append(Draft::new(
            Token::new("p2")?,
            &proposal(&keys, 2, Duration::from_secs(120)),
        )?)
        .await?;
    // Had it voted on p1 again, that vote would precede its vote on p2 in the log.
    anyhow::ensure!(
        view.follow_until(DEADLINE, voted_on("p2", me.public_key().to_string()))
            .await?,
        "the restarted voter never voted on p2"
    );
    let p1 = &view.state().proposals["p1"];
    assert!(p1.refused.is_empty(), "voted twice: {:?}", p1.refused);
    assert_eq!(p1.votes.len(), 1);
    stop.send_replace(true);
    assert_eq!(second.await??, 1, "only p2");

    // The voter's fold caught up with its three filters: both proposals, and not one of
    // the votes stored between them (the fold refuses any that arrive).
    let mut ballots = Projector::new(
        opener.clone(),
        murmur_coordination::consensus::BallotProjection::new(Token::new("acme")?),
    );
    ballots.catch_up().await?;
    let open: Vec<&String> = ballots.state().open_proposals().map(|(id, _)| id).collect();
    assert_eq!(open, ["p1", "p2"]);
    assert_eq!(ballots.stats().applied, 2, "the two `opened` events");
    assert_eq!(ballots.stats().refused, 0, "no vote was delivered");
    Ok(())
}

/// A decision write that fails for longer than the tallier's patience (30 s) does not stop
/// the tallier: it logs the failure, decides again, and the decision is stored once the log
/// takes writes. The history stream is made to refuse every new message (a full stream with
/// discard-new), the way a log that cannot store refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tallier_whose_decision_cannot_be_written_keeps_deciding() -> Result<()> {
    use async_nats::jetstream::stream::DiscardPolicy;

    let nats = TestNats::start().await?;
    let opener = nats.event_log("acme").await?;
    let (voters, keys) = voter_logs(&nats, 3).await?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    opener
        .append(Draft::new(
            Token::new("p")?,
            &proposal(&key_refs, 2, Duration::from_secs(600)),
        )?)
        .await?;
    for v in &voters[..2] {
        v.append(Draft::new(
            Token::new("p")?,
            &VoteCast {
                choice: Choice::Approve,
                reason: String::new(),
            },
        )?)
        .await?;
    }
    // The tallier is enrolled (its grant written) while the log still takes writes.
    let data = tempfile::tempdir()?;
    let who = murmur_e2e::enrol(&nats, Role::Tallier, "tallier", data.path()).await?;
    // The log stops taking writes: full, and new messages are refused.
    let js = async_nats::jetstream::new(opener.client().clone());
    let history = opener.config().history_stream.clone();
    let info = js.get_stream(&history).await?.cached_info().clone();
    let (open_config, stored) = (info.config, info.state.messages);
    js.update_stream(async_nats::jetstream::stream::Config {
        max_messages: i64::try_from(stored)?,
        discard: DiscardPolicy::New,
        ..open_config.clone()
    })
    .await?;

    let (mut tallier, log_path) =
        murmur_e2e::tallier_process(nats.url(), data.path(), &who, "warn")?;
    // Its patience is 30 s; before, the process exited here with the write's error.
    murmur_e2e::wait_for_line(
        &log_path,
        "writing decisions failed; deciding again",
        DEADLINE * 3,
    )
    .await?;
    anyhow::ensure!(
        tallier.try_wait()?.is_none(),
        "the tallier exited after a failed write: {}",
        std::fs::read_to_string(&log_path)?
    );
    let mut before = consensus_view(&opener)?;
    before.catch_up().await?;
    anyhow::ensure!(
        before.state().proposals["p"].decided.is_none(),
        "a decision was stored although the log refused writes"
    );

    // The log takes writes again: the decision it kept deciding is stored.
    js.update_stream(open_config).await?;
    let d = wait_decided(&opener, "p").await?.proposals["p"]
        .decided
        .clone()
        .context("decided")?;
    assert_eq!((d.outcome.as_str(), d.approve), ("approved", 2));
    anyhow::ensure!(
        tallier.try_wait()?.is_none(),
        "the tallier stopped after deciding"
    );
    tallier.kill().await?;
    Ok(())
}
