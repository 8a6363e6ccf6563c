//! murmur as a Synadia Agent Protocol agent (v0.3): a gateway registers a capability as a
//! protocol agent (the `agents` micro service with its `prompt` and `status` endpoints, and
//! heartbeats), and answers each prompt by submitting it as a murmur task. The coordinator
//! routes the task like any other (capability, labels, hardware, load), so every prompt is
//! in the log, replayable and counted; the answer streams back as `response` chunks from
//! the running attempt's progress (an inference agent's text so far) and the final output,
//! then the protocol's empty terminator. A task that fails answers with the service-error
//! headers, then the terminator. A prompt's `Agent-Sender` header is read and, when signed,
//! verified ([`murmur_subjects::agent_sender`]); the sender goes into the task's
//! submission (a malformed header is answered 400, one that does not verify 401).
//!
//! The other way, a **bridge** agent takes murmur tasks for a protocol agent hosted
//! elsewhere: [`discover`] finds it by name through `$SRV.INFO.agents`, and
//! [`bridge_handler`] runs each attempt by prompting it, reporting each `response` chunk as
//! progress and completing with the whole answer.
//!
//! The pure parts (reading a prompt, the task input, the answer text, which part of the
//! progress is new, the chunks and the heartbeat) are functions of their inputs; the I/O is
//! [`Gateway`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use async_nats::service::ServiceExt as _;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use murmur_coordination::follow::{FollowError, RunEvent, TaskRun};
use murmur_coordination::tasks::TaskState;
use murmur_subjects::agent_protocol::{self as sap, AgentAddress};
use murmur_subjects::agent_sender::{self, NonceWindow, PromptSender, SenderError};
use murmur_subjects::events::{TaskProgress, TaskSubmitted};
use murmur_subjects::{EventLog, Token};
use serde::{Deserialize, Serialize};

use crate::runtime::AgentError;

/// What a gateway serves: one protocol agent for one murmur capability.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Its protocol address (agent, owner, session).
    pub address: AgentAddress,
    /// The capability each prompt's task asks for (e.g. `llm.generate`).
    pub capability: String,
    /// Labels each task requires of the agent that runs it.
    pub labels: BTreeMap<String, String>,
    /// For `llm.generate`: most tokens an answer may have.
    pub max_tokens: u32,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// Longest a prompt may take before it is answered with an error (and its task
    /// cancelled).
    pub prompt_timeout: Duration,
    /// For people (`$SRV.INFO` description).
    pub description: String,
}

/// A prompt as the protocol carries it: plain text, or `{"prompt", "attachments"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// The text.
    pub prompt: String,
    /// Files sent with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One attachment: a file name and its bytes, base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name.
    pub filename: String,
    /// Contents, base64.
    pub content: String,
}

/// Why a prompt was refused before it became a task (the protocol's 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// Empty body or empty prompt text.
    #[error("the prompt is empty")]
    Empty,
    /// A JSON body that is not `{"prompt": …}`, or text that is not UTF-8.
    #[error("the prompt is not text or {{\"prompt\", \"attachments\"}}: {0}")]
    Malformed(String),
    /// An attachment whose content is not base64.
    #[error("attachment {0:?} is not base64")]
    BadAttachment(String),
}

/// Reads a prompt request body.
pub fn parse_prompt(body: &[u8]) -> Result<Prompt, PromptError> {
    let text = std::str::from_utf8(body).map_err(|e| PromptError::Malformed(e.to_string()))?;
    let prompt = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Prompt>(text).map_err(|e| PromptError::Malformed(e.to_string()))?
    } else {
        Prompt {
            prompt: text.to_string(),
            attachments: Vec::new(),
        }
    };
    if prompt.prompt.trim().is_empty() {
        return Err(PromptError::Empty);
    }
    for a in &prompt.attachments {
        base64::engine::general_purpose::STANDARD
            .decode(&a.content)
            .map_err(|_| PromptError::BadAttachment(a.filename.clone()))?;
    }
    Ok(prompt)
}

