//! The demo's inference step: an `inference` agent as a separate `murmur agent run` process
//! answers an `llm.generate` task with a GGUF model through candle.
//!
//! Nothing downloads weights here, so the model is the tiny random-weight one
//! [`murmur_agents::inference::write_test_model`] writes: its answer is noise, but a real
//! forward pass produced it, and the same model in this process gives the same tokens
//! (greedy decoding), which the step checks.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_agents::inference::{
    GenerateOptions, Generation, GgufModel, TestModel, TestVocabulary, write_test_model,
};
use murmur_coordination::coordinator::CoordinatorProjection;
use murmur_coordination::tasks::TaskState;
use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, Projector, Token};

use crate::cli::Settings;
use crate::demo_compile::{DemoCoordinator, spawn_agent, stop_agents};

/// The prompt the demo asks.
const PROMPT: &str = "Which agents are online?";

/// Runs the step against a server that is already up (the main demo's).
pub async fn run_on(
    settings: &Settings,
    connect: &murmur_subjects::connect::ConnectOptions,
    url: &str,
) -> Result<()> {
    let realm = crate::demo::fresh_realm("infer")?;
    let data = tempfile::tempdir()?;
    let model_path = data.path().join("tiny-llama.gguf");
    // A SentencePiece vocabulary, as Llama 2, TinyLlama and Mistral models carry.
    write_test_model(
        &model_path,
        &TestModel::new(2026).vocabulary(TestVocabulary::SentencePiece),
    )?;
    let model_arg = model_path.to_str().context("model path is not UTF-8")?;

    let DemoCoordinator {
        platform,
        key: coordinator_key,
        stop: stop_tx,
        task: coordinator,
    } = DemoCoordinator::start(connect, "demo-inference", &realm, settings).await?;
    let mut agents = vec![
        spawn_agent(
            url,
            &realm,
            &coordinator_key,
            data.path(),
            "inference",
            "llm",
            &["--model", model_arg],
        )
        .await?,
    ];
    let submitted = TaskSubmitted {
        capability: "llm.generate".into(),
        input: serde_json::json!({"prompt": PROMPT, "max_tokens": 16}),
        max_attempts: Some(1),
        ..Default::default()
    };
    platform
        .append_expected(
            Draft::new(Token::new("ask")?, &submitted)?,
            Expected::NoEvents,
        )
        .await?;
    let mut view = Projector::new(
        platform.clone(),
        CoordinatorProjection::new(realm.clone(), vec![coordinator_key.clone()]),
    );
    let finished = view
        .follow_until(Duration::from_secs(120), |v| {
            v.tasks.tasks.get("ask").is_some_and(|t| t.state.is_final())
        })
        .await?;
    let task = view.state().tasks.tasks.get("ask").cloned();
    let mut problems = stop_agents(&mut agents).await;
    let _ = stop_tx.send(true);
    coordinator.await??;
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
    if !problems.is_empty() {
        bail!("inference step failed:\n  {}", problems.join("\n  "));
    }
    out!(
        "[inference] an inference agent process ran llm.generate with a GGUF llama model, SentencePiece vocabulary (candle, greedy): {} prompt tokens → {} tokens, model sha256 {}…; the same model here gives the same tokens",
        answer.prompt_tokens,
        answer.tokens.len(),
        &answer.model_sha256[..12]
    );
    Ok(())
}
