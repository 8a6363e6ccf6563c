//! `murmur-bench`: murmur's event log against raw async-nats on the same server in the same
//! run. Prints ratios (murmur / raw) for publish, replay and core dispatch, medians over
//! several runs, plus a per-event CPU breakdown.
//!
//! ```text
//! cargo run --release --bin murmur-bench -- --events 50000 --runs 5
//! ```

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use futures::StreamExt;
use murmur_subjects::binding::ContentMode;
use murmur_subjects::events::{AgentHeartbeat, TaskSubmitted};
use murmur_subjects::log::MSG_ID;
use murmur_subjects::projection::{Projection, Refusal, StartAt, read_stream};
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Draft, EventCodec, EventLog, Identity, LogConfig, Plane, Projector, SubjectFilter, Token,
    VerifiedEvent,
};
use murmur_tools::nats_server::NatsProcess;

#[path = "murmur_bench/raw_flows.rs"]
mod raw_flows;

#[derive(Parser)]
struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Acks in flight.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Content mode on the wire (both the raw baseline and murmur use the same bytes).
    #[arg(long, default_value = "structured")]
    mode: String,
    /// Run the task suite (issue 3) with this many no-op tasks instead of the event-log suite.
    #[arg(long)]
    tasks: Option<u64>,
    /// No-op worker agents in the task suite.
    #[arg(long, default_value_t = 2)]
    task_workers: usize,
    /// The `murmur` binary whose idle agent the task suite measures (RSS), e.g. one built
    /// with `--profile deploy`; by default the `murmur` next to this bench.
    #[arg(long)]
    agent_binary: Option<std::path::PathBuf>,
    /// Run the flake suite (issue 6) for these graph sizes (nodes), e.g. 100,1000,10000;
    /// needs no NATS.
    #[arg(long, value_delimiter = ',')]
    flake_nodes: Vec<usize>,
    /// Run the consensus suite (issue 4) with these voter counts, e.g. 5,25,100.
    #[arg(long, value_delimiter = ',')]
    voters: Vec<usize>,
    /// Proposals per voter count in the consensus suite.
    #[arg(long, default_value_t = 100)]
    proposals: usize,
    /// In the consensus suite, run the voters as agents (`run_voter` with a policy that
    /// approves everything, each following the proposals from the log) instead of the
    /// minimal in-process voters fed by one core subscription.
    #[arg(long)]
    voter_agents: bool,
    /// Run the knowledge suite (issue 5) with a space of this many facts, e.g. 100000.
    #[arg(long)]
    kb_facts: Option<usize>,
    /// Documents the benchmark space is split into.
    #[arg(long, default_value_t = 8)]
    kb_shards: u16,
    /// The server the event-log and task suites run on: in operator mode (every participant
    /// with credentials for its role, as `murmur up` runs), open (no authentication), or
    /// both, one after the other, with the ratio of each figure (secure / open). The
    /// consensus and knowledge suites run on an open server.
    #[arg(long, value_enum, default_value_t = AuthMode::Secure)]
    auth: AuthMode,
}

/// Which server the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    /// Operator mode.
    Secure,
    /// No authentication.
    Open,
    /// Both, in that order: open, then secure.
    Both,
}

/// The server a suite runs on, and how its participants connect to it.
struct Target {
    url: String,
    /// Issues each participant credentials for its role (operator mode); `None`: open.
    issuer: Option<murmur_tools::authority::Issuer>,
    _server: Option<NatsProcess>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// A local server of its own (or `NATS_URL`, open), in operator mode when `secure`.
    async fn start(secure: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if let Ok(url) = std::env::var("NATS_URL") {
            anyhow::ensure!(
                !secure,
                "with NATS_URL the bench connects anonymously: run it with --auth open, or without NATS_URL"
            );
            return Ok(Self {
                url,
                issuer: None,
                _server: None,
                _dir: Some(dir),
            });
        }
        let (auth, authority) = if secure {
            let authority =
                murmur_tools::authority::Authority::open_or_create(&dir.path().join("auth"))?;
            let creds = dir.path().join("system.creds");
            murmur_tools::authority::write_secret(&creds, &authority.system_creds()?)?;
            let config = authority.server_config(&LogConfig::default(), &dir.path().join("jwt"))?;
            (
                Some(murmur_tools::nats_server::ServerAuth { config, creds }),
                Some(authority),
            )
        } else {
            (None, None)
        };
        let mut server = NatsProcess::start(0, &dir.path().join("nats"), auth.as_ref()).await?;
        server.wait_ready(Duration::from_secs(60)).await?;
        eprintln!(
            "server log: {}",
            dir.path().join("nats/nats-server.log").display()
        );
        let url = server.url();
        let issuer = authority.map(|a| {
            murmur_tools::authority::Issuer::new(
                Some(a),
                vec![url.clone()],
                Identity::generate(),
                &dir.path().join("creds"),
                LogConfig::default(),
                EventCodec::default(),
            )
        });
        Ok(Self {
            url,
            issuer,
            _server: Some(server),
            // MURMUR_BENCH_KEEP: the server's store and log stay after the run.
            _dir: if std::env::var_os("MURMUR_BENCH_KEEP").is_some() {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
        })
    }

    fn label(&self) -> &'static str {
        if self.issuer.is_some() {
            "operator mode"
        } else {
            "open"
        }
    }

    /// Connection options for a fresh participant with `role` in `realm`'s account, and its
    /// identity (the key its credentials name, in operator mode).
    async fn participant(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
    ) -> Result<(murmur_subjects::connect::ConnectOptions, Identity)> {
        let identity = Identity::generate();
        let options = match &self.issuer {
            Some(issuer) => {
                issuer.open_realm(realm).await?;
                let creds = issuer.creds_file(realm, role, name, &identity)?;
                issuer.connect_options(creds.as_deref())
            }
            None => murmur_subjects::connect::ConnectOptions::servers(&self.url),
        };
        Ok((options.name(name), identity))
    }

    /// An event log for a fresh participant with `role` in `realm`.
    async fn log(&self, realm: &Token, role: Role, name: &str) -> Result<EventLog> {
        let (options, identity) = self.participant(realm, role, name).await?;
        Ok(EventLog::open(
            options.connect().await?,
            identity,
            realm.clone(),
            LogConfig::default(),
            EventCodec::default(),
        )
        .await?)
    }

    /// Grants `log`'s identity `roles` in the log as the realm's owner would (in operator
    /// mode the issuer's owner; open: `log` claims the realm itself).
    async fn grant(&self, log: &EventLog, roles: &[Role]) -> Result<()> {
        match &self.issuer {
            Some(issuer) => {
                let owner = issuer.owner_log(log.realm()).await?;
                for role in roles {
                    murmur_tools::authority::grant(
                        &owner,
                        log.identity().public_key(),
                        *role,
                        "bench",
                        None,
                    )
                    .await?;
                }
                Ok(())
            }
            None => murmur_tools::authority::claim_realm(log, "bench", roles).await,
        }
    }
}