/// The task input a prompt becomes: a chat for `llm.generate`, a question for the
/// assistant's orchestrator (`assistant.ask`, attachments left out), else
/// `{"text", "attachments"}`.
pub fn task_input(capability: &str, prompt: &Prompt, max_tokens: u32) -> serde_json::Value {
    if capability == crate::assistant::ASK_CAPABILITY {
        return serde_json::to_value(crate::assistant::AskRequest::new(prompt.prompt.clone()))
            .unwrap_or_default();
    }
    if capability == "llm.generate" {
        return serde_json::json!({
            "messages": [{"role": "user", "content": prompt.prompt}],
            "max_tokens": max_tokens,
        });
    }
    let mut input = serde_json::json!({ "text": prompt.prompt });
    if !prompt.attachments.is_empty() {
        input["attachments"] = serde_json::to_value(&prompt.attachments).unwrap_or_default();
    }
    input
}

/// Whether a capability's progress is partial output, streamed as it grows; the assistant's
/// orchestrator reports the lines of its steps instead, which are not the answer.
pub fn progress_is_output(capability: &str) -> bool {
    capability != crate::assistant::ASK_CAPABILITY
}

/// The answer text of a task's output: its `text` member, the string itself, or the output
/// as compact JSON.
pub fn answer_text(output: &serde_json::Value) -> String {
    match output {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("text") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => output.to_string(),
        },
        other => other.to_string(),
    }
}

/// What of `text` has not been sent yet, when it continues what was (`None`: it does not,
/// e.g. a status message rather than partial output).
pub fn unsent<'a>(sent: &str, text: &'a str) -> Option<&'a str> {
    text.strip_prefix(sent).filter(|rest| !rest.is_empty())
}

/// What to stream when progress `next` arrives after `held` (the previous progress text, not
/// streamed yet): `held`'s unsent part once `next` continues it, which shows `held` was
/// partial output. A status message ("running", "loading the model") is never continued,
/// so it never becomes part of the answer; partial output streams one step behind.
pub fn confirmed<'a>(sent: &str, held: Option<&'a str>, next: &str) -> Option<&'a str> {
    let held = held?;
    if next.starts_with(held) {
        unsent(sent, held)
    } else {
        None
    }
}

/// The leading acknowledgement chunk.
pub fn ack_chunk() -> Bytes {
    Bytes::from_static(br#"{"type":"status","data":"ack"}"#)
}

/// A `response` chunk carrying `text`.
pub fn response_chunk(text: &str) -> Bytes {
    let data = serde_json::to_string(text).unwrap_or_default();
    Bytes::from(format!(r#"{{"type":"response","data":{data}}}"#))
}

/// A `query` chunk: the agent asks the caller `prompt`; the caller answers on `reply_subject`
/// (the protocol's §7).
pub fn query_chunk(id: &str, reply_subject: &str, prompt: &str) -> Bytes {
    let chunk = serde_json::json!({
        "type": "query",
        "data": { "id": id, "reply_subject": reply_subject, "prompt": prompt },
    });
    Bytes::from(chunk.to_string())
}

/// The heartbeat (and `status` reply) of a protocol agent.
pub fn heartbeat_payload(
    address: &AgentAddress,
    instance_id: &str,
    interval: Duration,
    endpoint_metadata: &HashMap<String, String>,
    now: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "agent": address.agent(),
        "owner": address.owner(),
        "session": address.session(),
        "instance_id": instance_id,
        "ts": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "interval_s": interval.as_secs().max(1),
        "protocol_version": sap::PROTOCOL_VERSION,
        "endpoints": {"prompt": {"subject": address.prompt_subject(), "metadata": endpoint_metadata}},
    })
}

/// What a gateway did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Prompts answered.
    pub answered: u64,
    /// Prompts answered with an error.
    pub failed: u64,
}

