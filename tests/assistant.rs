//! The assistant against a real nats-server with the real model `scripts/install.sh`
//! installs (SmolLM2-135M-Instruct, greedy, so the answers are deterministic): an inference
//! agent and a tool agent run as processes, `murmur ask` orchestrates. The capital of France
//! is answered "Paris"; a question naming a file is answered from the tool's result; the
//! model's own plan is a well-formed tool call on its first attempt; a call no tool can run
//! is a typed failure in the log; a repeated question is answered from the assistant's
//! memory, and a question about an earlier answer is answered from it through recall; a
//! write, and a command (`Run \`expr 6 '*' 7\``, run by the tool agent's `tool.exec`), are
//! refused unless allowed, and held until a vote approves them;
//! `--explain` and `--export jsonl` read the steps back.
//!
//! With `MURMUR_SKIP_MODELS=1` (models not installed on purpose) the test says so and ends.

use std::path::PathBuf;

use anyhow::{Context, Result};
use murmur_agents::assistant;
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::tasks::TaskState;
use murmur_e2e::spawn_agent;
use murmur_subjects::roles::Role;
use murmur_subjects::{Projector, Token};
use murmur_testkit::TestNats;

/// Generous: a debug build on 2 cores, the model loaded by the agent first.
const STEP: std::time::Duration = std::time::Duration::from_secs(300);

/// An installed model under the checkout's `models/` (`file` is what must exist in it, or
/// empty when the model is one file): `None` only where `MURMUR_SKIP_MODELS=1` says they are left out on purpose.
fn installed(name: &str, file: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    let needed = if file.is_empty() {
        path.clone()
    } else {
        path.join(file)
    };
    if needed.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("MURMUR_SKIP_MODELS").as_deref() == Ok("1"),
        "{} is missing: run `bash scripts/install.sh` (it installs the models unless MURMUR_SKIP_MODELS=1)",
        needed.display()
    );
    None
}

/// The project the tool agents serve: a `src/lib.rs` of 12 lines.
fn project_in(data: &std::path::Path) -> Result<PathBuf> {
    let project = data.join("project");
    std::fs::create_dir_all(project.join("src"))?;
    let lib: String = (1..=12).map(|n| format!("pub fn f{n}() {{}}\n")).collect();
    std::fs::write(project.join("src/lib.rs"), lib)?;
    Ok(project)
}

fn smollm2() -> Option<PathBuf> {
    installed("SmolLM2-135M-Instruct.Q4_1.gguf", "")
}

