//! The assistant's requests as the log has them: each request's question, steps and answer,
//! read from the task fold (what the console's assistant view shows). Pure: a function of
//! the [`TaskBook`].

use std::collections::BTreeMap;

use murmur_coordination::tasks::{Task, TaskBook, TaskState};
use serde::Serialize;

use super::ASK_CAPABILITY;

/// The steps a request may have, in their order.
pub const STEPS: [&str; 3] = ["plan", "tool", "answer"];

/// One request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestView {
    /// Its id (`ask-…`; the steps' ids add `-plan`, `-tool`, `-answer`).
    pub id: String,
    /// The question, where the log says it.
    pub question: Option<String>,
    /// The orchestrator agent that ran it; `None` when the asker ran the plan itself.
    pub orchestrator: Option<String>,
    /// `answered`, `running`, `failed`, or `cached` (answered from memory, no step ran).
    pub state: &'static str,
    /// The steps, in order.
    pub steps: Vec<StepView>,
    /// The answer's text.
    pub answer: Option<String>,
    /// The earlier request whose answer was reused.
    pub cached_from: Option<String>,
    /// Stream sequence of its first event (newest requests first).
    pub sequence: u64,
}

/// One step of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// `plan`, `tool` or `answer`.
    pub step: &'static str,
    /// Its task's id.
    pub task: String,
    /// The capability it asked for (`llm.generate`, `tool.fs`, `tool.memory`, `tool.exec`).
    pub capability: String,
    /// The task's state.
    pub state: &'static str,
    /// The agent that completed it.
    pub agent: Option<String>,
    /// Its output, or its last failure.
    pub result: serde_json::Value,
}

/// The question a request's steps carry: the orchestrator's request, else the answering
/// step's last message (what follows [`super::ANSWER_CUE`] when a tool result precedes it),
/// else the planning step's.
fn question_of(request: Option<&Task>, steps: &Steps<'_>) -> Option<String> {
    if let Some(q) = request.and_then(|t| t.input.get("question")?.as_str()) {
        return Some(q.to_string());
    }
    let last_message = |task: &Task| super::last_message(&task.input).map(str::to_string);
    if let Some(said) = step(steps, "answer").and_then(last_message) {
        return Some(match said.rsplit_once(super::ANSWER_CUE) {
            Some((_, question)) => question.to_string(),
            None => said,
        });
    }
    step(steps, "plan").and_then(last_message)
}

/// A request's steps, in [`STEPS`] order.
type Steps<'a> = Vec<(&'static str, &'a Task)>;

fn step<'a>(steps: &Steps<'a>, name: &str) -> Option<&'a Task> {
    steps.iter().find(|(s, _)| *s == name).map(|(_, t)| *t)
}

fn agent_of(task: &Task) -> Option<String> {
    match &task.state {
        TaskState::Completed { agent } => Some(agent.clone()),
        TaskState::Assigned { agent, .. } => Some(agent.clone()),
        _ => None,
    }
}