/// A registered protocol agent, ready to serve ([`Gateway::serve`]).
pub struct Gateway {
    log: EventLog,
    config: GatewayConfig,
    service: async_nats::service::Service,
    prompts: async_nats::service::endpoint::Endpoint,
    statuses: async_nats::service::endpoint::Endpoint,
    endpoint_metadata: HashMap<String, String>,
    instance_id: String,
}

impl Gateway {
    /// Registers the protocol agent of `config` on `log`'s connection: the `agents` micro
    /// service with its `prompt` and `status` endpoints. Prompts wait until [`Gateway::serve`].
    pub async fn start(log: EventLog, config: GatewayConfig) -> Result<Self, AgentError> {
        let setup = |what: &'static str| {
            move |e: async_nats::Error| AgentError::Setup {
                what,
                reason: e.to_string(),
            }
        };
        let address = config.address.clone();
        let metadata: HashMap<String, String> = [
            ("agent", address.agent()),
            ("owner", address.owner()),
            ("session", address.session()),
            ("protocol_version", sap::PROTOCOL_VERSION),
            ("murmur.realm", log.realm().as_str()),
            ("murmur.capability", config.capability.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let endpoint_metadata: HashMap<String, String> =
            [("max_payload", "512KiB"), ("attachments_ok", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let service = log
            .client()
            .service_builder()
            .description(config.description.clone())
            .metadata(metadata)
            .start(sap::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await
            .map_err(setup("agent protocol service"))?;
        let prompts = service
            .endpoint_builder()
            .name("prompt")
            .queue_group(sap::QUEUE_GROUP)
            .metadata(endpoint_metadata.clone())
            .add(address.prompt_subject())
            .await
            .map_err(setup("prompt endpoint"))?;
        let statuses = service
            .endpoint_builder()
            .name("status")
            .queue_group(sap::QUEUE_GROUP)
            .add(address.status_subject())
            .await
            .map_err(setup("status endpoint"))?;
        let instance_id = service.info().await.id;
        // Registered at the server before anyone is told: a caller that discovers it at
        // once finds it.
        log.client()
            .flush()
            .await
            .map_err(|e| setup("agent protocol service")(e.into()))?;
        Ok(Self {
            log,
            config,
            service,
            prompts,
            statuses,
            endpoint_metadata,
            instance_id,
        })
    }

    /// The micro-service instance id (its heartbeats' `instance_id`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Serves until `shutdown`: beats, answers `status`, and answers each prompt by
    /// submitting a task as the log's identity (a submitter) and streaming its result.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<GatewayStats, AgentError> {
        let (log, config, address) = (&self.log, &self.config, &self.config.address);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let mut stats = GatewayStats::default();
        let mut beat = tokio::time::interval(config.heartbeat);
        let nonces = std::sync::Arc::new(std::sync::Mutex::new(NonceWindow::default()));
        let heartbeat = |id: &str, metadata: &HashMap<String, String>| {
            heartbeat_payload(address, id, config.heartbeat, metadata, chrono::Utc::now())
                .to_string()
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = beat.tick() => {
                    let payload = heartbeat(&self.instance_id, &self.endpoint_metadata);
                    if let Err(e) = log.client().publish(address.heartbeat_subject(), payload.into()).await {
                        tracing::warn!(error = %e, "protocol heartbeat not sent");
                    }
                }
                Some(request) = self.statuses.next() => {
                    let payload = heartbeat(&self.instance_id, &self.endpoint_metadata);
                    if let Err(e) = request.respond(Ok(payload.into())).await {
                        tracing::debug!(error = %e, "status reply failed");
                    }
                }
                Some(request) = self.prompts.next() => {
                    let (log, config, done) = (log.clone(), config.clone(), done_tx.clone());
                    let nonces = nonces.clone();
                    tokio::spawn(async move {
                        let ok = answer(&log, &config, &request, &nonces).await;
                        // The terminator ends every stream, answered or failed.
                        if let Err(e) = request.respond(Ok(Bytes::new())).await {
                            tracing::debug!(error = %e, "terminator not sent");
                        }
                        let _ = done.send(ok);
                    });
                }
                Some(ok) = done_rx.recv() => {
                    if ok { stats.answered += 1 } else { stats.failed += 1 }
                }
            }
        }
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "agent protocol service stop");
        }
        Ok(stats)
    }
}

