//! Interop: murmur's protocol spoken by a second implementation. The reference Python agent
//! (`examples/python/murmur_agent.py`: nats-py, the `nkeys` package and the CloudEvents SDK,
//! none of murmur's code) joins a secure realm with its own credentials, takes the tasks the
//! coordinator routes to it, votes on a proposal naming it, and a tampered event it sends is
//! dead-lettered; and its envelope code reproduces the example bytes of `docs/protocol.md`
//! (which `subjects/tests/protocol_doc.rs` computes from the Rust code).
//! `scripts/install.sh` installs its packages into `.venv`.

use anyhow::{Context, Result, bail};
use murmur_coordination::consensus::ConsensusProjection;
use murmur_coordination::coordinator::{CARRIED_INPUT_BYTES, CoordinatorProjection};
use murmur_coordination::registry::{AgentStatus, RegistryProjection};
use murmur_coordination::tasks::TaskState;
use murmur_e2e::DEADLINE;
use murmur_subjects::events::{DeadLetterReason, ProposalOpened, Protocol};
use murmur_subjects::projection::Projector;
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Draft, Token};
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
    for (id, capability, input) in &tasks {
        murmur_e2e::submit_once(&owner, id, capability, input.clone()).await?;
    }
    let mut view = Projector::new(owner.clone(), CoordinatorProjection::new(realm.clone()));
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| tasks.iter().all(|(id, ..)| v
            .tasks
            .tasks
            .get(*id)
            .is_some_and(|t| t.state.is_final())))
            .await?,
        "the Python agent's tasks never finished: {:?}",
        view.state().tasks.counts()
    );
    let done = &view.state().tasks.tasks;
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
