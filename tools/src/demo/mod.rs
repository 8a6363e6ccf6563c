//! `murmur demo`: a finite sample workflow against a real nats-server with JetStream.
//!
//! Everything runs for real, in one process, on a server in operator mode: every participant
//! has its own key, role and credentials ([`murmur_testkit::authority::Issuer`]). The server refuses
//! an anonymous connection and a worker publishing an assignment; the log auditor, a
//! liveness monitor and a coordinator run with the realm's roles; two worker agents join
//! (signed manifests, NATS micro services, heartbeats) and run the tasks leased to them; a
//! submitter. Tasks are assigned by the routing score and completed; one always fails and is
//! dead-lettered after its attempts; a retried publish is deduplicated by the server; a
//! conflicting write is refused; a result forged by another worker under a worker's identity
//! is dead-lettered; the workers leave; and the agents + tasks projection built live equals
//! the one rebuilt by replaying the log.
//! Then the distributed-compilation pipeline runs on the same server ([`crate::demo::compile`])
//! and the example deployment graph is generated into a Nix flake. Exits non-zero if any
//! step does not hold.

pub mod compile;
#[cfg(feature = "inference")]
pub mod inference;
pub mod tool;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_agents::{Agent, AgentSpec};
use murmur_coordination::coordinator::{
    CoordinatorConfig, CoordinatorProjection, CoordinatorView, run_coordinator,
};
use murmur_coordination::liveness::run_monitor;
use murmur_coordination::registry::AgentStatus;
use murmur_coordination::tasks::TaskState;
use murmur_subjects::binding::{self, ContentMode};
use murmur_subjects::clock::SystemClock;
use murmur_subjects::events::{
    AgentJoined, DeadLetterReason, DeadLettered, Hardware, TaskCompleted, TaskSubmitted,
};
use murmur_subjects::log::{Expected, LogError, MSG_ID};
use murmur_subjects::projection::StartAt;
use murmur_subjects::{Draft, Identity, Projector, SubjectFilter, Token};

use murmur_subjects::roles::Role;

use crate::settings::Settings;
use murmur_testkit::authority::{Authority, Issuer};
use murmur_testkit::server::{NatsProcess, ServerAuth};

const DEADLINE: Duration = Duration::from_secs(30);

/// Prints a numbered demo step.
pub fn step(n: usize, text: &str) {
    out!("[{n}] {text}");
}

