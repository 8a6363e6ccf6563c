//! Authority, enforced twice: by the server (operator mode, one scoped signing key per role,
//! every permission derived from the subject declarations) and by the folds (a decision
//! counts only from an identity holding the role at its position in the log), so a replay
//! on a server that enforces nothing reaches the same state.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use murmur_coordination::consensus::{Consensus, ConsensusProjection};
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_e2e::DEADLINE;
use murmur_subjects::events::{
    AgentOffline, DeadLetterReason, ProposalDecided, ProposalOpened, Protocol, TaskAssigned,
    TaskCancelled, TaskSubmitted,
};
use murmur_subjects::projection::SMALL_STREAM_SUBJECTS;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventLog, Identity, Projector, Token};
use murmur_testkit::TestNats;

/// A raw async-nats client with `creds`, collecting what the server reports as errors.
struct Watched {
    client: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Watched {
    async fn connect(url: &str, creds: &std::path::Path) -> Result<Self> {
        let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
        // A participant's replies come to its own inbox prefix, the only one it may
        // subscribe to.
        let key = murmur_subjects::connect::read_creds(creds)?.claims.key;
        let client = async_nats::ConnectOptions::with_credentials_file(creds)
            .await?
            .custom_inbox_prefix(murmur_subjects::roles::inbox_prefix(&key))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let text = match event {
                        async_nats::Event::ServerError(e) => e.to_string(),
                        async_nats::Event::Disconnected => "disconnected".to_string(),
                        _ => return,
                    };
                    let _ = tx.send(text);
                }
            })
            .max_reconnects(Some(1))
            .connect(url)
            .await?;
        Ok(Self { client, errors })
    }

    /// Waits for the server's next error, up to `within`.
    async fn next_error(&mut self, within: Duration) -> Result<String> {
        tokio::time::timeout(within, self.errors.recv())
            .await
            .context("the server reported nothing")?
            .context("the client closed")
    }

    /// Publishes to `subject` and expects the server to refuse it.
    async fn refused_publish(&mut self, subject: &str) -> Result<()> {
        self.client.publish(subject.to_string(), "x".into()).await?;
        self.client.flush().await?;
        let error = self.next_error(Duration::from_secs(5)).await?;
        ensure!(
            error.contains("Permissions Violation for Publish") && error.contains(subject),
            "publishing {subject}: {error}"
        );
        Ok(())
    }

    /// Subscribes to `subject` and expects the server to refuse it.
    async fn refused_subscribe(&mut self, subject: &str) -> Result<()> {
        let _sub = self.client.subscribe(subject.to_string()).await?;
        self.client.flush().await?;
        let error = self.next_error(Duration::from_secs(5)).await?;
        ensure!(
            error.contains("Permissions Violation for Subscription") && error.contains(subject),
            "subscribing {subject}: {error}"
        );
        Ok(())
    }

    /// Nothing refused so far.
    fn no_errors(&mut self) -> Result<()> {
        match self.errors.try_recv() {
            Ok(e) => anyhow::bail!("the server refused: {e}"),
            Err(_) => Ok(()),
        }
    }
}

async fn creds(nats: &TestNats, role: Role, name: &str) -> Result<(Identity, std::path::PathBuf)> {
    let (identity, creds) = nats.creds("acme", role, name).await?;
    Ok((
        identity,
        creds.context("a secure server issues credentials")?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_delete_purge_assign_or_read_another_inbox() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner = nats.owner("acme").await?;
    owner
        .append(Draft::new(Token::new("t1")?, &murmur_e2e::submitted(1))?)
        .await?;
    let before = owner.last_sequence("MURMUR_HISTORY").await?;
    let (worker, worker_creds) = creds(&nats, Role::Worker, "w1").await?;
    let mut w = Watched::connect(nats.url(), &worker_creds).await?;

    // What a worker does do: read the log (stream info, a consumer) and report results.
    let js = async_nats::jetstream::new(w.client.clone());
    let stream = js.get_stream("MURMUR_HISTORY").await?;
    ensure!(stream.cached_info().state.messages >= 1);
    js.publish("murmur.v1.acme.evt.task.t1.started", "{}".into())
        .await?
        .await?;
    w.no_errors()?;

    w.refused_publish("$JS.API.STREAM.DELETE.MURMUR_HISTORY")
        .await?;
    w.refused_publish("$JS.API.STREAM.PURGE.MURMUR_HISTORY")
        .await?;
    w.refused_publish("$JS.API.STREAM.UPDATE.MURMUR_HISTORY")
        .await?;
    w.refused_publish("$JS.API.CONSUMER.DELETE.MURMUR_HISTORY.murmur-auditor")
        .await?;
    w.refused_publish("murmur.v1.acme.evt.task.t1.assigned")
        .await?;
    w.refused_publish("murmur.v1.acme.evt.role.UABC.granted")
        .await?;
    // Its own agent subjects only: the aggregate is its key.
    let other = Identity::generate();
    w.refused_publish(&format!(
        "murmur.v1.acme.evt.agent.{}.joined",
        other.public_key()
    ))
    .await?;
    w.refused_subscribe(&format!("_INBOX.{}.>", other.public_key()))
        .await?;
    w.refused_subscribe("_INBOX.>").await?;
    // Its own inbox is its own.
    let _own = w
        .client
        .subscribe(format!("_INBOX.{}.x", worker.public_key()))
        .await?;
    w.client.flush().await?;
    w.no_errors()?;

    // The stream is whole: nothing the worker asked for was done.
    let after = owner.last_sequence("MURMUR_HISTORY").await?;
    ensure!(
        after == before + 1,
        "{before} → {after}: only the started event"
    );
    Ok(())
}

/// A connection authenticated as one participant cannot publish another's own events
/// (the server fills each scoped user's own key into its permissions), and a participant
/// connecting with credentials signs as the key they were issued to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cannot_speak_for_another_participant() -> Result<()> {
    let nats = TestNats::start().await?;
    let (alice, alice_creds) = creds(&nats, Role::Worker, "alice").await?;
    let (bob, _) = creds(&nats, Role::Worker, "bob").await?;
    let mut a = Watched::connect(nats.url(), &alice_creds).await?;
    // Bob's heartbeat and departure, signed by Bob's key (Alice holds it, say): refused by
    // the server on Alice's connection.
    for verb in ["evt.agent.{}.left", "live.agent.{}.heartbeat"] {
        let subject = format!("murmur.v1.acme.{}", verb.replace("{}", bob.public_key()));
        a.refused_publish(&subject).await?;
    }
    // Her own: allowed.
    a.client
        .publish(
            format!("murmur.v1.acme.live.agent.{}.heartbeat", alice.public_key()),
            "{}".into(),
        )
        .await?;
    a.client.flush().await?;
    a.no_errors()?;
    // The CLI signs as the credentials' key, and refuses an identity file holding another.
    let dir = tempfile::tempdir()?;
    let bob_seed = dir.path().join("bob.seed");
    std::fs::write(&bob_seed, bob.seed())?;
    let out = murmur_e2e::murmur_output(
        &[
            "--server",
            nats.url(),
            "--realm",
            "acme",
            "--data-dir",
            &dir.path().display().to_string(),
            "--creds",
            &alice_creds.display().to_string(),
            "--identity",
            &bob_seed.display().to_string(),
            "identity",
        ],
        DEADLINE,
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("signs with the key it connects as"),
        "{said}"
    );
    let out = murmur_e2e::murmur_output(
        &[
            "--data-dir",
            &dir.path().display().to_string(),
            "--creds",
            &alice_creds.display().to_string(),
            "identity",
        ],
        DEADLINE,
    )?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == alice.public_key(),
        "{out:?}"
    );
    Ok(())
}