/// Who sent `message`, from its `Agent-Sender` header: `None` without one (or with a
/// version this side does not know); a claim unverified; a signed header verified live
/// against `nonces`.
pub fn prompt_sender(
    message: &async_nats::Message,
    now: chrono::DateTime<chrono::Utc>,
    nonces: &mut NonceWindow,
) -> Result<Option<PromptSender>, SenderError> {
    let Some(headers) = &message.headers else {
        return Ok(None);
    };
    let mut values = headers.get_all(agent_sender::HEADER);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SenderError::Malformed(
            "more than one Agent-Sender value".into(),
        ));
    }
    match agent_sender::parse(value.as_str())? {
        Some(header) => agent_sender::verify(
            &header,
            message.subject.as_str(),
            &message.payload,
            now,
            nonces,
        )
        .map(Some),
        None => Ok(None),
    }
}

/// Answers one prompt (all but the terminator); whether it succeeded.
async fn answer(
    log: &EventLog,
    config: &GatewayConfig,
    request: &async_nats::service::Request,
    nonces: &std::sync::Mutex<NonceWindow>,
) -> bool {
    let fail = |code: usize, status: String| async move {
        tracing::info!(code, %status, "prompt answered with an error");
        let error = async_nats::service::error::Error { status, code };
        if let Err(e) = request.respond(Err(error)).await {
            tracing::debug!(error = %e, "error frame not sent");
        }
        false
    };
    let sender = match nonces.lock() {
        Ok(mut nonces) => prompt_sender(&request.message, chrono::Utc::now(), &mut nonces),
        Err(_) => Err(SenderError::Rejected("the nonce window is unusable".into())),
    };
    let sender = match sender {
        Ok(sender) => sender,
        Err(e) => return fail(e.code(), e.to_string()).await,
    };
    let prompt = match parse_prompt(&request.message.payload) {
        Ok(p) => p,
        Err(e) => return fail(400, e.to_string()).await,
    };
    if request.respond(Ok(ack_chunk())).await.is_err() {
        return false;
    }
    match run_prompt(log, config, request, &prompt, sender).await {
        Ok(()) => true,
        Err((code, status)) => fail(code, status).await,
    }
}

