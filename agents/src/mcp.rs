//! An outside MCP (Model Context Protocol) server as a murmur tool agent: [`McpTools`]
//! connects to it (a child process over stdio, or streamable HTTP) with the official Rust
//! SDK (`rmcp`) and lists its tools; each becomes a capability `mcp.{tool}`, and
//! [`mcp_handler`] runs an assigned task by calling the tool with the task's input as its
//! arguments. Every call and result is therefore in the log: the task's `submitted`,
//! `assigned`, `started` and `completed` (or `failed` with the tool's error text).
//!
//! The other way, [`MurmurTools`] is an MCP server whose tools are the capabilities murmur's
//! online agents offer (`tool.fs`, `llm.generate`, …): a call becomes a murmur task, routed
//! like any other, and its output the tool's result (`murmur mcp serve` speaks it over
//! stdio).
//!
//! The pure parts (capability names, the arguments a task input becomes, the output a tool
//! result becomes, the tool a capability is offered as) are functions of their inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use murmur_coordination::follow::{RunEvent, TaskRun};
use murmur_coordination::registry::{AgentStatus, Registry, RegistryProjection};
use murmur_coordination::tasks::TaskState;
use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::{EventLog, Projector, Token};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService, ServiceExt as _};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};

use crate::runtime::AgentError;
use crate::worker::{Handler, TaskResult, handler};

/// Where the MCP server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServer {
    /// A command started as a child process, spoken to over its stdin and stdout: the
    /// program and its arguments.
    Command(Vec<String>),
    /// A streamable HTTP endpoint (e.g. `http://127.0.0.1:8000/mcp`).
    Url(String),
}

/// The capability that calls MCP tool `tool`: `mcp.{tool}`, with characters a capability
/// token cannot carry replaced by `_`.
pub fn capability_for(tool: &str) -> String {
    let name: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("mcp.{name}")
}

/// The arguments a task input becomes: the input itself when it is an object, else
/// `{"input": input}`.
pub fn arguments_of(input: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match input {
        serde_json::Value::Object(map) => map.clone(),
        other => serde_json::Map::from_iter([("input".to_string(), other.clone())]),
    }
}

/// The task output a tool result becomes: `{"text", "content", "structured"}` (the text
/// blocks joined, every block as the server sent it, the structured content when given), or
/// the error text when the tool reports an error.
pub fn output_of(tool: &str, result: &CallToolResult) -> TaskResult {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let text = text.join("\n");
    if result.is_error == Some(true) {
        return Err(format!("MCP tool {tool} failed: {text}"));
    }
    let mut output = serde_json::json!({
        "text": text,
        "content": serde_json::to_value(&result.content).unwrap_or_default(),
    });
    if let Some(structured) = &result.structured_content {
        output["structured"] = structured.clone();
    }
    Ok(output)
}

/// A connected MCP server and its tools, by the capability that calls each.
pub struct McpTools {
    client: RunningService<RoleClient, ()>,
    server: McpServer,
    tools: BTreeMap<String, Tool>,
}

impl McpTools {
    /// Connects, initializes and lists the tools.
    pub async fn connect(server: McpServer) -> Result<Self, AgentError> {
        let failed = |what: &'static str| {
            let server = server.clone();
            move |e: &dyn std::fmt::Display| AgentError::Setup {
                what,
                reason: format!("{server:?}: {e}"),
            }
        };
        let client = match &server {
            McpServer::Command(argv) => {
                let (program, args) = argv
                    .split_first()
                    .ok_or_else(|| failed("MCP server command")(&"empty command"))?;
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                let transport = TokioChildProcess::new(command)
                    .map_err(|e| failed("MCP server process")(&e))?;
                ().serve(transport)
                    .await
                    .map_err(|e| failed("MCP initialization")(&e))?
            }
            McpServer::Url(url) => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                ().serve(transport)
                    .await
                    .map_err(|e| failed("MCP initialization")(&e))?
            }
        };
        let listed = client
            .list_all_tools()
            .await
            .map_err(|e| failed("MCP tools/list")(&e))?;
        let tools = listed
            .into_iter()
            .map(|t| (capability_for(&t.name), t))
            .collect();
        Ok(Self {
            client,
            server,
            tools,
        })
    }

    /// The server's name and version, as it introduced itself.
    pub fn server_name(&self) -> String {
        self.client
            .peer_info()
            .and_then(|i| {
                i.server_info
                    .as_ref()
                    .map(|s| format!("{} {}", s.name, s.version))
            })
            .unwrap_or_else(|| format!("{:?}", self.server))
    }

    /// The capabilities its tools are offered as, sorted.
    pub fn capabilities(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// The tool a capability calls.
    pub fn tool(&self, capability: &str) -> Option<&Tool> {
        self.tools.get(capability)
    }

    /// Calls the tool behind `capability` with `input`.
    pub async fn call(&self, capability: &str, input: &serde_json::Value) -> TaskResult {
        let tool = self
            .tools
            .get(capability)
            .ok_or_else(|| format!("this MCP server has no tool for capability {capability:?}"))?;
        let result = self
            .client
            .call_tool(
                CallToolRequestParams::new(tool.name.clone()).with_arguments(arguments_of(input)),
            )
            .await
            .map_err(|e| format!("MCP tool {}: {e}", tool.name))?;
        output_of(&tool.name, &result)
    }
}