/// LLM nodes execute no tool, tool nodes reach no model, memory is read-only for a model
/// (the Kamil rule), as the server enforces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_and_tool_roles_keep_to_their_side() -> Result<()> {
    let nats = TestNats::start().await?;
    nats.owner("acme").await?;
    let (_, inference_creds) = creds(&nats, Role::Inference, "llm").await?;
    let (tool, tool_creds) = creds(&nats, Role::Tool, "files").await?;
    let (llm_agent, _) = creds(&nats, Role::Inference, "llm-2").await?;

    let mut llm = Watched::connect(nats.url(), &inference_creds).await?;
    // No task of any capability (a tool task included) from a model.
    llm.refused_publish("murmur.v1.acme.evt.task.fs-read.submitted")
        .await?;
    // Nothing of the tools' traffic: their progress, their agents' endpoints.
    llm.refused_subscribe("murmur.v1.acme.live.task.*.progress")
        .await?;
    llm.refused_subscribe(&format!(
        "murmur.v1.acme.rpc.agent.{}.status",
        tool.public_key()
    ))
    .await?;
    // Memory: queried, never written.
    llm.refused_publish("murmur.v1.acme.evt.knowledge.notes-0.changed")
        .await?;
    llm.refused_publish("murmur.v1.acme.evt.space.notes.opened")
        .await?;
    llm.refused_publish("$O.MURMUR_KNOWLEDGE.M.x").await?;
    llm.client
        .publish("murmur.v1.acme.rpc.space.notes.query", "{}".into())
        .await?;
    llm.client.flush().await?;
    llm.no_errors()?;

    let mut files = Watched::connect(nats.url(), &tool_creds).await?;
    // No model task, no model agent's endpoint.
    files
        .refused_publish("murmur.v1.acme.evt.task.ask.submitted")
        .await?;
    files
        .refused_subscribe(&format!(
            "murmur.v1.acme.rpc.agent.{}.status",
            llm_agent.public_key()
        ))
        .await?;
    files
        .refused_subscribe("murmur.v1.acme.live.task.*.progress")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_reads_the_log_and_srv_but_writes_nothing() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner = nats.owner("acme").await?;
    owner
        .append(Draft::new(Token::new("t1")?, &murmur_e2e::submitted(1))?)
        .await?;
    // An agent to answer $SRV.
    let data = tempfile::tempdir()?;
    let (mut agent, _) = murmur_e2e::spawn_tester(&nats, data.path(), &[]).await?;
    let (_, observer_creds) = creds(&nats, Role::Observer, "watcher").await?;
    let mut o = Watched::connect(nats.url(), &observer_creds).await?;
    // It reads: the log through a projection, the dead letters, $SRV.
    let client = murmur_subjects::connect::ConnectOptions::servers(nats.url())
        .auth(murmur_subjects::connect::Auth::CredsFile {
            path: observer_creds.clone(),
        })
        .connect()
        .await?;
    let log = EventLog::options(
        murmur_subjects::connect::read_creds(&observer_creds)
            .map(|c| Identity::from_seed(&c.seed))??,
        Token::new("acme")?,
    )
    .config(Default::default())
    .codec(Default::default())
    .open(client.clone())
    .await?;
    let mut tasks = Projector::new(log, CoordinatorProjection::new(Token::new("acme")?));
    tasks.catch_up().await?;
    ensure!(tasks.state().tasks.tasks.contains_key("t1"));
    let info = client.request("$SRV.INFO", "".into()).await?;
    ensure!(!info.payload.is_empty());
    async_nats::jetstream::new(client.clone())
        .get_stream("MURMUR_DLQ")
        .await?;
    // It writes nothing.
    o.refused_publish("murmur.v1.acme.evt.task.t2.submitted")
        .await?;
    o.refused_publish("murmur.v1.acme.evt.proposal.p.vote_cast")
        .await?;
    o.refused_publish("$KV.MURMUR_PRESENCE.acme.x").await?;
    o.refused_publish("$O.MURMUR_ARTIFACTS.C.x").await?;
    o.refused_publish("murmur.v1.acme.dlq.sys.refused.dead_lettered")
        .await?;
    o.refused_publish("$JS.API.STREAM.DELETE.MURMUR_HISTORY")
        .await?;
    agent.kill().await?;
    Ok(())
}