/// Connecting and authenticating, `n` times in turn (each connection's first round trip
/// included): medians and p99 in ms.
async fn connect_times(target: &Target, n: usize) -> Result<(f64, f64)> {
    let (options, _) = target
        .participant(&Token::new("bench")?, Role::Worker, "connect")
        .await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let client = options.connect().await?;
        client.flush().await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(client);
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Knowledge: facts written per second into one space (through the replica: Automerge edits,
/// change events signed and acked) against the same edits on bare Automerge documents; a new
/// replica catching up on the space (latest snapshot from the Object Store + the log tail)
/// against loading the same saved documents from files; and the sync protocol's bytes and
/// round trips to converge two replicas that diverged by 1,000 facts each.
async fn kb_suite(url: &str, facts: usize, shards: u16) -> Result<()> {
    use murmur_knowledge::replica::{KnowledgeReplica, ReplicaConfig, open_space};
    use murmur_knowledge::{FactDraft, KnowledgeDoc, Value};
    let client = async_nats::connect(url).await?;
    let realm = Token::new("kb")?;
    let open_as = |identity| {
        EventLog::open(
            client.clone(),
            identity,
            realm.clone(),
            LogConfig::default(),
            EventCodec::default(),
        )
    };
    let log = open_as(Identity::generate()).await?;
    open_space(&log, "bench", "", shards, 4096).await?;
    let fact = |i: usize| {
        FactDraft::new(format!("host:{i}"), "cores", Value::Int((i % 64) as i64))
            .tag("fleet")
            .confidence(0.9)
    };
    // Baseline: the same facts on bare documents, no NATS.
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut bare: Vec<KnowledgeDoc> = (0..shards)
        .map(|s| KnowledgeDoc::new(log.identity().public_key(), [s as u8; 8], 4096))
        .collect();
    for i in 0..facts {
        let doc = &mut bare[i % shards as usize];
        doc.assert_fact(&fact(i), now)?;
        if doc.pending_ops() >= murmur_knowledge::document::AUTO_COMMIT_OPS {
            doc.commit(now);
        }
    }
    for d in &mut bare {
        d.commit(now);
    }
    let bare_s = started.elapsed().as_secs_f64();

    let mut writer = KnowledgeReplica::open(log.clone(), ReplicaConfig::space("bench")).await?;
    let started = Instant::now();
    for i in 0..facts {
        writer.put("bench", &fact(i))?;
        if i % 10_000 == 9_999 {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    let write_s = started.elapsed().as_secs_f64();
    println!(
        "kb write: {facts} facts in {shards} documents: {:.0} facts/s through the replica ({write_s:.2} s, incl. signing and acks) vs {:.0} facts/s on bare Automerge ({bare_s:.2} s) = {:.2}x",
        facts as f64 / write_s,
        facts as f64 / bare_s,
        bare_s / write_s
    );

    let started = Instant::now();
    let snaps = writer.snapshot("bench").await?;
    let snap_s = started.elapsed().as_secs_f64();
    let snap_bytes: u64 = snaps.iter().map(|s| s.size).sum();
    for i in facts..facts + 1_000 {
        writer.put("bench", &fact(i))?;
    }
    writer.flush().await?;
    println!(
        "kb snapshot: {} documents, {snap_bytes} bytes, {snap_s:.2} s (save + Object Store + purge); then 1,000 facts written after it",
        snaps.len()
    );

    // Catch-up: a new replica (snapshot + tail) vs loading the saved documents from files.
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for (i, d) in writer_docs(&mut writer, shards).into_iter().enumerate() {
        let path = dir.path().join(format!("doc-{i}.automerge"));
        std::fs::write(&path, d)?;
        paths.push(path);
    }
    let started = Instant::now();
    let mut loaded = 0;
    for p in &paths {
        let bytes = std::fs::read(p)?;
        loaded += KnowledgeDoc::load(&bytes, log.identity().public_key(), [0; 8], 4096)?.len();
    }
    let file_s = started.elapsed().as_secs_f64();
    let reader_log = open_as(Identity::generate()).await?;
    let started = Instant::now();
    let mut late = KnowledgeReplica::open(reader_log, ReplicaConfig::space("bench")).await?;
    let catch_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        late.summary("bench") == writer.summary("bench"),
        "late joiner differs"
    );
    println!(
        "kb catch-up: {} facts: new replica (snapshot + 1,000-fact tail, verified) {catch_s:.2} s vs loading the saved documents from files {file_s:.2} s ({loaded} facts) = {:.2}x",
        facts + 1_000,
        file_s / catch_s
    );

    // Sync over NATS: a memory agent serves the space; a peer that missed 1,000 facts
    // catches up with the sync protocol (request/reply, signed replies, every change checked
    // on a fork), compared with a replica reading the same 1,000 changes from the log.
    {
        use murmur_agents::memory::{MemoryOptions, MemoryService};
        use murmur_agents::{Agent, AgentSpec};
        use murmur_knowledge::rpc::{QueryRequest, query_remote};
        use murmur_subjects::events::{AccessRole, AgentJoined};
        let memory_identity = Identity::generate();
        murmur_knowledge::replica::set_access(
            &log,
            "bench",
            memory_identity.public_key(),
            AccessRole::Replica,
            true,
        )
        .await?;
        let agent = Agent::join(
            open_as(memory_identity).await?,
            AgentSpec {
                manifest: AgentJoined {
                    name: "memory".into(),
                    kind: "memory".into(),
                    capabilities: vec!["knowledge.query".into()],
                    labels: Default::default(),
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    hardware: Default::default(),
                    slots: 1,
                    handles: Some(murmur_agents::memory::handled_types()),
                },
                heartbeat: Duration::from_secs(1),
            },
        )
        .await?;
        let memory = MemoryService::spawn(
            agent,
            MemoryOptions {
                snapshot_every: None,
                ..Default::default()
            },
        );
        let mut from_log = KnowledgeReplica::open(
            open_as(Identity::generate()).await?,
            ReplicaConfig::space("bench"),
        )
        .await?;
        // The peer learns of the memory agent's replica role (it checks who answers) before
        // the new facts are written; it does not read the log again after that.
        let mut peer = late;
        peer.refresh().await?;
        for i in facts + 1_000..facts + 2_000 {
            writer.put("bench", &fact(i))?;
        }
        writer.flush().await?;
        let last = log.last_sequence(&log.config().history_stream).await?;
        let probe = QueryRequest {
            query: murmur_knowledge::Query {
                subject: Some("-".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let reply = query_remote(&log, "bench", &probe, Duration::from_secs(10)).await;
            if reply.as_ref().is_ok_and(|(r, _)| r.position >= last) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < until,
                "memory agent never caught up: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut rounds, mut sent, mut received, mut changes) = (0u32, 0u64, 0u64, 0usize);
        let started = Instant::now();
        for shard in 0..shards {
            let report = murmur_knowledge::sync::catch_up(
                &mut peer,
                &format!("bench-{shard}"),
                Duration::from_secs(30),
            )
            .await?;
            rounds += report.rounds;
            sent += report.bytes_sent;
            received += report.bytes_received;
            changes += report.changes_applied;
        }
        let sync_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        from_log.refresh().await?;
        let log_s = started.elapsed().as_secs_f64();
        let expected = writer.summary("bench");
        anyhow::ensure!(peer.summary("bench") == expected, "synced peer differs");
        anyhow::ensure!(from_log.summary("bench") == expected, "log reader differs");
        println!(
            "kb sync over NATS: a peer missing 1,000 facts in {shards} documents caught up from a memory agent: {rounds} round trips, {sent} bytes sent + {received} received, {changes} changes, {:.1} ms; reading the same changes from the log: {:.1} ms",
            sync_s * 1e3,
            log_s * 1e3
        );
        memory.stop().await?;
    }

    // Sync: two replicas share 1,000 facts, then each adds 1,000 of its own.
    let (ka, kb) = (Identity::generate(), Identity::generate());
    let mut a = KnowledgeDoc::new(ka.public_key(), [1; 8], 4096);
    for i in 0..1_000 {
        a.assert_fact(&fact(i), now)?;
    }
    a.commit(now);
    let mut b = KnowledgeDoc::new(kb.public_key(), [2; 8], 4096);
    b.apply_changes(a.changes_since(&[]))?;
    for i in 0..1_000 {
        a.assert_fact(&fact(10_000 + i), now)?;
        if i % 100 == 99 {
            a.commit(now);
        }
        b.assert_fact(&fact(20_000 + i), now)?;
        if i % 100 == 99 {
            b.commit(now);
        }
    }
    let one_side: usize = a
        .changes_since(&b.heads())
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum();
    let started = Instant::now();
    let (rounds, bytes) = murmur_knowledge::sync::sync_in_process(&mut a, &mut b)?;
    anyhow::ensure!(a.heads_hex() == b.heads_hex());
    println!(
        "kb sync: replicas diverged by 1,000 facts each (10 changes each): {rounds} round trips, {bytes} bytes both ways, {:.1} ms; raw change bytes of one side: {one_side}",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn writer_docs(
    writer: &mut murmur_knowledge::replica::KnowledgeReplica,
    shards: u16,
) -> Vec<Vec<u8>> {
    (0..shards)
        .filter_map(|s| writer.document_mut(&format!("bench-{s}")).map(|d| d.save()))
        .collect()
}

/// Decision latency: open → decided, with `n` in-process voters that each append an
/// approve vote as soon as they see the proposal (one shared core subscription fans the
/// opened events out), and one in-process tallier (100 ms tick, as `murmur tallier`). Baseline: a raw JetStream publish + ack
/// round trip in the same run.
async fn consensus_suite(
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
        async move {
            Ok::<_, anyhow::Error>(
                EventLog::open(
                    client,
                    identity,
                    realm,
                    LogConfig::default(),
                    EventCodec::default(),
                )
                .await?,
            )
        }
    };
    let opener = open_as(Identity::generate()).await?;
    // Baseline: raw publish + ack round trips.
    let js = opener.jetstream().clone();
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
        let tallier_log = EventLog::open(
            async_nats::connect(url).await?,
            Identity::generate(),
            realm.clone(),
            LogConfig::default(),
            EventCodec::default(),
        )
        .await?;
        // Its decisions count only with the tallier role in the log.
        murmur_tools::authority::claim_realm(&tallier_log, "bench", &[Role::Tallier]).await?;
        tokio::spawn(murmur_coordination::consensus::run_tallier(
            tallier_log,
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
                            handles: Some(murmur_agents::voter::handled_types()),
                        },
                        heartbeat: Duration::from_secs(1),
                    },
                )
                .await?;
                let mut stop = voters_stop.subscribe();
                agent_tasks.push(tokio::spawn(async move {
                    let policy = murmur_agents::voter::PolicyVoter {
                        default: Some(Choice::Approve),
                        rules: vec![],
                    };
                    let _ = murmur_agents::voter::run_voter(&agent, &policy, async {
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
struct DecisionRun {
    /// Open → `decided` received, ms, sorted.
    latencies: Vec<f64>,
    /// Proposals decided per second over the run.
    rate: f64,
    /// When each proposal was opened and decided.
    walls: Walls,
}

/// Per proposal id: wall clock when it was opened and when its decision arrived.
type Walls = std::collections::BTreeMap<
    String,
    (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
>;

/// Opens `count` simple-majority proposals (`<prefix><i>`) one at a time and waits for each
/// decision on `decided`; with `gap`, an opening waits until `gap` after the previous one.
async fn decide_in_turn(
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// Per proposal whose id starts with `prefix`: ms from `opened` to the `quorum`-th vote, and
/// from that vote to `decided`, by the stream's stored timestamps (sorted).
async fn decision_stages(
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
    read_stream(
        log.jetstream(),
        &log.config().history_stream,
        &filter,
        StartAt::Beginning,
        None,
        |m| {
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
        },
    )
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

/// A synthetic deployment of about `n` nodes: hosts of 50 nodes, each with a database,
/// a storage volume, a load balancer and 47 services that depend on each other in a chain,
/// connect to the database and are partly balanced; one NATS node per 10 hosts.
fn synthetic_deployment(n: usize) -> murmur_nix::DeploymentSpec {
    use murmur_nix::model::*;
    let hosts = n.div_ceil(50).max(1);
    let mut spec = DeploymentSpec::new("bench");
    for h in 0..hosts {
        let host = format!("h{h}");
        spec = spec.host(host.clone(), format!("10.{}.{}.1", h / 250, h % 250));
        let db = format!("db{h}");
        spec = spec
            .node(
                db.clone(),
                host.clone(),
                NodeKind::Database(DatabaseSpec {
                    version: 16,
                    databases: vec!["app".into()],
                    users: vec![DatabaseUser {
                        name: "app".into(),
                        owns_database: true,
                    }],
                    port: 5432,
                    backup: Some(Backup {
                        schedule: "daily".into(),
                        storage: format!("st{h}"),
                    }),
                }),
            )
            .node(
                format!("st{h}"),
                host.clone(),
                NodeKind::Storage(StorageSpec {
                    device: format!("/dev/disk/by-label/st{h}"),
                    fs_type: "ext4".into(),
                    size_gib: Some(100),
                    mount_path: format!("/srv/st{h}"),
                    access: AccessMode::ReadWrite,
                }),
            )
            .node(
                format!("lb{h}"),
                host.clone(),
                NodeKind::LoadBalancer(LoadBalancerSpec {
                    strategy: Strategy::LeastConnections,
                    health_check_interval_s: 10,
                    port: 80,
                }),
            );
        if h % 10 == 0 {
            spec = spec.node(
                format!("bus{h}"),
                host.clone(),
                NodeKind::MessageBus(MessageBusSpec {
                    cluster: "bench".into(),
                    cluster_size: None,
                    jetstream: true,
                    port: 4222,
                    cluster_port: 6222,
                    streams: vec![],
                    auth: murmur_nix::model::BusAuth::None,
                }),
            );
        }
        for i in 0..47 {
            let name = format!("s{h}-{i}");
            spec = spec.node(
                name.clone(),
                host.clone(),
                NodeKind::Service(ServiceSpec {
                    command: "/bin/app".into(),
                    args: vec!["--id".into(), name.clone()],
                    port: Some(10_000 + i as u16),
                    resources: Resources {
                        memory_mib: Some(256),
                        cpu_percent: Some(50),
                    },
                    ..Default::default()
                }),
            );
            spec = spec.edge(
                name.clone(),
                db.clone(),
                EdgeKind::ConnectsTo {
                    port: 5432,
                    database: Some("app".into()),
                },
            );
            if i > 0 {
                spec = spec.edge(name.clone(), format!("s{h}-{}", i - 1), EdgeKind::DependsOn);
            }
            if i < 5 {
                spec = spec.edge(format!("lb{h}"), name.clone(), EdgeKind::BalancesTo);
            }
        }
    }
    spec
}

/// Validate + generate at each size; baseline: serde_json serialising the same spec.
fn flake_suite(sizes: &[usize], runs: usize) -> Result<()> {
    println!(
        "flake suite: validate + generate vs serde_json::to_vec of the spec, median of {runs} runs"
    );
    println!(
        "{:>8} {:>8} {:>12} {:>12} {:>12} {:>10}",
        "nodes", "edges", "murmur ms", "json ms", "µs/node", "bytes"
    );
    for &n in sizes {
        let spec = synthetic_deployment(n);
        let (nodes, edges) = (spec.nodes.len(), spec.edges.len());
        let mut ours = Vec::new();
        let mut base = Vec::new();
        let mut valid = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let s = spec.clone();
            let t = Instant::now();
            let d = murmur_nix::Deployment::new(s).map_err(|e| anyhow::anyhow!("{e}"))?;
            let validated = t.elapsed().as_secs_f64() * 1e3;
            let flake = murmur_nix::generate(&d);
            ours.push(t.elapsed().as_secs_f64() * 1e3);
            valid.push(validated);
            bytes = flake.files.values().map(String::len).sum::<usize>();
            let t = Instant::now();
            let json = serde_json::to_vec(&spec)?;
            base.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(json);
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, b, v) = (med(&mut ours), med(&mut base), med(&mut valid));
        println!(
            "{nodes:>8} {edges:>8} {o:>12.2} {b:>12.2} {:>12.2} {bytes:>10}   (validate {v:.2} ms)",
            o * 1e3 / nodes as f64
        );
    }
    Ok(())
}

/// Counts events and sums a payload field: the cheapest real fold.
struct Count {
    realm: Token,
}

impl Projection for Count {
    type State = (u64, u64);
    fn name(&self) -> &str {
        "bench-count"
    }
    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.realm.clone())
    }
    fn apply(&self, state: &mut (u64, u64), event: &VerifiedEvent) -> Result<(), Refusal> {
        let p: TaskSubmitted = event.payload().map_err(|e| Refusal(e.to_string()))?;
        state.0 += 1;
        state.1 += u64::from(p.priority);
        Ok(())
    }
}

/// Counts `task.completed` events: how the task bench sees progress without reading (and
/// verifying) the three other events of every task, which the raw baseline never reads either.
struct Completions {
    realm: Token,
}

impl Projection for Completions {
    type State = u64;
    fn name(&self) -> &str {
        "bench-completions"
    }
    fn filter(&self) -> SubjectFilter {
        murmur_subjects::catalog::EventType::of::<murmur_subjects::events::TaskCompleted>()
            .filter(Some(&self.realm))
    }
    fn apply(&self, state: &mut u64, _: &VerifiedEvent) -> Result<(), Refusal> {
        *state += 1;
        Ok(())
    }
}

fn payload(i: u64) -> TaskSubmitted {
    // ≈128-byte payload.
    TaskSubmitted {
        capability: "compiler.rust".into(),
        input: serde_json::json!({ "n": i, "pad": "x".repeat(70) }),
        priority: (i % 7) as u8,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn drain(
    window: &mut VecDeque<async_nats::jetstream::context::PublishAckFuture>,
    keep: usize,
) -> Result<()> {
    while window.len() > keep {
        if let Some(f) = window.pop_front() {
            f.await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Diagnostics on stderr when asked for (RUST_LOG=murmur_coordination=debug, …).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    if !args.flake_nodes.is_empty() {
        return flake_suite(&args.flake_nodes, args.runs);
    }
    if args.kb_facts.is_some() || !args.voters.is_empty() {
        let target = Target::start(false).await?;
        let url = target.url.clone();
        let version = async_nats::connect(&url).await?.server_info().version;
        println!("nats-server {version} at {url} (open)");
        if let Some(facts) = args.kb_facts {
            return kb_suite(&url, facts, args.kb_shards).await;
        }
        return consensus_suite(&url, &args.voters, args.proposals, args.voter_agents).await;
    }
    let modes: &[bool] = match args.auth {
        AuthMode::Secure => &[true],
        AuthMode::Open => &[false],
        AuthMode::Both => &[false, true],
    };
    let mut figures: Vec<(&'static str, Vec<(String, f64)>)> = Vec::new();
    for &secure in modes {
        let target = Target::start(secure).await?;
        let (connect_p50, connect_p99) = connect_times(&target, 200).await?;
        println!(
            "\n## {} server at {}: connect + authenticate (first round trip included), 200 in turn: p50 {connect_p50:.2} ms, p99 {connect_p99:.2} ms",
            target.label(),
            target.url
        );
        let mut these = vec![(
            "connect + authenticate p50 (ms; lower is better)".to_string(),
            connect_p50,
        )];
        if let Some(tasks) = args.tasks {
            these.extend(
                task_suite(
                    &target,
                    tasks,
                    args.window,
                    args.task_workers,
                    args.agent_binary.clone(),
                )
                .await?,
            );
        } else {
            these.extend(event_log_suite(&target, &args).await?);
        }
        figures.push((target.label(), these));
    }
    if let [(open_label, open), (secure_label, secure)] = &figures[..] {
        println!("\n| figure | {open_label} | {secure_label} | {secure_label} / {open_label} |");
        println!("|---|---:|---:|---:|");
        for ((name, o), (_, s)) in open.iter().zip(secure) {
            println!("| {name} | {o:.2} | {s:.2} | {:.3} |", s / o);
        }
    }
    Ok(())
}

/// The event-log suite on `target`: JetStream publish, replay through a projection and core
/// dispatch, murmur against raw async-nats with the same bytes in the same run. Prints its
/// table; returns its figures (msgs/s) by name.
async fn event_log_suite(target: &Target, args: &Args) -> Result<Vec<(String, f64)>> {
    let url = target.url.clone();
    let version = target
        .participant(&Token::new("bench")?, Role::Observer, "version")
        .await?
        .0
        .connect()
        .await?
        .server_info()
        .version;
    println!(
        "nats-server {version} at {url}, {}; {} mode; {} events per run, {} runs, window {}",
        target.label(),
        args.mode,
        args.events,
        args.runs,
        args.window
    );
    let n = args.events;
    let (mut pub_raw, mut pub_mm, mut rep_raw, mut rep_mm, mut core_raw, mut core_mm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut pub_single = vec![];
    // Every run's realms share the account of realm `bench`; the suite's participant
    // connects with the operator's role (its subjects span realms and planes).
    let account = Token::new("bench")?;
    for run in 0..args.runs {
        let (options, identity) = target
            .participant(&account, Role::Operator, "bench")
            .await?;
        let client = options.connect().await?;
        let realm = Token::new(format!("bench{run}"))?;
        let raw_realm = Token::new(format!("raw{run}"))?;
        let single_realm = Token::new(format!("single{run}"))?;
        let mode = if args.mode == "binary" {
            ContentMode::Binary
        } else {
            ContentMode::Structured
        };
        let log = EventLog::open(
            client.clone(),
            identity,
            realm.clone(),
            LogConfig::default(),
            EventCodec::default().content_mode(mode),
        )
        .await?;
        let js = log.jetstream().clone();

        // Raw publish baseline: the same encoded bytes and headers, pre-built, published with
        // the same window. (Subjects differ only in the realm token.)
        let mut prepared = Vec::with_capacity(n as usize);
        for i in 0..n {
            let sealed = Draft::new(Token::new(format!("t{i}"))?, &payload(i))?
                .seal(log.identity(), &raw_realm);
            let (mut h, b) = log.codec().encode(&sealed)?;
            h.insert(MSG_ID, sealed.record.id.as_str());
            prepared.push((sealed.subject.to_string(), h, b));
        }
        let mut window = VecDeque::new();
        let t = Instant::now();
        for (s, h, b) in prepared {
            window.push_back(js.publish_with_headers(s, h, b).await?);
            drain(&mut window, args.window).await?;
        }
        drain(&mut window, 0).await?;
        pub_raw.push(n as f64 / t.elapsed().as_secs_f64());

        // murmur publish, one signature per event: build payload, sign, encode, append.
        let single_n = n / 5;
        let mut pending = VecDeque::new();
        let t = Instant::now();
        for i in 0..single_n {
            // Another realm, so the replay below reads only batch-signed events.
            let sealed = Draft::new(Token::new(format!("s{i}"))?, &payload(i))?
                .seal(log.identity(), &single_realm);
            pending.push_back(log.append_sealed(&sealed).await?);
            while pending.len() > args.window {
                if let Some(p) = pending.pop_front() {
                    p.wait().await?;
                }
            }
        }
        while let Some(p) = pending.pop_front() {
            p.wait().await?;
        }
        pub_single.push(single_n as f64 / t.elapsed().as_secs_f64());

        // murmur publish with batch signatures (append_many, 256 events per signature).
        let mut pending = VecDeque::new();
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + 256).min(n);
            let drafts = (i..end)
                .map(|k| Ok(Draft::new(Token::new(format!("t{k}"))?, &payload(k))?))
                .collect::<Result<Vec<_>>>()?;
            for (_, p) in log.append_many(drafts).await? {
                pending.push_back(p);
            }
            while pending.len() > args.window {
                if let Some(p) = pending.pop_front() {
                    p.wait().await?;
                }
            }
            i = end;
        }
        while let Some(p) = pending.pop_front() {
            p.wait().await?;
        }
        pub_mm.push(n as f64 / t.elapsed().as_secs_f64());

        // Raw replay baseline: pull consumer, no acks, count only.
        let filter = SubjectFilter::plane(Plane::Evt)
            .realm(realm.clone())
            .domain(murmur_subjects::Domain::Task);
        let t = Instant::now();
        let mut count = 0u64;
        read_stream(
            &js,
            "MURMUR_HISTORY",
            &filter,
            StartAt::Beginning,
            None,
            |m| {
                count += 1;
                std::hint::black_box(&m.message.payload);
                ControlFlow::Continue(())
            },
        )
        .await?;
        anyhow::ensure!(count == n, "raw replay read {count}");
        rep_raw.push(n as f64 / t.elapsed().as_secs_f64());

        // murmur replay: the same messages through a projection (decode, verify, fold).
        let t = Instant::now();
        // A reader with its own codec: no signature roots cached from publishing.
        let reader = EventLog::open(
            client.clone(),
            log.identity().clone(),
            realm.clone(),
            LogConfig::default(),
            EventCodec::default().content_mode(mode),
        )
        .await?;
        let mut p = Projector::new(
            reader,
            Count {
                realm: realm.clone(),
            },
        );
        p.catch_up().await?;
        anyhow::ensure!(p.state().0 == n, "projection folded {}", p.state().0);
        rep_mm.push(n as f64 / t.elapsed().as_secs_f64());

        // Core dispatch: raw publish of pre-encoded heartbeats vs murmur seal+encode+publish
        // with a subscriber that decodes and verifies.
        let hb = AgentHeartbeat {
            interval_ms: 1000,
            load: 0.5,
            queue_depth: 3,
        };
        let me = Token::new("agent1")?;
        let mut prepared = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let sealed = Draft::new(me.clone(), &hb)?.seal(log.identity(), &raw_realm);
            let (h, b) = log.codec().encode(&sealed)?;
            prepared.push((sealed.subject.to_string(), h, b));
        }
        let sub_client = target
            .participant(&account, Role::Operator, "bench-sub")
            .await?
            .0
            .connect()
            .await?;
        let raw_subject = prepared[0].0.clone();
        let mut sub = sub_client.subscribe(raw_subject).await?;
        sub_client.flush().await?;
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = received.clone();
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                if sub.next().await.is_none() {
                    break;
                }
                c += 1;
                counted.store(c, std::sync::atomic::Ordering::Relaxed);
            }
            c
        });
        let t = Instant::now();
        for (k, (s, h, b)) in prepared.into_iter().enumerate() {
            client.publish_with_headers(s, h, b).await?;
            keep_up(&client, k as u64, &received).await?;
        }
        client.flush().await?;
        // Core NATS drops messages for a slow consumer: never hang on them, report them.
        match tokio::time::timeout(Duration::from_secs(60), counter).await {
            Ok(received) => anyhow::ensure!(received? == n, "raw core dispatch lost messages"),
            Err(_) => anyhow::bail!(
                "raw core dispatch: subscriber did not receive all {n} messages within 60 s (slow consumer drops): {} received; subscriber connection: {:?}",
                received.load(std::sync::atomic::Ordering::Relaxed),
                sub_client.statistics()
            ),
        }
        core_raw.push(n as f64 / t.elapsed().as_secs_f64());

        let mm_subject = Draft::new(me.clone(), &hb)?
            .seal(log.identity(), &realm)
            .subject
            .to_string();
        let mut sub = sub_client.subscribe(mm_subject).await?;
        sub_client.flush().await?;
        let codec = log.codec().clone();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = received.clone();
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                let Some(m) = sub.next().await else { break };
                if codec
                    .decode(m.subject.as_str(), m.headers.as_ref(), &m.payload)
                    .is_ok()
                {
                    c += 1;
                    counted.store(c, std::sync::atomic::Ordering::Relaxed);
                }
            }
            c
        });
        let t = Instant::now();
        let mut sent = 0;
        while sent < n {
            keep_up(&client, sent, &received).await?;
            let k = 256.min(n - sent);
            let drafts = (0..k)
                .map(|_| Draft::new(me.clone(), &hb))
                .collect::<Result<Vec<_>, _>>()?;
            sent += log.publish_live_many(drafts).await? as u64;
        }
        client.flush().await?;
        // Core NATS drops messages for a slow consumer: never hang on them, report them.
        match tokio::time::timeout(Duration::from_secs(60), counter).await {
            Ok(received) => anyhow::ensure!(received? == n, "murmur core dispatch lost messages"),
            Err(_) => anyhow::bail!(
                "murmur core dispatch: subscriber did not receive all {n} messages within 60 s (slow consumer drops)"
            ),
        }
        core_mm.push(n as f64 / t.elapsed().as_secs_f64());
        eprintln!("run {run} done");
    }

    let pr = median(pub_raw);
    let pm = median(pub_mm);
    let rr = median(rep_raw);
    let rm = median(rep_mm);
    let cr = median(core_raw);
    let cm = median(core_mm);
    let ps_figure = median(pub_single.clone());
    println!("| path | raw async-nats msgs/s | murmur msgs/s | ratio | target |");
    println!("|---|---|---|---|---|");
    let ps = median(pub_single);
    println!(
        "| JetStream publish, batch signatures (append_many) | {pr:.0} | {pm:.0} | {:.2} | ≥ 0.90 |",
        pm / pr
    );
    println!(
        "| JetStream publish, one signature per event (append_sealed) | {pr:.0} | {ps:.0} | {:.2} | ≥ 0.90 |",
        ps / pr
    );
    println!(
        "| replay: pull vs projection (decode + verify + fold), batch-signed events | {rr:.0} | {rm:.0} | {:.2} | ≥ 0.70 |",
        rm / rr
    );
    println!(
        "| core dispatch, batch signatures (publish → decoding subscriber) | {cr:.0} | {cm:.0} | {:.2} | ≥ 0.80 |",
        cm / cr
    );
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        println!("{}", cpu_breakdown(mode)?);
    }
    Ok(vec![
        ("raw JetStream publish (msgs/s)".into(), pr),
        ("murmur publish, batch signatures (msgs/s)".into(), pm),
        (
            "murmur publish, one signature per event (msgs/s)".into(),
            ps_figure,
        ),
        ("raw replay (msgs/s)".into(), rr),
        ("murmur replay through a projection (msgs/s)".into(), rm),
        ("raw core dispatch (msgs/s)".into(), cr),
        ("murmur core dispatch (msgs/s)".into(), cm),
    ])
}

/// Where the CPU goes, per event, in-process, for one content mode.
fn cpu_breakdown(mode: ContentMode) -> Result<String> {
    let id = Identity::generate();
    let realm = Token::new("cpu")?;
    let codec = EventCodec::default().content_mode(mode);
    let k = 5_000u32;
    let drafts = || {
        (0..k).map(|i| {
            Draft::new(Token::new("t").expect("token"), &payload(u64::from(i))).expect("draft")
        })
    };
    let t = Instant::now();
    let single: Vec<_> = drafts().map(|d| d.seal(&id, &realm)).collect();
    let seal_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let t = Instant::now();
    let batch = murmur_subjects::codec::seal_batch(drafts(), &id, &realm);
    let seal_batch_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let t = Instant::now();
    let encoded_single: Vec<_> = single
        .iter()
        .map(|s| codec.encode(s))
        .collect::<Result<_, _>>()?;
    let encode_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let encoded_batch: Vec<_> = batch
        .iter()
        .map(|s| codec.encode(s))
        .collect::<Result<_, _>>()?;
    let subject = single[0].subject.to_string();
    let decode = |encoded: &[(async_nats::HeaderMap, bytes::Bytes)]| -> Result<f64> {
        let fresh = EventCodec::default();
        let t = Instant::now();
        for (h, b) in encoded {
            fresh.decode(&subject, Some(h), b)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(k))
    };
    let decode_us = decode(&encoded_single)?;
    let decode_batch_us = decode(&encoded_batch)?;
    let headers = murmur_subjects::binding::message_size(Some(&encoded_batch[0].0), &[]);
    let body = encoded_batch[0].1.len();
    Ok(format!(
        "{mode:?} mode, per event on one core: seal {seal_us:.1} µs (one signature each) / {seal_batch_us:.1} µs (batch); encode {encode_us:.1} µs; decode + schema + verify {decode_us:.1} µs (one signature each) / {decode_batch_us:.1} µs (batch); message {headers} header + {body} body bytes"
    ))
}

/// Issue 3: tasks submitted → completed per second with no-op workers against raw JetStream
/// publishes in the same run, submit→complete latency, join → routable latency, idle RSS.
async fn task_suite(
    target: &Target,
    n: u64,
    window: usize,
    worker_count: usize,
    agent_binary: Option<std::path::PathBuf>,
) -> Result<Vec<(String, f64)>> {
    let url = target.url.as_str();
    use murmur_agents::{Agent, AgentSpec};
    use murmur_coordination::coordinator::{
        CoordinatorConfig, CoordinatorProjection, run_coordinator,
    };
    use murmur_coordination::liveness::SystemClock;
    use murmur_coordination::registry::AgentStatus;
    use std::sync::Arc;

    let realm = Token::new("tasks")?;
    // Each participant with credentials for its role, as a deployment runs them.
    let open = |name: &'static str, role: Role| target.log(&realm, role, name);

    // Raw baseline: the same number of pre-encoded submission-sized messages.
    let raw_log = open("raw", Role::Operator).await?;
    let raw_realm = Token::new("rawtasks")?;
    let mut prepared = Vec::new();
    for i in 0..n {
        let sealed = Draft::new(Token::new(format!("r{i}"))?, &task_payload(i))?
            .seal(raw_log.identity(), &raw_realm);
        let (mut h, b) = raw_log.codec().encode(&sealed)?;
        h.insert(MSG_ID, sealed.record.id.as_str());
        prepared.push((sealed.subject.to_string(), h, b));
    }
    let js = raw_log.jetstream().clone();
    let mut inflight = VecDeque::new();
    let t = Instant::now();
    for (s, h, b) in prepared {
        inflight.push_back(js.publish_with_headers(s, h, b).await?);
        drain(&mut inflight, window).await?;
    }
    drain(&mut inflight, 0).await?;
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();

    // The same task flow in raw async-nats: four stored events per task with the same
    // expected sequences and hops, bodies the size of murmur's events, nothing else.
    raw_flows::ensure_stream(raw_log.jetstream(), &raw_log.config().history_stream).await?;
    let body_of = |draft: Draft| -> Result<bytes::Bytes> {
        Ok(raw_log
            .codec()
            .encode(&draft.seal(raw_log.identity(), &raw_realm))?
            .1)
    };
    let sample = Token::new("sample")?;
    let raw_bodies = raw_flows::TaskBodies {
        submitted: body_of(Draft::new(sample.clone(), &task_payload(0))?)?,
        assigned: body_of(Draft::new(
            sample.clone(),
            &murmur_subjects::events::TaskAssigned {
                agent: raw_log.identity().public_key().to_string(),
                attempt: 1,
                lease_ms: 600_000,
                work: Some(murmur_subjects::events::AssignedWork {
                    input: serde_json::json!({ "n": 0 }),
                    submitter: raw_log.identity().public_key().to_string(),
                    capability: "compiler.rust".into(),
                }),
            },
        )?)?,
        started: body_of(Draft::new(
            sample.clone(),
            &murmur_subjects::events::TaskStarted { attempt: 1 },
        )?)?,
        completed: body_of(Draft::new(
            sample,
            &murmur_subjects::events::TaskCompleted {
                output: serde_json::json!({ "n": 0 }),
                attempt: 1,
            },
        )?)?,
    };
    // The raw flows connect as the operator (their subjects are no murmur role's).
    let (raw_options, _) = target
        .participant(&realm, Role::Operator, "raw-flow")
        .await?;
    let raw_flow_rate = raw_flows::task_flow(
        &raw_options,
        n,
        window,
        worker_count,
        raw_bodies.clone(),
        true,
    )
    .await?;
    let raw_flow_3_rate =
        raw_flows::task_flow(&raw_options, n, window, worker_count, raw_bodies, false).await?;

    // Platform and two no-op workers, in process.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The coordinator as `murmur up` runs it: the operator's credentials, the coordinator
    // role granted in the log (its decisions count only with it).
    let coordinator_log = open("coordinator", Role::Operator).await?;
    target.grant(&coordinator_log, &[Role::Coordinator]).await?;
    let coordinator = tokio::spawn(run_coordinator(
        coordinator_log,
        Arc::new(SystemClock),
        // The tick and batch window `murmur coordinator` uses.
        CoordinatorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let mut observer = Projector::new(
        open("observer", Role::Observer).await?,
        CoordinatorProjection::new(realm.clone()),
    );
    let mut join_ms = Vec::new();
    let mut workers = Vec::new();
    for k in 1..=worker_count.max(1) {
        let name = format!("w{k}");
        let log = open("worker", Role::Worker).await?;
        let t = Instant::now();
        let agent = Arc::new(
            Agent::join(
                log,
                AgentSpec {
                    manifest: murmur_subjects::events::AgentJoined {
                        name: name.clone(),
                        kind: "tester".into(),
                        capabilities: vec!["test.run".into()],
                        labels: Default::default(),
                        agent_version: "0.1.0".into(),
                        hardware: murmur_subjects::events::Hardware {
                            cores: 2,
                            memory_mib: 1024,
                            accelerators: vec![],
                            vram_mib: 0,
                        },
                        // No-op tasks: as many at once as the coordinator sends.
                        slots: 512,
                        handles: Some(murmur_agents::worker::handled_types()),
                    },
                    heartbeat: Duration::from_secs(1),
                },
            )
            .await?,
        );
        let id = agent.id().to_string();
        anyhow::ensure!(
            observer
                .follow_until(Duration::from_secs(30), |v| v
                    .registry
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.status == AgentStatus::Online))
                .await?,
            "agent never routable"
        );
        join_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let runner = agent.clone();
        let stop = stopped(stop_rx.clone());
        workers.push(tokio::spawn(async move {
            murmur_agents::worker::run_worker(
                &runner,
                murmur_tools::agent_cli::builtin_handler(),
                stop,
                Duration::from_secs(5),
            )
            .await
        }));
    }

    // Progress from here on is read from completions only.
    drop(observer);
    let mut completions = Projector::new(
        open("completions", Role::Observer).await?,
        Completions {
            realm: realm.clone(),
        },
    );
    let submitter = open("submitter", Role::Submitter).await?;
    let t = Instant::now();
    let mut i = 0;
    let mut pending = VecDeque::new();
    while i < n {
        let end = (i + 256).min(n);
        let drafts = (i..end)
            .map(|k| Ok(Draft::new(Token::new(format!("t{k}"))?, &task_payload(k))?))
            .collect::<Result<Vec<_>>>()?;
        for (_, p) in submitter.append_many(drafts).await? {
            pending.push_back(p);
        }
        while pending.len() > window {
            if let Some(p) = pending.pop_front() {
                p.wait().await?;
            }
        }
        i = end;
    }
    while let Some(p) = pending.pop_front() {
        p.wait().await?;
    }
    let done = completions
        .follow_until(Duration::from_secs(600), |done| *done >= n)
        .await?;
    let elapsed = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        done,
        "not all tasks completed: {} of {n}",
        completions.state()
    );
    let task_rate = n as f64 / elapsed;

    // Latency at half the peak rate: about 20 s of submissions paced at task_rate / 2.
    let half_rate = task_rate / 2.0;
    let m = ((half_rate * 20.0) as u64).clamp(50, n);
    let interval = Duration::from_secs_f64(1.0 / half_rate);
    let paced_start = tokio::time::Instant::now();
    for k in 0..m {
        tokio::time::sleep_until(paced_start + interval.mul_f64(k as f64)).await;
        submitter
            .append(Draft::new(Token::new(format!("h{k}"))?, &task_payload(k))?)
            .await?;
    }
    anyhow::ensure!(
        completions
            .follow_until(Duration::from_secs(600), |done| *done >= n + m)
            .await?,
        "paced tasks did not complete: {} of {}",
        completions.state(),
        n + m
    );

    // Submit → complete latency from the log's own timestamps.
    let mut submitted_at: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let mut paced_latencies = Vec::new();
    // Paced tasks: time from submission to each later event, by verb.
    let mut stages: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    // Burst tasks: time from the previous event of the task, by verb.
    let mut peak_hops: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut previous_at: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(realm.clone())
        .domain(murmur_subjects::Domain::Task);
    read_stream(
        submitter.jetstream(),
        "MURMUR_HISTORY",
        &filter,
        StartAt::Beginning,
        None,
        |m| {
            let subject = m.message.subject.as_str();
            let task = subject.split('.').nth(5).unwrap_or_default().to_string();
            let verb = subject.rsplit('.').next().unwrap_or_default();
            if task.starts_with('t') {
                // Burst tasks: each hop from the one before (queueing for a slot aside).
                if let Some(prev) = previous_at.insert(task.clone(), m.stored_at)
                    && verb != "submitted"
                {
                    let ms = (m.stored_at - prev).num_microseconds().unwrap_or(0) as f64 / 1e3;
                    peak_hops.entry(verb.to_string()).or_default().push(ms);
                }
            }
            if task.starts_with('h')
                && let Some(s) = submitted_at.get(&task)
            {
                let ms = (m.stored_at - *s).num_microseconds().unwrap_or(0) as f64 / 1e3;
                stages.entry(verb.to_string()).or_default().push(ms);
            }
            if subject.ends_with(".submitted") {
                submitted_at.insert(task, m.stored_at);
            } else if subject.ends_with(".completed")
                && let Some(s) = submitted_at.get(&task)
            {
                let ms = (m.stored_at - *s).num_microseconds().unwrap_or(0) as f64 / 1e3;
                if task.starts_with('h') {
                    paced_latencies.push(ms);
                } else {
                    latencies.push(ms);
                }
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    paced_latencies.sort_by(|a, b| a.total_cmp(b));
    let percentile = |v: &Vec<f64>, p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let pct = |p: f64| percentile(&latencies, p);

    stop_tx.send_replace(true);
    for w in workers {
        w.await??;
    }
    coordinator.await??;

    // Idle RSS of a real agent process.
    let murmur = match agent_binary {
        Some(bin) if bin.exists() => Some(bin),
        Some(bin) => anyhow::bail!("--agent-binary {}: no such file", bin.display()),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("murmur"))
            .filter(|p| p.exists()),
    };
    let rss_binary = murmur
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let rss = match murmur {
        Some(bin) => {
            let dir = tempfile::tempdir()?;
            // Its credentials (operator mode), or a fresh identity (open).
            let (creds, identity): (Vec<String>, &[&str]) = match &target.issuer {
                Some(issuer) => (
                    issuer
                        .process_args(&realm, Role::Worker, "idle", dir.path())
                        .await?,
                    &[],
                ),
                None => (Vec::new(), &["--ephemeral-identity"]),
            };
            let mut child = tokio::process::Command::new(bin)
                .args(["--server", url, "--realm", "tasks", "--data-dir"])
                .arg(dir.path())
                .args(&creds)
                .args([
                    "agent",
                    "run",
                    "--kind",
                    "idle",
                    "--capability",
                    "test.idle",
                ])
                .args(identity)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let pid = child.id().unwrap_or(0);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            child.kill().await.ok();
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
                .map(|kb| {
                    let kib = kb.parse::<f64>().unwrap_or(0.0);
                    format!("{:.1} MiB ({:.1} MB)", kib / 1024.0, kib * 1024.0 / 1e6)
                })
                .unwrap_or_else(|| "unknown".into())
        }
        None => "not measured (murmur binary not built next to the bench)".into(),
    };

    println!("| measure | value |");
    println!("|---|---|");
    println!("| raw JetStream publish, same run | {raw_rate:.0} msgs/s |");
    println!(
        "| tasks submitted → completed ({worker_count} no-op workers, in process) | {task_rate:.0} tasks/s |"
    );
    println!("| ratio (target ≥ 0.25) | {:.3} |", task_rate / raw_rate);
    println!(
        "| the same task flow in raw async-nats (4 stored events, same expected sequences and hops, no signing or decoding) | {raw_flow_rate:.0} tasks/s ({:.3} of raw publishes) |",
        raw_flow_rate / raw_rate
    );
    println!(
        "| … the same without `started` (3 stored events per task) | {raw_flow_3_rate:.0} tasks/s ({:.3} of raw publishes) |",
        raw_flow_3_rate / raw_rate
    );
    println!(
        "| murmur / raw task flow | {:.3} |",
        task_rate / raw_flow_rate
    );
    println!(
        "| submit → complete latency at peak rate, p50 / p99 | {:.1} ms / {:.1} ms |",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "| submit → complete latency at half the peak rate ({half_rate:.0} tasks/s, {m} tasks), p50 / p99 | {:.1} ms / {:.1} ms |",
        percentile(&paced_latencies, 0.5),
        percentile(&paced_latencies, 0.99)
    );
    for (verb, mut v) in peak_hops {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| … peak rate: the event before → {verb}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    for (verb, mut v) in stages {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| … half rate: submitted → {verb}, p50 / p99 | {:.1} ms / {:.1} ms |",
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
    }
    println!(
        "| join → routable (agent.joined seen by a registry), median of {worker_count} | {:.1} ms |",
        median(join_ms)
    );
    println!(
        "| idle agent RSS (`{rss_binary} agent run`, 3 s after start; target < 15 MB) | {rss} |"
    );
    Ok(vec![
        ("raw JetStream publish (msgs/s)".into(), raw_rate),
        ("tasks submitted → completed (tasks/s)".into(), task_rate),
        ("raw task flow (tasks/s)".into(), raw_flow_rate),
        (
            "submit → complete at half rate, p50 (ms; lower is better)".into(),
            percentile(&paced_latencies, 0.5),
        ),
        (
            "submit → complete at half rate, p99 (ms; lower is better)".into(),
            percentile(&paced_latencies, 0.99),
        ),
    ])
}

/// Most messages a core-dispatch publisher runs ahead of its subscriber. Unchecked, a
/// burst of 50,000 ~1 KB messages outgrew the server's buffer for a subscriber that fell
/// behind, and the server dropped messages (a slow consumer) in some runs; bounded, the run
/// measures the rate a subscriber keeps up with, for raw and murmur alike.
const DISPATCH_AHEAD: u64 = 2_000;

/// Before publishing message `sent`, waits while the subscriber is more than
/// [`DISPATCH_AHEAD`] behind.
async fn keep_up(
    client: &async_nats::Client,
    sent: u64,
    received: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    if !sent.is_multiple_of(1_000) {
        return Ok(());
    }
    let until = Instant::now() + Duration::from_secs(60);
    while sent.saturating_sub(received.load(std::sync::atomic::Ordering::Relaxed)) > DISPATCH_AHEAD
    {
        client.flush().await?;
        anyhow::ensure!(
            Instant::now() < until,
            "core dispatch: the subscriber stopped at {} of {sent} sent",
            received.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

fn task_payload(i: u64) -> TaskSubmitted {
    TaskSubmitted {
        capability: "test.run".into(),
        input: serde_json::json!({ "n": i }),
        lease_ms: Some(600_000),
        ..Default::default()
    }
}
