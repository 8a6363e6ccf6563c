//! One run: a 3-node R3 cluster in secure mode, the platform's own processes (coordinator,
//! tallier, worker and voter agents) and three workloads at once (tasks, proposals and votes,
//! knowledge writes by three writers), faults injected and healed in turn, then a quiet
//! period and the checker reading the log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_knowledge::replica::{open_space, set_access};
use murmur_knowledge::{FactId, KnowledgeReplica, ReplicaConfig};
use murmur_subjects::events::AccessRole;
use murmur_subjects::roles::Role;
use murmur_subjects::{
    EventLog, Plane, Projection, Projector, Refusal, SubjectFilter, Token, VerifiedEvent,
};
use murmur_testkit::{ClusterOptions, TestCluster};
use tokio::sync::watch;

use crate::check::{Stored, check_log};
use crate::faults::{Fault, Targets, inject, libfaketime};
use crate::report::{FaultRecord, KnowledgeOutcome, ProposalOutcome, RunReport, TaskOutcome};
use crate::workloads::{SPACE, Shared, open_proposals, submit_tasks, write_facts};

const REALM: &str = "acme";

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Faults in the order they are injected, cycled until the workload time is over; each
    /// gets its turn at least once even when the ones before it ran long.
    pub faults: Vec<Fault>,
    /// `sync_interval: always` on every node.
    pub sync_always: bool,
    /// How long the workloads run.
    pub workload: Duration,
    /// How long each fault holds.
    pub hold: Duration,
    /// Quiet time after each heal, before the next fault.
    pub calm: Duration,
    /// The `murmur` binary the platform's processes run.
    pub murmur: PathBuf,
    /// Where process logs go (kept after the run).
    pub logs: PathBuf,
}

/// Every event of the realm as stored: what the checker compares acknowledgements with.
#[derive(Debug, Clone)]
struct LogIndex {
    realm: Token,
}

impl Projection for LogIndex {
    type State = Vec<Stored>;

    fn name(&self) -> &str {
        "chaos-log-index"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.realm.clone())
    }

    fn apply(&self, state: &mut Self::State, event: &VerifiedEvent) -> Result<(), Refusal> {
        state.push(Stored {
            sequence: event.stream_sequence.unwrap_or_default(),
            id: event.record.id.clone(),
            subject: event.subject.to_string(),
            causation: event.record.causation_id.clone(),
            clock_offset_ms: match (event.record.time, event.stored_at) {
                (Some(time), Some(stored)) => (time - stored).num_milliseconds(),
                _ => 0,
            },
            stored_at_ms: event.stored_at.map_or(0, |t| t.timestamp_millis()),
        });
        Ok(())
    }
}