/// Runs each attempt by calling the tool its capability names (an agent offering one tool
/// runs that one for an assignment that did not carry its capability).
pub fn mcp_handler(tools: Arc<McpTools>) -> Handler {
    handler(move |ctx| {
        let tools = tools.clone();
        async move {
            let capability = if ctx.capability.is_empty() && tools.tools.len() == 1 {
                tools.capabilities().remove(0)
            } else {
                ctx.capability.clone()
            };
            tools.call(&capability, &ctx.input).await
        }
    })
}

/// The input schema a capability is offered with: the requests of `tool.fs`, `tool.exec` and
/// `tool.memory` as they are declared, any other capability an object its agents read.
pub fn input_schema(capability: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut schema = if capability == crate::tool::FS_CAPABILITY {
        serde_json::to_value(schemars::schema_for!(crate::tool::FsRequest)).unwrap_or_default()
    } else if capability == crate::exec::EXEC_CAPABILITY {
        serde_json::to_value(schemars::schema_for!(crate::exec::ExecRequest)).unwrap_or_default()
    } else if capability == crate::recall::MEMORY_CAPABILITY {
        serde_json::to_value(schemars::schema_for!(crate::recall::RecallRequest))
            .unwrap_or_default()
    } else {
        serde_json::json!({"additionalProperties": true})
    };
    // MCP wants an object schema at the top.
    schema["type"] = "object".into();
    match schema {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The tools the registry offers: one per capability of an online agent that takes tasks,
/// sorted, each described by who offers it.
pub fn tools_of(registry: &Registry) -> Vec<Tool> {
    let mut offered: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for agent in registry.agents.values() {
        if agent.status != AgentStatus::Online || !agent.takes_tasks() {
            continue;
        }
        for capability in &agent.capabilities {
            offered
                .entry(capability)
                .or_default()
                .push(agent.name.as_str());
        }
    }
    offered
        .into_iter()
        .map(|(capability, names)| {
            Tool::new(
                capability.to_string(),
                format!(
                    "murmur capability {capability}: runs as a task on one of {} online agent(s) ({})",
                    names.len(),
                    names.join(", ")
                ),
                Arc::new(input_schema(capability)),
            )
        })
        .collect()
}

/// The tool result a task's end becomes: its output as structured content (and as text),
/// or an error result with every attempt's reason.
pub fn result_of(
    state: &TaskState,
    output: Option<&serde_json::Value>,
    failures: &[String],
) -> CallToolResult {
    match state {
        TaskState::Completed { .. } => {
            let output = output.cloned().unwrap_or_default();
            let mut result = CallToolResult::structured(output.clone());
            if let Some(text) = output.get("text").and_then(|t| t.as_str()) {
                result.content = vec![ContentBlock::text(text)];
            }
            result
        }
        TaskState::Cancelled => {
            CallToolResult::error(vec![ContentBlock::text("the task was cancelled")])
        }
        _ => CallToolResult::error(vec![ContentBlock::text(format!(
            "the task failed: {}",
            failures.join("; ")
        ))]),
    }
}

/// murmur's capabilities as an MCP server: each call runs as a task submitted as `log`'s
/// identity (a submitter).
#[derive(Clone)]
pub struct MurmurTools {
    log: EventLog,
    timeout: Duration,
}

impl MurmurTools {
    /// Tools over `log`'s realm; a call fails when its task has not ended after `timeout`.
    pub fn new(log: EventLog, timeout: Duration) -> Self {
        Self { log, timeout }
    }

    async fn registry(&self) -> Result<Registry, rmcp::ErrorData> {
        let mut view = Projector::new(
            self.log.clone(),
            RegistryProjection {
                realm: self.log.realm().clone(),
            },
        );
        view.catch_up()
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))?;
        Ok(view.take_state())
    }
}