/// Revoked credentials: the connected participant is disconnected at once and refused on
/// reconnecting. Expired ones: disconnected when they expire, refused after, and the CLI
/// names the file and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_credentials_are_cut_off_and_refused() -> Result<()> {
    let nats = TestNats::start().await?;
    nats.owner("acme").await?;
    let realm = Token::new("acme")?;
    let (worker, worker_creds) = creds(&nats, Role::Worker, "w1").await?;
    let mut w = Watched::connect(nats.url(), &worker_creds).await?;
    let authority = nats.issuer().authority().context("secure")?;
    let started = std::time::Instant::now();
    authority.revoke(&realm, worker.public_key())?;
    murmur_testkit::authority::push_account_jwt(
        nats.issuer().servers(),
        &authority.system_creds_file()?,
        &authority.account_jwt(&realm, &Default::default())?,
    )
    .await?;
    let why = w.next_error(Duration::from_secs(2)).await?;
    let took = started.elapsed();
    ensure!(
        why.contains("Revoked"),
        "expected a revocation, got {why:?}"
    );
    eprintln!("revoked connection cut off after {took:?}");
    let again = async_nats::ConnectOptions::with_credentials_file(&worker_creds)
        .await?
        .connect(nats.url())
        .await;
    ensure!(again.is_err(), "a revoked user reconnected");

    // Credentials that expire in 2 s: fine until then, cut off at expiry, refused after
    // with a clear error.
    let short = Identity::generate();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("short.creds");
    murmur_testkit::authority::write_secret(
        &path,
        &authority.creds(
            &realm,
            Role::Worker,
            "short",
            &short,
            Some(chrono::Utc::now() + chrono::Duration::seconds(2)),
        )?,
    )?;
    let mut s = Watched::connect(nats.url(), &path).await?;
    let why = s.next_error(Duration::from_secs(10)).await?;
    ensure!(why.contains("Expired"), "expected an expiry, got {why:?}");
    let out = murmur_e2e::murmur_output(
        &[
            "--server",
            nats.url(),
            "--data-dir",
            &dir.path().display().to_string(),
            "--creds",
            &path.display().to_string(),
            "agents",
            "ls",
        ],
        DEADLINE,
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains(&path.display().to_string())
            && said.contains("expired at"),
        "{said}"
    );
    Ok(())
}

/// Bad credentials get a clear error naming the file, within seconds: malformed, and
/// issued by another operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_named_with_the_reason() -> Result<()> {
    let nats = TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let run = |creds: &std::path::Path| {
        murmur_e2e::murmur_output(
            &[
                "--server",
                nats.url(),
                "--data-dir",
                &dir.path().display().to_string(),
                "--creds",
                &creds.display().to_string(),
                "agents",
                "ls",
            ],
            Duration::from_secs(20),
        )
    };
    let junk = dir.path().join("junk.creds");
    std::fs::write(&junk, "not credentials")?;
    let out = run(&junk)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains("junk.creds")
            && said.contains("not a NATS credentials file"),
        "{said}"
    );
    // Another operator's, for a realm of the same name.
    let elsewhere = tempfile::tempdir()?;
    let stranger = murmur_testkit::authority::Authority::open_or_create(elsewhere.path())?;
    let foreign = dir.path().join("foreign.creds");
    std::fs::write(
        &foreign,
        stranger.creds(
            &Token::new("acme")?,
            Role::Operator,
            "intruder",
            &Identity::generate(),
            None,
        )?,
    )?;
    let started = std::time::Instant::now();
    let out = run(&foreign)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && said.contains("foreign.creds")
            && said.contains("authorization violation"),
        "{said}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // A role that does not exist is refused before anything is minted.
    let out = murmur_e2e::murmur_output(
        &["creds", "issue", "--role", "admin", "--name", "x"],
        Duration::from_secs(20),
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("unknown role \"admin\""),
        "{said}"
    );
    Ok(())
}