fn minilm() -> Option<PathBuf> {
    installed("all-MiniLM-L6-v2", "model.safetensors")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_answers_with_the_real_model_and_a_tool() -> Result<()> {
    let Some(model) = smollm2() else {
        eprintln!("MURMUR_SKIP_MODELS=1: the real-model assistant test does not run");
        return Ok(());
    };
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let project = project_in(data.path())?;

    let llm_who =
        murmur_e2e::enrol(&nats, Role::Inference, "llm", &data.path().join("llm")).await?;
    let (_llm, _) = spawn_agent(
        nats.url(),
        &data.path().join("llm"),
        &llm_who,
        "inference",
        "llm.generate",
        &["--model", &model.to_string_lossy()],
    )
    .await?;
    let tool_who =
        murmur_e2e::enrol(&nats, Role::Tool, "files", &data.path().join("files")).await?;
    let (_tool, _) = spawn_agent(
        nats.url(),
        &data.path().join("files"),
        &tool_who,
        "tool",
        "tool.fs",
        &[
            "--root",
            &project.to_string_lossy(),
            "--writable",
            "--exec-allow",
            "expr",
            "--capability",
            "tool.exec",
        ],
    )
    .await?;
    // Recall: a memory agent, ranking by meaning where all-MiniLM-L6-v2 is installed.
    let memory_who =
        murmur_e2e::enrol(&nats, Role::Memory, "memory", &data.path().join("memory")).await?;
    let embedder = minilm().map(|dir| dir.to_string_lossy().to_string());
    let memory_args: Vec<&str> = embedder
        .as_deref()
        .map(|dir| vec!["--embedding-model", dir])
        .unwrap_or_default();
    let (_memory, _) = spawn_agent(
        nats.url(),
        &data.path().join("memory"),
        &memory_who,
        "memory",
        "tool.memory",
        &memory_args,
    )
    .await?;
    let _coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    let _tallier = murmur_e2e::spawn_tallier(nats.log_as("acme", Role::Tallier, "tallier").await?);
    let cli = data.path().join("cli");
    let cli_who = murmur_e2e::enrol(&nats, Role::Submitter, "cli", &cli).await?;
    let murmur = |args: &[&str]| {
        let mut command = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who).expect("murmur");
        command.args(args);
        command
    };
    let ask = |question: &'static str| {
        let mut command = murmur(&["ask", question]);
        async move {
            let out = tokio::time::timeout(STEP, command.output())
                .await
                .with_context(|| format!("murmur ask {question:?} did not finish"))??;
            let (stdout, stderr) = (
                String::from_utf8(out.stdout)?,
                String::from_utf8(out.stderr)?,
            );
            anyhow::ensure!(out.status.success(), "{question}: {stdout}\n{stderr}");
            let request = stderr
                .lines()
                .find_map(|l| l.strip_prefix("request "))
                .context("no request id printed")?
                .to_string();
            anyhow::Ok((stdout, stderr, request))
        }
    };

    let (answer, stderr, france) = ask("What is the capital of France?").await?;
    assert!(answer.contains("Paris"), "{answer}\n{stderr}");
    // Asked again (the same question once normalized): answered from the assistant's
    // memory, the hit recorded there; no step runs.
    let (again, stderr, repeat) = ask("what is the capital of France").await?;
    assert_eq!(again, answer);
    assert!(
        stderr.contains(&format!("answered by {france}")) && !stderr.contains("[plan]"),
        "{stderr}"
    );
    // Another participant, who may not write the first one's memory: answered all the
    // same, uncached, and told why.
    let other = data.path().join("other");
    let other_who = murmur_e2e::enrol(&nats, Role::Submitter, "other", &other).await?;
    let mut other_ask = murmur_e2e::murmur_cli(nats.url(), &other, &other_who)?;
    other_ask.args(["ask", "What is the capital of France?"]);
    let out = tokio::time::timeout(STEP, other_ask.output()).await??;
    let (said, told) = (
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    );
    assert!(
        out.status.success() && said.contains("Paris"),
        "{said}\n{told}"
    );
    assert!(
        told.contains("[memory] not available") && told.contains("murmur kb grant assistant"),
        "{told}"
    );
    let hits = murmur(&["kb", "query", "assistant", "--predicate", "cache_hit"])
        .output()
        .await?;
    let hits = String::from_utf8(hits.stdout)?;
    assert!(hits.contains(&repeat) && hits.contains(&france), "{hits}");

    let (answer, stderr, lines) = ask("How many lines does src/lib.rs have?").await?;
    assert!(
        stderr.contains(r#"[plan] {"tool":"read_file","path":"src/lib.rs"} by rule"#),
        "{stderr}"
    );
    assert!(answer.contains("12"), "{answer}\n{stderr}");
    // What was found before is recalled from memory (by rule), not re-read.
    let (recalled, stderr, _) = ask("What did you find earlier about src/lib.rs?").await?;
    assert!(
        stderr.contains(r#"[plan] {"tool":"recall","text":"What did you find earlier about src/lib.rs?"} by rule"#)
            && stderr.contains("[tool] recall by"),
        "{stderr}"
    );
    assert!(recalled.contains("12"), "{recalled}\n{stderr}");
    let explained = murmur(&["ask", "--explain", &lines]).output().await?;
    let explained = String::from_utf8(explained.stdout)?;
    assert!(
        explained.contains(&format!("{lines}-tool: tool.fs completed")),
        "{explained}"
    );
    assert!(explained.contains(r#""lines":12"#), "{explained}");
    assert!(
        explained.contains(&format!("{lines}-answer: llm.generate completed")),
        "{explained}"
    );

    // The model's own plan for a question no rule settles: a call the tools' schema
    // accepts, written on the first attempt.
    let submitter = nats.event_log("acme").await?;
    murmur_e2e::submit_once(
        &submitter,
        "plan",
        "llm.generate",
        assistant::plan_input("Where is the word f7 used in the project?"),
    )
    .await?;
    // A call no tool can run: a typed failure in the log, with the reason.
    murmur_e2e::submit_once(
        &submitter,
        "no-such-op",
        "tool.fs",
        serde_json::json!({"op": "exec", "path": "rm -rf /"}),
    )
    .await?;
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(STEP, |v| ["plan", "no-such-op"].iter().all(|id| v
            .tasks
            .tasks
            .get(*id)
            .is_some_and(|t| t.state.is_final())))
            .await?,
        "the tasks never finished"
    );
    let plan = &view.state().tasks.tasks["plan"];
    assert!(
        matches!(plan.state, TaskState::Completed { .. }) && plan.attempt == 1,
        "{plan:?}"
    );
    let output = plan.output.clone().unwrap_or_default();
    let call = assistant::planned_call(&output).context("a well-formed call")?;
    assistant::tool_request(&call).context("a call a tool can run")?;
    let refused = &view.state().tasks.tasks["no-such-op"];
    assert_eq!(refused.state, TaskState::DeadLettered, "{refused:?}");
    assert!(
        refused.failures.iter().any(|f| f.contains("exec")),
        "{:?}",
        refused.failures
    );

    // A step that changes the project is held until a vote approves it; without
    // `--allow write_file` it does not run at all.
    let (_, stderr, _) = ask("Write hello murmur to notes.txt").await?;
    assert!(
        stderr.contains("[safety] write_file is not allowed"),
        "{stderr}"
    );
    assert!(!project.join("notes.txt").exists());
    let approver_dir = data.path().join("approver");
    let approver_who = murmur_e2e::enrol(&nats, Role::Voter, "approver", &approver_dir).await?;
    let approver_murmur = |args: &[&str]| {
        let mut command =
            murmur_e2e::murmur_cli(nats.url(), &approver_dir, &approver_who).expect("murmur");
        command.args(args);
        command
    };
    let key = approver_murmur(&["identity"]).output().await?;
    let key = String::from_utf8(key.stdout)?.trim().to_string();
    // Asks `question` allowing `tool`: the step is put to a vote, `before_vote` holds while
    // it waits, the approver approves, the request ends; every stderr line comes back.
    let held_until_approved = |question: &'static str,
                               tool: &'static str,
                               before_vote: &'static str| {
        let mut held = murmur(&["ask", question, "--allow", tool, "--approver", &key]);
        let approver_murmur = &approver_murmur;
        let project = project.clone();
        async move {
            held.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut held = held.spawn()?;
            let stderr = held.stderr.take().context("stderr")?;
            let mut held_lines =
                tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
            let mut told = Vec::new();
            let proposal = tokio::time::timeout(STEP, async {
                while let Some(line) = held_lines.next_line().await? {
                    told.push(line.clone());
                    if let Some(rest) = line.split_once("(proposal ").map(|(_, r)| r) {
                        return anyhow::Ok(rest.split(';').next().unwrap_or("").to_string());
                    }
                }
                anyhow::bail!("murmur ask ended without putting {question:?} to a vote")
            })
            .await??;
            anyhow::ensure!(
                before_vote.is_empty() || !project.join(before_vote).exists(),
                "{before_vote} written before the vote"
            );
            let cast = approver_murmur(&["vote", "cast", &proposal, "approve", "--reason", "fine"])
                .output()
                .await?;
            anyhow::ensure!(cast.status.success(), "{cast:?}");
            let done = tokio::time::timeout(STEP, held.wait_with_output()).await??;
            while let Ok(Some(line)) = held_lines.next_line().await {
                told.push(line);
            }
            anyhow::ensure!(done.status.success(), "{told:?}");
            anyhow::ensure!(
                told.iter()
                    .any(|l| l.contains(&format!("{proposal} approved"))),
                "{told:?}"
            );
            anyhow::Ok((told, String::from_utf8(done.stdout)?))
        }
    };
    held_until_approved("Write hello murmur to notes.txt", "write_file", "notes.txt").await?;
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt"))?,
        "hello murmur\n"
    );
    // A command is risky too: run by the tool agent (its allowlist holds `expr`) only once
    // approved, in a directory of its own.
    let (_, stderr, _) = ask("Run `expr 6 '*' 7`").await?;
    assert!(
        stderr.contains("[safety] run_command is not allowed"),
        "{stderr}"
    );
    let (told, _) = held_until_approved("Run `expr 6 '*' 7`", "run_command", "").await?;
    let request = told
        .iter()
        .find_map(|l| l.strip_prefix("request "))
        .context("no request id printed")?;
    assert!(
        told.iter().any(|l| l.starts_with("[tool] run_command by")),
        "{told:?}"
    );
    let explained = murmur(&["ask", "--explain", request]).output().await?;
    let explained = String::from_utf8(explained.stdout)?;
    assert!(
        explained.contains(&format!("{request}-tool: tool.exec completed"))
            && explained.contains(r#""stdout":"42\n""#),
        "{explained}"
    );

    // Training data: the model steps of both requests, prompt and response.
    let exported = murmur(&["ask", "--export", "jsonl"]).output().await?;
    let exported = String::from_utf8(exported.stdout)?;
    let records: Vec<serde_json::Value> = exported
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let steps: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["request"].as_str().unwrap_or("").to_string(),
                r["step"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        steps.contains(&(france.clone(), "plan".into()))
            && steps.contains(&(france, "answer".into()))
            && steps.contains(&(lines.clone(), "answer".into()))
            && !steps.contains(&(lines, "plan".into())),
        "{exported}"
    );
    assert!(
        records.iter().all(
            |r| r["model_sha256"].as_str().is_some_and(|h| h.len() == 64)
                && r["outcome"] == "completed"
        ),
        "{exported}"
    );
    Ok(())
}

/// A memory agent process started with all-MiniLM-L6-v2 serves `tool.memory`: a question
/// sharing no word with the fact that answers it recalls that fact first, by meaning (words
/// alone would find nothing), with its id and author; a space that does not exist is a
/// dead letter saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_recalls_by_meaning_with_the_real_embedding_model() -> Result<()> {
    let Some(embedder) = minilm() else {
        eprintln!("MURMUR_SKIP_MODELS=1: the real-model recall test does not run");
        return Ok(());
    };
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let owner = data.path().join("owner");
    let owner_who = murmur_e2e::enrol(&nats, Role::Submitter, "owner", &owner).await?;
    let kb = |args: &[&str]| {
        let mut command = murmur_e2e::murmur_cli(nats.url(), &owner, &owner_who).expect("murmur");
        command.args(args);
        let asked = args.join(" ");
        async move {
            let out = command.output().await?;
            anyhow::ensure!(
                out.status.success(),
                "{asked}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            anyhow::Ok(String::from_utf8(out.stdout)?.trim().to_string())
        }
    };
    kb(&["kb", "open", "notes"]).await?;
    let mut cat = String::new();
    for (subject, predicate, object) in [
        ("release", "planned_for", "next Tuesday after the freeze"),
        ("cat", "sleeps_on", "the warm windowsill every afternoon"),
        ("server", "listens_on", "port 8080 behind the proxy"),
    ] {
        let id = kb(&["kb", "put", "notes", subject, predicate, object]).await?;
        if subject == "cat" {
            cat = id;
        }
    }

    let memory = data.path().join("memory");
    let memory_who = murmur_e2e::enrol(&nats, Role::Memory, "memory", &memory).await?;
    let (_memory, _) = spawn_agent(
        nats.url(),
        &memory,
        &memory_who,
        "memory",
        "tool.memory",
        &["--embedding-model", &embedder.to_string_lossy()],
    )
    .await?;
    let _coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    let submitter = nats.event_log("acme").await?;
    let asks = [
        (
            "felines",
            serde_json::json!({"space": "notes", "query": "Where do felines like to nap?", "matches": 2}),
        ),
        (
            "nowhere",
            serde_json::json!({"space": "no-such-space", "query": "anything"}),
        ),
    ];
    for (id, input) in &asks {
        murmur_e2e::submit_once(&submitter, id, "tool.memory", input.clone()).await?;
    }
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(murmur_subjects::Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(STEP, |v| asks.iter().all(|(id, _)| v
            .tasks
            .tasks
            .get(*id)
            .is_some_and(|t| t.state.is_final())))
            .await?,
        "the recall tasks never finished: {:?}",
        view.state().tasks.counts()
    );
    let tasks = &view.state().tasks.tasks;
    assert!(
        matches!(tasks["felines"].state, TaskState::Completed { .. }),
        "{:?}",
        tasks["felines"]
    );
    let recalled = tasks["felines"].output.clone().context("an output")?;
    assert_eq!(recalled["method"], "embedding", "{recalled}");
    assert_eq!(recalled["searched"], 3, "{recalled}");
    let best = &recalled["matches"][0];
    assert_eq!(best["fact"], cat.as_str(), "{recalled}");
    assert_eq!(best["words"], 0.0, "{recalled}");
    assert!(best["meaning"].as_f64().unwrap_or(0.0) > 0.2, "{recalled}");
    assert_eq!(recalled["matches"].as_array().map(Vec::len), Some(2));
    let nowhere = &tasks["nowhere"];
    assert_eq!(nowhere.state, TaskState::DeadLettered, "{nowhere:?}");
    assert!(
        nowhere
            .failures
            .iter()
            .any(|f| f.contains("there is no knowledge space \"no-such-space\"")),
        "{:?}",
        nowhere.failures
    );
    Ok(())
}

/// `murmur ask` with an orchestrator agent online: the request is an `assistant.ask` task
/// that the orchestrator process runs as its plan (its steps submitted as the orchestrator,
/// caused by its attempt, so the request and its steps share one correlation id), the step
/// lines stream back to the asker as the task's progress, and the answer is the task's
/// output; `--local` runs the same plan in the asking process instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_agent_runs_the_request_as_its_plan() -> Result<()> {
    let Some(model) = smollm2() else {
        eprintln!("MURMUR_SKIP_MODELS=1: the real-model orchestrator test does not run");
        return Ok(());
    };
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let project = project_in(data.path())?;
    let mut agents = Vec::new();
    for (role, kind, capability, extra) in [
        (
            Role::Inference,
            "inference",
            "llm.generate",
            vec!["--model".to_string(), model.to_string_lossy().to_string()],
        ),
        (
            Role::Tool,
            "tool",
            "tool.fs",
            vec!["--root".to_string(), project.to_string_lossy().to_string()],
        ),
        (Role::Orchestrator, "orchestrator", "assistant.ask", vec![]),
    ] {
        let dir = data.path().join(kind);
        let who = murmur_e2e::enrol(&nats, role, kind, &dir).await?;
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        agents.push(spawn_agent(nats.url(), &dir, &who, kind, capability, &extra).await?);
    }
    let orchestrator = agents[2].1.clone();
    let _coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    let cli = data.path().join("cli");
    let cli_who = murmur_e2e::enrol(&nats, Role::Submitter, "cli", &cli).await?;
    let ask = |question: &str, extra: &[&str]| {
        let mut command = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who).expect("murmur");
        command.args(["ask", question]);
        command.args(extra);
        async move {
            let out = tokio::time::timeout(STEP, command.output())
                .await
                .context("murmur ask did not finish")??;
            let (stdout, stderr) = (
                String::from_utf8(out.stdout)?,
                String::from_utf8(out.stderr)?,
            );
            anyhow::ensure!(out.status.success(), "{stdout}\n{stderr}");
            let request = stderr
                .lines()
                .find_map(|l| l.strip_prefix("request "))
                .context("no request id printed")?
                .to_string();
            anyhow::Ok((stdout, stderr, request))
        }
    };
    let lines = "How many lines does src/lib.rs have?";
    let (answer, stderr, request) = ask(lines, &["--no-cache"]).await?;
    assert!(answer.contains("12"), "{answer}\n{stderr}");
    assert!(
        stderr.contains(r#"[plan] {"tool":"read_file","path":"src/lib.rs"} by rule"#)
            && stderr.contains("[answer] by")
            && stderr.contains(&format!(
                "[orchestrator] {request} run by {}",
                &orchestrator[..12]
            )),
        "{stderr}"
    );
    let submitter = nats.event_log("acme").await?;
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    view.catch_up().await?;
    let tasks = &view.state().tasks.tasks;
    let asked = tasks.get(&request).context("the request is a task")?;
    assert_eq!(
        asked.state,
        TaskState::Completed {
            agent: orchestrator.clone()
        }
    );
    for step in ["tool", "answer"] {
        let task = tasks
            .get(&format!("{request}-{step}"))
            .with_context(|| format!("no {step} step"))?;
        assert_eq!(task.correlation_id, asked.correlation_id, "{step}");
        assert!(
            matches!(task.state, TaskState::Completed { .. }),
            "{task:?}"
        );
    }

    // A conversation: the second question is asked with the first turn, which its
    // answering step reads before it.
    let mut chat = murmur_e2e::murmur_cli(nats.url(), &cli, &cli_who)?;
    chat.args(["chat", "--no-cache"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut chat = chat.spawn()?;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = chat.stdin.take().context("stdin")?;
        stdin
            .write_all(
                b"How many lines does src/lib.rs have?\n\nAnd what is that number times two?\n",
            )
            .await?;
    }
    let chatted = tokio::time::timeout(STEP, chat.wait_with_output()).await??;
    let told = String::from_utf8(chatted.stderr)?;
    assert!(chatted.status.success(), "{told}");
    let requests: Vec<&str> = told
        .lines()
        .filter_map(|l| l.strip_prefix("request "))
        .collect();
    assert_eq!(requests.len(), 2, "{told}");
    view.catch_up().await?;
    let followup = view.state().tasks.tasks[&format!("{}-answer", requests[1])].clone();
    let messages = followup.input["messages"]
        .as_array()
        .context("messages")?
        .clone();
    let first_answer = view.state().tasks.tasks[&format!("{}-answer", requests[0])]
        .output
        .clone()
        .context("the first answer")?["text"]
        .as_str()
        .context("text")?
        .trim()
        .to_string();
    assert_eq!(
        messages[1]["content"],
        "How many lines does src/lib.rs have?"
    );
    assert_eq!(messages[2]["content"], first_answer.as_str());
    assert!(
        messages
            .last()
            .and_then(|m| m["content"].as_str())
            .is_some_and(|c| c.ends_with("And what is that number times two?")),
        "{messages:?}"
    );

    // A step whose tool no online agent offers (no memory agent here) is not submitted to
    // wait out its time: the answer is asked for, told what is missing.
    let (_, stderr, _) = ask(
        "What did you find earlier about src/lib.rs?",
        &["--no-cache"],
    )
    .await?;
    assert!(
        stderr.contains("[tool] recall not run: no online agent offers tool.memory"),
        "{stderr}"
    );

    // The orchestrator keeps the assistant's memory across the requests it runs, reading
    // only what is new at each. With the changes that wrote the first answer purged from
    // the stream (as a snapshot's compaction purges what it covers), a memory opened anew
    // for the request would not find that answer; the orchestrator's answers from it.
    purge_memory_changes(&submitter).await?;
    let (cached, stderr, _) = ask(lines, &[]).await?;
    assert!(
        stderr.contains(&format!(
            "[cache] the same question was answered by {request}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("[orchestrator]"), "{stderr}");
    assert!(cached.contains("12"), "{cached}\n{stderr}");

    // The same question run here instead: no orchestrator line, the steps this process's.
    let (answer, stderr, local) = ask(lines, &["--local", "--no-cache"]).await?;
    assert!(answer.contains("12"), "{answer}\n{stderr}");
    assert!(!stderr.contains("[orchestrator]"), "{stderr}");
    view.catch_up().await?;
    assert!(
        !view.state().tasks.tasks.contains_key(&local),
        "no request task"
    );
    assert!(
        view.state()
            .tasks
            .tasks
            .contains_key(&format!("{local}-answer"))
    );
    Ok(())
}

/// Purges every change of the assistant's knowledge space from the history stream.
async fn purge_memory_changes(log: &murmur_subjects::EventLog) -> Result<()> {
    use murmur_knowledge::{KnowledgeReplica, ReplicaConfig};
    use murmur_subjects::EventType;
    use murmur_subjects::events::KnowledgeChanged;
    let replica =
        KnowledgeReplica::open(log.clone(), ReplicaConfig::space(assistant::MEMORY_SPACE)).await?;
    let documents = replica.base().documents_of(assistant::MEMORY_SPACE);
    anyhow::ensure!(!documents.is_empty(), "the assistant space has no document");
    let stream_name = log.config().history_stream.clone();
    let stream = async_nats::jetstream::new(log.client().clone())
        .get_stream(&stream_name)
        .await?;
    for document in documents {
        let subject =
            EventType::of::<KnowledgeChanged>().subject(log.realm(), &Token::new(document)?);
        stream.purge().filter(subject.to_string()).await?;
    }
    Ok(())
}
