//! The demo's inference step: an `inference` agent as a separate `murmur agent run` process
//! answers an `llm.generate` task with a GGUF model through candle.
//!
//! Nothing downloads weights here, so the model is the tiny random-weight one
//! [`murmur_agents::inference::write_test_model`] writes: its answer is noise, but a real
//! forward pass produced it, and the same model in this process gives the same tokens
//! (greedy decoding), which the step checks.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt as _;
use murmur_agents::inference::{
    GenerateOptions, Generation, GgufModel, TestModel, TestVocabulary, write_test_model,
};
use murmur_coordination::tasks::TaskState;
use murmur_subjects::events::TaskProgress;
use murmur_subjects::{EventType, Token};

use crate::demo::compile::{DemoCoordinator, spawn_agent, stop_agents};

/// The prompt the demo asks.
const PROMPT: &str = "Which agents are online?";

/// Runs the step against a server that is already up (the main demo's).
pub async fn run_on(issuer: &murmur_testkit::authority::Issuer) -> Result<()> {
    let realm = crate::demo::fresh_realm("infer")?;
    let data = tempfile::tempdir()?;
    let model_path = data.path().join("tiny-llama.gguf");
    // A SentencePiece vocabulary, as Llama 2, TinyLlama and Mistral models carry.
    write_test_model(
        &model_path,
        &TestModel::new(2026).vocabulary(TestVocabulary::SentencePiece),
    )?;
    let model_arg = model_path.to_str().context("model path is not UTF-8")?;

    let coordinator = DemoCoordinator::start(issuer, &realm).await?;
    let mut agents = vec![
        spawn_agent(
            issuer,
            &realm,
            data.path(),
            "inference",
            "llm",
            &["--model", model_arg],
        )
        .await?,
    ];
    // The attempt's progress (its text so far), as `murmur task watch` shows it.
    let progress_subject = EventType::of::<TaskProgress>().subject(&realm, &Token::new("ask")?);
    let platform = &coordinator.platform;
    let mut progress = platform
        .client()
        .subscribe(progress_subject.to_string())
        .await?;
    platform.client().flush().await?;
    let (mut tasks, finished) = coordinator
        .run_once(
            &realm,
            &[(
                "ask",
                "llm.generate",
                serde_json::json!({"prompt": PROMPT, "max_tokens": 16}),
            )],
            Duration::from_secs(120),
        )
        .await?;
    let task = tasks.remove("ask");
    let mut problems = stop_agents(&mut agents).await;
    let _ = coordinator.stop.send(true);
    coordinator.task.await??;
    ensure!(finished, "the generate task did not finish within 120 s");
    let task = task.context("the task is in the view")?;
    let TaskState::Completed { .. } = task.state else {
        bail!(
            "the generate task ended {}: {:?}",
            task.state.name(),
            task.failures
        );
    };
    let answer: Generation =
        serde_json::from_value(task.output.context("the completed task has an output")?)?;
    let local = GgufModel::load(&model_path)?.generate(PROMPT, &GenerateOptions::greedy(16))?;
    if answer != local {
        problems.push("the agent's tokens differ from the same model's here".into());
    }
    let streamed = streamed_reports(
        platform,
        &mut progress,
        agent_key(&task.state),
        &answer.text,
    )
    .await;
    if streamed.last().and_then(|p| p.message.as_deref()) != Some(answer.text.as_str()) {
        problems.push(format!(
            "no task.progress signed by the agent held the whole text within 10 s ({} report(s) heard)",
            streamed.len()
        ));
    }
    if !problems.is_empty() {
        bail!("inference step failed:\n  {}", problems.join("\n  "));
    }
    out!(
        "[inference] an inference agent process ran llm.generate with a GGUF llama model, SentencePiece vocabulary (candle, greedy): {} prompt tokens → {} tokens, model sha256 {}…; the same model here gives the same tokens",
        answer.prompt_tokens,
        answer.tokens.len(),
        &answer.model_sha256[..12]
    );
    out!(
        "[inference] it streamed its text as {} signed task.progress report(s) on the live plane, the last at {}/{} tokens",
        streamed.len(),
        streamed.last().and_then(|p| p.done).unwrap_or(0),
        streamed.last().and_then(|p| p.total).unwrap_or(0)
    );
    Ok(())
}

/// The agent that completed the task.
fn agent_key(state: &TaskState) -> String {
    match state {
        TaskState::Completed { agent } => agent.clone(),
        _ => String::new(),
    }
}

/// The progress reports that `agent` signed, up to the one holding `text` (the attempt's
/// last), waiting up to 10 s for it (core NATS and the history stream reach this process by
/// different paths).
async fn streamed_reports(
    platform: &murmur_subjects::EventLog,
    progress: &mut async_nats::Subscriber,
    agent: String,
    text: &str,
) -> Vec<TaskProgress> {
    let mut reports: Vec<TaskProgress> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if reports.last().and_then(|p| p.message.as_deref()) == Some(text) {
            return reports;
        }
        let next = tokio::time::timeout_at(deadline, progress.next())
            .await
            .ok()
            .flatten();
        let Some(msg) = next else { return reports };
        let Ok(ev) =
            platform
                .codec()
                .decode(msg.subject.as_str(), msg.headers.as_ref(), &msg.payload)
        else {
            continue;
        };
        if ev.emitter() == agent
            && let Ok(report) = ev.payload::<TaskProgress>()
        {
            reports.push(report);
        }
    }
}
