//! The assistant's plan, as pure decisions: what the planning step asks a model, the JSON
//! Schema its tool call is constrained to, what that call becomes as a tool task, and what
//! the answering step reads. No I/O: `murmur ask` submits these as tasks and waits for the
//! agents (an inference agent for `llm.generate`, a tool agent for `tool.fs`).
//!
//! A request runs as up to three tasks, each in the log with its input, output and agent:
//! 1. **plan** (`llm.generate`, constrained by [`plan_schema`]): the model picks one of the
//!    [`TOOLS`] and its arguments, or `none`; the grammar engine lets it write nothing
//!    else, so the call is well-formed and names a tool that exists.
//! 2. **tool** (depends on the plan): the call as a [`ToolTask`] — `tool.fs` for the file
//!    tools, `tool.memory` for `recall`, `tool.exec` for `run_command` — run by a tool or
//!    memory agent: models never run tools and read memory only through recall.
//! 3. **answer** (`llm.generate`, depends on the plan or the tool): the question with the
//!    tool's result ([`tool_summary`]), answered in plain text.

use serde::{Deserialize, Serialize};
use serde_json::json;

mod memory;
pub mod orchestrate;
mod plan;
pub mod requests;
mod tools;

pub use memory::*;
pub use plan::*;
pub use tools::*;

/// The capability of orchestrator agents: an [`AskRequest`] run as a plan of tasks.
pub const ASK_CAPABILITY: &str = "assistant.ask";

fn default_step_timeout_s() -> u64 {
    300
}

fn default_cache_ttl_s() -> u64 {
    3600
}

fn default_approvers_capability() -> String {
    "vote".into()
}

/// A request to the assistant: what `murmur ask` submits to an orchestrator (an
/// `assistant.ask` task's input), with `murmur ask`'s options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// Only inference agents with these labels run the model steps.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Longest a step may take, in seconds.
    #[serde(default = "default_step_timeout_s")]
    pub step_timeout_s: u64,
    /// Answer from scratch even a question asked before.
    #[serde(default)]
    pub no_cache: bool,
    /// How long an answer is reused for the same question, in seconds.
    #[serde(default = "default_cache_ttl_s")]
    pub cache_ttl_s: u64,
    /// Tools allowed beyond [`default_allowed`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Online agents offering this capability approve risky steps.
    #[serde(default = "default_approvers_capability")]
    pub approvers_capability: String,
    /// These participants (public keys) approve risky steps too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// How long a risky step waits for its vote, in seconds.
    #[serde(default = "default_step_timeout_s")]
    pub approval_timeout_s: u64,
    /// The conversation so far (`murmur chat`), oldest first: the answering step reads its
    /// last [`HISTORY_TURNS`] turns. A request with history is never answered from the
    /// cache, nor cached: its answer depends on the conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Turn>,
}

/// One exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// What was asked.
    pub question: String,
    /// What was answered.
    pub answer: String,
}

/// Most earlier turns of a conversation the answering step reads (a small model's context
/// is short).
pub const HISTORY_TURNS: usize = 4;

impl AskRequest {
    /// `question` with every option at its default.
    pub fn new(question: impl Into<String>) -> Self {
        Self {
            question: question.into(),
            labels: Default::default(),
            step_timeout_s: default_step_timeout_s(),
            no_cache: false,
            cache_ttl_s: default_cache_ttl_s(),
            allow: Vec::new(),
            approvers_capability: default_approvers_capability(),
            approvers: Vec::new(),
            approval_timeout_s: default_step_timeout_s(),
            history: Vec::new(),
        }
    }
}

/// Most tokens the answering step may write.
pub const ANSWER_MAX_TOKENS: usize = 96;

/// What stands between a tool's result and the question in the answering step's prompt.
pub const ANSWER_CUE: &str = "Using this result, answer briefly: ";

/// The text of the last message of a chat input (`{"messages": [..., {"content": ...}]}`).
pub fn last_message(input: &serde_json::Value) -> Option<&str> {
    input
        .get("messages")?
        .as_array()?
        .last()?
        .get("content")?
        .as_str()
}

