//! The consensus suite: proposals opened → decided by voters and a tallier, against the same
//! flow in raw async-nats.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventLog, Identity, Plane, StartAt, SubjectFilter, Token};

use super::*;

/// Decision latency: open → decided, with `n` in-process voters that each append an
/// approve vote as soon as they see the proposal (one shared core subscription fans the
/// opened events out), and one in-process tallier (100 ms tick, as `murmur tallier`). Baseline: a raw JetStream publish + ack
/// round trip in the same run.
pub(crate) async fn consensus_suite(
    url: &str,
    sizes: &[usize],
    proposals: usize,
    voter_agents: bool,
) -> Result<()> {
    use murmur_agents::{Agent, AgentSpec};
    use murmur_subjects::events::{AgentJoined, Choice, VoteCast};
    let realm = Token::new("vote")?;
    let client = async_nats::connect(url).await?;
    let open_as = |identity: Identity| {
        let client = client.clone();
        let realm = realm.clone();
        async move { Ok::<_, anyhow::Error>(EventLog::options(identity, realm).open(client).await?) }
    };
    let opener = open_as(Identity::generate()).await?;
    // Baseline: raw publish + ack round trips.
    let js = async_nats::jetstream::new(opener.client().clone());
    let mut raw = Vec::new();
    for i in 0..proposals {
        let t = Instant::now();
        js.publish(format!("murmur.v1.rawvote.evt.sys.r{i}.ping"), "x".into())
            .await?
            .await?;
        raw.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tallier = {
        let mut rx = stop_rx.clone();
        // On its own connection, as `murmur tallier` runs in its own process (and as the
        // raw flow's tallier does); the opener and the voters share the other one.
        let tallier_log = EventLog::options(Identity::generate(), realm.clone())
            .open(async_nats::connect(url).await?)
            .await?;
        // Its decisions count only with the tallier role in the log.
        murmur_testkit::authority::claim_realm(&tallier_log, "bench", &[Role::Tallier]).await?;
        tokio::spawn(murmur_coordination::tallier::run_tallier(
            tallier_log,
            std::sync::Arc::new(murmur_subjects::clock::SystemClock),
            // The tick `murmur tallier` uses; decisions do not wait for it (the tallier acts
            // on the event that makes a proposal decidable).
            Duration::from_millis(100),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    println!(
        "consensus suite: open → decided, simple majority, quorum n/2+1, {proposals} proposals per size"
    );
    println!(
        "| voters | back to back p50 ms | p99 ms | proposals/s | at half that rate p50 ms | p99 ms | raw publish+ack p50 / p99 ms | the same flow in raw async-nats: p50 / p99 ms, proposals/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    raw_flows::ensure_stream(&js, &opener.config().history_stream).await?;
    raw.sort_by(f64::total_cmp);
    let (raw_p50, raw_p99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let mut stages = Vec::new();
    for (round, &n) in sizes.iter().enumerate() {
        // The same decision flow without murmur: stored opened, n stored votes, a tallier
        // on an ordered consumer storing `decided` (see raw_flows::vote_flow).
        let raw_run = raw_flows::vote_flow(url, n, proposals).await?;
        let (raw_flow, raw_flow_rate) = (&raw_run.latencies, raw_run.rate);
        let mut voters = Vec::with_capacity(n);
        for _ in 0..n {
            voters.push(open_as(Identity::generate()).await?);
        }
        let keys: std::collections::BTreeMap<String, u32> = voters
            .iter()
            .map(|v| (v.identity().public_key().to_string(), 1))
            .collect();
        let mut agent_tasks = Vec::new();
        let (voters_stop, _) = tokio::sync::watch::channel(false);
        if voter_agents {
            for v in voters.drain(..) {
                let handlers = murmur_agents::handlers::EventHandlers::new().votes(
                    std::sync::Arc::new(murmur_agents::voter::PolicyVoter {
                        default: Some(Choice::Approve),
                        rules: vec![],
                    }),
                );
                let agent = Agent::join(
                    v,
                    AgentSpec {
                        manifest: AgentJoined {
                            name: "voter".into(),
                            kind: "voter".into(),
                            capabilities: vec!["vote".into()],
                            labels: Default::default(),
                            agent_version: env!("CARGO_PKG_VERSION").into(),
                            hardware: Default::default(),
                            slots: 1,
                            handles: Some(handlers.types()),
                        },
                        heartbeat: Duration::from_secs(1),
                    },
                )
                .await?;
                let mut stop = voters_stop.subscribe();
                agent_tasks.push(tokio::spawn(async move {
                    let _ = murmur_agents::handlers::run_handlers(&agent, &handlers, async {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                    // Leave as a stopped agent does, so the next round runs without them.
                    let _ = agent.leave("bench round over").await;
                }));
            }
        }
        // Minimal voters react to `opened` through one core subscription fanned out to each
        // voter (not when the voters are agents: those follow the log themselves).
        let (fan_tx, _) = tokio::sync::broadcast::channel::<String>(1024);
        let mut fanout = None;
        if !voters.is_empty() {
            let mut opened_sub = client
                .subscribe(
                    SubjectFilter::plane(Plane::Evt)
                        .realm(realm.clone())
                        .domain(murmur_subjects::Domain::Proposal)
                        .verb(Token::new("opened")?)
                        .to_string(),
                )
                .await?;
            let fan = fan_tx.clone();
            fanout = Some(tokio::spawn(async move {
                while let Some(m) = opened_sub.next().await {
                    let Ok(subject) = murmur_subjects::Subject::parse(m.subject.as_str()) else {
                        continue;
                    };
                    let _ = fan.send(subject.aggregate().to_string());
                }
            }));
        }
        let mut voter_tasks = Vec::new();
        for v in voters {
            let mut rx = fan_tx.subscribe();
            voter_tasks.push(tokio::spawn(async move {
                while let Ok(id) = rx.recv().await {
                    let Ok(token) = Token::new(id.as_str()) else {
                        continue;
                    };
                    if let Ok(d) = Draft::new(
                        token,
                        &VoteCast {
                            choice: Choice::Approve,
                            reason: String::new(),
                        },
                    ) {
                        let _ = v.append(d).await;
                    }
                }
            }));
        }
        let mut decided = client
            .subscribe(
                SubjectFilter::plane(Plane::Evt)
                    .realm(realm.clone())
                    .domain(murmur_subjects::Domain::Proposal)
                    .verb(Token::new("decided")?)
                    .to_string(),
            )
            .await?;
        if voter_agents {
            // Untimed: voter agents start following the log on their first poll, and each
            // reads every proposal event stored so far before it votes.
            let warm_up = decide_in_turn(
                &opener,
                &mut decided,
                &keys,
                &format!("w{round}-"),
                1,
                None,
                Duration::from_secs(300),
            )
            .await?;
            println!(
                "(warm-up: {n} voter agents started; first decision after {:.0} ms)",
                warm_up.latencies[0]
            );
        }
        // Back to back: each proposal opens as soon as the previous one is decided (its
        // trailing votes still in flight) — the peak rate. Then paced at half that rate, as
        // the task suite measures latency: one decision's latency without the previous
        // one's leftovers queued in front of it.
        let back_to_back = decide_in_turn(
            &opener,
            &mut decided,
            &keys,
            &format!("b{round}-"),
            proposals,
            None,
            Duration::from_secs(30),
        )
        .await?;
        let gap = Duration::from_secs_f64(2.0 / back_to_back.rate);
        let paced = decide_in_turn(
            &opener,
            &mut decided,
            &keys,
            &format!("h{round}-"),
            proposals,
            Some(gap),
            Duration::from_secs(30),
        )
        .await?;
        println!(
            "| {n} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {raw_p50:.2} / {raw_p99:.2} | {:.2} / {:.2}, {raw_flow_rate:.0} |",
            percentile(&back_to_back.latencies, 0.5),
            percentile(&back_to_back.latencies, 0.99),
            back_to_back.rate,
            percentile(&paced.latencies, 0.5),
            percentile(&paced.latencies, 0.99),
            percentile(raw_flow, 0.5),
            percentile(raw_flow, 0.99),
        );
        stages.push((
            format!("{n} (the raw async-nats flow, back to back)"),
            (raw_run.to_quorum, raw_run.to_decided, Vec::new()),
        ));
        for (label, prefix, run) in [
            ("back to back", format!("b{round}-"), &back_to_back),
            ("half rate", format!("h{round}-"), &paced),
        ] {
            stages.push((
                format!("{n} ({label})"),
                decision_stages(&opener, &prefix, n / 2 + 1, &run.walls).await?,
            ));
        }
        if let Some(fanout) = fanout {
            fanout.abort();
        }
        for t in voter_tasks {
            t.abort();
        }
        voters_stop.send_replace(true);
        for t in agent_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
    stop_tx.send_replace(true);
    tallier.await??;
    println!(
        "\nwhere the time goes, from the stream's stored timestamps (p50 / p99 ms): opened → \
         the vote that reached the quorum stored; that vote → decided stored"
    );
    for (n, (to_quorum, to_decided, slowest)) in stages {
        println!(
            "| {n} | {:.2} / {:.2} | {:.2} / {:.2} |",
            percentile(&to_quorum, 0.5),
            percentile(&to_quorum, 0.99),
            percentile(&to_decided, 0.5),
            percentile(&to_decided, 0.99)
        );
        for line in slowest {
            println!("    slowest: {line}");
        }
    }
    Ok(())
}

/// Latencies of proposals decided one after another.
pub(crate) struct DecisionRun {
    /// Open → `decided` received, ms, sorted.
    latencies: Vec<f64>,
    /// Proposals decided per second over the run.
    rate: f64,
    /// When each proposal was opened and decided.
    walls: Walls,
}

/// Per proposal id: wall clock when it was opened and when its decision arrived.
pub(crate) type Walls = std::collections::BTreeMap<
    String,
    (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
>;

/// Opens `count` simple-majority proposals (`<prefix><i>`) one at a time and waits for each
/// decision on `decided`; with `gap`, an opening waits until `gap` after the previous one.
pub(crate) async fn decide_in_turn(
    opener: &EventLog,
    decided: &mut async_nats::Subscriber,
    voters: &std::collections::BTreeMap<String, u32>,
    prefix: &str,
    count: usize,
    gap: Option<Duration>,
    wait: Duration,
) -> Result<DecisionRun> {
    use murmur_subjects::events::{ProposalOpened, Protocol};
    let mut latencies = Vec::with_capacity(count);
    let mut walls = std::collections::BTreeMap::new();
    let t_all = Instant::now();
    let mut next_open = tokio::time::Instant::now();
    for i in 0..count {
        if let Some(gap) = gap {
            tokio::time::sleep_until(next_open).await;
            next_open += gap;
        }
        let id = format!("{prefix}{i}");
        let opened = ProposalOpened {
            question: "bench".into(),
            payload: serde_json::Value::Null,
            protocol: Protocol::SimpleMajority,
            voters: voters.clone(),
            quorum: (voters.len() / 2 + 1) as u32,
            deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
            category: "bench".into(),
            stimulus: 1.0,
        };
        let t = Instant::now();
        let wall_start = chrono::Utc::now();
        opener
            .append(Draft::new(Token::new(id.as_str())?, &opened)?)
            .await?;
        loop {
            let m = tokio::time::timeout(wait, decided.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("decided subscription ended"))?;
            if murmur_subjects::Subject::parse(m.subject.as_str())
                .is_ok_and(|s| s.aggregate().as_str() == id)
            {
                break;
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        walls.insert(id, (wall_start, chrono::Utc::now()));
    }
    let rate = count as f64 / t_all.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(DecisionRun {
        latencies,
        rate,
        walls,
    })
}

/// Per proposal whose id starts with `prefix`: ms from `opened` to the `quorum`-th vote, and
/// from that vote to `decided`, by the stream's stored timestamps (sorted).
pub(crate) async fn decision_stages(
    log: &EventLog,
    prefix: &str,
    quorum: usize,
    walls: &Walls,
) -> Result<(Vec<f64>, Vec<f64>, Vec<String>)> {
    use std::collections::BTreeMap;
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(log.realm().clone())
        .domain(murmur_subjects::Domain::Proposal);
    use raw_flows::{DecisionTimes, ms};
    let mut times: BTreeMap<String, DecisionTimes> = BTreeMap::new();
    log.read(&filter, StartAt::Beginning, None, |m| {
        if let Ok(subject) = murmur_subjects::Subject::parse(m.message.subject.as_str())
            && subject.aggregate().as_str().starts_with(prefix)
        {
            let at = m.stored_at.timestamp_nanos_opt().unwrap_or_default();
            let entry = times.entry(subject.aggregate().to_string()).or_default();
            match subject.verb().as_str() {
                "opened" => entry.opened = Some(at),
                "vote_cast" => entry.votes.push(at),
                "decided" => entry.decided = Some(at),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    })
    .await?;
    let (mut to_quorum, mut to_decided) = (Vec::new(), Vec::new());
    // The slowest decisions, hop by hop (the stored times and this process's clock are the
    // same machine's clock): where a tail comes from.
    let mut slowest = Vec::new();
    for (id, times) in times {
        if let Some(s) = times.stages(quorum) {
            let (o, v, d) = (s.opened, s.quorum_vote, s.decided);
            to_quorum.push(ms(o, v));
            to_decided.push(ms(v, d));
            if let Some((start, received)) = walls.get(&id) {
                let start = start.timestamp_nanos_opt().unwrap_or_default();
                let received = received.timestamp_nanos_opt().unwrap_or_default();
                slowest.push((
                    ms(start, received),
                    format!(
                        "{:.2} ms: open→stored {:.2}, →1st vote {:.2}, →quorum vote {:.2}, →decided {:.2}, →received {:.2}",
                        ms(start, received),
                        ms(start, o),
                        ms(o, s.first_vote),
                        ms(s.first_vote, v),
                        ms(v, d),
                        ms(d, received)
                    ),
                ));
            }
        }
    }
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = slowest.into_iter().take(3).map(|(_, line)| line).collect();
    to_quorum.sort_by(f64::total_cmp);
    to_decided.sort_by(f64::total_cmp);
    Ok((to_quorum, to_decided, slowest))
}
