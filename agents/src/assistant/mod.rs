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

pub mod orchestrate;
pub mod requests;

use crate::tool::FsRequest;

/// A tool the planning step may call, and how its call becomes a `tool.fs` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSpec {
    /// The name the model writes.
    pub name: &'static str,
    /// What it does, as the model reads it.
    pub description: &'static str,
    /// Whether it changes anything: a risky call runs only when allowed and approved by a
    /// vote.
    pub risky: bool,
    /// Whether the planning step's schema offers it; the others are planned by rule only
    /// (what the question says in so many words, see [`rule_plan`]).
    pub planned_by_model: bool,
}

/// The tools a plan may call: `tool.fs`'s operations, recall from memory (`tool.memory`)
/// and a command (`tool.exec`).
pub const TOOLS: [ToolSpec; 6] = [
    ToolSpec {
        name: "read_file",
        description: "read a text file; its result gives the file's number of lines and its text",
        risky: false,
        planned_by_model: true,
    },
    ToolSpec {
        name: "list_directory",
        description: "list the entries of a directory",
        risky: false,
        planned_by_model: true,
    },
    ToolSpec {
        name: "search",
        description: "find the lines containing a text in the files under a directory",
        risky: false,
        planned_by_model: true,
    },
    ToolSpec {
        name: "write_file",
        description: "write a text file (changes the project: needs approval)",
        risky: true,
        planned_by_model: true,
    },
    ToolSpec {
        name: "recall",
        description: "recall earlier answers from the assistant's memory",
        risky: false,
        planned_by_model: false,
    },
    ToolSpec {
        name: "run_command",
        description: "run an allowlisted command (needs approval)",
        risky: true,
        planned_by_model: false,
    },
];

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

/// How many earlier answers a `recall` step reads.
pub const RECALLED: usize = 3;

/// A call as the task that runs it: the capability and its input.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolTask {
    /// `tool.fs`, `tool.memory` or `tool.exec`.
    pub capability: &'static str,
    /// The task's input.
    pub input: serde_json::Value,
}

/// The tools a request may run unless the user allows more: the ones that change nothing.
pub fn default_allowed() -> std::collections::BTreeSet<String> {
    TOOLS
        .iter()
        .filter(|t| !t.risky)
        .map(|t| t.name.to_string())
        .chain([NO_TOOL.to_string()])
        .collect()
}

/// Whether `call` changes anything (see [`ToolSpec::risky`]).
pub fn is_risky(call: &ToolCall) -> bool {
    TOOLS.iter().any(|t| t.name == call.tool && t.risky)
}

/// The name of the planning step's "no tool needed" answer.
pub const NO_TOOL: &str = "none";

/// Most tokens the planning step may write.
pub const PLAN_MAX_TOKENS: usize = 48;

/// Most tokens the answering step may write.
pub const ANSWER_MAX_TOKENS: usize = 96;

/// The most characters of a tool's text result the answering step reads.
pub const TOOL_TEXT_SHOWN: usize = 1500;

/// A planned tool call, as the planning step wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// One of [`TOOLS`]' names, or [`NO_TOOL`].
    pub tool: String,
    /// Path argument (a file or directory relative to the tool's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Text argument (`search`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Content argument (`write_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Why a planned call cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The plan is not a tool call.
    #[error("the plan is not a tool call ({reason}): {plan}")]
    Malformed {
        /// The plan as written.
        plan: String,
        /// What is wrong.
        reason: String,
    },
    /// The call names a tool that is not offered.
    #[error("the plan calls `{tool}`, which is not a tool here (tools: {})", tool_names().join(", "))]
    UnknownTool {
        /// The tool named.
        tool: String,
    },
    /// An argument the tool needs is missing.
    #[error("`{tool}` needs the argument `{argument}`")]
    MissingArgument {
        /// The tool.
        tool: String,
        /// The argument.
        argument: &'static str,
    },
}

fn tool_names() -> Vec<&'static str> {
    TOOLS.iter().map(|t| t.name).collect()
}