fn manifest(name: &str) -> AgentJoined {
    AgentJoined {
        name: name.into(),
        kind: "tester".into(),
        capabilities: vec!["test.run".into()],
        labels: Default::default(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hardware: Hardware {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_mib: 1024,
            accelerators: vec![],
            vram_mib: 0,
        },
        slots: 1,
        handles: Some(murmur_agents::worker::handled_types()),
    }
}

async fn wait(
    view: &mut Projector<CoordinatorProjection>,
    what: &str,
    done: impl FnMut(&CoordinatorView) -> bool,
) -> Result<()> {
    ensure!(
        view.follow_until(DEADLINE, done).await?,
        "never saw {what} within {DEADLINE:?}"
    );
    Ok(())
}

/// What the demo runs on: the issuer of its participants, the server it started (if it
/// did) and the temporary directory holding its store, keys and credentials.
pub struct DemoPlatform {
    /// Enrols the demo's participants.
    pub issuer: Issuer,
    _server: Option<NatsProcess>,
    _dir: tempfile::TempDir,
}

impl DemoPlatform {
    /// The servers, comma-separated (what `murmur` processes take with `--server`).
    pub fn url(&self) -> String {
        self.issuer.servers().join(",")
    }
}

/// The configured servers, or a local nats-server in operator mode with JetStream on a free
/// port with a temporary store when none is configured. On configured servers the demo
/// enrols its participants with the operator's keys in the data dir (where `murmur up`
/// keeps them); a server without credentials (`murmur up --insecure`) needs none.
pub async fn connect_or_start(settings: &Settings) -> Result<DemoPlatform> {
    let dir = tempfile::tempdir()?;
    let creds_dir = dir.path().join("creds");
    let new_issuer = |authority, servers| {
        Issuer::new(
            authority,
            servers,
            Identity::generate(),
            &creds_dir,
            settings.log.clone(),
            settings.codec.clone(),
        )
    };
    if let Some(c) = &settings.connect {
        let authority = match &c.auth {
            murmur_subjects::connect::Auth::None => None,
            _ => Some(Authority::open(&settings.data_dir.join("auth")).context(
                "the demo enrols its own participants with the operator's keys: run it with the data dir of the `murmur up` serving NATS_URL, or against a server started with --insecure",
            )?),
        };
        let issuer = new_issuer(authority, c.servers.clone());
        return Ok(DemoPlatform {
            issuer,
            _server: None,
            _dir: dir,
        });
    }
    let authority = Authority::open_or_create(&dir.path().join("auth"))?;
    let owner_creds = dir.path().join("system-check.creds");
    murmur_testkit::authority::write_secret(&owner_creds, &authority.system_creds()?)?;
    let auth = ServerAuth {
        config: authority.server_config(&settings.log, &dir.path().join("nats/jwt"))?,
        creds: owner_creds,
    };
    let mut server = NatsProcess::start(0, &dir.path().join("nats"), Some(&auth)).await?;
    server.wait_ready(Duration::from_secs(60)).await?;
    step(
        0,
        &format!(
            "started nats-server with JetStream at {} in operator mode (temporary store; every participant gets its own key, role and credentials)",
            server.url()
        ),
    );
    let issuer = new_issuer(Some(authority), vec![server.url()]);
    Ok(DemoPlatform {
        issuer,
        _server: Some(server),
        _dir: dir,
    })
}

/// What the server refuses: an anonymous connection, and a worker publishing an assignment
/// (only a coordinator's credentials may). Checked with a raw async-nats client that
/// collects the server's errors.
async fn server_refusals(issuer: &Issuer, realm: &Token) -> Result<()> {
    let url = issuer.servers().join(",");
    let anonymous = anonymous_refusal(&issuer.servers()[0]).await?;
    let (_, creds) = issuer.enrol(realm, Role::Worker, "demo-rogue").await?;
    let creds = creds.context("secure servers issue credentials")?;
    let (tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let rogue = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await?
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(&url)
        .await?;
    let subject = murmur_subjects::EventType::of::<murmur_subjects::events::TaskAssigned>()
        .subject(realm, &Token::new("task-1")?);
    rogue.publish(subject.to_string(), "{}".into()).await?;
    rogue.flush().await?;
    let refused = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .context("the server did not refuse a worker's assignment within 5 s")?
        .unwrap_or_default();
    ensure!(
        refused.contains("Permissions Violation"),
        "expected a permissions violation, got {refused:?}"
    );
    step(
        1,
        &format!(
            "the server refuses an anonymous connection ({anonymous}) and a worker publishing task.assigned ({refused})"
        ),
    );
    Ok(())
}

/// What the server answers a client that connects without credentials, spoken in the NATS
/// protocol itself (`INFO`, then `CONNECT` + `PING`): its `-ERR` line.
async fn anonymous_refusal(url: &str) -> Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("nats://");
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let answer = async {
        let info = lines.next_line().await?.unwrap_or_default();
        ensure!(info.starts_with("INFO "), "not a NATS server: {info}");
        write
            .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")
            .await?;
        let reply = lines.next_line().await?.unwrap_or_default();
        ensure!(
            reply.starts_with("-ERR"),
            "the server accepted an anonymous connection (it answered {reply:?})"
        );
        Ok(reply)
    };
    tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .context("the server did not answer an anonymous CONNECT within 5 s")?
}

/// A realm of its own for one demo step (`PREFIX-<8 hex>`), so the demo never mixes with
/// other data on a shared server, nor one step with another.
pub(crate) fn fresh_realm(prefix: &str) -> Result<Token> {
    Ok(Token::new(format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))?)
}