/// On a server that enforces nothing, anyone may write a decision. The folds count it only
/// from an identity holding the role at that position in the log: an assignment by a
/// non-coordinator, a liveness verdict by a non-monitor, a decision by a non-tallier (and a
/// tallier's decision without grounds in the votes) are refused on replay, and the auditor
/// dead-letters the unauthorized ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_without_authority_are_refused_on_replay_of_an_open_server() -> Result<()> {
    let nats = TestNats::start_insecure().await?;
    assert!(!nats.is_secure());
    let owner = nats.owner("acme").await?;
    let auditor = murmur_e2e::spawn_auditor(&owner);
    let coordinator = nats
        .log_as("acme", Role::Coordinator, "coordinator")
        .await?;
    let tallier = nats.log_as("acme", Role::Tallier, "tallier").await?;
    let rogue = nats.event_log("acme").await?;
    let submitter = nats.event_log("acme").await?;
    let worker = Identity::generate();

    // Two tasks: the real coordinator assigns one, the rogue the other.
    for id in ["t-real", "t-rogue"] {
        submitter
            .append(Draft::new(
                Token::new(id)?,
                &TaskSubmitted {
                    capability: "test.run".into(),
                    ..Default::default()
                },
            )?)
            .await?;
    }
    let assignment = TaskAssigned {
        agent: worker.public_key().into(),
        attempt: 1,
        lease_ms: 60_000,
        work: None,
    };
    coordinator
        .append(Draft::new(Token::new("t-real")?, &assignment)?)
        .await?;
    let (forged, _) = rogue
        .append(Draft::new(Token::new("t-rogue")?, &assignment)?)
        .await?;

    // An agent, and a liveness verdict on it by the rogue.
    let agent = nats.event_log_as(worker.clone(), "acme").await?;
    agent
        .append(Draft::new(
            Token::new(worker.public_key())?,
            &murmur_e2e::joined("w"),
        )?)
        .await?;
    rogue
        .append(Draft::new(
            Token::new(worker.public_key())?,
            &AgentOffline {
                last_seen: chrono::Utc::now().to_rfc3339(),
                interval_ms: 1_000,
                missed_intervals: 3,
            },
        )?)
        .await?;

    // A proposal with one voter and no vote: approved by the rogue, then by the tallier's
    // key with no grounds.
    let voter = Identity::generate();
    submitter
        .append(Draft::new(
            Token::new("p1")?,
            &ProposalOpened {
                question: "ship?".into(),
                payload: serde_json::json!({}),
                protocol: Protocol::SimpleMajority,
                voters: [(voter.public_key().to_string(), 1)].into(),
                quorum: 1,
                deadline: chrono::Utc::now() + chrono::Duration::minutes(10),
                category: "release".into(),
                stimulus: 1.0,
            },
        )?)
        .await?;
    let approved = ProposalDecided {
        outcome: "approved".into(),
        approve: 1,
        reject: 0,
        abstain: 0,
        votes: 1,
        participants: Some([voter.public_key().to_string()].into()),
    };
    rogue
        .append(Draft::new(Token::new("p1")?, &approved)?)
        .await?;
    tallier
        .append(Draft::new(Token::new("p1")?, &approved)?)
        .await?;

    // A replay by a fresh reader.
    let reader = nats.event_log("acme").await?;
    let mut tasks = Projector::new(
        reader.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    tasks.catch_up().await?;
    let state = |id: &str| tasks.state().tasks.tasks[id].state.name();
    ensure!(state("t-real") == "assigned", "{}", state("t-real"));
    ensure!(
        state("t-rogue") == "pending",
        "the rogue's assignment counted"
    );
    let mut registry = Projector::new(
        reader.clone(),
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    registry.catch_up().await?;
    ensure!(
        registry.state().agents[worker.public_key()].status == AgentStatus::Online,
        "the rogue's offline verdict counted"
    );
    let mut proposals = Projector::new(
        reader,
        ConsensusProjection {
            realm: Token::new("acme")?,
        },
    );
    proposals.catch_up().await?;
    let c: &Consensus = proposals.state();
    ensure!(
        c.proposals["p1"].decided.is_none(),
        "a decision without authority or grounds counted: {:?}",
        c.proposals["p1"].decided
    );

    // The auditor dead-letters what had no authority: the rogue's assignment, verdict and
    // decision.
    let dl = murmur_e2e::wait_for_dead_letter(&owner, "the rogue's assignment", |d| {
        d.reason == DeadLetterReason::Unauthorized && d.original_subject == forged.subject.as_str()
    })
    .await?;
    ensure!(
        dl.detail.contains("counts only from a coordinator"),
        "{}",
        dl.detail
    );
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let unauthorized = murmur_e2e::dead_letters(&owner)
            .await?
            .into_iter()
            .filter(|(_, d)| d.reason == DeadLetterReason::Unauthorized)
            .count();
        if unauthorized >= 3 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "{unauthorized} unauthorized dead letters"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = auditor.stop.send(());
    auditor.task.await??;
    Ok(())
}

/// The operator's workflow from the CLI, as a new user runs it: `murmur up` (secure by
/// default) refuses anonymous connections; `creds issue` mints a worker's credentials; the
/// worker joins with them; `creds revoke` cuts it off within 2 s, its process exits saying
/// why, and its credentials are refused from then on; `creds ls` shows it revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn murmur_up_issues_and_revokes_credentials_from_the_cli() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let home = tempfile::tempdir()?;
    let data = home.path().join("up");
    let port = murmur_testkit::server::free_port()?;
    let url = format!("nats://127.0.0.1:{port}");
    let up_log = home.path().join("up.log");
    let mut up = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .arg("--data-dir")
        .arg(&data)
        .args(["up", "--port", &port.to_string()])
        .env_remove("NATS_URL")
        .stderr(std::fs::File::create(&up_log)?)
        .kill_on_drop(true)
        .spawn()?;
    murmur_e2e::wait_for_line(&up_log, "streams ready", DEADLINE * 2).await?;
    let said = std::fs::read_to_string(&up_log)?;
    ensure!(said.contains("operator credentials:"), "{said}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("operator.creds"))?
            .permissions()
            .mode();
        ensure!(mode & 0o777 == 0o600, "operator.creds mode {mode:o}");
    }
    ensure!(
        async_nats::connect(&url).await.is_err(),
        "an anonymous connection was accepted"
    );

    let operator = |args: &[&str]| -> Result<std::process::Output> {
        let mut all = vec!["--server", url.as_str(), "--data-dir"];
        let data = data.display().to_string();
        all.push(&data);
        all.extend_from_slice(args);
        murmur_e2e::murmur_output(&all, DEADLINE)
    };
    let creds = home.path().join("w1.creds");
    let out = operator(&[
        "creds",
        "issue",
        "--role",
        "worker",
        "--name",
        "w1",
        "-o",
        &creds.display().to_string(),
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut agent = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", &url, "--creds"])
        .arg(&creds)
        .arg("--data-dir")
        .arg(home.path().join("w1"))
        .args(["agent", "run", "tester", "--capability", "test.run"])
        .args(["--builtin-handler", "--heartbeat-ms", "200"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(agent.stdout.take().context("stdout")?).lines();
    let id = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("the agent did not join")??
        .context("the agent exited")?;
    let id = id.trim().to_string();

    let out = operator(&["creds", "ls"])?;
    let listed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains("worker") && l.ends_with("active")),
        "{listed}"
    );
    let started = std::time::Instant::now();
    let out = operator(&["creds", "revoke", &id])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .context("the revoked agent kept running")??;
    let took = started.elapsed();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(agent.stderr.as_mut().context("stderr")?, &mut stderr)
        .await?;
    ensure!(
        status.code() == Some(2) && stderr.contains("Revoked"),
        "{status:?}: {stderr}"
    );
    eprintln!("revoke → agent exited in {took:?} (includes the CLI's own start)");
    let out = operator(&["creds", "ls"])?;
    let listed = String::from_utf8_lossy(&out.stdout);
    ensure!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.ends_with("revoked")),
        "{listed}"
    );
    let out = murmur_e2e::murmur_output(
        &[
            "--server",
            &url,
            "--creds",
            &creds.display().to_string(),
            "--data-dir",
            &home.path().join("w1").display().to_string(),
            "agents",
            "ls",
        ],
        DEADLINE,
    )?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && said.contains("refused the credentials"),
        "{said}"
    );
    // SIGTERM: `murmur up` stops the nats-server it started (SIGKILL would orphan it).
    let pid = up.id().context("murmur up pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let stopped = tokio::time::timeout(DEADLINE, up.wait()).await??;
    ensure!(stopped.success(), "murmur up: {stopped:?}");
    Ok(())
}