impl rmcp::ServerHandler for MurmurTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("murmur", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Each tool is a capability of realm {}: a call runs as a task in its log.",
                self.log.realm()
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        Ok(ListToolsResult {
            tools: tools_of(&self.registry().await?),
            ..Default::default()
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let capability = request.name.to_string();
        if let Err(reason) = murmur_coordination::routing::validate_capability(&capability) {
            return Err(rmcp::ErrorData::invalid_params(reason, None));
        }
        let input = serde_json::Value::Object(request.arguments.clone().unwrap_or_default());
        let submitted = TaskSubmitted {
            capability: capability.clone(),
            input,
            ..Default::default()
        };
        let internal =
            |e: &dyn std::fmt::Display| rmcp::ErrorData::internal_error(e.to_string(), None);
        let id = Token::new(format!("mcp-{}", uuid::Uuid::now_v7().simple()))
            .map_err(|e| internal(&e))?;
        let mut run = TaskRun::submit(&self.log, id, &submitted, self.timeout)
            .await
            .map_err(|e| internal(&e))?;
        loop {
            match run.next().await {
                Ok(RunEvent::Ended(task)) => {
                    return Ok(result_of(&task.state, task.output.as_ref(), &task.failures).into());
                }
                // MCP has no way to ask the caller here: the attempt waits, then fails.
                Ok(RunEvent::Progress(_) | RunEvent::Question(_)) => {}
                Err(e) => {
                    return Ok(
                        CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock;

    fn agent(
        name: &str,
        capabilities: &[&str],
        status: AgentStatus,
        handles: Option<Vec<String>>,
    ) -> murmur_coordination::registry::AgentEntry {
        murmur_coordination::registry::AgentEntry {
            name: name.into(),
            kind: "tool".into(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            labels: Default::default(),
            agent_version: "test".into(),
            hardware: Default::default(),
            slots: 1,
            handles,
            status,
            last_sequence: 0,
            joins: 1,
            load: 0.0,
            queue_depth: 0,
            lame_duck: false,
        }
    }

    #[test]
    fn the_registry_offers_one_tool_per_capability_of_online_task_runners() {
        let mut registry = Registry::default();
        registry.agents.insert(
            "A".into(),
            agent("files", &["tool.fs"], AgentStatus::Online, None),
        );
        registry.agents.insert(
            "B".into(),
            agent(
                "files-2",
                &["tool.fs", "text.upper"],
                AgentStatus::Online,
                None,
            ),
        );
        registry.agents.insert(
            "C".into(),
            agent("gone", &["gone.cap"], AgentStatus::Left, None),
        );
        registry.agents.insert(
            "D".into(),
            agent("voter", &["vote"], AgentStatus::Online, Some(vec![])),
        );
        let tools = tools_of(&registry);
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["text.upper", "tool.fs"]);
        assert!(
            tools[1]
                .description
                .as_deref()
                .is_some_and(|d| d.contains("2 online agent(s) (files, files-2)"))
        );
        // tool.fs is offered with its declared requests.
        let schema = serde_json::Value::Object((*tools[1].input_schema).clone());
        assert_eq!(schema["type"], "object");
        assert!(schema.to_string().contains("\"list\""), "{schema}");
    }

    #[test]
    fn task_ends_become_tool_results() {
        let output = serde_json::json!({"text": "HELLO", "by": "python"});
        let ok = result_of(
            &TaskState::Completed { agent: "A".into() },
            Some(&output),
            &[],
        );
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(ok.structured_content, Some(output));
        assert_eq!(
            ok.content[0].as_text().map(|t| t.text.as_str()),
            Some("HELLO")
        );
        let failures = ["boom".to_string(), "boom again".to_string()];
        let failed = result_of(&TaskState::DeadLettered, None, &failures);
        assert_eq!(failed.is_error, Some(true));
        assert_eq!(
            failed.content[0].as_text().map(|t| t.text.as_str()),
            Some("the task failed: boom; boom again")
        );
    }

    #[test]
    fn tools_become_capabilities() {
        assert_eq!(capability_for("add"), "mcp.add");
        assert_eq!(capability_for("Git Status/v2"), "mcp.git_status_v2");
    }

    #[test]
    fn inputs_become_arguments() {
        let args = arguments_of(&serde_json::json!({"a": 2, "b": 3}));
        assert_eq!(args.get("a"), Some(&serde_json::json!(2)));
        let args = arguments_of(&serde_json::json!("text"));
        assert_eq!(args.get("input"), Some(&serde_json::json!("text")));
    }

    #[test]
    fn results_become_outputs_or_errors() {
        let ok = CallToolResult::success(vec![ContentBlock::text("42")]);
        let out = output_of("add", &ok).expect("a success");
        assert_eq!(out["text"], "42");
        assert_eq!(out["content"][0]["text"], "42");
        let failed = CallToolResult::error(vec![ContentBlock::text("division by zero")]);
        assert_eq!(
            output_of("div", &failed),
            Err("MCP tool div failed: division by zero".to_string())
        );
        let structured = CallToolResult::structured(serde_json::json!({"sum": 5}));
        assert_eq!(
            output_of("add", &structured).expect("a success")["structured"]["sum"],
            5
        );
    }
}