/// Submits the prompt as a task and streams its answer.
async fn run_prompt(
    log: &EventLog,
    config: &GatewayConfig,
    request: &async_nats::service::Request,
    prompt: &Prompt,
    sender: Option<PromptSender>,
) -> Result<(), (usize, String)> {
    let internal = |e: &dyn std::fmt::Display| (500, e.to_string());
    let id = Token::new(format!("prompt-{}", uuid::Uuid::now_v7().simple()))
        .map_err(|e| internal(&e))?;
    // A request to the orchestrator is held for its whole plan, and never retried: its
    // steps are already in the log.
    let asks = config.capability == crate::assistant::ASK_CAPABILITY;
    let submitted = TaskSubmitted {
        capability: config.capability.clone(),
        input: task_input(&config.capability, prompt, config.max_tokens),
        labels: config.labels.clone(),
        sender,
        max_attempts: asks.then_some(1),
        lease_ms: asks.then_some(config.prompt_timeout.as_millis() as u64),
        ..Default::default()
    };
    let mut run = TaskRun::submit(log, id, &submitted, config.prompt_timeout)
        .await
        .map_err(|e| internal(&e))?;
    tracing::debug!(task = run.id(), "prompt submitted");
    let mut sent = String::new();
    let mut held: Option<String> = None;
    loop {
        match run.next().await {
            Err(e @ FollowError::TimedOut { .. }) => return Err((504, e.to_string())),
            Err(e) => return Err(internal(&e)),
            Ok(RunEvent::Progress(TaskProgress {
                message: Some(text),
                ..
            })) => {
                if !progress_is_output(&config.capability) {
                    continue;
                }
                if let Some(new) = confirmed(&sent, held.as_deref(), &text) {
                    request
                        .respond(Ok(response_chunk(new)))
                        .await
                        .map_err(|e| internal(&e))?;
                    sent.push_str(new);
                }
                held = Some(text);
            }
            Ok(RunEvent::Progress(_)) => {}
            Ok(RunEvent::Question(question)) => {
                let answer = ask_caller(log, config, request, &question).await?;
                run.answer(&question.id, &answer)
                    .await
                    .map_err(|e| internal(&e))?;
            }
            Ok(RunEvent::Ended(task)) => {
                let id = run.id();
                return match &task.state {
                    TaskState::Completed { .. } => {
                        let text =
                            answer_text(task.output.as_ref().unwrap_or(&serde_json::Value::Null));
                        let rest = match unsent(&sent, &text) {
                            Some(rest) => rest.to_string(),
                            // The output does not continue what was streamed: send it whole.
                            None if sent != text => text,
                            None => String::new(),
                        };
                        if !rest.is_empty() {
                            request
                                .respond(Ok(response_chunk(&rest)))
                                .await
                                .map_err(|e| internal(&e))?;
                        }
                        Ok(())
                    }
                    TaskState::Cancelled => Err((500, format!("task {id} was cancelled"))),
                    _ => Err((
                        500,
                        format!("task {id} failed: {}", task.failures.join("; ")),
                    )),
                };
            }
        }
    }
}

/// Puts the attempt's question to the protocol caller as a `query` chunk and returns its
/// reply (plain text, or an envelope's `prompt`), waiting at most the prompt's timeout.
async fn ask_caller(
    log: &EventLog,
    config: &GatewayConfig,
    request: &async_nats::service::Request,
    question: &murmur_coordination::tasks::TaskQuestion,
) -> Result<String, (usize, String)> {
    let internal = |e: &dyn std::fmt::Display| (500, e.to_string());
    let inbox = sap::sdk_inbox();
    let mut replies = log
        .client()
        .subscribe(inbox.clone())
        .await
        .map_err(|e| internal(&e))?;
    request
        .respond(Ok(query_chunk(&question.id, &inbox, &question.prompt)))
        .await
        .map_err(|e| internal(&e))?;
    let reply = tokio::time::timeout(config.prompt_timeout, replies.next())
        .await
        .map_err(|_| {
            (
                504,
                format!(
                    "no reply to the question {:?} within {:?}",
                    question.prompt, config.prompt_timeout
                ),
            )
        })?
        .ok_or_else(|| internal(&"the reply subscription ended"))?;
    let answer = parse_prompt(&reply.payload).map_err(|e| (400, e.to_string()))?;
    Ok(answer.prompt)
}

/// What a bridge signs its prompts' `Agent-Sender` header with.
#[derive(Clone)]
pub struct PromptSigner {
    /// The bridge's identity: its user nkey is the header's `user`.
    pub identity: murmur_subjects::Identity,
    /// The connection's account, as the server reports it ([`connection_account`]).
    pub account: String,
    /// The display name.
    pub name: String,
}

impl std::fmt::Debug for PromptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptSigner")
            .field("user", &self.identity.public_key())
            .field("account", &self.account)
            .field("name", &self.name)
            .finish()
    }
}

/// The account of this connection as the server reports it (`$SYS.REQ.USER.INFO`, what
/// the protocol's SDKs ask); `None` where the server does not answer (no system account,
/// no permission).
pub async fn connection_account(client: &async_nats::Client) -> Option<String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$SYS.REQ.USER.INFO", Bytes::new()),
    )
    .await
    .ok()?
    .ok()?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    info["data"]["account"].as_str().map(str::to_string)
}

