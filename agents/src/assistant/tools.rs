//! The tools a plan may call: what each is, the call the planning step writes, and what a
//! call becomes as a task (`tool.fs`, `tool.memory`, `tool.exec`) and as text the answering
//! step reads.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::memory::{ANSWERED, MEMORY_SPACE, RECALLED};
use super::plan::PlanError;
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
    /// (what the question says in so many words, see [`rule_plan`](super::rule_plan)).
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

pub(super) fn tool_names() -> Vec<&'static str> {
    TOOLS.iter().map(|t| t.name).collect()
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
