//! The inference agent kind against a real nats-server: a `murmur agent run inference`
//! process runs `llm.generate` tasks with a GGUF model the test writes itself, and its
//! answer is the one the same model gives in this process (greedy, and sampled with the
//! seed derived from the task id); a malformed request fails its task with the reason, and
//! a bad model file fails the agent's start. A `murmur voter run --model` process votes as
//! the same model scores the answers here.

use anyhow::{Context, Result};
use murmur_agents::inference::{
    GenerateOptions, GenerateRequest, Generation, GgufModel, TestModel, TestVocabulary,
    write_test_model,
};
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::tasks::TaskState;
use murmur_e2e::{DEADLINE, spawn_agent};
use murmur_subjects::roles::Role;
use murmur_subjects::{Projector, Token};
use murmur_testkit::TestNats;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inference_agent_answers_generate_tasks_with_its_model() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let model_path = data.path().join("tiny.gguf");
    // A SentencePiece vocabulary, as Llama 2, TinyLlama and Mistral models carry.
    write_test_model(
        &model_path,
        &TestModel::new(42).vocabulary(TestVocabulary::SentencePiece),
    )?;
    let model_arg = model_path.to_string_lossy().to_string();
    let who = murmur_e2e::enrol(&nats, Role::Inference, "llm", data.path()).await?;
    let (mut agent, agent_id) = spawn_agent(
        nats.url(),
        data.path(),
        &who,
        "inference",
        "llm.generate",
        &["--capability", "llm.score", "--model", &model_arg],
    )
    .await?;
    let submitter = nats.event_log("acme").await?;
    let coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    murmur_e2e::submit_once(
        &submitter,
        "ask",
        "llm.generate",
        serde_json::json!({"prompt": "What is murmur?", "max_tokens": 12}),
    )
    .await?;
    let sampled_request =
        serde_json::json!({"prompt": "hello world", "max_tokens": 12, "temperature": 1.5});
    murmur_e2e::submit_once(
        &submitter,
        "sampled",
        "llm.generate",
        sampled_request.clone(),
    )
    .await?;
    murmur_e2e::submit_once(
        &submitter,
        "malformed",
        "llm.generate",
        serde_json::json!({"text": "no prompt field"}),
    )
    .await?;
    // A conversation, rendered with the model's chat template.
    let chat_request = serde_json::json!({
        "messages": [{"role": "user", "content": "Which agents are online?"}],
        "max_tokens": 8,
    });
    murmur_e2e::submit_once(&submitter, "chat", "llm.generate", chat_request.clone()).await?;
    // The same agent scores fixed answers when a task asks for llm.score.
    let score_request = serde_json::json!({
        "prompt": "Is the build green? Answer:",
        "choices": [" yes", " no", " maybe"],
    });
    murmur_e2e::submit_once(&submitter, "score", "llm.score", score_request.clone()).await?;

    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| [
            "ask",
            "sampled",
            "malformed",
            "chat",
            "score"
        ]
        .iter()
        .all(|id| v.tasks.tasks.get(*id).is_some_and(|t| t.state.is_final())))
            .await?,
        "the tasks never finished: {:?}",
        view.state().tasks.counts()
    );
    let tasks = &view.state().tasks.tasks;
    let ask = &tasks["ask"];
    assert_eq!(
        ask.state,
        TaskState::Completed {
            agent: agent_id.clone()
        }
    );
    let answered: Generation =
        serde_json::from_value(ask.output.clone().context("the answer has an output")?)?;
    // The same model in this process gives the same tokens: the agent ran the model.
    let model = GgufModel::load(&model_path)?;
    let local = model.generate("What is murmur?", &GenerateOptions::greedy(12))?;
    assert_eq!(answered, local);
    assert!(!answered.tokens.is_empty());
    // Sampling with no seed given: the seed comes from the task id, so this process draws
    // the same tokens.
    let sampled = &tasks["sampled"];
    assert!(
        matches!(sampled.state, TaskState::Completed { .. }),
        "{sampled:?}"
    );
    let answered: Generation =
        serde_json::from_value(sampled.output.clone().context("the answer has an output")?)?;
    let request: GenerateRequest = serde_json::from_value(sampled_request)?;
    let options = request.options("sampled").map_err(anyhow::Error::msg)?;
    assert_eq!(answered, model.generate("hello world", &options)?);
    assert_eq!(
        answered.seed,
        Some(murmur_agents::inference::seed_of("sampled"))
    );

    let chat = &tasks["chat"];
    let answered: Generation = serde_json::from_value(
        chat.output
            .clone()
            .context("the chat answer has an output")?,
    )?;
    let request: GenerateRequest = serde_json::from_value(chat_request)?;
    let prompt = request.prompt_for(&model).map_err(anyhow::Error::msg)?;
    assert_eq!(prompt, "<s>[INST] Which agents are online? [/INST]");
    assert_eq!(
        answered,
        model.generate(&prompt, &GenerateOptions::greedy(8))?
    );

    let scored: murmur_agents::inference::Scores = serde_json::from_value(
        tasks["score"]
            .output
            .clone()
            .context("the score task has an output")?,
    )?;
    let request: murmur_agents::inference::ScoreRequest = serde_json::from_value(score_request)?;
    // The agent may have run the scoring passes beside another task's: this model's F32
    // projections go through candle's matrix product, whose last bit can depend on the rows
    // in a pass.
    let local = request.answer(&model).map_err(anyhow::Error::msg)?;
    assert_eq!(
        (scored.best, &scored.choice, &scored.model_sha256),
        (local.best, &local.choice, &local.model_sha256)
    );
    assert_eq!(scored.scores.len(), 3);
    for (theirs, ours) in scored.scores.iter().zip(&local.scores) {
        assert!((theirs - ours).abs() <= 1e-9, "{theirs} against {ours}");
    }

    let malformed = &tasks["malformed"];
    assert_eq!(malformed.state, TaskState::DeadLettered);
    assert!(
        malformed.failures[0].contains("unknown field `text`"),
        "{:?}",
        malformed.failures
    );

    // The agent counts what its model did: the three answers' tokens, no more (the
    // malformed task never reached the model), in `murmur status` (from `$SRV.STATS`).
    let generated: usize = [&tasks["ask"], &tasks["sampled"], &tasks["chat"]]
        .iter()
        .map(|t| {
            serde_json::from_value::<Generation>(t.output.clone().unwrap_or_default())
                .map(|g| g.tokens.len())
                .unwrap_or_default()
        })
        .sum();
    let cli = data.path().join("cli");
    let cli_who = murmur_e2e::enrol(&nats, Role::Submitter, "cli", &cli).await?;
    let mut status = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who)?;
    status.args(["--json", "status"]);
    let out = tokio::time::timeout(DEADLINE, status.output()).await??;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).to_string())?;
    let live = report["online"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["id"] == agent_id.as_str()))
        .map(|a| a["live"]["generation"].clone())
        .unwrap_or_default();
    assert_eq!(live["generated_tokens"], generated, "{report:#}");
    assert!(live["seconds"].as_f64().is_some_and(|s| s > 0.0), "{live}");

    // The agent carries its model's labels, and a task can ask for a model by them: one
    // asking for another model waits, though submitted first; one asking for this model runs.
    let murmur = |args: &[&str]| {
        let mut command = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who).expect("murmur");
        command
            .args(["task", "submit", "--capability", "llm.generate"])
            .args(["--input", r#"{"prompt": "hello", "max_tokens": 4}"#])
            .args(args);
        command
    };
    let other_model = format!("model_sha256={}", "0".repeat(64));
    let waits = murmur(&["--label", &other_model]).output().await?;
    anyhow::ensure!(waits.status.success(), "{waits:?}");
    let waits = String::from_utf8(waits.stdout)?.trim().to_string();
    let this_model = format!("model_sha256={}", model.sha256());
    let runs = murmur(&[
        "--label",
        &this_model,
        "--label",
        "model=murmur-test-model",
        "--watch",
    ])
    .output();
    let runs = tokio::time::timeout(DEADLINE, runs)
        .await
        .context("task submit --watch for this model did not finish")??;
    let said = String::from_utf8(runs.stdout)?;
    assert!(runs.status.success(), "{said}");
    let printed: Generation = serde_json::from_str(said.lines().last().unwrap_or_default())?;
    assert_eq!(
        printed,
        model.generate("hello", &GenerateOptions::greedy(4))?
    );
    anyhow::ensure!(view.catch_up().await.is_ok());
    let waiting = &view.state().tasks.tasks[&waits];
    assert!(
        matches!(waiting.state, TaskState::Pending { .. }),
        "a task for another model is not routed here: {waiting:?}"
    );

    // `agents ls` shows the model's labels and picks agents by them.
    let listed = |label: &str| {
        let mut command = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who).expect("murmur");
        command.args(["agents", "ls", "--label", label]);
        command
    };
    let out = tokio::time::timeout(DEADLINE, listed("model=murmur-test-model").output()).await??;
    let said = String::from_utf8(out.stdout)?;
    assert!(
        said.contains(&agent_id)
            && said.contains(&format!("model_sha256={}…", &model.sha256()[..16])),
        "{said}"
    );
    let out = tokio::time::timeout(DEADLINE, listed("model=another").output()).await??;
    assert!(!String::from_utf8(out.stdout)?.contains(&agent_id));

    // `murmur task watch` streams a running attempt's text, signed by the agent that holds
    // it, and ends with the output; progress signed by anyone else is shown as ignored.
    let mut watch = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who)?
        .args(["task", "watch", "streamed", "--timeout-s", "60"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        watch.stdout.take().context("watch stdout")?,
    ));
    let mut seen = Vec::new();
    let mut next_line = async || -> Result<String> {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .context("no line from task watch")??
            .context("task watch ended early")?;
        Ok(line)
    };
    let first = next_line().await?;
    assert!(first.contains("not in the log yet"), "{first}");
    seen.push(first);
    let mallory = nats
        .event_log_as(murmur_subjects::Identity::generate(), "acme")
        .await?;
    mallory
        .publish_live(murmur_subjects::Draft::new(
            Token::new("streamed")?,
            &murmur_subjects::events::TaskProgress {
                attempt: 1,
                message: Some("forged".into()),
                ..Default::default()
            },
        )?)
        .await?;
    loop {
        let line = next_line().await?;
        seen.push(line.clone());
        if line.contains("ignored progress from") {
            break;
        }
    }
    murmur_e2e::submit_once(
        &submitter,
        "streamed",
        "llm.generate",
        serde_json::json!({"prompt": "hello", "max_tokens": 120}),
    )
    .await?;
    while let Ok(line) = next_line().await {
        seen.push(line);
    }
    let status = tokio::time::timeout(DEADLINE, watch.wait()).await??;
    assert!(status.success(), "{seen:#?}");
    let progress: Vec<&String> = seen.iter().filter(|l| l.contains("progress: ")).collect();
    assert!(
        progress.iter().any(|l| l.contains("/120 · ")),
        "the text so far was streamed: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("forged") && !l.contains("ignored")),
        "{seen:#?}"
    );
    let printed: Generation = serde_json::from_str(seen.last().context("output line")?)?;
    assert_eq!(
        printed,
        model.generate("hello", &GenerateOptions::greedy(120))?
    );

    coordinator.stop().await??;
    agent.kill().await?;

    // A file that is no model fails the start, before the agent joins.
    let junk = data.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model")?;
    let out = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", nats.url(), "--realm", "acme", "agent", "run"])
        .args(["inference", "--ephemeral-identity", "--model"])
        .arg(&junk)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("is not a usable GGUF model"),
        "{said}"
    );

    // `murmur inference test-model` writes a model and `generate` runs it without NATS: the
    // JSON output is what the same model gives here.
    let qwen = data.path().join("qwen.gguf");
    let wrote = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args([
            "inference",
            "test-model",
            "--architecture",
            "qwen2",
            "--seed",
            "5",
        ])
        .arg(&qwen)
        .output()
        .await?;
    anyhow::ensure!(wrote.status.success(), "{wrote:?}");
    let ran = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args([
            "--json",
            "inference",
            "generate",
            "--max-tokens",
            "6",
            "--model",
        ])
        .arg(&qwen)
        .arg("hello")
        .output()
        .await?;
    anyhow::ensure!(ran.status.success(), "{ran:?}");
    let printed: Generation = serde_json::from_slice(&ran.stdout)?;
    let qwen = GgufModel::load(&qwen)?;
    assert_eq!(qwen.architecture().name(), "qwen2");
    assert_eq!(
        printed,
        qwen.generate("hello", &GenerateOptions::greedy(6))?
    );
    Ok(())
}