/// Runs the demo.
pub async fn run(settings: &Settings) -> Result<()> {
    let demo = connect_or_start(settings).await?;
    let issuer = &demo.issuer;
    // A realm of its own, so the demo never mixes with other data on a shared server.
    let realm = fresh_realm("demo")?;

    // The platform: auditor, liveness monitor, coordinator — the realm owner's process,
    // granted those roles in the log, as `murmur up` is.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let platform = issuer
        .platform(&realm, &[Role::Coordinator, Role::Monitor, Role::Auditor])
        .await?;
    if issuer.is_secure() {
        server_refusals(issuer, &realm).await?;
    }
    let auditor = tokio::spawn(murmur_subjects::audit::run_auditor(
        platform.clone(),
        stopped(stop_rx.clone()),
        None,
    ));
    let monitor = tokio::spawn(run_monitor(
        platform.clone(),
        Arc::new(SystemClock),
        stopped(stop_rx.clone()),
    ));
    let coordinator = tokio::spawn(run_coordinator(
        platform.clone(),
        Arc::new(SystemClock),
        CoordinatorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    step(
        1,
        &format!(
            "streams ready; realm {realm} claimed by {}…; auditor, liveness monitor and coordinator running with the roles granted in the log",
            &platform.identity().public_key()[..12]
        ),
    );

    let submitter = issuer
        .participant(&realm, Role::Submitter, "demo-submitter")
        .await?;
    let mut live = Projector::new(submitter.clone(), CoordinatorProjection::new(realm.clone()));

    // Two workers join and run what they are leased.
    let (workers_stop_tx, workers_stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    let mut worker_tasks = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let log = issuer.participant(&realm, Role::Worker, name).await?;
        let agent = Arc::new(
            Agent::join(
                log,
                AgentSpec {
                    manifest: manifest(name),
                    heartbeat: Duration::from_millis(250),
                },
            )
            .await?,
        );
        out!("    {name} joined as {}", agent.id());
        let runner = agent.clone();
        let stop = stopped(workers_stop_rx.clone());
        worker_tasks.push(tokio::spawn(async move {
            murmur_agents::worker::run_worker(
                &runner,
                crate::cli::agent::builtin_handler(),
                stop,
                Duration::from_secs(5),
            )
            .await
        }));
        workers.push(agent);
    }
    wait(&mut live, "both workers online", |v| {
        v.registry.count(AgentStatus::Online) == 2
    })
    .await?;
    step(
        2,
        "two workers joined (signed agent.joined, NATS micro services, heartbeats)",
    );

    let submit = |input: serde_json::Value, attempts: u32| TaskSubmitted {
        capability: "test.run".into(),
        input,
        priority: 1,
        max_attempts: Some(attempts),
        lease_ms: Some(10_000),
        ..Default::default()
    };
    let mut first = None;
    for (n, input, attempts) in [
        (1, serde_json::json!({"crate": "sample-1"}), 3),
        (
            2,
            serde_json::json!({"crate": "sample-2", "sleep_ms": 200}),
            3,
        ),
        (
            3,
            serde_json::json!({"fail": "error[E0308]: mismatched types"}),
            2,
        ),
    ] {
        let id = Token::new(format!("task-{n}"))?;
        let (sealed, _) = submitter
            .append_expected(
                Draft::new(id, &submit(input, attempts))?,
                Expected::NoEvents,
            )
            .await?;
        first.get_or_insert(sealed);
    }
    let first = first.context("no task submitted")?;
    step(
        3,
        "submitted 3 tasks (each write expects the task to have no events yet)",
    );

    // A retried publish of the same event is deduplicated by the server (Nats-Msg-Id).
    let retry = submitter.append_sealed(&first).await?.wait().await?;
    ensure!(retry.duplicate, "retrying an event must be deduplicated");
    step(
        4,
        &format!(
            "retry of {} deduplicated by the server (duplicate = {})",
            first.record.id, retry.duplicate
        ),
    );

    // Submitting task-1 again conflicts: the aggregate already has events.
    let again = submitter
        .append_expected(
            Draft::new(Token::new("task-1")?, &submit(serde_json::json!({}), 3))?,
            Expected::NoEvents,
        )
        .await;
    match again {
        Err(e @ LogError::Conflict { .. }) => step(5, &format!("conflicting write refused: {e}")),
        other => bail!("a conflicting write must be refused, got {other:?}"),
    }

    wait(
        &mut live,
        "tasks 1 and 2 completed, task 3 dead-lettered",
        |v| {
            let state = |id: &str| v.tasks.tasks.get(id).map(|t| t.state.name());
            state("task-1") == Some("completed")
                && state("task-2") == Some("completed")
                && state("task-3") == Some("dead_lettered")
        },
    )
    .await?;
    for (id, t) in &live.state().tasks.tasks {
        let by = match &t.state {
            TaskState::Completed { agent } => format!(" by {}", &agent[..8]),
            _ => String::new(),
        };
        out!(
            "    {id}: {}{by} after {} attempt(s){}",
            t.state.name(),
            t.attempt,
            if t.failures.is_empty() {
                String::new()
            } else {
                format!("; reasons: {}", t.failures.join(" | "))
            }
        );
    }
    step(
        6,
        "tasks assigned by the routing score, run by the workers; the failing one dead-lettered with every reason",
    );

    // A forgery: mallory, another worker, signs a completion of task-3 that claims worker-a
    // as its source and publishes it with raw async-nats over its own connection (its role
    // may publish results). The auditor refuses and dead-letters it.
    let mallory_log = issuer
        .participant(&realm, Role::Worker, "demo-mallory")
        .await?;
    let mallory = mallory_log.identity().clone();
    let mut forged = Draft::new(
        Token::new("task-3")?,
        &TaskCompleted {
            output: serde_json::json!("forged"),
            attempt: 2,
        },
    )?
    .seal(&mallory, &realm);
    forged.record.source = workers[0].id().to_string();
    let (mut headers, body) =
        binding::encode(&forged.record, ContentMode::Binary, settings.codec.limit())?;
    headers.insert(MSG_ID, forged.record.id.as_str());
    let raw = async_nats::jetstream::new(mallory_log.client().clone());
    raw.publish_with_headers(forged.subject.to_string(), headers, body)
        .await?
        .await?;
    // Another auditor (e.g. `murmur up`'s) may be the one that handles it: wait for the dead
    // letter in the stream, not for this process's auditor.
    let until = tokio::time::Instant::now() + DEADLINE;
    let dlq_filter = SubjectFilter::plane(murmur_subjects::Plane::Dlq).realm(realm.clone());
    let (dl_seq, dl) = loop {
        let mut found = None;
        platform
            .read_dead_letters(&dlq_filter, StartAt::Beginning, None, |stored| {
                if let Ok(ev) = platform.decode_stored(&stored.message, stored.sequence, None)
                    && let Ok(d) = ev.payload::<DeadLettered>()
                {
                    found = Some((stored.sequence, d));
                }
                std::ops::ControlFlow::Continue(())
            })
            .await?;
        if let Some(f) = found {
            break f;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "the forged event was not dead-lettered within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        dl.reason == DeadLetterReason::BadSignature,
        "forgery dead-lettered as {}",
        dl.reason
    );
    step(
        7,
        &format!(
            "task.completed forged by another worker refused and dead-lettered (dlq seq {dl_seq}): {}",
            dl.detail
        ),
    );

    workers_stop_tx.send_replace(true);
    for w in worker_tasks {
        w.await??;
    }
    for agent in workers {
        let agent = Arc::try_unwrap(agent).map_err(|_| anyhow::anyhow!("worker still in use"))?;
        agent.leave("demo finished").await?;
    }
    wait(&mut live, "both workers left", |v| {
        v.registry.count(AgentStatus::Left) == 2
    })
    .await?;
    step(8, "workers left (signed agent.left)");

    stop_tx.send_replace(true);
    let decisions = coordinator.await??;
    monitor.await??;
    auditor.await??;

    live.catch_up().await?;
    let mut replayed = Projector::new(
        issuer
            .participant(&realm, Role::Observer, "demo-replay")
            .await?,
        CoordinatorProjection::new(realm.clone()),
    );
    replayed.catch_up().await?;
    ensure!(
        replayed.state() == live.state(),
        "live and replayed projections differ"
    );
    ensure!(
        replayed.stats().invalid == 1,
        "exactly the forged event is invalid on replay: {:?}",
        replayed.stats()
    );
    step(
        9,
        &format!(
            "live projection == replayed projection: {} agents, {} tasks, {} events applied, {} refused, 1 forged event skipped",
            live.state().registry.agents.len(),
            live.state().tasks.tasks.len(),
            replayed.stats().applied,
            replayed.stats().refused
        ),
    );
    out!(
        "workflow ok: {} events in the log, {decisions} coordinator decisions",
        replayed.position()
    );

    // The distributed-compilation pipeline on the same server, agents as processes.
    crate::demo::compile::run_on(settings, issuer).await?;

    // Tools: an agent process serves file operations confined to a workspace.
    crate::demo::tool::run_on(issuer).await?;

    // Inference: an agent process answers an llm.generate task with a GGUF model.
    #[cfg(feature = "inference")]
    crate::demo::inference::run_on(issuer).await?;

    // Consensus: three policy voters (own identities) and a tallier decide a release.
    consensus_step(issuer).await?;

    // Shared knowledge: two agents edit one Automerge space, a memory agent serves it.
    knowledge_step(issuer).await?;

    // The deployment graph of a 5-service shop, generated into a Nix flake.
    flake_step().await?;
    out!("demo ok");
    Ok(())
}

/// A demo voter agent: joins `realm` as `name` with `labels`, then runs `voter` until
/// `stop` and leaves. Returns its key and the task running it.
async fn start_voter<V: murmur_agents::voter::Voter + 'static>(
    (issuer, realm): (&Issuer, &Token),
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
    voter: V,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(
    String,
    tokio::task::JoinHandle<Result<u64, murmur_agents::AgentError>>,
)> {
    let log = issuer.participant(realm, Role::Voter, name).await?;
    let mut m = manifest(name);
    m.kind = "voter".into();
    m.capabilities = vec!["vote".into()];
    m.labels = labels;
    m.handles = Some(murmur_agents::voter::handled_types());
    let agent = Agent::join(
        log,
        AgentSpec {
            manifest: m,
            heartbeat: Duration::from_millis(500),
        },
    )
    .await?;
    let key = agent.id().to_string();
    let task = tokio::spawn(async move {
        let cast = murmur_agents::voter::run_voter(&agent, &voter, stop).await;
        let _ = agent.leave("demo over").await;
        cast
    });
    Ok((key, task))
}

/// Three voter agents with a policy (approve when tests pass, reject when risk is high) and a
/// tallier: one proposal is approved early by 2 of 3 votes, another rejected; the tallies
/// come from the log.
async fn consensus_step(issuer: &Issuer) -> Result<()> {
    use murmur_agents::voter::PolicyVoter;
    use murmur_coordination::consensus::{Consensus, ConsensusProjection};
    use murmur_coordination::tallier::run_tallier;
    use murmur_subjects::events::{ProposalOpened, Protocol};

    let realm = fresh_realm("vote")?;
    let policy: PolicyVoter = toml::from_str(
        "[[rules]]\nwhen = [{ path = \"/risk\", greater_than = 0.7 }]\nvote = \"reject\"\nreason = \"too risky\"\n\
         [[rules]]\nwhen = [{ path = \"/tests_passed\", equals = true }]\nvote = \"approve\"\nreason = \"tests pass\"\n",
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let platform = issuer.platform(&realm, &[Role::Tallier]).await?;
    let tallier = tokio::spawn(run_tallier(
        platform.clone(),
        Arc::new(SystemClock),
        Duration::from_millis(20),
        stopped(stop_rx.clone()),
    ));
    let mut voters = Vec::new();
    let mut keys = std::collections::BTreeMap::new();
    for i in 0..3 {
        let (key, voter) = start_voter(
            (issuer, &realm),
            &format!("voter-{i}"),
            Default::default(),
            policy.clone(),
            stopped(stop_rx.clone()),
        )
        .await?;
        keys.insert(key, 1);
        voters.push(voter);
    }
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(30);
    let mut proposals = Vec::new();
    for (id, payload) in [
        (
            "release-1-2",
            serde_json::json!({"tests_passed": true, "risk": 0.2}),
        ),
        (
            "release-1-3",
            serde_json::json!({"tests_passed": true, "risk": 0.9}),
        ),
    ] {
        let opened = ProposalOpened {
            question: format!("ship {id}?"),
            payload,
            protocol: Protocol::Qualified {
                numerator: 2,
                denominator: 3,
            },
            voters: keys.clone(),
            quorum: 2,
            deadline,
            category: "release".into(),
            stimulus: 1.0,
        };
        proposals.push((id, opened));
    }
    // With candle built in, a fourth voter asks a language model (a tiny random-weight test
    // model, as in the inference step): the proposal put to it alone is decided by the
    // answer the model scores higher.
    #[cfg(feature = "inference")]
    let model_voter = {
        use murmur_agents::inference::{GgufModel, TestModel, write_test_model};
        use murmur_agents::voter::ModelVoter;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("voter.gguf");
        write_test_model(&path, &TestModel::new(2026))?;
        let model = Arc::new(GgufModel::load(&path)?);
        let (key, voter) = start_voter(
            (issuer, &realm),
            "model-voter",
            model.labels(),
            ModelVoter::new(model, ModelVoter::DEFAULT_INSTRUCTIONS),
            stopped(stop_rx.clone()),
        )
        .await?;
        voters.push(voter);
        proposals.push((
            "merge-rewrite",
            ProposalOpened {
                question: "merge the parser rewrite?".into(),
                payload: serde_json::json!({"tests_passed": true, "lines_changed": 420}),
                protocol: Protocol::SimpleMajority,
                voters: [(key.clone(), 1)].into(),
                quorum: 1,
                deadline,
                category: "review".into(),
                stimulus: 1.0,
            },
        ));
        key
    };
    let opened_count = proposals.len();
    for (id, opened) in proposals {
        platform
            .append_expected(Draft::new(Token::new(id)?, &opened)?, Expected::NoEvents)
            .await?;
    }
    let mut view = Projector::new(
        platform.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    ensure!(
        view.follow_until(DEADLINE, |c: &Consensus| {
            c.proposals.len() == opened_count && c.proposals.values().all(|p| p.decided.is_some())
        })
        .await?,
        "proposals not decided within {DEADLINE:?}"
    );
    let _ = stop_tx.send(true);
    tallier.await??;
    for v in voters {
        v.await??;
    }
    let c = view.state();
    let outcome = |id: &str| {
        c.proposals[id]
            .decided
            .as_ref()
            .map(|d| (d.outcome.clone(), d.approve, d.reject))
    };
    let shown = |id: &str| match outcome(id) {
        Some((o, approve, reject)) => format!("{id} {o} (approve {approve} · reject {reject})"),
        None => format!("{id} undecided"),
    };
    out!(
        "[vote] 3 policy voters + tallier, qualified 2/3: {}, {}",
        shown("release-1-2"),
        shown("release-1-3")
    );
    ensure!(
        outcome("release-1-2").is_some_and(|o| o.0 == "approved"),
        "release-1-2 not approved"
    );
    ensure!(
        outcome("release-1-3").is_some_and(|o| o.0 == "rejected"),
        "release-1-3 not rejected"
    );
    #[cfg(feature = "inference")]
    {
        use murmur_subjects::events::{Choice, VoteCast};
        let events = murmur_subjects::projection::read_aggregate(
            &platform,
            murmur_subjects::Domain::Proposal,
            &Token::new("merge-rewrite")?,
        )
        .await?;
        let vote = events
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .filter(|e| e.emitter() == model_voter)
            .find_map(|e| e.payload::<VoteCast>().ok())
            .context("the model voter's vote is not in the log")?;
        let outcome = outcome("merge-rewrite").map(|o| o.0);
        let expected = match vote.choice {
            Choice::Approve => "approved",
            Choice::Reject => "rejected",
            Choice::Abstain => "no_quorum",
        };
        ensure!(
            outcome.as_deref() == Some(expected),
            "merge-rewrite ended {outcome:?} after a {:?} vote",
            vote.choice
        );
        out!(
            "[vote] a model voter (candle; the tiny random-weight model, so its judgement is noise, its scoring real) put to merge-rewrite: {} — {}",
            expected,
            vote.reason
        );
    }
    // A late vote from outside the voter set (a voter of the realm, not of this proposal):
    // stored like any event, refused by the fold with a typed reason, and never counted.
    let outsider = issuer
        .participant(&realm, Role::Voter, "demo-outsider")
        .await?;
    let late = c.proposals["release-1-2"].continue_flow(
        Draft::new(
            Token::new("release-1-2")?,
            &murmur_subjects::events::VoteCast {
                choice: murmur_subjects::events::Choice::Reject,
                reason: "too late".into(),
            },
        )?,
        None,
    );
    outsider.append(late).await?;
    ensure!(
        view.follow_until(DEADLINE, |c: &Consensus| !c.proposals["release-1-2"]
            .refused
            .is_empty())
            .await?,
        "the late vote was never refused"
    );
    let p = &view.state().proposals["release-1-2"];
    ensure!(
        p.decided.as_ref().is_some_and(|d| d.reject == 0),
        "a refused vote was counted"
    );
    out!(
        "[vote] a late vote from a non-voter is stored and refused: {}",
        p.refused[0].1
    );
    Ok(())
}

/// Two writer agents edit one knowledge space concurrently (one conflicting field), a memory
/// agent answers a query over NATS and snapshots the space, the conflict is shown with both
/// authors and resolved, and a late joiner (snapshot + log tail) ends with the same heads.
async fn knowledge_step(issuer: &Issuer) -> Result<()> {
    use murmur_agents::memory::{MemoryOptions, MemoryService};
    use murmur_knowledge::document::ResolutionPolicy;
    use murmur_knowledge::replica::{KnowledgeReplica, ReplicaConfig, open_space, set_access};
    use murmur_knowledge::rpc::{QueryRequest, query_remote};
    use murmur_knowledge::{FactDraft, Query, Value};
    use murmur_subjects::events::AccessRole;

    let realm = fresh_realm("kb")?;
    let owner_log = issuer
        .participant(&realm, Role::Submitter, "demo-kb-owner")
        .await?;
    open_space(
        &owner_log,
        "release",
        "what we know about the release",
        2,
        4096,
    )
    .await?;
    let memory_log = issuer
        .participant(&realm, Role::Memory, "demo-memory")
        .await?;
    let writer_log = issuer
        .participant(&realm, Role::Submitter, "demo-kb-writer")
        .await?;
    set_access(
        &owner_log,
        "release",
        memory_log.identity().public_key(),
        AccessRole::Replica,
        true,
    )
    .await?;
    set_access(
        &owner_log,
        "release",
        writer_log.identity().public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let mut m = manifest("memory");
    m.kind = "memory".into();
    m.capabilities = vec!["knowledge.query".into()];
    m.handles = Some(murmur_agents::memory::handled_types());
    let memory = Agent::join(
        memory_log,
        AgentSpec {
            manifest: m,
            heartbeat: Duration::from_millis(500),
        },
    )
    .await?;
    let memory_service = MemoryService::spawn(
        memory,
        MemoryOptions {
            snapshot_every: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    );

    let mut a = KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("release")).await?;
    let mut b = KnowledgeReplica::open(writer_log.clone(), ReplicaConfig::space("release")).await?;
    let fact = a.put(
        "release",
        &FactDraft::new("crate:app", "tests", Value::Text("passing".into())).confidence(0.6),
    )?;
    for (i, module) in ["parser", "codegen", "runtime"].iter().enumerate() {
        b.put(
            "release",
            &FactDraft::new(
                format!("module:{module}"),
                "coverage",
                Value::Float(0.7 + i as f64 / 10.0),
            )
            .tag("quality"),
        )?;
    }
    a.flush().await?;
    b.refresh().await?;
    // Concurrent: both set the same field without seeing each other.
    a.set_field("release", &fact, "owner", Value::Text("alice".into()))?;
    b.set_field("release", &fact, "owner", Value::Text("bob".into()))?;
    b.set_confidence("release", &fact, 0.9)?;
    let (fa, fb) = tokio::join!(a.flush(), b.flush());
    fa?;
    fb?;
    let until = tokio::time::Instant::now() + DEADLINE;
    let (reply, signer) = loop {
        let q = QueryRequest {
            query: Query {
                conflicts_only: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = query_remote(&owner_log, "release", &q, Duration::from_secs(2)).await;
        if let Ok(r) = &answer
            && !r.0.facts.is_empty()
        {
            break answer?;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "memory agent never reported the conflict: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let owners: Vec<String> = reply.facts[0].fields["owner"]
        .all()
        .map(|v| format!("{} by {}…", v.value.value, &v.author[..8]))
        .collect();
    out!(
        "[kb] memory agent {}… reports a conflict on owner: {}",
        &signer[..8],
        owners.join(" vs ")
    );
    a.refresh().await?;
    let record = a.resolve(
        "release",
        &fact,
        "owner",
        ResolutionPolicy::HighestConfidence,
    )?;
    a.flush().await?;
    out!(
        "[kb] resolved by highest confidence → {} (recorded with {} candidates)",
        record.chosen,
        record.candidates.len()
    );
    // Wait for the memory agent's snapshot, then a late joiner catches up from it.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        a.refresh().await?;
        let snapshotted = a
            .base()
            .space("release")
            .is_some_and(|s| !s.snapshots.is_empty());
        if snapshotted {
            break;
        }
        ensure!(tokio::time::Instant::now() < until, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The late joiner only reads: an observer.
    let late_log = issuer
        .participant(&realm, Role::Observer, "demo-kb-late")
        .await?;
    let mut late = KnowledgeReplica::open(late_log, ReplicaConfig::space("release")).await?;
    a.refresh().await?;
    let (sa, sl) = (a.summary("release"), late.summary("release"));
    ensure!(sa == sl, "late joiner differs: {sl:?} vs {sa:?}");
    let facts = late.query("release", &Query::default(), None)?;
    out!(
        "[kb] late joiner loaded snapshot + tail: {} facts, heads equal to the writers' ({} documents)",
        facts.len(),
        sl.len()
    );
    let stats = memory_service.stop().await?;
    ensure!(stats.queries >= 1, "memory agent answered no query");
    Ok(())
}

/// Validates the example deployment and generates its flake into a temp dir; parses every
/// file with `nix-instantiate --parse` when Nix is installed.
async fn flake_step() -> Result<()> {
    const SHOP: &str = include_str!("../../../examples/shop.toml");
    let spec = murmur_nix::DeploymentSpec::parse(SHOP, murmur_nix::Format::Toml)?;
    let flake = murmur_nix::build(spec)?;
    let dir = tempfile::tempdir()?;
    for (rel, text) in &flake.files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().context("file has a parent")?)?;
        std::fs::write(&path, text)?;
    }
    // Nix is asked with a deadline: a nix that waits (on a store lock, say) must fail the
    // step, not stall the demo.
    let nix = |args: Vec<std::ffi::OsString>| async move {
        let run = tokio::process::Command::new("nix-instantiate")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(60), run).await
    };
    let parsed = match nix(vec!["--version".into()]).await {
        Ok(Ok(_)) => {
            for rel in flake.files.keys() {
                let o = nix(vec!["--parse".into(), dir.path().join(rel).into()])
                    .await
                    .with_context(|| {
                        format!("nix-instantiate --parse {rel}: no answer in 60 s")
                    })??;
                ensure!(
                    o.status.success(),
                    "nix-instantiate refused {rel}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            "each parsed by nix-instantiate"
        }
        Ok(Err(_)) => "nix-instantiate not installed, parse check skipped",
        Err(_) => bail!("nix-instantiate --version did not answer within 60 s"),
    };
    out!(
        "[flake] examples/shop.toml → {} files ({} bytes): {}; {parsed}",
        flake.files.len(),
        flake.files.values().map(String::len).sum::<usize>(),
        flake.files.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