/// A participant flooding the server is stopped by its role's limits, at the server: an
/// observer's subscriptions past the cap are refused and its oversized publish closes its
/// connection, while a worker appending events carries on.
#[tokio::test]
async fn role_limits_stop_a_flooding_participant_and_others_carry_on() -> Result<()> {
    use murmur_subjects::roles::{MAX_SUBSCRIPTIONS, SMALL_PAYLOAD};
    let nats = TestNats::start().await?;
    let worker = nats.log_as("acme", Role::Worker, "steady").await?;
    let (identity, creds) = nats.creds("acme", Role::Observer, "flooder").await?;
    let mut flooder = Watched::connect(nats.url(), &creds.context("secure")?).await?;
    // Its own inbox: the subjects any role may subscribe to.
    let inbox = murmur_subjects::roles::inbox_prefix(identity.public_key());

    // Subscriptions: up to the cap they are taken, the next is refused.
    let mut held = Vec::new();
    for i in 0..MAX_SUBSCRIPTIONS {
        held.push(
            flooder
                .client
                .subscribe(format!("{inbox}.flood{i}"))
                .await?,
        );
    }
    flooder.client.flush().await?;
    let _over = flooder
        .client
        .subscribe(format!("{inbox}.one-more"))
        .await?;
    flooder.client.flush().await?;
    let error = flooder.next_error(DEADLINE).await?;
    ensure!(
        error
            .to_ascii_lowercase()
            .contains("maximum subscriptions exceeded"),
        "the subscription past {MAX_SUBSCRIPTIONS}: {error}"
    );

    // The worker's appends are acknowledged throughout.
    let before = worker.last_sequence("MURMUR_HISTORY").await?;
    worker
        .append(Draft::new(
            Token::new(worker.identity().public_key())?,
            &murmur_e2e::joined("steady"),
        )?)
        .await?;

    // A payload past the role's limit closes the flooder's connection.
    let big = vec![b'x'; SMALL_PAYLOAD as usize + 1];
    flooder.client.publish("$JS.API.INFO", big.into()).await?;
    let _ = flooder.client.flush().await;
    let mut said = Vec::new();
    let closed = loop {
        let error = flooder.next_error(DEADLINE).await?;
        said.push(error.clone());
        if error.to_ascii_lowercase().contains("maximum payload") {
            break true;
        }
        if said.len() > 5 {
            break false;
        }
    };
    ensure!(closed, "the oversized publish was not refused: {said:?}");
    let after = worker
        .append(Draft::new(
            Token::new(worker.identity().public_key())?,
            &murmur_e2e::joined("steady"),
        )?)
        .await?;
    ensure!(after.1.sequence > before, "the worker's events were stored");
    Ok(())
}

/// A role granted and revoked while a projector follows the log counts from its position
/// on: a decision before the grant and one after the revocation are refused live, as on
/// replay, and the two give the same state. Whether the grants come on the projector's
/// consumer or are fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_and_revoked_while_a_projector_follows_counts_from_its_position()
-> Result<()> {
    for grants in [Grants::OnTheConsumer, Grants::Fenced] {
        granted_and_revoked_while_following(grants)
            .await
            .with_context(|| format!("grants {grants:?}"))?;
    }
    Ok(())
}

async fn granted_and_revoked_while_following(grants: Grants) -> Result<()> {
    let (nats, owner, coordinator) = acme_with_coordinator().await?;
    let late = nats.event_log("acme").await?;
    let worker = Identity::generate();
    let projection = assignments_of(worker.public_key())?;
    let mut live = following(&nats, projection.clone(), grants).await?;

    let agent = worker.public_key().to_string();
    assign_across_a_grant_and_its_revocation(&owner, &late, &coordinator, &agent).await?;
    assert_eq!(
        follow_to_marker(&mut live).await?,
        ["t-granted", "t-marker"],
        "only the assignments written while the role was held count"
    );
    let stats = live.stats();
    match grants {
        Grants::OnTheConsumer => assert_eq!(stats.grant_fences, 0, "no fence: {stats:?}"),
        Grants::Fenced => assert!(
            stats.grant_scans >= 1,
            "the new grants were read from the stream: {stats:?}"
        ),
    }

    ensure_replay_agrees(&nats, projection, &live).await?;
    Ok(())
}

