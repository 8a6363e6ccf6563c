//! Interop. murmur's protocol spoken by a second implementation: the reference Python agent
//! (`examples/python/murmur_agent.py`: nats-py, the `nkeys` package and the CloudEvents SDK,
//! none of murmur's code) joins a secure realm with its own credentials, takes the tasks the
//! coordinator routes to it, votes on a proposal naming it, and a tampered event it sends is
//! dead-lettered; and its envelope code reproduces the example bytes of `docs/protocol.md`
//! (which `subjects/protocol/tests/protocol_doc.rs` computes from the Rust code).
//! And the Synadia Agent Protocol, with that protocol's own Python SDKs: its client prompts
//! `murmur gateway` (each prompt a murmur task), and an agent its service SDK hosts takes
//! murmur tasks through a bridge agent. `scripts/install.sh` installs the packages into
//! `.venv`.

use anyhow::{Context, Result, bail};
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::coordinator::{CARRIED_INPUT_BYTES, CoordinatorProjection};
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_coordination::tasks::TaskState;
use murmur_e2e::DEADLINE;
use murmur_subjects::events::{DeadLetterReason, ProposalOpened, Protocol};
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Draft, Projector, Token};
use tokio::io::AsyncBufReadExt;

fn python() -> Result<std::path::PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run `bash scripts/install.sh`",
            python.display()
        );
    }
    Ok(python)
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_python_envelope_reproduces_the_documented_bytes() -> Result<()> {
    let out = std::process::Command::new(python()?)
        .arg(repo_root().join("examples/python/check_protocol_examples.py"))
        .arg(repo_root().join("docs/protocol.md"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The Python agent as a child process with the credentials `creds`; returns it and the
/// public key it prints once joined. Its stderr is passed through.
async fn python_agent(
    nats: &murmur_testkit::TestNats,
    creds: &std::path::Path,
    args: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run `bash scripts/install.sh`",
            python.display()
        );
    }
    let mut child = tokio::process::Command::new(python)
        .arg(root.join("examples/python/murmur_agent.py"))
        .args([
            "--server",
            nats.url(),
            "--realm",
            "acme",
            "--heartbeat-ms",
            "300",
        ])
        .arg("--creds")
        .arg(creds)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let key = tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("the Python agent did not join in time")??
    .context("the Python agent exited before joining (its stderr says why)")?;
    Ok((child, key.trim().to_string()))
}

/// Asks the agent to leave (SIGTERM) and waits for it to exit.
async fn stop(mut child: tokio::process::Child) -> Result<std::process::ExitStatus> {
    let pid = child.id().context("already exited")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    Ok(tokio::time::timeout(DEADLINE, child.wait()).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_takes_tasks_and_votes_and_its_tampered_event_is_dead_lettered() -> Result<()>
{
    let nats = murmur_testkit::TestNats::start().await?;
    anyhow::ensure!(nats.is_secure(), "the interop test runs in secure mode");
    let owner = nats.event_log("acme").await?;
    let auditor = murmur_e2e::spawn_auditor(&nats.log_as("acme", Role::Auditor, "auditor").await?);
    let coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let tallier = murmur_e2e::spawn_tallier(nats.log_as("acme", Role::Tallier, "tallier").await?);
    let (_, worker_creds) = nats.creds("acme", Role::Worker, "py-worker").await?;
    let (_, voter_creds) = nats.creds("acme", Role::Voter, "py-voter").await?;
    let (worker, worker_key) = python_agent(
        &nats,
        &worker_creds.context("secure mode issues creds")?,
        &[
            "--name",
            "py-worker",
            "--capability",
            "text.upper",
            "--capability",
            "text.count",
            "--label",
            "lang=python",
            "--send-tampered",
        ],
    )
    .await?;
    let (voter, voter_key) = python_agent(
        &nats,
        &voter_creds.context("secure mode issues creds")?,
        &[
            "--role",
            "voter",
            "--name",
            "py-voter",
            "--reject-if-contains",
            "delete",
        ],
    )
    .await?;

    // The registry fold accepts both manifests.
    let realm = Token::new("acme")?;
    let mut registry = Projector::new(
        owner.clone(),
        RegistryProjection {
            realm: realm.clone(),
        },
    );
    anyhow::ensure!(
        registry
            .follow_until(DEADLINE, |r| [&worker_key, &voter_key]
                .iter()
                .all(|k| r.agents.contains_key(*k)))
            .await?,
        "the Python agents never appeared in the registry"
    );
    let entry = &registry.state().agents[&worker_key];
    assert_eq!(entry.kind, "python");
    assert_eq!(
        entry.capabilities,
        ["text.count".to_string(), "text.upper".to_string()].into()
    );
    assert_eq!(entry.labels.get("lang").map(String::as_str), Some("python"));
    assert!(!registry.state().agents[&voter_key].takes_tasks());

    // Tasks routed to it: one whose work the assignment carries, one too large to carry
    // (the agent reads the submission from the log), one with no handler (it fails).
    let big = "murmur ".repeat(CARRIED_INPUT_BYTES / 7 + 1);
    let tasks = [
        (
            "upper",
            "text.upper",
            serde_json::json!({"text": "murmur speaks python"}),
        ),
        ("count", "text.count", serde_json::json!({"text": big})),
    ];
    let done = &run_tasks(&owner, &tasks, "the Python agent's tasks").await?;
    for (id, ..) in &tasks {
        assert_eq!(
            done[*id].state,
            TaskState::Completed {
                agent: worker_key.clone()
            },
            "{id}"
        );
    }
    assert_eq!(
        done["upper"].output,
        Some(serde_json::json!({"text": "MURMUR SPEAKS PYTHON", "by": "python"}))
    );
    assert_eq!(
        done["count"].output,
        Some(
            serde_json::json!({"chars": big.len(), "words": CARRIED_INPUT_BYTES / 7 + 1, "by": "python"})
        )
    );
    // Its events carry the task's correlation and each names its cause.
    let events = murmur_e2e::aggregate_events(&owner, Domain::Task, "upper").await?;
    let types: Vec<&str> = events.iter().map(|e| e.record.ty.as_str()).collect();
    assert_eq!(
        types,
        [
            "dev.murmur.task.submitted",
            "dev.murmur.task.assigned",
            "dev.murmur.task.started",
            "dev.murmur.task.completed"
        ]
    );
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].record.causation_id.as_deref(),
            Some(pair[0].record.id.as_str())
        );
        assert_eq!(pair[1].record.correlation_id, pair[0].record.correlation_id);
    }
    assert_eq!(events[2].emitter(), worker_key);
    assert_eq!(events[3].emitter(), worker_key);

    // A proposal naming the Python voter: its vote counts, with its reason.
    let mut consensus = Projector::new(
        owner.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    for (id, question, outcome) in [
        ("keep", "deploy shop v2?", "approved"),
        ("wipe", "delete the history?", "rejected"),
    ] {
        owner
            .append(Draft::new(
                Token::new(id)?,
                &ProposalOpened {
                    question: question.into(),
                    payload: serde_json::json!({}),
                    protocol: Protocol::SimpleMajority,
                    voters: [(voter_key.clone(), 1)].into(),
                    quorum: 1,
                    deadline: chrono::Utc::now() + chrono::Duration::seconds(60),
                    category: "release".into(),
                    stimulus: 1.0,
                },
            )?)
            .await?;
        anyhow::ensure!(
            consensus
                .follow_until(DEADLINE, |c| c
                    .proposals
                    .get(id)
                    .is_some_and(|p| p.decided.is_some()))
                .await?,
            "proposal {id} was never decided"
        );
        let proposal = &consensus.state().proposals[id];
        assert_eq!(
            proposal.decided.as_ref().map(|d| d.outcome.as_str()),
            Some(outcome)
        );
        assert_eq!(proposal.votes.len(), 1, "{proposal:?}");
        assert!(proposal.refused.is_empty(), "{proposal:?}");
    }

    // The event it changed after signing is dead-lettered as a bad signature, and nothing
    // else it sent (manifest, heartbeats, task events, votes) is.
    let dead = murmur_e2e::wait_for_dead_letter(&owner, "the tampered event", |d| {
        d.reason == DeadLetterReason::BadSignature && d.original_subject.contains(&worker_key)
    })
    .await?;
    assert!(dead.original_subject.ends_with(".load_changed"), "{dead:?}");
    let all = murmur_e2e::dead_letters(&owner).await?;
    assert_eq!(all.len(), 1, "only the tampered event: {all:#?}");

    // It leaves on SIGTERM.
    for child in [worker, voter] {
        let status = stop(child).await?;
        assert!(status.success(), "{status}");
    }
    anyhow::ensure!(
        registry
            .follow_until(DEADLINE, |r| [&worker_key, &voter_key].iter().all(|k| r
                .agents
                .get(*k)
                .is_some_and(|a| a.status == AgentStatus::Left)))
            .await?,
        "the Python agents never left"
    );
    let audited = auditor.stats.borrow().clone();
    assert!(audited.valid > 10, "{audited:?}");
    coordinator.stop().await??;
    tallier.stop().await??;
    Ok(())
}

/// `murmur gateway` as a child process with `who`'s credentials; returns it once it printed
/// the prompt subject it serves.
async fn gateway(
    nats: &murmur_testkit::TestNats,
    dir: &std::path::Path,
    args: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let who = murmur_e2e::enrol(nats, Role::Submitter, "gateway", dir).await?;
    let mut child = murmur_e2e::murmur_cli(nats.url(), dir, &who)?
        .arg("gateway")
        .args(["--heartbeat-s", "1"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let subject = tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("the gateway did not register in time")??
    .context("the gateway exited before registering")?;
    Ok((child, subject.trim().to_string()))
}

/// Submits each `(id, capability, input)` as `owner` and waits until every one is final:
/// the tasks as the coordinator's fold holds them then.
async fn run_tasks(
    owner: &murmur_subjects::EventLog,
    tasks: &[(&str, &str, serde_json::Value)],
    what: &str,
) -> Result<std::collections::BTreeMap<String, murmur_coordination::tasks::Task>> {
    for (id, capability, input) in tasks {
        murmur_e2e::submit_once(owner, id, capability, input.clone()).await?;
    }
    let mut view = Projector::new(
        owner.clone(),
        CoordinatorProjection::new(owner.realm().clone()),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| tasks.iter().all(|(id, ..)| v
            .tasks
            .tasks
            .get(*id)
            .is_some_and(|t| t.state.is_final())))
            .await?,
        "{what} never finished: {:?}",
        view.state().tasks.counts()
    );
    Ok(view.state().tasks.tasks.clone())
}

/// The protocol's own Python client (`synadia-ai-agents`) prompting agent `agent` with the
/// credentials `creds`: its exit status, the answer it printed and what it logged.
async fn protocol_client(
    nats: &murmur_testkit::TestNats,
    creds: &std::path::Path,
    agent: &str,
    prompt: &str,
    find_within_s: u32,
    options: &[&str],
) -> Result<(std::process::ExitStatus, String, String)> {
    let out = tokio::time::timeout(
        DEADLINE * 2,
        tokio::process::Command::new(python()?)
            .arg(repo_root().join("examples/python/agent_protocol_client.py"))
            .args(["--server", nats.url(), "--agent", agent])
            .args(["--find-within", &find_within_s.to_string()])
            .arg("--creds")
            .arg(creds)
            .args(options)
            .arg(prompt)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the protocol client did not finish in time")??;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    eprint!("{stderr}");
    Ok((out.status, String::from_utf8(out.stdout)?, stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_protocols_client_prompts_murmur_through_the_gateway() -> Result<()> {
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let owner = nats.event_log("acme").await?;
    let _auditor = murmur_e2e::spawn_auditor(&nats.log_as("acme", Role::Auditor, "auditor").await?);
    let coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let (_, worker_creds) = nats.creds("acme", Role::Worker, "py-worker").await?;
    let (_worker, worker_key) = python_agent(
        &nats,
        &worker_creds.context("secure mode issues creds")?,
        &["--capability", "text.upper", "--capability", "text.bogus"],
    )
    .await?;
    let (_shouter, subject) = gateway(
        &nats,
        &dir.path().join("g1"),
        &["--capability", "text.upper", "--agent", "shouter"],
    )
    .await?;
    assert_eq!(subject, "agents.prompt.shouter.acme.default");
    let (_broken, _) = gateway(
        &nats,
        &dir.path().join("g2"),
        &["--capability", "text.bogus", "--agent", "broken"],
    )
    .await?;
    let (caller_key, caller) = nats.creds("acme", Role::Submitter, "caller").await?;
    let caller = caller.context("secure mode issues creds")?;

    // Discovered and prompted with the protocol's SDK; the answer is the task's output.
    let (status, answer, log) =
        protocol_client(&nats, &caller, "shouter", "hello protocol", 30, &[]).await?;
    assert!(status.success(), "{log}");
    assert_eq!(answer, "HELLO PROTOCOL\n");
    assert!(
        log.contains("protocol 0.3") && log.contains("status ack"),
        "{log}"
    );

    // The prompt is a task in the log, submitted by the gateway, run by the Python agent.
    let mut view = Projector::new(
        owner.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v
            .tasks
            .tasks
            .iter()
            .any(|(id, t)| id.starts_with("prompt-") && t.state.is_final()))
            .await?,
        "the prompt's task is not in the log"
    );
    let (id, task) = view
        .state()
        .tasks
        .tasks
        .iter()
        .find(|(id, _)| id.starts_with("prompt-"))
        .context("a prompt task")?;
    assert_eq!(
        task.state,
        TaskState::Completed {
            agent: worker_key.clone()
        },
        "{id}"
    );
    assert_eq!(task.input, serde_json::json!({"text": "hello protocol"}));
    assert_eq!(task.sender, None, "an anonymous prompt names no sender");

    // Signed by the caller's key (`Agent-Sender`), the prompt's task names it, verified.
    let (status, answer, log) = protocol_client(
        &nats,
        &caller,
        "shouter",
        "signed hello",
        30,
        &["--sign-as", "caller"],
    )
    .await?;
    assert!(status.success(), "{log}");
    assert_eq!(answer, "SIGNED HELLO\n");
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v
            .tasks
            .tasks
            .values()
            .any(|t| t.input == serde_json::json!({"text": "signed hello"})))
            .await?,
        "the signed prompt's task is not in the log"
    );
    let signed = view
        .state()
        .tasks
        .tasks
        .values()
        .find(|t| t.input == serde_json::json!({"text": "signed hello"}))
        .context("the signed prompt's task")?;
    let sender = signed
        .sender
        .as_ref()
        .context("the task names its sender")?;
    assert_eq!(sender.user, caller_key.public_key());
    assert!(sender.verified, "{sender:?}");
    assert_eq!(sender.name.as_deref(), Some("caller"));

    // A task that fails answers with the protocol's error (every attempt's reason).
    let (status, _, log) = protocol_client(&nats, &caller, "broken", "hello", 30, &[]).await?;
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("500") && log.contains("no handler for capability"),
        "{log}"
    );

    // A participant without the right to prompt (an observer, read-only) cannot even
    // discover it: the answers' inbox is not its own.
    let (_, observer) = nats.creds("acme", Role::Observer, "nosy").await?;
    let (status, _, log) = protocol_client(
        &nats,
        &observer.context("secure mode issues creds")?,
        "shouter",
        "hello",
        3,
        &[],
    )
    .await?;
    assert!(!status.success(), "{log}");
    assert!(log.contains("no protocol agent named"), "{log}");
    coordinator.stop().await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_models_answer_streams_to_a_protocol_client() -> Result<()> {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        bail!(
            "{} is missing: run `bash scripts/install.sh`",
            model.display()
        );
    }
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let who = murmur_e2e::enrol(&nats, Role::Inference, "llm", dir.path()).await?;
    let model_arg = model.to_string_lossy().to_string();
    let (_agent, _) = murmur_e2e::spawn_agent(
        nats.url(),
        dir.path(),
        &who,
        "inference",
        "llm.generate",
        &["--model", &model_arg],
    )
    .await?;
    let (_gateway, subject) =
        gateway(&nats, &dir.path().join("g"), &["--max-tokens", "96"]).await?;
    assert_eq!(subject, "agents.prompt.llm-generate.acme.default");
    let (_, caller) = nats.creds("acme", Role::Submitter, "caller").await?;
    let caller = caller.context("secure mode issues creds")?;
    let (status, answer, log) = protocol_client(
        &nats,
        &caller,
        "llm-generate",
        "What is the capital of France?",
        30,
        &[],
    )
    .await?;
    assert!(status.success(), "{log}");
    // Greedy decoding: the model's answer.
    assert!(answer.contains("Paris"), "{answer:?}");
    // A story runs to the token limit: 96 tokens take several progress intervals however
    // fast the machine, so the answer streams in more than one chunk.
    let (status, answer, log) = protocol_client(
        &nats,
        &caller,
        "llm-generate",
        "Write a story about a dragon.",
        30,
        &[],
    )
    .await?;
    assert!(status.success(), "{log}");
    assert!(answer.contains("dragon"), "{answer:?}");
    let chunks: u32 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("[client] ")?
                .strip_suffix(" response chunks")?
                .parse()
                .ok()
        })
        .context("the client counts the chunks")?;
    assert!(chunks > 1, "the answer came in {chunks} chunk(s): {log}");

    // The assistant as a protocol agent: a gateway for `assistant.ask` hands each prompt to
    // an orchestrator agent, which plans it; the client gets the answer, not the step lines.
    let orchestrator_dir = dir.path().join("orchestrator");
    let who =
        murmur_e2e::enrol(&nats, Role::Orchestrator, "orchestrator", &orchestrator_dir).await?;
    let (_orchestrator, _) = murmur_e2e::spawn_agent(
        nats.url(),
        &orchestrator_dir,
        &who,
        "orchestrator",
        "assistant.ask",
        &[],
    )
    .await?;
    let (_assistant, subject) = gateway(
        &nats,
        &dir.path().join("g2"),
        &["--capability", "assistant.ask", "--agent", "assistant"],
    )
    .await?;
    assert_eq!(subject, "agents.prompt.assistant.acme.default");
    let (status, answer, log) = protocol_client(
        &nats,
        &caller,
        "assistant",
        "What is the capital of France?",
        120,
        &[],
    )
    .await?;
    assert!(status.success(), "{log}");
    assert!(answer.contains("Paris"), "{answer:?}");
    assert!(!answer.contains("[plan]"), "{answer:?}");
    coordinator.stop().await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_agent_hosted_in_python_takes_murmur_tasks_through_a_bridge() -> Result<()> {
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let owner = nats.event_log("acme").await?;
    let coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    // Hosted with the protocol's own service SDK; only prompts whose Agent-Sender
    // verifies: the bridge's must.
    let (_host, subject) =
        protocol_host(&nats, "reverser", &["--min-sender-trust", "signed"]).await?;
    assert_eq!(subject, "agents.prompt.reverser.acme.default");

    // The bridge finds it by name and joins murmur for it.
    let who = murmur_e2e::enrol(&nats, Role::Worker, "bridge", dir.path()).await?;
    let (_bridge, bridge_key) = murmur_e2e::spawn_agent(
        nats.url(),
        dir.path(),
        &who,
        "bridge",
        "agent.reverser",
        &["--protocol-agent", "reverser"],
    )
    .await?;
    let realm = Token::new("acme")?;
    let mut registry = Projector::new(
        owner.clone(),
        RegistryProjection {
            realm: realm.clone(),
        },
    );
    anyhow::ensure!(
        registry
            .follow_until(DEADLINE, |r| r.agents.contains_key(&bridge_key))
            .await?,
        "the bridge never joined"
    );
    let entry = &registry.state().agents[&bridge_key];
    assert_eq!(
        (entry.kind.as_str(), entry.name.as_str()),
        ("bridge", "reverser")
    );
    assert_eq!(
        entry.labels.get("protocol_agent").map(String::as_str),
        Some("reverser")
    );

    // A murmur task routed to it runs as a prompt; the streamed words are its output.
    murmur_e2e::submit_once(
        &owner,
        "rev",
        "agent.reverser",
        serde_json::json!({"text": "murmur meets the protocol"}),
    )
    .await?;
    let mut view = Projector::new(owner.clone(), CoordinatorProjection::new(realm));
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v
            .tasks
            .tasks
            .get("rev")
            .is_some_and(|t| t.state.is_final()))
            .await?,
        "the bridged task never finished"
    );
    let task = &view.state().tasks.tasks["rev"];
    assert_eq!(
        task.state,
        TaskState::Completed {
            agent: bridge_key.clone()
        }
    );
    let output = task.output.clone().context("an output")?;
    assert_eq!(output["text"], "protocol the meets murmur");
    assert_eq!(output["agent"], "reverser");

    // A bridge to an agent no one hosts says so and exits.
    let ghost_dir = dir.path().join("ghost");
    let who = murmur_e2e::enrol(&nats, Role::Worker, "ghost", &ghost_dir).await?;
    let out = tokio::time::timeout(
        DEADLINE,
        murmur_e2e::agent_process(
            nats.url(),
            &ghost_dir,
            &who,
            &[],
            "bridge",
            "agent.ghost",
            &["--protocol-agent", "ghost"],
            true,
        )?
        .wait_with_output(),
    )
    .await??;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Synadia Agent Protocol agent named \"ghost\""),
        "{stderr}"
    );
    coordinator.stop().await??;
    Ok(())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
