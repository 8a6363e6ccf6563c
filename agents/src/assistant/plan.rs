//! The planning step: the JSON Schema its call is constrained to, the worked examples it
//! sees, the rules that plan without a model, and its output read back as a call.

use serde_json::json;

use super::tools::{NO_TOOL, TOOLS, ToolCall, tool_names};

/// Most tokens the planning step may write.
pub const PLAN_MAX_TOKENS: usize = 48;

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
