//! Requests read back from the log: `--explain` and `--export jsonl`.

use anyhow::{Result, bail};
use murmur_coordination::tasks::{Task, TaskProjection};
use murmur_subjects::{EventLog, Projector};

use crate::settings::Settings;
use murmur_agents::assistant::orchestrate::{agent_of, output_of};

/// The task projection of `log`'s realm, read to the end of the log.
pub(super) async fn tasks_read(log: &EventLog) -> Result<Projector<TaskProjection>> {
    let mut view = Projector::new(
        log.clone(),
        TaskProjection {
            realm: log.realm().clone(),
        },
    );
    view.catch_up().await?;
    Ok(view)
}

/// `murmur ask --explain REQUEST`: the request's steps from the log.
pub(super) async fn explain(settings: &Settings, request: &str) -> Result<()> {
    let log = settings.open_log("murmur-ask-explain").await?;
    let view = tasks_read(&log).await?;
    let prefix = format!("{request}-");
    let steps: Vec<(String, Task)> = ["plan", "tool", "answer"]
        .iter()
        .filter_map(|step| {
            let id = format!("{prefix}{step}");
            view.state().tasks.get(&id).map(|t| (id, t.clone()))
        })
        .collect();
    if steps.iter().all(|(id, _)| !id.ends_with("-plan")) && !steps.is_empty() {
        out!("{request}-plan: by rule (the question names its file or directory; no model step)");
    }
    if steps.is_empty() {
        bail!(
            "no request {request} in realm {} (its steps are tasks {prefix}plan, …)",
            settings.realm
        );
    }
    for (id, task) in steps {
        out!(
            "{id}: {} {} by {}",
            task.requirements.capability,
            task.state.name(),
            agent_of(&task)
        );
        out!("  input:  {}", shorten(&task.input.to_string(), 400));
        let output = output_of(&log, &task)
            .await
            .unwrap_or(serde_json::Value::Null);
        out!("  output: {}", shorten(&output.to_string(), 400));
        for failure in &task.failures {
            out!("  failed attempt: {failure}");
        }
        for line in
            crate::cli::events::aggregate_timeline(&log, murmur_subjects::Domain::Task, &id).await?
        {
            out!("  {line}");
        }
    }
    Ok(())
}

/// The model steps of `murmur ask` requests in `book`, in submission order, as training
/// records: request, step, the prompt's messages, the response (text, and the document of a
/// constrained step), the model's hash and the outcome.
pub fn training_pairs(book: &murmur_coordination::tasks::TaskBook) -> Vec<serde_json::Value> {
    let mut steps: Vec<(&String, &Task)> = book
        .tasks
        .iter()
        .filter(|(id, task)| {
            id.starts_with("ask-")
                && (id.ends_with("-plan") || id.ends_with("-answer"))
                && task.requirements.capability == "llm.generate"
                && task.state.is_final()
        })
        .collect();
    steps.sort_by_key(|(_, task)| task.submitted_sequence);
    steps
        .into_iter()
        .map(|(id, task)| {
            let (request, step) = id.rsplit_once('-').unwrap_or((id, ""));
            let output = task.output.clone().unwrap_or(serde_json::Value::Null);
            let mut record = serde_json::json!({
                "request": request,
                "step": step,
                "messages": task.input.get("messages").cloned().unwrap_or(serde_json::Value::Null),
                "response": output.get("text").cloned().unwrap_or(serde_json::Value::Null),
                "model_sha256": output.get("model_sha256").cloned().unwrap_or(serde_json::Value::Null),
                "outcome": task.state.name(),
            });
            if let Some(document) = output.get("json") {
                record["json"] = document.clone();
            }
            if !task.failures.is_empty() {
                record["failures"] = serde_json::json!(task.failures);
            }
            record
        })
        .collect()
}

fn shorten(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        return text.to_string();
    }
    let kept: String = text.chars().take(most).collect();
    format!("{kept}… ({} characters)", text.chars().count())
}

#[cfg(test)]
mod tests {
    use murmur_coordination::tasks::{Task, TaskBook, TaskState};

    use super::*;

    fn task(capability: &str, sequence: u64, state: TaskState, output: serde_json::Value) -> Task {
        Task {
            submitter: "me".into(),
            requirements: murmur_coordination::routing::Requirements {
                capability: capability.into(),
                ..Default::default()
            },
            priority: 0,
            max_attempts: 2,
            lease_ms: 1000,
            attempt: 1,
            failures: vec![],
            state,
            submitted_sequence: sequence,
            last_sequence: sequence,
            input: serde_json::json!({"messages": [{"role": "user", "content": "q"}]}),
            correlation_id: "c".into(),
            last_event_id: "e".into(),
            depends_on: vec![],
            fail_with_dependency: false,
            output: Some(output),
            sender: None,
            questions: Vec::new(),
        }
    }

    #[test]
    fn training_pairs_are_the_finished_model_steps_of_ask_requests_in_order() {
        let done = || TaskState::Completed { agent: "A".into() };
        let mut book = TaskBook::default();
        book.tasks.insert(
            "ask-2-answer".into(),
            task(
                "llm.generate",
                9,
                done(),
                serde_json::json!({"text": "27", "model_sha256": "m"}),
            ),
        );
        book.tasks.insert(
            "ask-1-plan".into(),
            task(
                "llm.generate",
                3,
                done(),
                serde_json::json!({"text": "{\"tool\": \"none\"}", "json": {"tool": "none"}, "model_sha256": "m"}),
            ),
        );
        book.tasks.insert(
            "ask-2-tool".into(),
            task("tool.fs", 5, done(), serde_json::json!({"lines": 27})),
        );
        book.tasks.insert(
            "ask-3-answer".into(),
            task(
                "llm.generate",
                11,
                TaskState::Pending {
                    not_before: chrono::DateTime::UNIX_EPOCH,
                },
                serde_json::Value::Null,
            ),
        );
        book.tasks.insert(
            "other-plan".into(),
            task("llm.generate", 1, done(), serde_json::json!({"text": "x"})),
        );
        let pairs = training_pairs(&book);
        let steps: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| {
                (
                    p["request"].as_str().unwrap_or(""),
                    p["step"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(steps, [("ask-1", "plan"), ("ask-2", "answer")]);
        assert_eq!(pairs[0]["json"], serde_json::json!({"tool": "none"}));
        assert_eq!(pairs[1]["response"], "27");
        assert_eq!(pairs[1]["outcome"], "completed");
        assert_eq!(pairs[1]["model_sha256"], "m");
        assert_eq!(pairs[1]["messages"][0]["content"], "q");
    }
}