/// The newest `most` requests in `book`, newest first.
pub fn requests(book: &TaskBook, most: usize) -> Vec<RequestView> {
    let mut ids: BTreeMap<&str, ()> = BTreeMap::new();
    for (id, task) in &book.tasks {
        if task.requirements.capability == ASK_CAPABILITY {
            ids.insert(id, ());
        } else if let Some((request, step)) = id.rsplit_once('-')
            && request.starts_with("ask-")
            && STEPS.contains(&step)
        {
            ids.insert(request, ());
        }
    }
    let mut views: Vec<RequestView> = ids
        .into_keys()
        .map(|id| {
            let request = book
                .tasks
                .get(id)
                .filter(|t| t.requirements.capability == ASK_CAPABILITY);
            let steps: Steps<'_> = STEPS
                .iter()
                .filter_map(|step| Some((*step, book.tasks.get(&format!("{id}-{step}"))?)))
                .collect();
            let output = request.and_then(|t| t.output.as_ref());
            let cached_from = output
                .and_then(|o| o.get("cached_from")?.as_str())
                .map(str::to_string);
            let answer = output
                .and_then(|o| o.get("text")?.as_str())
                .or_else(|| {
                    step(&steps, "answer")?
                        .output
                        .as_ref()?
                        .get("text")?
                        .as_str()
                })
                .map(str::to_string);
            let failed = request.is_some_and(|t| {
                t.state.is_final() && !matches!(t.state, TaskState::Completed { .. })
            }) || step(&steps, "answer").is_some_and(|t| {
                t.state.is_final() && !matches!(t.state, TaskState::Completed { .. })
            });
            let state = if cached_from.is_some() {
                "cached"
            } else if answer.is_some() {
                "answered"
            } else if failed {
                "failed"
            } else {
                "running"
            };
            RequestView {
                id: id.to_string(),
                question: question_of(request, &steps),
                orchestrator: request.and_then(agent_of),
                state,
                sequence: request
                    .into_iter()
                    .chain(steps.iter().map(|(_, t)| *t))
                    .map(|t| t.submitted_sequence)
                    .min()
                    .unwrap_or(0),
                steps: steps
                    .iter()
                    .map(|(step, task)| StepView {
                        step,
                        task: format!("{id}-{step}"),
                        capability: task.requirements.capability.clone(),
                        state: task.state.name(),
                        agent: agent_of(task),
                        result: match (&task.output, task.failures.last()) {
                            (Some(output), _) => output.clone(),
                            (None, Some(failure)) => serde_json::json!({ "failure": failure }),
                            (None, None) => serde_json::Value::Null,
                        },
                    })
                    .collect(),
                answer,
                cached_from,
            }
        })
        .collect();
    views.sort_by(|a, b| b.sequence.cmp(&a.sequence).then_with(|| a.id.cmp(&b.id)));
    views.truncate(most);
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(
        capability: &str,
        sequence: u64,
        input: serde_json::Value,
        output: Option<serde_json::Value>,
    ) -> Task {
        Task {
            submitter: "me".into(),
            requirements: murmur_coordination::routing::Requirements {
                capability: capability.into(),
                ..Default::default()
            },
            priority: 0,
            max_attempts: 1,
            lease_ms: 1000,
            attempt: 1,
            failures: vec![],
            state: match output {
                Some(_) => TaskState::Completed {
                    agent: format!("agent-{capability}"),
                },
                None => TaskState::DeadLettered,
            },
            submitted_sequence: sequence,
            last_sequence: sequence,
            input,
            correlation_id: "c".into(),
            last_event_id: "e".into(),
            depends_on: vec![],
            fail_with_dependency: false,
            output,
            sender: None,
            questions: Vec::new(),
        }
    }

    #[test]
    fn requests_gather_their_steps_question_and_answer_newest_first() {
        let mut book = TaskBook::default();
        // Run by an orchestrator: the question is its request's.
        book.tasks.insert(
            "ask-1".into(),
            task(
                ASK_CAPABILITY,
                1,
                json!({"question": "How many lines?"}),
                Some(json!({"text": "12."})),
            ),
        );
        book.tasks.insert(
            "ask-1-tool".into(),
            task(
                "tool.fs",
                2,
                json!({"op": "read"}),
                Some(json!({"lines": 12})),
            ),
        );
        book.tasks.insert(
            "ask-1-answer".into(),
            task("llm.generate", 3, json!({}), Some(json!({"text": "12."}))),
        );
        // Run by the asker: the question is the answering step's.
        book.tasks.insert(
            "ask-2-plan".into(),
            task(
                "llm.generate",
                4,
                json!({}),
                Some(json!({"json": {"tool": "none"}})),
            ),
        );
        book.tasks.insert(
            "ask-2-answer".into(),
            task(
                "llm.generate",
                5,
                json!({"messages": [{"role": "user", "content": "Result of x:\n\nUsing this result, answer briefly: Capital?"}]}),
                None,
            ),
        );
        // A cache hit: no step.
        book.tasks.insert(
            "ask-3".into(),
            task(
                ASK_CAPABILITY,
                6,
                json!({"question": "How many lines?"}),
                Some(json!({"text": "12.", "cached_from": "ask-1"})),
            ),
        );
        book.tasks.insert(
            "other".into(),
            task("tool.fs", 7, json!({}), Some(json!({}))),
        );

        let views = requests(&book, 10);
        let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["ask-3", "ask-2", "ask-1"]);
        let [cached, local, orchestrated] = &views[..] else {
            panic!("three requests")
        };
        assert_eq!(cached.state, "cached");
        assert_eq!(cached.cached_from.as_deref(), Some("ask-1"));
        assert!(cached.steps.is_empty());
        assert_eq!(local.question.as_deref(), Some("Capital?"));
        assert_eq!(local.state, "failed");
        assert_eq!(local.orchestrator, None);
        assert_eq!(
            local.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            ["plan", "answer"]
        );
        assert_eq!(orchestrated.question.as_deref(), Some("How many lines?"));
        assert_eq!(orchestrated.state, "answered");
        assert_eq!(orchestrated.answer.as_deref(), Some("12."));
        assert_eq!(
            orchestrated.orchestrator.as_deref(),
            Some("agent-assistant.ask")
        );
        assert_eq!(orchestrated.steps[0].result, json!({"lines": 12}));
        assert_eq!(requests(&book, 1).len(), 1);
    }
}
