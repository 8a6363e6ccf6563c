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
//! Then the distributed-compilation pipeline runs on the same server ([`crate::demo::compile`]),
//! the tool, inference and assistant steps, interop (a Python agent; the Synadia Agent
//! Protocol's Python client prompting the gateway), consensus and knowledge, and the example
//! deployment graph is generated into a Nix flake. Exits non-zero if any
//! step does not hold.

#[cfg(feature = "inference")]
pub mod assistant;
pub mod compile;
mod consensus;
mod console;
mod flake;
#[cfg(feature = "inference")]
pub mod inference;
mod interop;
mod knowledge;
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
use murmur_subjects::log::{Expected, MSG_ID};
use murmur_subjects::{Draft, Identity, LogError, Projector, StartAt, SubjectFilter, Token};

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
            cpu_features: vec![],
        },
        slots: 1,
        handles: None,
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
        let handlers = murmur_agents::handlers::EventHandlers::new()
            .tasks(crate::cli::agent::builtin_handler(), Duration::from_secs(5));
        let agent = Arc::new(
            Agent::join(
                log,
                AgentSpec {
                    manifest: AgentJoined {
                        handles: Some(handlers.types()),
                        ..manifest(name)
                    },
                    heartbeat: Duration::from_millis(250),
                },
            )
            .await?,
        );
        out!("    {name} joined as {}", agent.id());
        let runner = agent.clone();
        let stop = stopped(workers_stop_rx.clone());
        worker_tasks.push(tokio::spawn(async move {
            murmur_agents::handlers::run_handlers(&runner, &handlers, stop)
                .await
                .map(|stats| stats.tasks_completed)
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
    let (headers, body) =
        binding::encode(&forged.record, ContentMode::Binary, settings.codec.limit())?;
    let mut headers = async_nats::HeaderMap::from(headers);
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
    console::console_step(
        &issuer
            .participant(&realm, Role::Observer, "demo-console")
            .await?,
        replayed.position(),
        live.state().registry.agents.len(),
        live.state().tasks.tasks.len(),
    )
    .await?;

    // The distributed-compilation pipeline on the same server, agents as processes.
    crate::demo::compile::run_on(settings, issuer).await?;

    // Tools: an agent process serves file operations confined to a workspace.
    crate::demo::tool::run_on(issuer).await?;

    // Inference: an agent process answers an llm.generate task with a GGUF model.
    #[cfg(feature = "inference")]
    crate::demo::inference::run_on(issuer).await?;

    // The assistant: an inference agent and a tool agent answer `murmur ask` questions.
    #[cfg(feature = "inference")]
    crate::demo::assistant::run_on(issuer).await?;

    // Interop: a Python agent speaks murmur's protocol; the Synadia Agent Protocol's Python
    // client prompts murmur's gateway.
    interop::run_on(issuer).await?;

    // Consensus: three policy voters (own identities) and a tallier decide a release.
    consensus::consensus_step(issuer).await?;

    // Shared knowledge: two agents edit one Automerge space, a memory agent serves it.
    knowledge::knowledge_step(issuer).await?;

    // The deployment graph of a 5-service shop, generated into a Nix flake.
    flake::flake_step().await?;
    out!("demo ok");
    Ok(())
}