/// A projector whose live consumer leaves the grants out fences them before each batch of
/// deliveries it folds; while no grant is new, a fence is one question about the realm's
/// last grant and reads nothing from the stream (its answer comes from the server's subject
/// index, where reading the grants after a position makes the server scan every message
/// stored since). Deliveries passed over undecoded are not fenced. A grant written later is
/// still read, in order, and live and replay agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_with_no_new_grant_reads_nothing_from_the_stream() -> Result<()> {
    const TASKS: usize = 40;
    let (nats, owner, coordinator) = acme_with_coordinator().await?;
    let late = nats.event_log("acme").await?;
    let agent = Identity::generate().public_key().to_string();
    let projection = assignments_of(&agent)?;
    let mut live = following(&nats, projection.clone(), Grants::Fenced).await?;

    for k in 0..TASKS {
        assign(&coordinator, &agent, &format!("t{k}")).await?;
        // One delivery per poll: a fence for each but the first (the grants are known
        // through the position before it).
        ensure!(
            live.follow_until(DEADLINE, |a| a.by_sequence.len() > k)
                .await?,
            "assignment t{k} never arrived"
        );
    }
    let quiet = live.stats().clone();
    assert!(
        quiet.grant_fences >= TASKS as u64 - 1,
        "a fence per delivery after the first: {quiet:?}"
    );
    assert_eq!(quiet.grant_scans, 0, "no grant was new: {quiet:?}");

    // Assignments to another worker are passed over undecoded, unjudged: no fence.
    let other = Identity::generate().public_key().to_string();
    for k in 0..10u64 {
        assign(&coordinator, &other, &format!("o{k}")).await?;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while live.stats().addressed_elsewhere <= k {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "assignment o{k} never arrived: {:?}",
                live.stats()
            );
            live.poll(Duration::from_millis(50)).await?;
        }
    }
    assert_eq!(
        live.stats().grant_fences,
        quiet.grant_fences,
        "deliveries passed over fence nothing: {:?}",
        live.stats()
    );

    assign(&late, &agent, "t-before-grant").await?;
    make_coordinator(&owner, &late).await?;
    assign(&late, &agent, "t-granted").await?;
    assign(&coordinator, &agent, "t-marker").await?;
    let folded = follow_to_marker(&mut live).await?;
    assert_eq!(
        &folded[TASKS..],
        ["t-granted", "t-marker"],
        "the grant written later counts from its position"
    );
    assert!(
        live.stats().grant_scans >= 1,
        "the new grant was read from the stream: {:?}",
        live.stats()
    );
    ensure_replay_agrees(&nats, projection, &live).await?;
    Ok(())
}

/// A projector whose live consumer reads the grants while the stream holds few subjects
/// moves them to a fence once the stream holds the subjects it was given: no fence before, its
/// consumer remade once, no delivery lost or folded twice across the change, and a grant
/// and a revocation written after it still count from their positions, as on replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_fences_the_grants_once_the_stream_holds_enough_subjects() -> Result<()> {
    /// Subjects added before the projector is to fence: one per assignment below.
    const GROWTH: u64 = 40;
    let (nats, owner, coordinator) = acme_with_coordinator().await?;
    let late = nats.event_log("acme").await?;
    let agent = Identity::generate().public_key().to_string();
    let projection = assignments_of(&agent)?;
    let subjects = async_nats::jetstream::new(nats.client().await?)
        .get_stream(late.config().history_stream.as_str())
        .await?
        .info()
        .await?
        .state
        .subjects_count;
    let mut live = Projector::new(nats.event_log("acme").await?, projection.clone())
        .grants_on_the_consumer_below(subjects + GROWTH);
    live.catch_up().await?;
    live.poll(Duration::from_millis(50)).await?;

    assign_in_turn(&mut live, &coordinator, &agent, 0..GROWTH / 2).await?;
    assert_eq!(
        (
            live.stats().grant_fences,
            live.stats().grants_moved_to_fence
        ),
        (0, 0),
        "below the threshold the consumer reads the grants: {:?}",
        live.stats()
    );
    let grant_reads = live.stats().grant_reads;
    assign_in_turn(&mut live, &coordinator, &agent, GROWTH / 2..2 * GROWTH).await?;
    let stats = live.stats().clone();
    assert_eq!(
        stats.grants_moved_to_fence, 1,
        "the consumer was remade once, to fence: {stats:?}"
    );
    assert_eq!(
        stats.grant_reads, grant_reads,
        "the book followed the consumer's deliveries, so the new consumer read no grants: {stats:?}"
    );
    assert!(stats.grant_fences >= 1, "fenced since: {stats:?}");
    assert_eq!(
        live.state().by_sequence.len() as u64,
        2 * GROWTH,
        "every assignment folded once"
    );

    assign_across_a_grant_and_its_revocation(&owner, &late, &coordinator, &agent).await?;
    let folded = follow_to_marker(&mut live).await?;
    assert_eq!(
        &folded[2 * GROWTH as usize..],
        ["t-granted", "t-marker"],
        "the grant and the revocation count from their positions"
    );
    ensure_replay_agrees(&nats, projection, &live).await?;
    Ok(())
}