async fn listening(port: u16) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "nothing listens on {port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_servers_become_murmur_tools_and_murmur_serves_mcp() -> Result<()> {
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let owner = nats.event_log("acme").await?;
    let coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let server = repo_root().join("examples/python/mcp_server.py");
    let python = python()?;
    // An MCP server written with the official Python SDK, over stdio ...
    let command = format!("{} {}", python.display(), server.display());
    let who = murmur_e2e::enrol(&nats, Role::Worker, "mcp-stdio", &dir.path().join("a")).await?;
    let (_stdio_agent, stdio_key) = murmur_e2e::spawn_agent(
        nats.url(),
        &dir.path().join("a"),
        &who,
        "mcp",
        "mcp.add",
        &["--capability", "mcp.divide", "--mcp-command", &command],
    )
    .await?;
    // ... and over streamable HTTP.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _http_server = tokio::process::Command::new(&python)
        .arg(&server)
        .args(["--http", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    listening(port).await?;
    let who = murmur_e2e::enrol(&nats, Role::Worker, "mcp-http", &dir.path().join("b")).await?;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (_http_agent, http_key) = murmur_e2e::spawn_agent(
        nats.url(),
        &dir.path().join("b"),
        &who,
        "mcp",
        "mcp.word_count",
        &["--mcp-url", &url],
    )
    .await?;
    let tasks = [
        ("sum", "mcp.add", serde_json::json!({"a": 2, "b": 40})),
        ("zero", "mcp.divide", serde_json::json!({"a": 1, "b": 0})),
        (
            "count",
            "mcp.word_count",
            serde_json::json!({"text": "murmur speaks mcp"}),
        ),
    ];
    let done = &run_tasks(&owner, &tasks, "the MCP tasks").await?;
    assert_eq!(
        done["sum"].state,
        TaskState::Completed {
            agent: stdio_key.clone()
        }
    );
    let sum = done["sum"].output.clone().context("an output")?;
    assert_eq!(
        (&sum["text"], &sum["structured"]["result"]),
        (&"42".into(), &42.into())
    );
    // The tool's error fails the attempt with its words.
    assert_eq!(done["zero"].state, TaskState::DeadLettered);
    assert!(
        done["zero"]
            .failures
            .iter()
            .any(|f| f.contains("MCP tool divide failed") && f.contains("division by zero")),
        "{:?}",
        done["zero"].failures
    );
    assert_eq!(
        done["count"].state,
        TaskState::Completed { agent: http_key }
    );
    let count = done["count"].output.clone().context("an output")?;
    assert!(
        count["text"]
            .as_str()
            .is_some_and(|t| t.contains("\"words\": 3")),
        "{count}"
    );

    // murmur as an MCP server: the SDK's client starts `murmur mcp serve`, lists murmur's
    // capabilities (a tool agent's tool.fs and the wrapped mcp.add among them) and calls one.
    let root = dir.path().join("workspace");
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(root.join("src/lib.rs"), "pub fn one() -> u8 { 1 }\n")?;
    let who = murmur_e2e::enrol(&nats, Role::Tool, "files", &dir.path().join("c")).await?;
    let root_arg = root.to_string_lossy().to_string();
    let (_tool_agent, _) = murmur_e2e::spawn_agent(
        nats.url(),
        &dir.path().join("c"),
        &who,
        "tool",
        "tool.fs",
        &["--root", &root_arg],
    )
    .await?;
    let caller =
        murmur_e2e::enrol(&nats, Role::Submitter, "mcp-client", &dir.path().join("d")).await?;
    let mut murmur_args = vec![
        "--server".to_string(),
        nats.url().to_string(),
        "--realm".into(),
        "acme".into(),
        "--data-dir".into(),
        dir.path().join("d").display().to_string(),
    ];
    murmur_args.extend(caller);
    let client = tokio::time::timeout(
        DEADLINE * 2,
        tokio::process::Command::new(&python)
            .arg(repo_root().join("examples/python/mcp_client.py"))
            .arg("--murmur")
            .arg(murmur_e2e::murmur_binary()?)
            .args(murmur_args.iter().map(|a| format!("--murmur-arg={a}")))
            .args(["tool.fs", r#"{"op": "read", "path": "src/lib.rs"}"#])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the MCP client did not finish in time")??;
    let stderr = String::from_utf8_lossy(&client.stderr);
    anyhow::ensure!(client.status.success(), "MCP client failed: {stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&client.stdout)?;
    let names: Vec<&str> = answer["tools"]
        .as_array()
        .context("tools")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for expected in ["mcp.add", "mcp.divide", "mcp.word_count", "tool.fs"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        answer["structured"]["content"],
        "pub fn one() -> u8 { 1 }\n"
    );
    // The call is a task in the log, submitted by the MCP server's participant.
    let mut view = Projector::new(
        owner.clone(),
        CoordinatorProjection::new(owner.realm().clone()),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v.tasks.tasks.iter().any(|(id, t)| id
            .starts_with("mcp-")
            && t.requirements.capability == "tool.fs"))
            .await?,
        "the MCP call is not a task in the log"
    );
    coordinator.stop().await??;
    Ok(())
}

/// `examples/python/protocol_host.py` serving protocol agent `agent` (owner `acme`) with a
/// submitter's creds of its own, started with `options`: the child and its prompt subject.
async fn protocol_host(
    nats: &murmur_testkit::TestNats,
    agent: &str,
    options: &[&str],
) -> Result<(tokio::process::Child, String)> {
    let (_, creds) = nats.creds("acme", Role::Submitter, "host").await?;
    let mut host = tokio::process::Command::new(python()?)
        .arg(repo_root().join("examples/python/protocol_host.py"))
        .args(["--server", nats.url(), "--agent", agent, "--owner", "acme"])
        .args(options)
        .arg("--creds")
        .arg(creds.context("secure mode issues creds")?)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let subject = tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(host.stdout.take().context("stdout")?)
            .lines()
            .next_line(),
    )
    .await??
    .context("the protocol host exited before registering")?;
    Ok((host, subject))
}

/// A murmur worker (in this process) for capability `text.paint` whose handler asks its
/// task's submitter "Which colour?" and answers `painted {reply}`; send `true` to stop it.
async fn asking_worker(
    nats: &murmur_testkit::TestNats,
) -> Result<(
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<u64, murmur_agents::AgentError>>,
)> {
    use murmur_agents::handlers::{EventHandlers, run_handlers};
    use murmur_agents::{Agent, AgentSpec};
    let handlers = EventHandlers::new().tasks(
        murmur_agents::worker::handler(|ctx| async move {
            let colour = ctx
                .questions
                .ask("Which colour?", DEADLINE)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "text": format!("painted {colour}") }))
        }),
        std::time::Duration::from_secs(30),
    );
    let agent = Agent::join(
        nats.log_as("acme", Role::Worker, "painter").await?,
        AgentSpec {
            manifest: murmur_subjects::events::AgentJoined {
                capabilities: vec!["text.paint".into()],
                handles: Some(handlers.types()),
                ..murmur_e2e::joined("painter")
            },
            heartbeat: std::time::Duration::from_secs(1),
        },
    )
    .await?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        run_handlers(&agent, &handlers, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .map(|stats| stats.tasks_completed)
    });
    Ok((stop, task))
}