/// A protocol agent found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Its name (`metadata.agent`).
    pub agent: String,
    /// Its owner.
    pub owner: String,
    /// Its micro-service instance id.
    pub instance_id: String,
    /// Where it takes prompts (from its `$SRV.INFO`, as the protocol says to read it).
    pub prompt_subject: String,
    /// Its description.
    pub description: String,
    /// `metadata.protocol_version`.
    pub protocol_version: String,
}

/// Reads one `$SRV.INFO` reply as a protocol agent: `None` unless it is the `agents`
/// service with `agent`, `owner` and `protocol_version` metadata and a `prompt` endpoint.
pub fn discovered(info: &serde_json::Value) -> Option<Discovered> {
    if info.get("name")?.as_str()? != sap::SERVICE_NAME {
        return None;
    }
    let meta = info.get("metadata")?;
    let text = |v: &serde_json::Value, key: &str| v.get(key)?.as_str().map(str::to_string);
    let prompt = info
        .get("endpoints")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("prompt"))?;
    Some(Discovered {
        agent: text(meta, "agent")?,
        owner: text(meta, "owner")?,
        protocol_version: text(meta, "protocol_version")?,
        instance_id: text(info, "id").unwrap_or_default(),
        prompt_subject: text(prompt, "subject")?,
        description: text(info, "description").unwrap_or_default(),
    })
}

/// Asks every protocol agent for its `$SRV.INFO` and returns the first named `agent`
/// (owned by `owner` when given) among the replies that come within `window`.
pub async fn discover(
    client: &async_nats::Client,
    agent: &str,
    owner: Option<&str>,
    window: Duration,
) -> Result<Option<Discovered>, AgentError> {
    let failed = |e: &dyn std::fmt::Display| AgentError::Setup {
        what: "agent protocol discovery",
        reason: e.to_string(),
    };
    let inbox = sap::sdk_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(&e))?;
    client
        .publish_with_reply(sap::DISCOVERY_SUBJECT, inbox, Bytes::new())
        .await
        .map_err(|e| failed(&e))?;
    client.flush().await.map_err(|e| failed(&e))?;
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(reply)) = tokio::time::timeout_at(until, replies.next()).await {
        let Ok(info) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
            continue;
        };
        if let Some(found) = discovered(&info)
            && found.agent == agent
            && owner.is_none_or(|o| o == found.owner)
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// One message of a prompt's answer stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Part of the answer.
    Response(String),
    /// A status (`ack`, keep-alive).
    Status(String),
    /// The agent asks the caller something mid-stream; the answer goes to `reply_subject`.
    Query {
        /// The question's id.
        id: String,
        /// Where the caller answers.
        reply_subject: String,
        /// What is asked.
        prompt: String,
    },
    /// The agent's error (`Nats-Service-Error-Code`, `Nats-Service-Error`).
    Error(String, String),
    /// No one serves the prompt subject.
    NoResponders,
    /// The empty message without headers: the end.
    End,
    /// A chunk of a type this side does not know (ignored, as the protocol says).
    Unknown,
}

/// Reads one message of an answer stream.
pub fn read_chunk(message: &async_nats::Message) -> Chunk {
    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Chunk::NoResponders;
    }
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    if let Some(code) = header("Nats-Service-Error-Code") {
        return Chunk::Error(code, header("Nats-Service-Error").unwrap_or_default());
    }
    if message.payload.is_empty() && message.headers.as_ref().is_none_or(|h| h.is_empty()) {
        return Chunk::End;
    }
    let Ok(chunk) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
        return Chunk::Unknown;
    };
    let data = |key: &str| {
        chunk
            .get(key)
            .and_then(|d| d.as_str())
            .unwrap_or_default()
            .to_string()
    };
    match chunk.get("type").and_then(|t| t.as_str()) {
        Some("response") => Chunk::Response(data("data")),
        Some("status") => Chunk::Status(data("data")),
        Some("query") => {
            let field = |key: &str| {
                chunk
                    .get("data")
                    .and_then(|d| d.get(key))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            Chunk::Query {
                id: field("id"),
                reply_subject: field("reply_subject"),
                prompt: field("prompt"),
            }
        }
        _ => Chunk::Unknown,
    }
}