/// The JSON Schema the planning step's answer is constrained to: one of the tools with its
/// arguments, or `{"tool": "none"}`.
pub fn plan_schema() -> serde_json::Value {
    let path = json!({"type": "string", "minLength": 1, "maxLength": 120});
    json!({
        "anyOf": [
            {
                "type": "object",
                "properties": {"tool": {"const": "read_file"}, "path": path},
                "required": ["tool", "path"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {"tool": {"const": "list_directory"}, "path": path},
                "required": ["tool", "path"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {
                    "tool": {"const": "search"},
                    "path": path,
                    "text": {"type": "string", "minLength": 1, "maxLength": 80}
                },
                "required": ["tool", "path", "text"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {
                    "tool": {"const": "write_file"},
                    "path": path,
                    "content": {"type": "string", "maxLength": 2000}
                },
                "required": ["tool", "path", "content"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {"tool": {"const": NO_TOOL}},
                "required": ["tool"],
                "additionalProperties": false
            }
        ]
    })
}

/// The knowledge space the assistant remembers its requests in: an `answered` fact per
/// normalized question (the answer, tagged with its request) and an `episode` fact per
/// request (question, plan, tool result, answer). Written by the orchestrator only.
pub const MEMORY_SPACE: &str = "assistant";

/// Predicate of a question's answer in [`MEMORY_SPACE`].
pub const ANSWERED: &str = "answered";

/// Predicate of a request's whole story in [`MEMORY_SPACE`].
pub const EPISODE: &str = "episode";

/// Predicate recording that a request was answered from the cache (the object names the
/// request whose answer it reused).
pub const CACHE_HIT: &str = "cache_hit";

/// A question as the cache compares it: lower case, one space between words, no
/// punctuation at either end.
pub fn normalize_question(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_string()
}

/// The subject of a question's facts in [`MEMORY_SPACE`].
pub fn question_subject(question: &str) -> String {
    format!("question:{}", normalize_question(question))
}

/// The subject of a request's facts in [`MEMORY_SPACE`].
pub fn request_subject(request: &str) -> String {
    format!("request:{request}")
}

/// The query for a cached answer to `question` given at `now - ttl` or later.
pub fn cache_query(
    question: &str,
    now: chrono::DateTime<chrono::Utc>,
    ttl: std::time::Duration,
) -> murmur_knowledge::Query {
    murmur_knowledge::Query {
        subject: Some(question_subject(question)),
        predicate: Some(ANSWERED.into()),
        asserted_after: Some(
            now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        ),
        ..Default::default()
    }
}

/// The newest of the cached answers `facts` (what [`cache_query`] found): its text and the
/// request that produced it (its tag).
pub fn newest_answer(facts: &[murmur_knowledge::FactView]) -> Option<(String, String)> {
    let newest = facts.iter().max_by_key(|f| f.core.asserted_at)?;
    let murmur_knowledge::Value::Text(text) = &newest.core.object else {
        return None;
    };
    let request = newest.core.tags.iter().find(|t| t.starts_with("ask-"))?;
    Some((text.clone(), request.clone()))
}

/// Worked examples the planning step sees before the question: a small model follows
/// examples far better than instructions.
pub const PLAN_EXAMPLES: [(&str, &str); 4] = [
    (
        "How many lines does Cargo.toml have?",
        r#"{"tool": "read_file", "path": "Cargo.toml"}"#,
    ),
    (
        "Which files are in the src directory?",
        r#"{"tool": "list_directory", "path": "src"}"#,
    ),
    ("What is the largest planet?", r#"{"tool": "none"}"#),
    (
        "Where is the word main used in the project?",
        r#"{"tool": "search", "path": ".", "text": "main"}"#,
    ),
];

/// The planning step's `llm.generate` input for `question`.
pub fn plan_input(question: &str) -> serde_json::Value {
    let tools: Vec<String> = TOOLS
        .iter()
        .filter(|t| t.planned_by_model)
        .map(|t| format!("- {}: {}", t.name, t.description))
        .collect();
    let system = format!(
        "You pick the tool that answers a question about the files of a project. Tools:\n{}\n- {NO_TOOL}: no file is needed (general knowledge).\nReply with a JSON tool call only.",
        tools.join("\n")
    );
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (asked, call) in PLAN_EXAMPLES {
        messages.push(json!({"role": "user", "content": asked}));
        messages.push(json!({"role": "assistant", "content": call}));
    }
    messages.push(json!({"role": "user", "content": question}));
    json!({
        "messages": messages,
        "max_tokens": PLAN_MAX_TOKENS,
        "json_schema": plan_schema()
    })
}

/// The call a question asks for in so many words, decided without a model: a path-like
/// word (`src/lib.rs`, `README.md`) is read, a word before "directory" or "folder" is
/// listed, "Write TEXT to PATH" writes TEXT (a risky call: it still needs allowing and a
/// vote). Small models plan tool calls poorly (SmolLM2-135M picked the right call for 1–2
/// of 6 plain questions with every prompt shape tried, see docs/benchmarks.md), so what the
/// words settle is not left to them; everything else goes to the planning step.
pub fn rule_plan(question: &str) -> Option<ToolCall> {
    // "Run `COMMAND`": the command between backticks.
    let trimmed = question.trim();
    if trimmed.to_lowercase().starts_with("run ")
        && let Some((_, rest)) = trimmed.split_once('`')
        && let Some((command, _)) = rest.split_once('`')
        && !command.trim().is_empty()
    {
        return Some(ToolCall {
            tool: "run_command".into(),
            path: None,
            text: Some(command.trim().to_string()),
            content: None,
        });
    }
    // A question about what was said before is answered from memory.
    let lower = question.to_lowercase();
    if [
        "earlier",
        "before",
        "remember",
        "last time",
        "previously",
        "you said",
        "did i ask",
    ]
    .iter()
    .any(|cue| lower.contains(cue))
    {
        return Some(ToolCall {
            tool: "recall".into(),
            path: None,
            text: Some(question.trim().to_string()),
            content: None,
        });
    }
    // "Write TEXT to PATH": the user's own words are the content.
    if let Some(rest) = question
        .trim()
        .strip_prefix("Write ")
        .or_else(|| question.trim().strip_prefix("write "))
        && let Some((text, path)) = rest.rsplit_once(" to ")
    {
        let path = path.trim().trim_end_matches(['.', '!']);
        let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
        if !path.is_empty()
            && !path.starts_with('/')
            && !path.split('/').any(|p| p == "..")
            && !path.contains(char::is_whitespace)
            && !text.is_empty()
        {
            return Some(ToolCall {
                tool: "write_file".into(),
                path: Some(path.to_string()),
                text: None,
                content: Some(format!("{text}\n")),
            });
        }
    }
    let words: Vec<&str> = question
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| {
                matches!(
                    c,
                    '?' | '!' | ',' | ';' | ':' | '"' | '\'' | '`' | '(' | ')'
                )
            })
            .trim_end_matches('.')
        })
        .collect();
    let path_like = |w: &str| {
        !w.is_empty()
            && !w.starts_with('/')
            && !w.split('/').any(|part| part == "..")
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            && (w.contains('/')
                || w.rsplit_once('.').is_some_and(|(stem, ext)| {
                    !stem.is_empty()
                        && (1..=5).contains(&ext.len())
                        && ext.chars().all(|c| c.is_ascii_alphanumeric())
                        && ext.chars().any(|c| c.is_ascii_alphabetic())
                }))
    };
    for pair in words.windows(2) {
        if matches!(
            pair[1].to_lowercase().as_str(),
            "directory" | "folder" | "dir"
        ) && !pair[0].is_empty()
            && pair[0]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            && !matches!(
                pair[0].to_lowercase().as_str(),
                "the" | "a" | "this" | "that" | "which" | "what"
            )
        {
            return Some(ToolCall {
                tool: "list_directory".into(),
                path: Some(pair[0].to_string()),
                text: None,
                content: None,
            });
        }
    }
    words.iter().find(|w| path_like(w)).map(|path| ToolCall {
        tool: "read_file".into(),
        path: Some(path.to_string()),
        text: None,
        content: None,
    })
}

/// The call the planning step wrote (its output's `json`).
pub fn planned_call(plan_output: &serde_json::Value) -> Result<ToolCall, PlanError> {
    let document = plan_output.get("json").unwrap_or(plan_output);
    let call: ToolCall =
        serde_json::from_value(document.clone()).map_err(|e| PlanError::Malformed {
            plan: document.to_string(),
            reason: e.to_string(),
        })?;
    if call.tool != NO_TOOL && !TOOLS.iter().any(|t| t.name == call.tool) {
        return Err(PlanError::UnknownTool { tool: call.tool });
    }
    Ok(call)
}

/// The `tool.fs` request a call runs as; `None` for [`NO_TOOL`].
pub fn tool_request(call: &ToolCall) -> Result<Option<FsRequest>, PlanError> {
    let path = || {
        call.path.clone().ok_or(PlanError::MissingArgument {
            tool: call.tool.clone(),
            argument: "path",
        })
    };
    Ok(Some(match call.tool.as_str() {
        NO_TOOL => return Ok(None),
        "read_file" => FsRequest::Read {
            path: path()?,
            max_bytes: None,
        },
        "list_directory" => FsRequest::List { path: path()? },
        "write_file" => FsRequest::Write {
            path: path()?,
            content: call.content.clone().ok_or(PlanError::MissingArgument {
                tool: call.tool.clone(),
                argument: "content",
            })?,
        },
        "search" => FsRequest::Search {
            path: path()?,
            text: call.text.clone().ok_or(PlanError::MissingArgument {
                tool: call.tool.clone(),
                argument: "text",
            })?,
            max_matches: Some(20),
        },
        other => {
            return Err(PlanError::UnknownTool {
                tool: other.to_string(),
            });
        }
    }))
}

/// The task a call runs as; `None` for [`NO_TOOL`]. `recall` reads the assistant's earlier
/// answers ([`RECALLED`] of them); `run_command` splits its text as a shell would (quotes,
/// no expansion) into a program and its arguments.
pub fn tool_task(call: &ToolCall) -> Result<Option<ToolTask>, PlanError> {
    let text = || {
        call.text
            .clone()
            .filter(|t| !t.trim().is_empty())
            .ok_or(PlanError::MissingArgument {
                tool: call.tool.clone(),
                argument: "text",
            })
    };
    let task = match call.tool.as_str() {
        "recall" => ToolTask {
            capability: crate::recall::MEMORY_CAPABILITY,
            input: json!(crate::recall::RecallRequest {
                query: text()?,
                space: MEMORY_SPACE.into(),
                predicate: Some(ANSWERED.into()),
                matches: Some(RECALLED),
            }),
        },
        "run_command" => {
            let line = text()?;
            let mut argv = shlex::split(&line)
                .filter(|argv| !argv.is_empty())
                .ok_or_else(|| PlanError::Malformed {
                    plan: line.clone(),
                    reason: "not a command line (check its quotes)".into(),
                })?;
            let command = argv.remove(0);
            ToolTask {
                capability: crate::exec::EXEC_CAPABILITY,
                input: json!(crate::exec::ExecRequest {
                    command,
                    args: argv,
                    stdin: None,
                    files: Default::default(),
                }),
            }
        }
        _ => match tool_request(call)? {
            Some(fs) => ToolTask {
                capability: crate::tool::FS_CAPABILITY,
                input: json!(fs),
            },
            None => return Ok(None),
        },
    };
    Ok(Some(task))
}

/// What a call is about, as the answer and the progress lines name it.
fn call_argument(call: &ToolCall) -> &str {
    call.path.as_deref().or(call.text.as_deref()).unwrap_or("")
}

/// What the answering step reads of a tool's output: counts and names whole, text cut to
/// [`TOOL_TEXT_SHOWN`] characters.
pub fn tool_summary(call: &ToolCall, output: &serde_json::Value) -> String {
    let mut lines = vec![format!("Result of {}({}):", call.tool, call_argument(call))];
    if call.tool == "recall" {
        let recalled = output
            .get("matches")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        if recalled.is_empty() {
            lines.push("Nothing earlier matches.".into());
        }
        for m in recalled {
            let field = |name: &str| m.get(name).and_then(|v| v.as_str()).unwrap_or("");
            let asked = field("subject");
            let asked = asked.strip_prefix("question:").unwrap_or(asked);
            let answer: String = field("object")
                .chars()
                .take(TOOL_TEXT_SHOWN / RECALLED)
                .collect();
            lines.push(format!(
                "Earlier question: {asked}\nEarlier answer: {answer}"
            ));
        }
        return lines.join("\n");
    }
    if call.tool == "run_command" {
        let field = |name: &str| output.get(name).and_then(|v| v.as_str()).unwrap_or("");
        match output.get("exit_code").and_then(|v| v.as_i64()) {
            Some(code) => lines.push(format!("Exit code {code}.")),
            None => lines.push("It was ended by a signal.".into()),
        }
        let shown: String = field("stdout").chars().take(TOOL_TEXT_SHOWN).collect();
        lines.push(format!("Output:\n{shown}"));
        if !field("stderr").is_empty() {
            let shown: String = field("stderr").chars().take(TOOL_TEXT_SHOWN / 4).collect();
            lines.push(format!("Errors:\n{shown}"));
        }
        return lines.join("\n");
    }
    if let Some(n) = output.get("lines").and_then(|v| v.as_u64()) {
        lines.push(format!("The file has {n} lines."));
    }
    if let Some(content) = output.get("content").and_then(|v| v.as_str()) {
        let shown: String = content.chars().take(TOOL_TEXT_SHOWN).collect();
        lines.push(format!("Text:\n{shown}"));
    }
    if let Some(entries) = output.get("entries").and_then(|v| v.as_array()) {
        let names: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.get("name").and_then(|n| n.as_str()))
            .collect();
        lines.push(format!("Entries ({}): {}", names.len(), names.join(", ")));
    }
    if let Some(matches) = output.get("matches").and_then(|v| v.as_array()) {
        lines.push(format!("{} matching lines:", matches.len()));
        for m in matches {
            lines.push(format!(
                "{}:{}: {}",
                m.get("path").and_then(|v| v.as_str()).unwrap_or("?"),
                m.get("line").and_then(|v| v.as_u64()).unwrap_or(0),
                m.get("text").and_then(|v| v.as_str()).unwrap_or("")
            ));
        }
    }
    lines.join("\n")
}

/// What the answering step reads when the tool failed.
pub fn tool_failure(call: &ToolCall, reason: &str) -> String {
    format!(
        "The tool {}({}) failed: {reason}",
        call.tool,
        call_argument(call)
    )
}

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