/// The protocol's mid-stream `query`, murmur as the agent: a murmur worker asks its task's
/// submitter a question; for a prompt through `murmur gateway` the gateway puts it to the
/// protocol caller as a `query` chunk, and the caller's reply (the SDK's `Query.reply`)
/// reaches the worker. Question and answer are in the log, counted by the task fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_murmur_agent_asks_the_protocol_caller_mid_stream() -> Result<()> {
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let owner = nats.event_log("acme").await?;
    let _coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let (stop, worker) = asking_worker(&nats).await?;
    let (_gateway, _) = gateway(
        &nats,
        &dir.path().join("g"),
        &["--capability", "text.paint", "--agent", "painter"],
    )
    .await?;
    let (_, caller) = nats.creds("acme", Role::Submitter, "caller").await?;
    let caller = caller.context("secure mode issues creds")?;
    let (status, answer, log) = protocol_client(
        &nats,
        &caller,
        "painter",
        "paint the door",
        30,
        &["--answer", "blue"],
    )
    .await?;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("question") && log.contains("Which colour?"),
        "{log}"
    );
    assert_eq!(answer, "painted blue\n");

    let mut view = Projector::new(
        owner.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v
            .tasks
            .tasks
            .values()
            .any(|t| t.state.is_final() && !t.questions.is_empty()))
            .await?,
        "the prompt's task and its question are not in the log"
    );
    let task = view
        .state()
        .tasks
        .tasks
        .values()
        .find(|t| !t.questions.is_empty())
        .context("the task")?;
    assert!(
        matches!(task.state, TaskState::Completed { .. }),
        "{task:?}"
    );
    assert_eq!(task.questions.len(), 1);
    assert_eq!(task.questions[0].prompt, "Which colour?");
    assert_eq!(task.questions[0].answer.as_deref(), Some("blue"));

    let _ = stop.send(true);
    assert_eq!(worker.await??, 1);
    Ok(())
}