/// A projector whose polls are dropped midway (a service's `select!` taking another branch)
/// loses no event: each one taken from the consumer is folded by a later poll, also while
/// the realm's grants are being read for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_whose_polls_are_cut_short_folds_every_event() -> Result<()> {
    const TASKS: usize = 300;
    let (nats, owner, coordinator) = acme_with_coordinator().await?;
    let agent = Identity::generate().public_key().to_string();
    let projection = assignments_of(&agent)?;
    let mut live = following(&nats, projection.clone(), Grants::Fenced).await?;

    let writer = tokio::spawn(async move {
        for k in 0..TASKS {
            assign(&coordinator, &agent, &format!("t{k}")).await?;
            if k == TASKS / 2 {
                // A grant in the middle: the projector reads it between the events around it.
                murmur_testkit::authority::grant(
                    &owner,
                    Identity::generate().public_key(),
                    Role::Worker,
                    "bystander",
                    None,
                )
                .await?;
            }
        }
        anyhow::Ok(())
    });
    let mut cut = 0u32;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while live.state().by_sequence.len() < TASKS && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(
            Duration::from_micros(300),
            live.poll(Duration::from_millis(20)),
        )
        .await
        {
            Ok(polled) => {
                polled?;
            }
            Err(_) => cut += 1,
        }
        if writer.is_finished() && cut > 0 {
            // Written: let the remaining polls run to the end.
            live.poll(Duration::from_millis(20)).await?;
        }
    }
    writer.await??;
    assert!(cut > 0, "no poll was cut short: the test proved nothing");
    assert_eq!(
        live.state().by_sequence.len(),
        TASKS,
        "every assignment folded ({cut} polls cut short)"
    );
    Ok(())
}

/// A projection that follows the log live through one wider filter (`live_filter`) folds
/// only the events of its own filters, with the realm's grants read in order around them,
/// and ends in the state a replay gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_read_through_a_wider_live_filter_folds_only_its_own_events() -> Result<()> {
    for grants in [Grants::OnTheConsumer, Grants::Fenced] {
        read_through_a_wider_live_filter(grants)
            .await
            .with_context(|| format!("grants {grants:?}"))?;
    }
    Ok(())
}

async fn read_through_a_wider_live_filter(grants: Grants) -> Result<()> {
    use murmur_coordination::assignments::{AssignmentProjection, Assignments};
    use murmur_subjects::{Projection, Refusal, SubjectFilter, VerifiedEvent};

    /// Assignments, followed live through the whole task domain.
    struct WideAssignments(AssignmentProjection);
    impl Projection for WideAssignments {
        type State = Assignments;
        fn name(&self) -> &str {
            "wide-assignments"
        }
        fn filter(&self) -> SubjectFilter {
            self.0.filter()
        }
        fn live_filter(&self) -> Option<SubjectFilter> {
            Some(
                SubjectFilter::plane(murmur_subjects::Plane::Evt)
                    .realm(Token::new("acme").expect("token"))
                    .domain(murmur_subjects::Domain::Task),
            )
        }
        fn apply(&self, state: &mut Assignments, event: &VerifiedEvent) -> Result<(), Refusal> {
            self.0.apply(state, event)
        }
    }

    let (nats, owner, coordinator) = acme_with_coordinator().await?;
    let late = nats.event_log("acme").await?;
    let agent = Identity::generate().public_key().to_string();
    let projection = || {
        WideAssignments(AssignmentProjection {
            realm: Token::new("acme").expect("token"),
            agent: agent.clone(),
        })
    };
    let mut live = following(&nats, projection(), grants).await?;

    let assign = |log: &EventLog, task: &'static str| {
        let (log, agent) = (log.clone(), agent.clone());
        async move {
            assign(&log, &agent, task).await?;
            log.append(Draft::new(
                Token::new(task)?,
                &TaskCancelled {
                    reason: "not this projection's".into(),
                },
            )?)
            .await?;
            anyhow::Ok(())
        }
    };
    assign(&coordinator, "t-first").await?;
    assign(&late, "t-before-grant").await?;
    make_coordinator(&owner, &late).await?;
    assign(&late, "t-granted").await?;
    assign(&coordinator, "t-marker").await?;
    assert_eq!(
        follow_to_marker(&mut live).await?,
        ["t-first", "t-granted", "t-marker"],
        "the assignment before the grant is refused, the rest count"
    );
    assert_eq!(
        (live.stats().applied, live.stats().refused),
        (3, 1),
        "the cancellations the wider filter delivers are passed over, not folded"
    );
    ensure_replay_agrees(&nats, projection(), &live).await?;
    Ok(())
}

/// A worker's projection passes over the assignments addressed to other workers without
/// decoding them (the `Murmur-Recipient` header the log writes), and the header never
/// widens what counts: an assignment whose header names the worker but whose signed payload
/// names another is decoded and not kept. Live and replay skip the same deliveries and
/// agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_passes_over_assignments_addressed_to_others_undecoded() -> Result<()> {
    let nats = TestNats::start_insecure().await?;
    let coordinator = nats
        .log_as("acme", Role::Coordinator, "coordinator")
        .await?;
    let (me, other) = (
        Identity::generate().public_key().to_string(),
        Identity::generate().public_key().to_string(),
    );
    let projection = assignments_of(&me)?;
    let mut live = following(&nats, projection.clone(), Grants::Fenced).await?;

    // Written as the coordinator writes them: the header from the payload.
    assign(&coordinator, &me, "t-mine").await?;
    assign(&coordinator, &other, "t-theirs-1").await?;
    assign(&coordinator, &other, "t-theirs-2").await?;
    // The header naming this worker over a payload naming the other.
    let mut lying = coordinator.seal(Draft::new(
        Token::new("t-lying")?,
        &TaskAssigned {
            agent: other.clone(),
            attempt: 1,
            lease_ms: 600_000,
            work: None,
        },
    )?);
    lying.recipient = Some(me.clone());
    coordinator.append_sealed(&lying).await?.wait().await?;
    assign(&coordinator, &me, "t-marker").await?;

    assert_eq!(
        follow_to_marker(&mut live).await?,
        ["t-mine", "t-marker"],
        "only the assignments whose signed payload names this worker are kept"
    );
    assert_eq!(
        (live.stats().addressed_elsewhere, live.stats().applied),
        (2, 3),
        "the two addressed to the other worker passed over; the rest decoded and folded"
    );
    let replay = ensure_replay_agrees(&nats, projection, &live).await?;
    assert_eq!(
        replay.stats().addressed_elsewhere,
        2,
        "replay passes over the same deliveries"
    );
    Ok(())
}