/// The prompt text a task's input becomes: its `text` or `prompt`, the last message's
/// `content` of a chat, or the input as JSON.
pub fn prompt_text(input: &serde_json::Value) -> String {
    let text = |key: &str| input.get(key).and_then(|t| t.as_str()).map(str::to_string);
    text("text")
        .or_else(|| text("prompt"))
        .or_else(|| crate::assistant::last_message(input).map(str::to_string))
        .unwrap_or_else(|| input.to_string())
}

/// Runs each attempt by prompting `target`: every `response` chunk is reported as progress
/// (the answer so far), and the attempt completes with `{"text", "agent", "instance"}`.
/// A question mid-stream is asked of the task's submitter (`task.question_asked`) and its
/// answer sent back. An error from the agent, no responder, `inactivity` without a message
/// (or without an answer to a question) fails the attempt with the reason.
pub fn bridge_handler(
    client: async_nats::Client,
    target: Discovered,
    inactivity: Duration,
    signer: Option<PromptSigner>,
) -> crate::worker::Handler {
    crate::worker::handler(move |ctx| {
        let (client, target, signer) = (client.clone(), target.clone(), signer.clone());
        async move {
            let failed = |e: &dyn std::fmt::Display| format!("prompting {}: {e}", target.agent);
            let inbox = sap::sdk_inbox();
            let mut replies = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| failed(&e))?;
            let body = serde_json::json!({ "prompt": prompt_text(&ctx.input) }).to_string();
            let mut headers = async_nats::HeaderMap::new();
            if let Some(signer) = &signer {
                let header = agent_sender::sign(
                    &signer.identity,
                    &signer.account,
                    Some(&signer.name),
                    &target.prompt_subject,
                    body.as_bytes(),
                    chrono::Utc::now(),
                    &uuid::Uuid::new_v4().simple().to_string(),
                );
                headers.insert(
                    agent_sender::HEADER,
                    agent_sender::serialize(&header).as_str(),
                );
            }
            client
                .publish_with_reply_and_headers(
                    target.prompt_subject.clone(),
                    inbox,
                    headers,
                    body.into(),
                )
                .await
                .map_err(|e| failed(&e))?;
            let mut answer = String::new();
            loop {
                let message = tokio::time::timeout(inactivity, replies.next())
                    .await
                    .map_err(|_| failed(&format!("nothing for {inactivity:?}")))?
                    .ok_or_else(|| failed(&"the reply subscription ended"))?;
                match read_chunk(&message) {
                    Chunk::Response(text) => {
                        answer.push_str(&text);
                        ctx.progress.report(None, None, Some(answer.clone()));
                    }
                    Chunk::End => break,
                    Chunk::Error(code, status) => {
                        return Err(failed(&format!("error {code}: {status}")));
                    }
                    Chunk::NoResponders => {
                        return Err(failed(&format!("no one serves {}", target.prompt_subject)));
                    }
                    Chunk::Query {
                        reply_subject,
                        prompt,
                        ..
                    } => {
                        // The task's submitter answers, through the log.
                        let answer = ctx
                            .questions
                            .ask(&prompt, inactivity)
                            .await
                            .map_err(|e| failed(&e))?;
                        client
                            .publish(reply_subject, answer.into())
                            .await
                            .map_err(|e| failed(&e))?;
                    }
                    Chunk::Status(_) | Chunk::Unknown => {}
                }
            }
            Ok(serde_json::json!({
                "text": answer,
                "agent": target.agent,
                "instance": target.instance_id,
            }))
        }
    })
}

#[cfg(test)]
mod tests;