/// A `murmur voter run --model` process votes on a proposal naming it as the model the test
/// holds scores the answers: the same choice, with both log-probabilities in the reason;
/// the tallier decides by that vote; the voter joins with the model's labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_voter_votes_as_its_model_scores_the_answers() -> Result<()> {
    use murmur_agents::voter::{ModelVoter, Voter as _};
    use murmur_coordination::consensus::{Consensus, ConsensusProjection};
    use murmur_subjects::events::{Choice, VoteCast};
    use tokio::io::AsyncBufReadExt;

    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let model_path = data.path().join("voter.gguf");
    write_test_model(
        &model_path,
        &TestModel::new(9).vocabulary(TestVocabulary::SentencePiece),
    )?;
    let model = std::sync::Arc::new(GgufModel::load(&model_path)?);
    let cli_who =
        murmur_e2e::enrol(&nats, Role::Submitter, "cli", &data.path().join("cli")).await?;
    let murmur = |args: &[&str]| {
        let mut c =
            murmur_e2e::murmur_cli(nats.url(), &data.path().join("cli"), &cli_who).expect("murmur");
        c.args(args);
        c
    };
    let instructions = "Accept changes that keep tests green.";
    let voter_dir = data.path().join("voter");
    let voter_who = murmur_e2e::enrol(&nats, Role::Voter, "llm", &voter_dir).await?;
    let mut voter = murmur_e2e::murmur_cli(nats.url(), &voter_dir, &voter_who)?
        .args(["voter", "run", "--name", "llm"])
        .arg("--model")
        .arg(&model_path)
        .args(["--instructions", instructions])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = voter.stdout.take().context("stdout")?;
    let voter_id = tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await??
    .context("the model voter exited before joining")?
    .trim()
    .to_string();
    let tallier = murmur_e2e::spawn_tallier(nats.log_as("acme", Role::Tallier, "tallier").await?);

    let observer = nats.event_log("acme").await?;
    let mut registry = Projector::new(
        observer.clone(),
        murmur_coordination::registry::RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    anyhow::ensure!(
        registry
            .follow_until(DEADLINE, |r| r.agents.contains_key(&voter_id))
            .await?,
        "the model voter never joined"
    );
    let labels = &registry.state().agents[&voter_id].labels;
    assert_eq!(
        labels.get("model_sha256"),
        Some(&model.sha256().to_string())
    );

    let out = murmur(&[
        "vote",
        "propose",
        "--question",
        "merge the parser rewrite?",
        "--payload",
        r#"{"tests_passed": true, "lines_changed": 420}"#,
        "--voter",
        &voter_id,
        "--quorum",
        "1",
    ])
    .output()
    .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout)?.trim().to_string();
    let mut live = Projector::new(
        observer.clone(),
        ConsensusProjection {
            realm: Token::new("acme")?,
        },
    );
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| c
            .proposals
            .get(&id)
            .is_some_and(|p| p.decided.is_some()))
            .await?,
        "{id} never decided"
    );
    let proposal = live.state().proposals[&id].clone();

    // The vote the process cast is the one this process's copy of the model gives.
    let expected = ModelVoter::new(model.clone(), instructions)
        .vote(&proposal.opened)
        .context("the model answers")?;
    let events =
        murmur_e2e::aggregate_events(&observer, murmur_subjects::Domain::Proposal, &id).await?;
    let cast: Vec<VoteCast> = events
        .iter()
        .filter(|e| e.emitter() == voter_id)
        .filter_map(|e| e.payload::<VoteCast>().ok())
        .collect();
    assert_eq!(cast, std::slice::from_ref(&expected));
    assert!(
        expected.reason.contains("scored accept"),
        "{}",
        expected.reason
    );
    let outcome = proposal.decided.as_ref().map(|d| d.outcome.as_str());
    let want = match expected.choice {
        Choice::Approve => "approved",
        Choice::Reject => "rejected",
        Choice::Abstain => "no_quorum",
    };
    assert_eq!(outcome, Some(want), "{proposal:?}");

    tallier.stop().await??;
    voter.kill().await?;
    Ok(())
}