/// An open server with realm `acme`: its owner's log and a coordinator's (granted the role).
async fn acme_with_coordinator() -> Result<(TestNats, EventLog, EventLog)> {
    let nats = TestNats::start_insecure().await?;
    let owner = nats.owner("acme").await?;
    let coordinator = nats
        .log_as("acme", Role::Coordinator, "coordinator")
        .await?;
    Ok((nats, owner, coordinator))
}

/// `projection` replayed from the whole log of realm `acme`, which must reach the state
/// `live` reached following it; the replay, for what else a test checks of it.
async fn ensure_replay_agrees<P>(
    nats: &TestNats,
    projection: P,
    live: &Projector<P>,
) -> Result<Projector<P>>
where
    P: murmur_subjects::Projection,
    P::State: PartialEq + std::fmt::Debug,
{
    let mut replay = Projector::new(nats.event_log("acme").await?, projection);
    replay.catch_up().await?;
    assert_eq!(replay.state(), live.state(), "live and replay agree");
    Ok(replay)
}

/// Assignments to `agent` written by `late` before it is made a coordinator
/// (`t-before-grant`), while it is one (`t-granted`) and after its role is revoked
/// (`t-after-revoke`), then `t-marker` by `coordinator`: a fold that judges each by its
/// position keeps `t-granted` and `t-marker`, and once the marker is folded every
/// assignment before it was judged.
async fn assign_across_a_grant_and_its_revocation(
    owner: &EventLog,
    late: &EventLog,
    coordinator: &EventLog,
    agent: &str,
) -> Result<()> {
    assign(late, agent, "t-before-grant").await?;
    make_coordinator(owner, late).await?;
    assign(late, agent, "t-granted").await?;
    murmur_testkit::authority::revoke(owner, late.identity().public_key(), None, "test").await?;
    assign(late, agent, "t-after-revoke").await?;
    assign(coordinator, agent, "t-marker").await?;
    Ok(())
}

/// Grants `log`'s identity the coordinator role (as `late`), written by the realm's owner.
async fn make_coordinator(owner: &EventLog, log: &EventLog) -> Result<()> {
    murmur_testkit::authority::grant(
        owner,
        log.identity().public_key(),
        Role::Coordinator,
        "late",
        None,
    )
    .await?;
    Ok(())
}

/// How a projector that follows the log reads the realm's grants.
#[derive(Debug, Clone, Copy)]
enum Grants {
    /// Its live consumer delivers them beside the projection's events, as a voter's does on
    /// a stream of fewer than [`SMALL_STREAM_SUBJECTS`] subjects (every stream here).
    OnTheConsumer,
    /// It fences them (the default).
    Fenced,
}

/// A projector of `projection` caught up with realm `acme` and following it live, reading
/// the grants as `grants` says: its live consumer exists before the test writes anything.
async fn following<P: murmur_subjects::Projection>(
    nats: &TestNats,
    projection: P,
    grants: Grants,
) -> Result<Projector<P>> {
    let mut live = Projector::new(nats.event_log("acme").await?, projection);
    if let Grants::OnTheConsumer = grants {
        live = live.grants_on_the_consumer_below(SMALL_STREAM_SUBJECTS);
    }
    live.catch_up().await?;
    live.poll(Duration::from_millis(50)).await?;
    Ok(live)
}

/// Writes an assignment of `task` to `agent`, signed by `log`'s identity.
async fn assign(log: &EventLog, agent: &str, task: &str) -> Result<()> {
    log.append(Draft::new(
        Token::new(task)?,
        &TaskAssigned {
            agent: agent.to_string(),
            attempt: 1,
            lease_ms: 600_000,
            work: None,
        },
    )?)
    .await?;
    Ok(())
}

/// The assignments of `agent` in realm `acme`, as its worker folds them.
fn assignments_of(agent: &str) -> Result<murmur_coordination::assignments::AssignmentProjection> {
    Ok(murmur_coordination::assignments::AssignmentProjection {
        realm: Token::new("acme")?,
        agent: agent.to_string(),
    })
}

/// Assigns the tasks `t{k}` of `tasks` to `agent` one at a time, each on a task of its own
/// (a new subject), and follows `live` until it folded each.
async fn assign_in_turn(
    live: &mut Projector<murmur_coordination::assignments::AssignmentProjection>,
    coordinator: &EventLog,
    agent: &str,
    tasks: std::ops::Range<u64>,
) -> Result<()> {
    for k in tasks {
        assign(coordinator, agent, &format!("t{k}")).await?;
        ensure!(
            live.follow_until(DEADLINE, |a| a.by_sequence.len() as u64 > k)
                .await?,
            "assignment t{k} never arrived: {:?}",
            live.stats()
        );
    }
    Ok(())
}

/// The tasks an assignment view holds, in log order.
fn assigned_tasks(a: &murmur_coordination::assignments::Assignments) -> Vec<String> {
    a.by_sequence.values().map(|a| a.task.clone()).collect()
}

/// Follows `live` until the `t-marker` assignment is folded; the tasks it then holds.
async fn follow_to_marker<P>(live: &mut Projector<P>) -> Result<Vec<String>>
where
    P: murmur_subjects::Projection<State = murmur_coordination::assignments::Assignments>,
{
    let marker = "t-marker".to_string();
    ensure!(
        live.follow_until(DEADLINE, |a| assigned_tasks(a).contains(&marker))
            .await?,
        "the marker assignment never arrived: {:?}",
        assigned_tasks(live.state())
    );
    Ok(assigned_tasks(live.state()))
}
