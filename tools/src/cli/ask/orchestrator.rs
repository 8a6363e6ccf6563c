//! The orchestrator agent's side of a request (`assistant.ask` tasks) and the asker's side
//! of handing one to it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use murmur_agents::assistant;
use murmur_coordination::tasks::TaskState;
use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::{EventLog, Token};

use super::plan::{Answer, AskOptions, Narrator, agent_of, ask_on, output_of};

/// Submits `request` as an `assistant.ask` task for an orchestrator agent and follows it,
/// printing its step lines as they are reported.
pub async fn ask_orchestrator(
    log: &EventLog,
    request: &assistant::AskRequest,
    options: &AskOptions,
) -> Result<Answer> {
    use murmur_coordination::follow::{RunEvent, TaskRun};
    if request.question.trim().is_empty() {
        bail!("the question is empty");
    }
    let id = Token::new(format!("ask-{}", uuid::Uuid::now_v7().simple()))?;
    // The orchestrator holds the request while its steps run and a vote is awaited.
    let whole = options.step_timeout * 4 + options.approval.timeout;
    let submitted = TaskSubmitted {
        capability: assistant::ASK_CAPABILITY.into(),
        input: serde_json::to_value(request)?,
        max_attempts: Some(1),
        lease_ms: Some(whole.as_millis() as u64),
        ..Default::default()
    };
    let mut run =
        TaskRun::submit(log, id.clone(), &submitted, whole + Duration::from_secs(60)).await?;
    let mut printed = 0;
    let mut print_new = |told: &[String]| {
        for line in told.iter().skip(printed) {
            eprintln!("{line}");
        }
        printed = printed.max(told.len());
    };
    loop {
        match run.next().await? {
            RunEvent::Progress(progress) => {
                let told: Vec<String> = progress
                    .message
                    .unwrap_or_default()
                    .lines()
                    .map(String::from)
                    .collect();
                print_new(&told);
            }
            RunEvent::Ended(task) => {
                let agent = agent_of(&task);
                return match &task.state {
                    TaskState::Completed { .. } => {
                        let answer: Answer =
                            serde_json::from_value(output_of(log, &task).await?)
                                .context("the orchestrator's output is not an answer")?;
                        print_new(&answer.told);
                        eprintln!("[orchestrator] {id} run by {agent}");
                        Ok(answer)
                    }
                    other => bail!(
                        "the orchestrator's request {id} ended {}: {}",
                        other.name(),
                        task.failures
                            .last()
                            .map_or("no reason recorded", String::as_str)
                    ),
                };
            }
        }
    }
}

/// The worker handler of an orchestrator agent (`murmur agent run --kind orchestrator`):
/// each `assistant.ask` task is a request run as [`ask_on`] runs it here, its steps
/// submitted as this agent and caused by the attempt, its lines reported as progress, the
/// [`Answer`] its output.
pub fn orchestrator_handler(log: EventLog) -> murmur_agents::worker::Handler {
    murmur_agents::worker::handler(move |ctx| {
        let log = log.clone();
        async move {
            let request: assistant::AskRequest = serde_json::from_value(ctx.input)
                .map_err(|e| format!("an assistant.ask task takes an AskRequest: {e}"))?;
            let mut options = AskOptions::from_request(&request).map_err(|e| format!("{e:#}"))?;
            options.request_id = Some(ctx.task.clone());
            options.caused_by = Some((ctx.correlation_id.clone(), ctx.started_id.clone()));
            let narrator = Narrator::progress(ctx.progress.clone());
            let mut answer = ask_on(&log, &request.question, &options, &narrator)
                .await
                .map_err(|e| format!("{e:#}"))?;
            answer.told = narrator.lines();
            serde_json::to_value(answer).map_err(|e| e.to_string())
        }
    })
}