/// A `murmur` process of the realm, its output in `logs/NAME.log`.
async fn spawn_process(
    config: &RunConfig,
    cluster: &TestCluster,
    server: &str,
    role: Role,
    name: &str,
    args: &[&str],
    env: &[(&str, std::ffi::OsString)],
) -> Result<(tokio::process::Child, String)> {
    let data = config.logs.join(name);
    std::fs::create_dir_all(&data)?;
    let settings = data.join("murmur.toml");
    std::fs::write(&settings, "[log]\nreplicas = 3\n")?;
    let (identity, creds) = cluster
        .issuer()
        .enrol(&Token::new(REALM)?, role, name)
        .await?;
    let creds = creds.context("the cluster is secure")?;
    let log = std::fs::File::create(config.logs.join(format!("{name}.log")))?;
    let child = tokio::process::Command::new(&config.murmur)
        .args(["--server", server, "--realm", REALM, "--config"])
        .arg(&settings)
        .arg("--data-dir")
        .arg(&data)
        .arg("--creds")
        .arg(&creds)
        .args(["--log-level", "warn"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", config.murmur.display()))?;
    Ok((child, identity.public_key().to_string()))
}

/// The history stream's leader and its other peers (0-based), asked with a short
/// deadline; node 0 and none when nobody answers (no leader now).
async fn stream_peers(log: &EventLog) -> (usize, Vec<usize>) {
    crate::replicas::stream_peers_now(log)
        .await
        .unwrap_or((0, Vec::new()))
}

/// Runs the projections live (a live consumer each) until `stop`.
async fn follow_live<P: Projection>(
    mut projector: Projector<P>,
    mut stop: watch::Receiver<bool>,
) -> Projector<P> {
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return projector;
                }
            }
            polled = projector.poll(Duration::from_millis(500)) => {
                if polled.is_err() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Catches `projector` up through stream sequence `end`, through transient failures, within
/// `patience`.
async fn catch_up<P: Projection>(
    projector: &mut Projector<P>,
    end: u64,
    patience: Duration,
) -> Result<()> {
    let until = Instant::now() + patience;
    loop {
        match projector.catch_up_to(end).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < until => {
                tracing::debug!(error = %e, "catch-up retried");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The history stream's last sequence now, through transient failures.
async fn log_end(log: &EventLog, patience: Duration) -> Result<u64> {
    let until = Instant::now() + patience;
    loop {
        match log.last_sequence(&log.config().history_stream).await {
            Ok(end) => return Ok(end),
            Err(e) if Instant::now() < until => {
                tracing::debug!(error = %e, "reading the stream's end retried");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the history stream is gone: the servers answer, and say it does not exist.
async fn history_gone(log: &EventLog) -> Result<bool> {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        match log.find_stream(&log.config().history_stream).await {
            Ok(found) => return Ok(found.is_none()),
            Err(e) if Instant::now() < until => {
                tracing::debug!(error = %e, "asking for the history stream again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One run.
pub async fn run(config: &RunConfig) -> Result<RunReport> {
    std::fs::create_dir_all(&config.logs)?;
    // A fourth node only where a fault moves a replica to it.
    let nodes = if config.faults.iter().any(|f| f.needs_spare_node()) {
        4
    } else {
        3
    };
    let mut cluster = TestCluster::start_nodes(
        nodes,
        &ClusterOptions {
            sync_interval: config.sync_always.then(|| "always".into()),
            linked_routes: true,
            small_disk: config
                .faults
                .contains(&Fault::DiskFull)
                .then_some(256 << 20),
            lazy_disks: config.faults.contains(&Fault::PowerLoss),
            ..Default::default()
        },
    )
    .await?;
    // One worker and one voter read their wall clock through libfaketime (when installed),
    // from a file the clock-skew fault writes.
    let mut targets = Targets::default();
    let mut skewed_env: Vec<(&str, std::ffi::OsString)> = Vec::new();
    if let Some(lib) = libfaketime() {
        let file = config.logs.join("clock-offset");
        std::fs::write(&file, "+0")?;
        skewed_env = vec![
            ("LD_PRELOAD", lib.into_os_string()),
            ("FAKETIME_TIMESTAMP_FILE", file.clone().into_os_string()),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ];
        targets.skew_file = Some(file);
    }
    let realm = Token::new(REALM)?;
    // A cluster that has just started may still be electing its JetStream leaders, or
    // not yet know the realm's account: waited out.
    let until = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        match cluster.issuer().platform(&realm, &[]).await {
            Ok(log) => break log,
            Err(e) if Instant::now() < until => {
                tracing::debug!(error = %e, "the realm is not open yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let server_version = owner.client().server_info().version.clone();
    targets.operator = Some(owner.clone());
    let urls = cluster.urls();
    let node_url = |i: usize| cluster.cluster.nodes[i].url();

    // The platform's own processes: coordinator and tallier reach every node; each agent
    // is pinned to one (it learns the others from the server and fails over).
    let mut processes = Vec::new();
    processes.push((
        "coordinator".to_string(),
        spawn_process(
            config,
            &cluster,
            &urls,
            Role::Coordinator,
            "coordinator",
            &["coordinator"],
            &[],
        )
        .await?
        .0,
    ));
    processes.push((
        "tallier".to_string(),
        spawn_process(
            config,
            &cluster,
            &urls,
            Role::Tallier,
            "tallier",
            &["tallier"],
            &[],
        )
        .await?
        .0,
    ));
    for i in 0..3 {
        let (child, _) = spawn_process(
            config,
            &cluster,
            &node_url(i),
            Role::Worker,
            &format!("worker{i}"),
            &[
                "agent",
                "run",
                "tester",
                "--capability",
                "test.run",
                "--heartbeat-ms",
                "500",
                "--builtin-handler",
            ],
            if i == 0 { &skewed_env } else { &[] },
        )
        .await?;
        if i == 0 {
            targets.agents.push(child.id().context("worker pid")?);
        }
        processes.push((format!("worker{i}"), child));
    }
    let policy = config.logs.join("approve.toml");
    std::fs::write(&policy, "default = \"approve\"\n")?;
    let policy = policy.display().to_string();
    let mut voters = BTreeMap::new();
    for i in 0..3 {
        let name = format!("voter{i}");
        let (child, key) = spawn_process(
            config,
            &cluster,
            &node_url(i),
            Role::Voter,
            &name,
            &[
                "voter",
                "run",
                "--policy",
                &policy,
                "--name",
                &name,
                "--heartbeat-ms",
                "500",
            ],
            if i == 0 { &skewed_env } else { &[] },
        )
        .await?;
        if i == 0 {
            targets.agents.push(child.id().context("voter pid")?);
        }
        voters.insert(key, 1u32);
        processes.push((name, child));
    }

    // The workloads start once every agent is routable, so the calm figures measure the
    // platform at rest, not tasks waiting for the first worker to join.
    let agents = 6;
    let mut registry = Projector::new(
        owner.clone(),
        murmur_coordination::registry::RegistryProjection {
            realm: realm.clone(),
        },
    );
    anyhow::ensure!(
        registry
            .follow_until(Duration::from_secs(120), |r| {
                r.count(murmur_coordination::registry::AgentStatus::Online) >= agents
            })
            .await?,
        "the {agents} agents did not all come online within 120 s (see {})",
        config.logs.display()
    );
    drop(registry);

    // Knowledge: one space, three writers.
    open_space(&owner, SPACE, "chaos suite", 2, 4096).await?;
    let mut writer_logs = Vec::new();
    for i in 0..3 {
        let log = cluster
            .issuer()
            .participant(&realm, Role::Submitter, &format!("writer{i}"))
            .await?;
        set_access(
            &owner,
            SPACE,
            log.identity().public_key(),
            AccessRole::Writer,
            true,
        )
        .await?;
        writer_logs.push(log);
    }
    let submitter = cluster
        .issuer()
        .participant(&realm, Role::Submitter, "submitter")
        .await?;
    // The flood fault's participants: a worker identity and a voter identity.
    targets.storm = Some(
        cluster
            .issuer()
            .participant(&realm, Role::Worker, "flooder")
            .await?,
    );
    let (_, oversized_creds) = cluster
        .issuer()
        .enrol(&realm, Role::Voter, "oversized")
        .await?;
    targets.oversized = oversized_creds.map(|c| (c, node_url(0)));
    let proposer = cluster
        .issuer()
        .participant(&realm, Role::Submitter, "proposer")
        .await?;

    // Live projections, followed through every fault.
    let (stop_live, live_stop) = watch::channel(false);
    let live_coordinator = tokio::spawn(follow_live(
        Projector::new(owner.clone(), CoordinatorProjection::new(realm.clone())),
        live_stop.clone(),
    ));
    let live_consensus = tokio::spawn(follow_live(
        Projector::new(
            owner.clone(),
            ConsensusProjection {
                realm: realm.clone(),
            },
        ),
        live_stop.clone(),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Shared {
        acked: Arc::new(Mutex::new(Vec::new())),
        ack_times: Arc::new(Mutex::new(Vec::new())),
        last_ack: Arc::new(watch::channel(Instant::now()).0),
        stop: stop_rx,
    };
    let settle = Duration::from_secs(240);
    let tasks = tokio::spawn(submit_tasks(submitter.clone(), shared.clone()));
    let proposals = tokio::spawn(open_proposals(
        proposer.clone(),
        voters.clone(),
        shared.clone(),
    ));
    let writers: Vec<_> = writer_logs
        .into_iter()
        .enumerate()
        .map(|(i, log)| tokio::spawn(write_facts(log, i, shared.clone(), settle)))
        .collect();

    // The nemesis: warm up, then each fault in turn until the workload time is over. A fault
    // whose recovery runs long (a wiped node catching up under load) may use up the time,
    // so the workloads run on until every listed fault has had its turn: a run that asked
    // for a fault and never injected it would have checked nothing about it.
    let started = Instant::now();
    let started_wall_ms = chrono::Utc::now().timestamp_millis();
    let mut records = Vec::new();
    let mut spans = Vec::new();
    tokio::time::sleep(config.calm).await;
    let mut next = config.faults.iter().cycle();
    // The node whose store was damaged last: its copy of the history stream is read last.
    let mut damaged = None;
    while started.elapsed() + config.hold < config.workload || records.len() < config.faults.len() {
        let Some(&fault) = next.next() else { break };
        let (leader, followers) = stream_peers(&owner).await;
        let at_s = started.elapsed().as_secs_f64();
        eprintln!(
            "  {at_s:>6.1} s  {} (stream leader n{})",
            fault.name(),
            leader + 1
        );
        let injected_at = Instant::now();
        let injected = inject(&mut cluster, fault, leader, &followers, &targets).await?;
        tokio::time::sleep(config.hold).await;
        let mut note = injected.heal(&mut cluster).await?;
        if fault == Fault::PowerLoss && history_gone(&owner).await? {
            anyhow::bail!(
                "the history stream is gone after the power loss: the servers had not synced even its definition, so every event acknowledged in this run is lost, and the grants that gave the platform's processes their roles with it (with sync_interval always, nothing is)"
            );
        }
        if fault.damages_store() {
            let led = crate::replicas::lead_from(&owner, leader)
                .await
                .unwrap_or_else(|why| why);
            note = Some(note.map_or(led.clone(), |n| format!("{n}; {led}")));
            damaged = Some(leader);
        }
        if let Some(note) = &note {
            eprintln!("          {note}");
        }
        let healed = Instant::now();
        let mut acks = shared.last_ack.subscribe();
        let recovered =
            tokio::time::timeout(Duration::from_secs(120), acks.wait_for(|at| *at > healed))
                .await
                .ok()
                .map(|_| healed.elapsed().as_secs_f64());
        spans.push((injected_at, Instant::now()));
        records.push(FaultRecord {
            fault,
            at_s,
            healed_s: (healed - injected_at).as_secs_f64(),
            recovered_s: recovered,
            outage_s: 0.0,
            note,
            task_latency_ms: None,
            decision_latency_ms: None,
        });
        tokio::time::sleep(config.calm).await;
    }
    while started.elapsed() < config.workload {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let workload_s = started.elapsed().as_secs_f64();
    stop_tx.send_replace(true);
    {
        let times = shared
            .ack_times
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        for (record, (from, to)) in records.iter_mut().zip(&spans) {
            record.outage_s = longest_gap(&times, *from, *to);
        }
    }
    let (acked_tasks, unacked_tasks) = tasks.await?.context("the task workload")?;
    let acked_proposals = proposals.await?.context("the proposal workload")?;

    // Quiet: every acknowledged task final, every acknowledged proposal decided (their
    // deadlines are 30 s out), within the settle deadline.
    let settling = Instant::now();
    let mut view = Projector::new(owner.clone(), CoordinatorProjection::new(realm.clone()));
    let mut votes = Projector::new(
        owner.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    loop {
        let end = log_end(&owner, settle)
            .await
            .context("the history stream's end, while settling")?;
        catch_up(&mut view, end, settle).await?;
        catch_up(&mut votes, end, settle).await?;
        let tasks_final = acked_tasks.iter().all(|t| {
            view.state().tasks.tasks.get(t).is_some_and(|t| {
                matches!(t.state.name(), "completed" | "dead_lettered" | "cancelled")
            })
        });
        let proposals_final = acked_proposals.iter().all(|p| {
            votes
                .state()
                .proposals
                .get(p)
                .is_some_and(|p| p.decided.is_some())
        });
        if (tasks_final && proposals_final) || settling.elapsed() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settle_s = settling.elapsed().as_secs_f64();
    eprintln!("  settled in {settle_s:.0} s");
    let phase = Instant::now();
    let mut written = Vec::new();
    for w in writers {
        written.push(w.await?.context("a knowledge writer")?);
    }
    // Nothing writes from here on: the log's end is fixed for the checker. A process that
    // ended on its own before this point is a failure of the run.
    let mut exited = Vec::new();
    for (name, p) in &mut processes {
        if let Ok(Some(status)) = p.try_wait() {
            exited.push(format!("{name} ({status}; its log: {name}.log)"));
        }
        let _ = p.start_kill();
        let _ = p.wait().await;
    }

    eprintln!("  writers done in {:.0} s", phase.elapsed().as_secs_f64());
    let replicas = crate::replicas::compare(&cluster, &owner, damaged, settle).await;
    let phase = Instant::now();
    // The checker.
    stop_live.send_replace(true);
    let mut live_coordinator = live_coordinator.await?;
    let mut live_consensus = live_consensus.await?;
    let end = log_end(&owner, settle)
        .await
        .context("the history stream's end, for the checker")?;
    let mut replay_coordinator =
        Projector::new(owner.clone(), CoordinatorProjection::new(realm.clone()));
    let mut replay_consensus = Projector::new(
        owner.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    let mut index = Projector::new(
        owner.clone(),
        LogIndex {
            realm: realm.clone(),
        },
    );
    catch_up(&mut live_coordinator, end, settle).await?;
    catch_up(&mut live_consensus, end, settle).await?;
    catch_up(&mut replay_coordinator, end, settle).await?;
    catch_up(&mut replay_consensus, end, settle).await?;
    catch_up(&mut index, end, settle).await?;
    eprintln!("  log read back in {:.0} s", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let live_equals_replay = live_coordinator.state() == replay_coordinator.state()
        && live_consensus.state() == replay_consensus.state();
    let mut live_replay_differences = Vec::new();
    if !live_equals_replay {
        // Both states kept beside the processes' logs, and what differs named.
        for (name, live, replay) in [
            (
                "coordinator",
                serde_json::to_value(live_coordinator.state())?,
                serde_json::to_value(replay_coordinator.state())?,
            ),
            (
                "consensus",
                serde_json::to_value(live_consensus.state())?,
                serde_json::to_value(replay_consensus.state())?,
            ),
        ] {
            if live != replay {
                std::fs::write(
                    config.logs.join(format!("{name}-live.json")),
                    serde_json::to_string_pretty(&live)?,
                )?;
                std::fs::write(
                    config.logs.join(format!("{name}-replay.json")),
                    serde_json::to_string_pretty(&replay)?,
                )?;
                live_replay_differences.extend(
                    crate::check::differences(&live, &replay, name)
                        .into_iter()
                        .take(20),
                );
            }
        }
        live_replay_differences.push(format!(
            "live read {} events ({} refused, {} invalid, {} consumers recreated, {} redelivered); replay {} ({} refused, {} invalid)",
            live_coordinator.stats().applied,
            live_coordinator.stats().refused,
            live_coordinator.stats().invalid,
            live_coordinator.stats().consumers_recreated,
            live_coordinator.stats().redelivered,
            replay_coordinator.stats().applied,
            replay_coordinator.stats().refused,
            replay_coordinator.stats().invalid,
        ));
    }

    let acked = shared.acked.lock().map(|a| a.clone()).unwrap_or_default();
    let log = check_log(&acked, index.state());

    let task_state = &replay_coordinator.state().tasks.tasks;
    let mut completions: BTreeMap<&str, usize> = BTreeMap::new();
    for s in index.state() {
        if let Ok(subject) = murmur_subjects::Subject::parse(&s.subject)
            && subject.domain().as_str() == "task"
            && subject.verb().as_str() == "completed"
        {
            *completions.entry(s.subject.as_str()).or_default() += 1;
        }
    }
    // Latencies from the log's own clock, by when the task or proposal began: while a
    // fault held, or calm (outside every fault and its recovery).
    let mut began: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut ended: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for s in index.state() {
        if let Ok(subject) = murmur_subjects::Subject::parse(&s.subject) {
            let (domain, verb) = (subject.domain().as_str(), subject.verb().as_str());
            let aggregate = s.subject.rsplit('.').nth(1).unwrap_or_default();
            let (book, key) = match (domain, verb) {
                ("task", "submitted") => (&mut began, "task"),
                ("proposal", "opened") => (&mut began, "proposal"),
                ("task", "completed") => (&mut ended, "task"),
                ("proposal", "decided") => (&mut ended, "proposal"),
                _ => continue,
            };
            book.entry((key, aggregate)).or_insert(s.stored_at_ms);
        }
    }
    // A fault's window: from its injection to its recovery (the first acknowledgement after
    // healing was done, however long healing took). A task or proposal is affected by it
    // when its life overlaps the window.
    let windows: Vec<(i64, i64)> = records
        .iter()
        .map(|r| {
            let from = started_wall_ms + (r.at_s * 1e3) as i64;
            let recovered = ((r.healed_s + r.recovered_s.unwrap_or(120.0)) * 1e3) as i64;
            (from, from + recovered)
        })
        .collect();
    let overlaps = |(from, to): (i64, i64), began: i64, ended: i64| began <= to && ended >= from;
    let latencies = |domain: &'static str, keep: &dyn Fn(i64, i64) -> bool| {
        crate::check::p50_p99(
            began
                .iter()
                .filter(|((d, _), _)| *d == domain)
                .filter_map(|(key, at)| ended.get(key).map(|end| (*at, *end)))
                .filter(|(at, end)| keep(*at, *end))
                .map(|(at, end)| (end - at) as f64)
                .collect(),
        )
    };
    let during: Vec<_> = windows
        .iter()
        .map(|w| {
            (
                latencies("task", &|b, e| overlaps(*w, b, e)),
                latencies("proposal", &|b, e| overlaps(*w, b, e)),
            )
        })
        .collect();
    let calm = |b: i64, e: i64| !windows.iter().any(|w| overlaps(*w, b, e));
    let calm_task_latency_ms = latencies("task", &calm);
    let calm_decision_latency_ms = latencies("proposal", &calm);
    for (r, (tasks, decisions)) in records.iter_mut().zip(during) {
        r.task_latency_ms = tasks;
        r.decision_latency_ms = decisions;
    }
    let mut vote_events: BTreeMap<(String, String), usize> = BTreeMap::new();
    // Votes per (proposal, voter) as the fold saw them: counted, or refused (a second
    // vote of one voter is refused, never counted).
    for (id, proposal) in &replay_consensus.state().proposals {
        for voter in proposal.votes.keys() {
            *vote_events.entry((id.clone(), voter.clone())).or_default() += 1;
        }
        for (voter, _) in &proposal.refused {
            *vote_events.entry((id.clone(), voter.clone())).or_default() += 1;
        }
    }
    let tasks = TaskOutcome {
        acked: acked_tasks.len(),
        unacknowledged: unacked_tasks,
        completed: acked_tasks
            .iter()
            .filter(|t| {
                task_state
                    .get(*t)
                    .is_some_and(|t| t.state.name() == "completed")
            })
            .count(),
        dead_lettered: acked_tasks
            .iter()
            .filter(|t| {
                task_state
                    .get(*t)
                    .is_some_and(|t| t.state.name() == "dead_lettered")
            })
            .count(),
        unresolved: acked_tasks
            .iter()
            .filter(|t| {
                !task_state.get(*t).is_some_and(|t| {
                    matches!(t.state.name(), "completed" | "dead_lettered" | "cancelled")
                })
            })
            .cloned()
            .collect(),
        completions_stored_twice: completions.values().filter(|n| **n > 1).count(),
    };
    let consensus = replay_consensus.state();
    let proposals = ProposalOutcome {
        acked: acked_proposals.len(),
        decided: acked_proposals
            .iter()
            .filter(|p| {
                consensus
                    .proposals
                    .get(*p)
                    .is_some_and(|p| p.decided.is_some())
            })
            .count(),
        undecided: acked_proposals
            .iter()
            .filter(|p| {
                consensus
                    .proposals
                    .get(*p)
                    .is_none_or(|p| p.decided.is_none())
            })
            .cloned()
            .collect(),
        votes_stored: vote_events.values().sum(),
        votes_stored_twice: vote_events.values().filter(|n| **n > 1).count(),
        tally_mismatches: consensus
            .proposals
            .iter()
            .filter(|(_, p)| {
                p.decided.as_ref().is_some_and(|d| {
                    // Votes after the decision are counted too; the decision's own
                    // count can only be fewer, never more, than the distinct voters.
                    d.votes as usize > p.votes.len()
                        || p.votes.keys().any(|v| !p.opened.voters.contains_key(v))
                })
            })
            .map(|(id, _)| id.clone())
            .collect(),
    };

    // Knowledge: the writers and a fresh replica converge; every acknowledged fact is there.
    let fresh_log = cluster
        .issuer()
        .participant(&realm, Role::Observer, "checker")
        .await?;
    let mut fresh = KnowledgeReplica::open(fresh_log, ReplicaConfig::space(SPACE)).await?;
    let acked_facts: Vec<FactId> = written.iter().flat_map(|(_, f)| f.clone()).collect();
    let until = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        let _ = fresh.refresh().await;
        let target = fresh.summary(SPACE);
        let mut equal = true;
        for (replica, _) in &mut written {
            let _ = replica.refresh().await;
            equal &= replica.summary(SPACE) == target;
        }
        if equal || Instant::now() > until {
            break equal;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "  knowledge compared in {:.0} s",
        phase.elapsed().as_secs_f64()
    );
    let missing = acked_facts
        .iter()
        .filter(|f| !matches!(fresh.fact(SPACE, f), Ok(Some(_))))
        .count();

    // The servers' own logs, kept beside the processes' (the cluster's folder goes with it).
    for (i, node) in cluster.cluster.nodes.iter().enumerate() {
        let kept = config.logs.join(format!("n{}-nats-server.log", i + 1));
        if let Err(e) = std::fs::copy(node.log_path(), &kept) {
            eprintln!("  n{}'s log not kept: {e}", i + 1);
        }
    }
    Ok(RunReport {
        schedule: config
            .faults
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join("+"),
        sync: if config.sync_always {
            "always"
        } else {
            "default"
        },
        server_version,
        workload_s,
        faults: records,
        log,
        tasks,
        proposals,
        knowledge: KnowledgeOutcome {
            acked: acked_facts.len(),
            missing,
            converged,
        },
        live_equals_replay,
        replicas,
        processes_exited: exited,
        live_replay_differences,
        live_redelivered: live_coordinator.stats().redelivered + live_consensus.stats().redelivered,
        settle_s,
        calm_task_latency_ms,
        calm_decision_latency_ms,
        events_stamped_ahead: index
            .state()
            .iter()
            .filter(|s| s.clock_offset_ms >= 30_000)
            .count(),
    })
}

/// The longest stretch in seconds between `from`, the acknowledgements in between, and `to`.
fn longest_gap(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|t| **t > from && **t < to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest
        .max(to.saturating_duration_since(last))
        .as_secs_f64()
}