/// The answering step's `llm.generate` input: the conversation's last [`HISTORY_TURNS`]
/// turns, then the question with what the tool found.
pub fn answer_input(
    question: &str,
    tool_result: Option<&str>,
    history: &[Turn],
) -> serde_json::Value {
    let user = match tool_result {
        Some(result) => format!("{result}\n\n{ANSWER_CUE}{question}"),
        None => question.to_string(),
    };
    let mut messages =
        vec![json!({"role": "system", "content": "You are a helpful assistant. Answer briefly."})];
    for turn in &history[history.len().saturating_sub(HISTORY_TURNS)..] {
        messages.push(json!({"role": "user", "content": turn.question}));
        messages.push(json!({"role": "assistant", "content": turn.answer}));
    }
    messages.push(json!({"role": "user", "content": user}));
    json!({
        "messages": messages,
        "max_tokens": ANSWER_MAX_TOKENS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::FsRequest;

    #[test]
    fn every_tool_in_the_schema_becomes_a_request_and_none_needs_no_tool() {
        let schema = plan_schema();
        let named: Vec<&str> = schema["anyOf"]
            .as_array()
            .expect("alternatives")
            .iter()
            .map(|alt| alt["properties"]["tool"]["const"].as_str().expect("a name"))
            .collect();
        assert_eq!(
            named,
            [
                "read_file",
                "list_directory",
                "search",
                "write_file",
                NO_TOOL
            ]
        );
        assert_eq!(
            default_allowed().into_iter().collect::<Vec<_>>(),
            ["list_directory", "none", "read_file", "recall", "search"]
        );
        let read = planned_call(&json!({"json": {"tool": "read_file", "path": "src/lib.rs"}}))
            .expect("a call");
        assert_eq!(
            tool_request(&read),
            Ok(Some(FsRequest::Read {
                path: "src/lib.rs".into(),
                max_bytes: None
            }))
        );
        let search = ToolCall {
            tool: "search".into(),
            path: Some(".".into()),
            text: Some("fn main".into()),
            content: None,
        };
        assert!(matches!(
            tool_request(&search),
            Ok(Some(FsRequest::Search { .. }))
        ));
        let none = planned_call(&json!({"tool": "none"})).expect("no tool");
        assert_eq!(tool_request(&none), Ok(None));
    }

    #[test]
    fn questions_that_name_a_file_or_directory_are_planned_by_rule() {
        let read = |path: &str| {
            Some(ToolCall {
                tool: "read_file".into(),
                path: Some(path.into()),
                text: None,
                content: None,
            })
        };
        assert_eq!(
            rule_plan("How many lines does src/lib.rs have?"),
            read("src/lib.rs")
        );
        assert_eq!(rule_plan("What does `README.md` say?"), read("README.md"));
        assert_eq!(
            rule_plan("Which files are in the src directory?"),
            Some(ToolCall {
                tool: "list_directory".into(),
                path: Some("src".into()),
                text: None,
                content: None,
            })
        );
        let write = rule_plan("Write hello murmur to notes/today.txt").expect("a write");
        assert_eq!(write.tool, "write_file");
        assert_eq!(write.path.as_deref(), Some("notes/today.txt"));
        assert_eq!(write.content.as_deref(), Some("hello murmur\n"));
        assert!(is_risky(&write) && !is_risky(&read("x.rs").expect("a call")));
        assert!(matches!(
            tool_request(&write),
            Ok(Some(FsRequest::Write { .. }))
        ));
        assert_eq!(rule_plan("Write hello to /etc/passwd"), None);
        for general in [
            "What is the capital of France?",
            "Who wrote Hamlet? Thanks.",
            "What is in the directory?",
            "Is 3.14 a number?",
            "Read /etc/passwd",
            "Read ../secret.txt",
        ] {
            assert_eq!(rule_plan(general), None, "{general}");
        }
    }

    #[test]
    fn questions_about_earlier_answers_recall_and_backticked_commands_run() {
        let recall = rule_plan("What did you find earlier about src/lib.rs?").expect("recall");
        assert_eq!(recall.tool, "recall");
        let task = tool_task(&recall).expect("runs").expect("a task");
        assert_eq!(task.capability, "tool.memory");
        assert_eq!(
            task.input["query"],
            "What did you find earlier about src/lib.rs?"
        );
        assert_eq!(task.input["space"], MEMORY_SPACE);
        assert_eq!(task.input["predicate"], ANSWERED);
        assert!(!is_risky(&recall));

        let run = rule_plan("Run `expr 6 '*' 7` please").expect("a command");
        assert_eq!(run.text.as_deref(), Some("expr 6 '*' 7"));
        assert!(is_risky(&run), "a command needs approval");
        let task = tool_task(&run).expect("runs").expect("a task");
        assert_eq!(task.capability, "tool.exec");
        assert_eq!(
            task.input,
            json!({"command": "expr", "args": ["6", "*", "7"]})
        );
        let unquoted = ToolCall {
            text: Some("echo 'open".into()),
            ..run.clone()
        };
        assert!(matches!(
            tool_task(&unquoted),
            Err(PlanError::Malformed { .. })
        ));
        assert_eq!(rule_plan("Run the tests"), None);

        // Neither is offered to the model: the planning prompt and schema stay the file tools.
        let plan = plan_input("anything");
        let system = plan["messages"][0]["content"].as_str().expect("system");
        assert!(
            !system.contains("recall") && !system.contains("run_command"),
            "{system}"
        );

        let summary = tool_summary(
            &recall,
            &json!({"matches": [{"subject": "question:how many lines has src/lib.rs", "object": "It has 12 lines."}]}),
        );
        assert!(
            summary.contains(
                "Earlier question: how many lines has src/lib.rs\nEarlier answer: It has 12 lines."
            ),
            "{summary}"
        );
        let ran = tool_summary(
            &run,
            &json!({"exit_code": 0, "stdout": "42\n", "stderr": ""}),
        );
        assert!(
            ran.contains("Exit code 0.") && ran.contains("Output:\n42"),
            "{ran}"
        );
    }

    #[test]
    fn a_conversation_s_last_turns_precede_the_question() {
        let history: Vec<Turn> = (1..=6)
            .map(|n| Turn {
                question: format!("q{n}"),
                answer: format!("a{n}"),
            })
            .collect();
        let input = answer_input("q7", None, &history);
        let said: Vec<(&str, &str)> = input["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().expect("role"),
                    m["content"].as_str().expect("text"),
                )
            })
            .collect();
        assert_eq!(said.len(), 2 + 2 * HISTORY_TURNS);
        assert_eq!(said[1], ("user", "q3"));
        assert_eq!(said[2], ("assistant", "a3"));
        assert_eq!(said[said.len() - 2], ("assistant", "a6"));
        assert_eq!(said[said.len() - 1], ("user", "q7"));
    }

    #[test]
    fn repeated_questions_meet_in_the_cache_within_its_ttl() {
        assert_eq!(
            normalize_question("  What is the capital   of France? "),
            normalize_question("what is the capital of france")
        );
        assert_eq!(question_subject("Hi!"), "question:hi");
        let now: chrono::DateTime<chrono::Utc> = "2026-12-03T12:00:00Z".parse().expect("time");
        let query = cache_query("Hi!", now, std::time::Duration::from_secs(3600));
        assert_eq!(query.subject.as_deref(), Some("question:hi"));
        assert_eq!(query.predicate.as_deref(), Some(ANSWERED));
        assert_eq!(
            query.asserted_after,
            Some("2026-12-03T11:00:00Z".parse().expect("time"))
        );
    }

    #[test]
    fn calls_that_cannot_run_are_typed_errors() {
        assert_eq!(
            planned_call(&json!({"tool": "rm_rf", "path": "/"})),
            Err(PlanError::UnknownTool {
                tool: "rm_rf".into()
            })
        );
        assert!(matches!(
            planned_call(&json!({"json": "read it"})),
            Err(PlanError::Malformed { .. })
        ));
        let no_path = ToolCall {
            tool: "read_file".into(),
            path: None,
            text: None,
            content: None,
        };
        assert_eq!(
            tool_request(&no_path),
            Err(PlanError::MissingArgument {
                tool: "read_file".into(),
                argument: "path"
            })
        );
    }

    #[test]
    fn the_answer_reads_counts_and_a_bounded_text() {
        let call = ToolCall {
            tool: "read_file".into(),
            path: Some("src/lib.rs".into()),
            text: None,
            content: None,
        };
        let long = "x".repeat(10 * TOOL_TEXT_SHOWN);
        let summary = tool_summary(&call, &json!({"lines": 27, "content": long}));
        assert!(summary.contains("The file has 27 lines."), "{summary}");
        assert!(summary.len() < 2 * TOOL_TEXT_SHOWN, "{}", summary.len());
        let input = answer_input("How many lines?", Some(&summary), &[]);
        let user = input["messages"][1]["content"].as_str().expect("text");
        // Every worked example is a call the schema's alternatives name.
        for (_, call) in PLAN_EXAMPLES {
            let call: serde_json::Value = serde_json::from_str(call).expect("JSON");
            tool_request(&planned_call(&call).expect("a call")).expect("runs");
        }
        assert!(
            user.starts_with("Result of read_file(src/lib.rs):"),
            "{user}"
        );
        assert!(user.ends_with("How many lines?"), "{user}");
        let plan = plan_input("How many lines does src/lib.rs have?");
        assert_eq!(plan["json_schema"], plan_schema());
        let messages = plan["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 2 + 2 * PLAN_EXAMPLES.len());
        assert_eq!(
            messages.last().expect("the question")["content"],
            "How many lines does src/lib.rs have?"
        );
        assert_eq!(plan["max_tokens"], PLAN_MAX_TOKENS);
    }
}
