//! The demo's assistant step: an inference agent (SmolLM2-135M-Instruct when
//! `scripts/install.sh` installed it, else the tiny random-weight model) and a tool agent
//! run as processes; `murmur ask`'s orchestration answers a question that needs a tool and
//! one that needs none, each step a task in the log.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use murmur_agents::inference::{TestModel, write_test_model};

use crate::demo::compile::{DemoCoordinator, spawn_agent, stop_agents};

/// The real model `scripts/install.sh` installs.
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The sentence-embedding model's directory there.
pub const MINILM: &str = "all-MiniLM-L6-v2";

/// Lines of the file the demo's tool question is about.
const LIB_LINES: usize = 12;

/// Where the installed models are: `MURMUR_MODELS_DIR`, else `models/` here, else the
/// checkout's `models/` this binary was built from.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MURMUR_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("models");
    if here.join(SMOLLM2).is_file() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

/// Runs the step on its own (`murmur demo assistant`).
pub async fn run(settings: &crate::settings::Settings) -> Result<()> {
    let demo = crate::demo::connect_or_start(settings).await?;
    run_on(&demo.issuer).await
}

/// Runs the step against a server that is already up (the main demo's).
pub async fn run_on(issuer: &murmur_testkit::authority::Issuer) -> Result<()> {
    let realm = crate::demo::fresh_realm("ask")?;
    let data = tempfile::tempdir()?;
    let installed = models_dir().join(SMOLLM2);
    let (model, real) = if installed.is_file() {
        (installed, true)
    } else {
        let tiny = data.path().join("tiny.gguf");
        write_test_model(&tiny, &TestModel::new(2026))?;
        (tiny, false)
    };
    // The project the tool agent serves: a src/lib.rs of known length.
    let project = data.path().join("project");
    std::fs::create_dir_all(project.join("src"))?;
    let lib: String = (1..=LIB_LINES)
        .map(|n| format!("pub fn f{n}() {{}}\n"))
        .collect();
    std::fs::write(project.join("src/lib.rs"), lib)?;
    let model_arg = model.to_str().context("model path is not UTF-8")?;
    // Recall ranks by meaning with all-MiniLM-L6-v2 where it is installed, else by words.
    let embedder = models_dir().join(MINILM);
    let memory_args: Vec<String> = if embedder.join("model.safetensors").is_file() {
        vec![
            "--embedding-model".into(),
            embedder
                .to_str()
                .context("model path is not UTF-8")?
                .to_string(),
        ]
    } else {
        Vec::new()
    };
    let memory_args: Vec<&str> = memory_args.iter().map(String::as_str).collect();
    let project_arg = project.to_str().context("project path is not UTF-8")?;

    let coordinator = DemoCoordinator::start(issuer, &realm).await?;
    let mut agents = Vec::new();
    let started = async {
        for (kind, name, extra) in [
            ("inference", "llm", vec!["--model", model_arg]),
            ("tool", "files", vec!["--root", project_arg]),
            ("memory", "memory", memory_args),
            ("orchestrator", "orchestrator", vec![]),
        ] {
            agents.push(spawn_agent(issuer, &realm, data.path(), kind, name, &extra).await?);
        }
        anyhow::Ok(())
    }
    .await;
    let asked = match started {
        Ok(()) => ask_both(&coordinator.platform, real).await,
        Err(e) => Err(e),
    };
    let problems = stop_agents(&mut agents).await;
    let _ = coordinator.stop.send(true);
    coordinator.task.await??;
    asked?;
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

async fn ask_both(log: &murmur_subjects::EventLog, real: bool) -> Result<()> {
    let ask = |question: &str| {
        let request = murmur_agents::assistant::AskRequest {
            step_timeout_s: 180,
            approval_timeout_s: 60,
            ..murmur_agents::assistant::AskRequest::new(question)
        };
        async move {
            let options = crate::cli::ask::AskOptions::from_request(&request)?;
            crate::cli::ask::ask_orchestrator(log, &request, &options).await
        }
    };
    out!(
        "[assistant] model: {}",
        if real {
            "SmolLM2-135M-Instruct (Q4_1 GGUF)"
        } else {
            "the tiny random-weight test model (scripts/install.sh installs SmolLM2-135M): its answers are noise"
        }
    );
    let question = "How many lines does src/lib.rs have?";
    let answer = ask(question).await?;
    let lines = answer
        .tool_output
        .as_ref()
        .and_then(|o| o.get("lines"))
        .and_then(|l| l.as_u64());
    ensure!(
        lines == Some(LIB_LINES as u64),
        "the tool step read {lines:?} lines, not {LIB_LINES}"
    );
    out!(
        "[assistant] {question:?}: plan {} → tool.fs read {LIB_LINES} lines → answer {:?}",
        serde_json::to_string(&answer.call)?,
        answer.text.trim()
    );
    let question = "What is the capital of France?";
    let answer = ask(question).await?;
    let guessed =
        if answer.call.tool != murmur_agents::assistant::NO_TOOL && answer.tool_output.is_none() {
            " (the model's guess; the tool failed on it, so it was dropped)"
        } else {
            ""
        };
    out!(
        "[assistant] {question:?}: plan {} by the model, its decoding constrained to the tools' JSON Schema{guessed} → answer {:?}",
        serde_json::to_string(&answer.call)?,
        answer.text.trim()
    );
    let again = ask("what is the capital of France").await?;
    ensure!(
        again.cached_from.as_deref() == Some(answer.request.as_str()) && again.text == answer.text,
        "the repeated question was not answered from the cache: {again:?}"
    );
    out!(
        "[assistant] asked again (normalized: same question): answered from the assistant's memory (knowledge space `assistant`), the cache hit recorded there"
    );
    // A question about an earlier answer: recalled from memory by a memory agent, never
    // read by the model itself.
    let question = "What did you find earlier about src/lib.rs?";
    let recalled = ask(question).await?;
    let found = recalled.tool_output.clone().unwrap_or_default();
    let best = found["matches"][0]["subject"].as_str().unwrap_or_default();
    ensure!(
        recalled.call.tool == "recall" && best.contains("src/lib.rs"),
        "the recall step did not find the earlier answer about src/lib.rs: {found}"
    );
    out!(
        "[assistant] {question:?}: plan recall by rule → tool.memory recalled {} earlier answer(s) by {} (best: {best:?}) → answer {:?}",
        found["matches"].as_array().map_or(0, Vec::len),
        found["method"].as_str().unwrap_or("?"),
        recalled.text.trim()
    );
    out!(
        "[assistant] every step is a task in the log: `murmur ask --explain {}` shows them",
        answer.request
    );
    Ok(())
}