/// The protocol's mid-stream `query`, murmur as the caller: a protocol agent hosted with the
/// service SDK asks a question while answering a bridged murmur task; the bridge asks the
/// task's submitter through the log (`task.question_asked`), the submitter answers
/// (`task.question_answered`), and the bridge sends the answer to the agent's reply subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_agent_asks_a_murmur_submitter_through_the_bridge() -> Result<()> {
    let nats = murmur_testkit::TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let owner = nats.event_log("acme").await?;
    let _coordinator =
        murmur_e2e::spawn_coordinator(nats.log_as("acme", Role::Coordinator, "coord").await?);
    let (_host, _) = protocol_host(&nats, "curious", &["--ask", "Which colour?"]).await?;
    let who = murmur_e2e::enrol(&nats, Role::Worker, "bridge", dir.path()).await?;
    let (_bridge, _) = murmur_e2e::spawn_agent(
        nats.url(),
        dir.path(),
        &who,
        "bridge",
        "agent.curious",
        &["--protocol-agent", "curious"],
    )
    .await?;

    let submitted = murmur_subjects::events::TaskSubmitted {
        capability: "agent.curious".into(),
        input: serde_json::json!({"text": "door the paint"}),
        ..Default::default()
    };
    let mut run = murmur_coordination::follow::TaskRun::submit(
        &owner,
        Token::new("curious-1")?,
        &submitted,
        DEADLINE,
    )
    .await?;
    let mut asked = Vec::new();
    let task = loop {
        match run.next().await? {
            murmur_coordination::follow::RunEvent::Question(question) => {
                asked.push(question.prompt.clone());
                run.answer(&question.id, "blue").await?;
            }
            murmur_coordination::follow::RunEvent::Progress(_) => {}
            murmur_coordination::follow::RunEvent::Ended(task) => break task,
        }
    };
    assert_eq!(asked, ["Which colour?"]);
    assert!(
        matches!(task.state, TaskState::Completed { .. }),
        "{task:?}"
    );
    let output = task.output.clone().unwrap_or_default();
    assert_eq!(output["text"], "blue: paint the door", "{output}");
    assert_eq!(task.questions[0].answer.as_deref(), Some("blue"));
    Ok(())
}
