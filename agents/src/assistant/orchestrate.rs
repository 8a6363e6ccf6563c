//! One request run as its plan, by whoever runs it: an orchestrator agent for each
//! `assistant.ask` task ([`orchestrator_handler`]), or the asker itself ([`ask_on`]). The
//! steps are submitted and followed as tasks, a risky step is put to a vote first, and the
//! assistant's memory is read and written. [`hand_over`] is the asker's side of a request
//! an orchestrator runs.

use std::time::{Duration, Instant};

use murmur_coordination::registry::LiveRegistry;
use murmur_coordination::tasks::{Task, TaskProjection, TaskState};
use murmur_knowledge::{FactDraft, KnowledgeReplica, ReplicaConfig, Value};
use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, EventLog, Projector, Token};

use crate::assistant::{self, ToolCall};

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// The question is empty.
    #[error("the question is empty")]
    EmptyQuestion,
    /// A tool allowed by name does not exist.
    #[error("--allow {tool}: no such tool (tools: {tools})")]
    UnknownTool {
        /// The name.
        tool: String,
        /// The tools there are.
        tools: String,
    },
    /// The planning step wrote a call that cannot run.
    #[error("step {step} planned a call that cannot run: {source}")]
    Plan {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: assistant::PlanError,
    },
    /// A step (or the orchestrator's request) ended without completing, or not in time.
    #[error("{0}")]
    Step(String),
    /// A risky step could not be put to a vote, or its vote was not decided.
    #[error("{0}")]
    Approval(String),
    /// The log.
    #[error(transparent)]
    Log(#[from] murmur_subjects::LogError),
    /// Following a task.
    #[error(transparent)]
    Follow(#[from] murmur_coordination::follow::FollowError),
    /// The assistant's knowledge space.
    #[error(transparent)]
    Knowledge(#[from] murmur_knowledge::KnowledgeError),
    /// An output offloaded to the artifact store.
    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),
    /// A name that is not a token.
    #[error(transparent)]
    Token(#[from] murmur_subjects::subject::SubjectError),
    /// A payload that is not what it should be.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Tells `narrator` one line, formatted.
macro_rules! say {
    ($narrator:expr, $($arg:tt)*) => {
        $narrator.say(format!($($arg)*))
    };
}

/// Where a request's step lines go: stderr as they happen for `murmur ask` run in this
/// process; the task's progress for an orchestrator agent (each report holds every line so
/// far, so a reader that missed one misses nothing).
pub struct Narrator {
    echo: bool,
    progress: Option<crate::worker::Progress>,
    lines: std::sync::Mutex<Vec<String>>,
}

impl Narrator {
    /// Lines printed on stderr.
    pub fn stderr() -> Self {
        Self {
            echo: true,
            progress: None,
            lines: Default::default(),
        }
    }

    /// Lines reported as an attempt's progress.
    pub fn progress(progress: crate::worker::Progress) -> Self {
        Self {
            echo: false,
            progress: Some(progress),
            lines: Default::default(),
        }
    }

    /// Tells one line.
    pub fn say(&self, line: String) {
        if self.echo {
            eprintln!("{line}");
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.push(line);
        if let Some(progress) = &self.progress {
            progress.report(Some(lines.len() as u64), None, Some(lines.join("\n")));
        }
    }

    /// Every line told so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Who approves a risky step, and how long the step waits.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Online agents offering this capability vote.
    pub capability: Option<String>,
    /// These participants vote.
    pub keys: Vec<String>,
    /// The proposal's deadline, from when it is opened.
    pub timeout: Duration,
}

/// How [`ask_on`] asks.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// Only inference agents with these labels run the model steps.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Longest a step may take.
    pub step_timeout: Duration,
    /// Reuse an answer to the same question given this recently; `None`: no cache.
    pub cache_ttl: Option<Duration>,
    /// The tools a plan may call ([`assistant::default_allowed`] and what is added).
    pub allowed: std::collections::BTreeSet<String>,
    /// Who approves risky steps.
    pub approval: Approval,
    /// The conversation so far (`murmur chat`).
    pub history: Vec<assistant::Turn>,
    /// The request's id (`ask-` and a UUID when `None`).
    pub request_id: Option<String>,
    /// The event the first step follows, with its correlation id (an orchestrator's
    /// attempt), so the steps share the request task's correlation.
    pub caused_by: Option<(String, String)>,
}

impl AskOptions {
    /// The options `request` asks for; refuses a tool that does not exist.
    pub fn from_request(request: &assistant::AskRequest) -> Result<Self, AskError> {
        for tool in &request.allow {
            if !assistant::TOOLS.iter().any(|t| t.name == tool) {
                return Err(AskError::UnknownTool {
                    tool: tool.clone(),
                    tools: assistant::TOOLS
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(Self {
            labels: request.labels.clone(),
            step_timeout: Duration::from_secs(request.step_timeout_s),
            // A follow-up's answer depends on the conversation: never cached.
            cache_ttl: (!request.no_cache && request.history.is_empty())
                .then(|| Duration::from_secs(request.cache_ttl_s)),
            allowed: assistant::default_allowed()
                .into_iter()
                .chain(request.allow.iter().cloned())
                .collect(),
            approval: Approval {
                capability: Some(request.approvers_capability.clone()).filter(|c| !c.is_empty()),
                keys: request.approvers.clone(),
                timeout: Duration::from_secs(request.approval_timeout_s),
            },
            history: request.history.clone(),
            request_id: None,
            caused_by: None,
        })
    }
}

/// What one request produced (an orchestrator's task output).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The request's id (its steps' id prefix).
    pub request: String,
    /// The planned call.
    pub call: ToolCall,
    /// The tool's output, when one ran.
    pub tool_output: Option<serde_json::Value>,
    /// The answer's text.
    pub text: String,
    /// The earlier request whose answer was reused (a cache hit).
    pub cached_from: Option<String>,
    /// The lines told while it ran.
    #[serde(default)]
    pub told: Vec<String>,
}

/// What one asking participant keeps across its requests, so that each reads only what the
/// log gained since the one before: the live agent registry and the assistant's memory (its
/// knowledge space, opened on first use and brought up to date before each use). An
/// orchestrator agent keeps one for all the requests it runs, `murmur chat` one for the
/// conversation.
pub struct AskSession {
    registry: LiveRegistry,
    memory: tokio::sync::Mutex<Option<KnowledgeReplica>>,
}

impl AskSession {
    /// A session of the participant `log` signs for; nothing is read until a request asks.
    pub fn new(log: EventLog) -> Self {
        Self {
            registry: LiveRegistry::new(log),
            memory: tokio::sync::Mutex::new(None),
        }
    }

    /// The agents online, as of each question.
    pub fn registry(&self) -> &LiveRegistry {
        &self.registry
    }

    /// The assistant's memory: opened on first use; after that, with `refresh`, brought up
    /// to date (only what is new read): a cache check must see every earlier answer, a
    /// write need not (Automerge merges it either way). Held for one cache check or one
    /// write, not for a whole request, so requests run side by side. A failed refresh drops
    /// the replica, so the next use opens it afresh.
    async fn memory(
        &self,
        log: &EventLog,
        refresh: bool,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, KnowledgeReplica>, AskError> {
        let mut held = self.memory.lock().await;
        let fresh = match held.take() {
            Some(replica) if !refresh => Ok(replica),
            Some(mut replica) => replica
                .refresh()
                .await
                .map(|_| replica)
                .map_err(AskError::from),
            None => memory(log).await,
        };
        *held = Some(fresh?);
        tokio::sync::MutexGuard::try_map(held, Option::as_mut)
            .map_err(|_| AskError::Step("the assistant's memory was not kept".into()))
    }
}

/// Runs `question` as its plan, as the participant `log` signs for: plans, runs the tool the
/// plan calls, answers, each step a task submitted to `log`'s realm; `narrator` is told each
/// step as it ends. A question answered within the cache's lifetime is answered again from memory (the
/// `assistant` knowledge space), the hit recorded there; every new answer is remembered.
/// `session` holds what the asker keeps across requests.
pub async fn ask_on(
    log: &EventLog,
    session: &AskSession,
    question: &str,
    options: &AskOptions,
    narrator: &Narrator,
) -> Result<Answer, AskError> {
    if question.trim().is_empty() {
        return Err(AskError::EmptyQuestion);
    }
    let log = log.clone();
    let request = options
        .request_id
        .clone()
        .unwrap_or_else(|| format!("ask-{}", uuid::Uuid::now_v7().simple()));
    say!(narrator, "request {request}");
    let registry = session.registry();
    // Memory is a help, not a condition: without it the request is answered uncached and
    // not remembered, and says why.
    let mut memory = match session.memory(&log, true).await {
        Ok(memory) => Some(memory),
        Err(e) => {
            say!(
                narrator,
                "[memory] not available ({e:#}): no cache, nothing remembered"
            );
            None
        }
    };
    // Requests that change something are never answered from the cache.
    let asks_to_change = assistant::rule_plan(question).is_some_and(|c| assistant::is_risky(&c));
    if let (Some(ttl), Some(memory)) = (
        options.cache_ttl.filter(|_| !asks_to_change),
        memory.as_mut(),
    ) {
        let query = assistant::cache_query(question, chrono::Utc::now(), ttl);
        let found = memory.query(assistant::MEMORY_SPACE, &query, None)?;
        if let Some((text, earlier)) = assistant::newest_answer(&found) {
            let mut hit = FactDraft::new(
                assistant::request_subject(&request),
                assistant::CACHE_HIT,
                Value::Ref(earlier.clone()),
            );
            hit.tags.insert(request.clone());
            let recorded = match memory.put(assistant::MEMORY_SPACE, &hit) {
                Ok(_) => memory.flush().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                say!(narrator, "[memory] the cache hit was not recorded: {e}");
            }
            say!(
                narrator,
                "[cache] the same question was answered by {earlier}: its answer, recorded as a cache hit (--no-cache asks again)"
            );
            return Ok(Answer {
                request,
                call: ToolCall {
                    tool: assistant::NO_TOOL.into(),
                    path: None,
                    text: None,
                    content: None,
                },
                tool_output: None,
                text,
                cached_from: Some(earlier),
                told: Vec::new(),
            });
        }
    }
    // The memory is let go while the steps run, and taken again to remember the answer.
    let remember = memory.is_some();
    drop(memory);
    let labels = options.labels.clone();
    let mut steps = Steps::new(&log, options.step_timeout, options.caused_by.clone());

    // A question that names its file or directory is planned by rule; others by the model.
    let (call, plan) = match assistant::rule_plan(question) {
        Some(call) => {
            say!(narrator, "[plan] {} by rule", serde_json::to_string(&call)?);
            (call, None)
        }
        None => {
            let plan_id = format!("{request}-plan");
            let plan_input = assistant::plan_input(question);
            steps
                .submit(&plan_id, "llm.generate", plan_input, labels.clone(), None)
                .await?;
            let plan = steps.finish(&plan_id).await?;
            let plan_output = output_of(&log, &plan).await?;
            let call = assistant::planned_call(&plan_output).map_err(|source| AskError::Plan {
                step: plan_id.clone(),
                source,
            })?;
            say!(
                narrator,
                "[plan] {} by model on {}",
                serde_json::to_string(&call)?,
                agent_of(&plan)
            );
            (call, Some(plan))
        }
    };

    // The safety gate: a tool outside the allowlist does not run; a risky one runs only
    // when a vote approves the step. Either way the plan goes on to the answer, told why.
    let refusal = if call.tool == assistant::NO_TOOL {
        None
    } else if !options.allowed.contains(&call.tool) {
        say!(
            narrator,
            "[safety] {} is not allowed here (ask with --allow {} to allow it)",
            call.tool,
            call.tool
        );
        Some(format!(
            "The step {}({}) was not run: the tool is not allowed.",
            call.tool,
            argument_of(&call)
        ))
    } else if assistant::is_risky(&call) {
        approve(&log, registry, &request, &call, &options.approval, narrator).await?
    } else {
        None
    };
    let refused = refusal.clone();
    let runs = if refusal.is_some() {
        None
    } else {
        assistant::tool_task(&call).map_err(|source| AskError::Plan {
            step: format!("{request}-tool"),
            source,
        })?
    };
    // A tool no online agent offers would wait out the step's time: a call the question
    // named is answered with what to start, a call the model guessed is dropped.
    let mut unserved = None;
    let runs = match runs {
        Some(task) if !registry.offers(task.capability).await? => {
            say!(
                narrator,
                "[tool] {} not run: no online agent offers {}",
                call.tool,
                task.capability
            );
            unserved = plan.is_none().then(|| {
                assistant::tool_failure(
                    &call,
                    &format!("no agent offering {} is online", task.capability),
                )
            });
            None
        }
        runs => runs,
    };
    let (cause, tool_output, tool_result) = match runs {
        None => (plan, None, refusal.or(unserved)),
        Some(task) => {
            let tool_id = format!("{request}-tool");
            steps
                .submit(
                    &tool_id,
                    task.capability,
                    task.input,
                    Default::default(),
                    plan.as_ref(),
                )
                .await?;
            // A tool that fails (a missing file, a refused path) is in the log with its
            // reason; the answer is still asked for, told what failed.
            match steps.finish(&tool_id).await {
                Ok(tool) => {
                    let output = output_of(&log, &tool).await?;
                    let summary = assistant::tool_summary(&call, &output);
                    say!(
                        narrator,
                        "[tool] {} by {}: {}",
                        call.tool,
                        agent_of(&tool),
                        summary
                            .lines()
                            .skip(1)
                            .take(1)
                            .collect::<Vec<_>>()
                            .join(" ")
                    );
                    (Some(tool), Some(output), Some(summary))
                }
                Err(failed) => {
                    say!(narrator, "[tool] {} failed: {failed:#}", call.tool);
                    let task = steps.task(&tool_id);
                    let reason = task
                        .as_ref()
                        .and_then(|t| t.failures.last().cloned())
                        .unwrap_or_else(|| format!("{failed:#}"));
                    // A call the question named is answered with its failure (the file is
                    // missing); a call the model guessed is dropped and the question
                    // answered from the model's own knowledge.
                    let told = plan
                        .is_none()
                        .then(|| assistant::tool_failure(&call, &reason));
                    (task, None, told)
                }
            }
        }
    };

    let answer_id = format!("{request}-answer");
    steps
        .submit(
            &answer_id,
            "llm.generate",
            assistant::answer_input(question, tool_result.as_deref(), &options.history),
            labels,
            cause.as_ref(),
        )
        .await?;
    let answered = steps.finish(&answer_id).await?;
    let output = output_of(&log, &answered).await?;
    let text = output
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| AskError::Step("the answering step's output has no text".into()))?
        .to_string();
    say!(narrator, "[answer] by {}", agent_of(&answered));
    // Remembered: the answer under its question (the cache), the whole request as an
    // episode.
    let mut answered_fact = FactDraft::new(
        assistant::question_subject(question),
        assistant::ANSWERED,
        Value::Text(text.clone()),
    );
    answered_fact.tags.insert(request.clone());
    answered_fact.source_event = Some(answered.last_event_id.clone());
    let episode = serde_json::json!({
        "question": question,
        "plan": call,
        "tool_result": tool_result,
        "answer": text,
    });
    let mut episode_fact = FactDraft::new(
        assistant::request_subject(&request),
        assistant::EPISODE,
        Value::Text(episode.to_string()),
    );
    episode_fact.tags.insert(request.clone());
    if remember {
        // Only an answer that changed nothing and was not refused is reused.
        let reusable =
            !assistant::is_risky(&call) && refused.is_none() && options.history.is_empty();
        let remembered = async {
            let mut memory = session.memory(&log, false).await?;
            if reusable {
                memory.put(assistant::MEMORY_SPACE, &answered_fact)?;
            }
            memory.put(assistant::MEMORY_SPACE, &episode_fact)?;
            memory.flush().await?;
            Ok::<_, AskError>(())
        }
        .await;
        if let Err(e) = remembered {
            say!(narrator, "[memory] the answer was not remembered: {e}");
        }
    }
    Ok(Answer {
        request,
        call,
        tool_output,
        text,
        cached_from: None,
        told: Vec::new(),
    })
}

/// What a call is about: its path or its text.
fn argument_of(call: &ToolCall) -> &str {
    call.path
        .as_deref()
        .or(call.text.as_deref())
        .unwrap_or_default()
}

/// "ended STATE: the last failure recorded", for a task that ended without completing.
fn how_it_ended(task: &Task) -> String {
    format!(
        "ended {}: {}",
        task.state.name(),
        task.failures
            .last()
            .map_or("no reason recorded", String::as_str)
    )
}

/// Puts a risky step to a vote and waits for the decision: `None` when approved, the
/// reason it does not run otherwise.
async fn approve(
    log: &EventLog,
    registry: &LiveRegistry,
    request: &str,
    call: &ToolCall,
    approval: &Approval,
    narrator: &Narrator,
) -> Result<Option<String>, AskError> {
    use murmur_coordination::consensus::ConsensusProjection;
    let mut voters: std::collections::BTreeMap<String, u32> =
        approval.keys.iter().map(|k| (k.clone(), 1)).collect();
    if let Some(capability) = &approval.capability {
        let online: Vec<String> = registry
            .now(|agents| {
                agents
                    .online_with(capability)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .await?;
        for id in online {
            voters.entry(id).or_insert(1);
        }
    }
    let what = format!("{}({})", call.tool, argument_of(call));
    if voters.is_empty() {
        say!(
            narrator,
            "[safety] {what} needs approval and nobody can give it"
        );
        return Ok(Some(format!(
            "The step {what} was not run: it needs approval, and no approver is online (voters offering {:?}, or --approver KEY).",
            approval.capability.as_deref().unwrap_or("")
        )));
    }
    let id = Token::new(format!("{request}-approval"))?;
    let opened = murmur_subjects::events::ProposalOpened {
        question: format!("assistant request {request}: run {what}?"),
        payload: serde_json::json!({"request": request, "call": call}),
        protocol: murmur_subjects::events::Protocol::SimpleMajority,
        voters,
        quorum: 1,
        deadline: chrono::Utc::now()
            + chrono::Duration::from_std(approval.timeout).unwrap_or(chrono::Duration::MAX),
        category: "assistant".into(),
        stimulus: 1.0,
    };
    murmur_coordination::consensus::check_proposal(&opened)
        .map_err(|e| AskError::Approval(format!("the approval cannot be put to a vote: {e}")))?;
    log.append_expected(
        Draft::new(id.clone(), &opened).map_err(murmur_subjects::LogError::from)?,
        Expected::NoEvents,
    )
    .await?;
    say!(
        narrator,
        "[safety] {what} changes things: held until a vote approves it (proposal {id}; `murmur vote cast {id} approve`)"
    );
    let mut fold = Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: log.realm().clone(),
        },
    );
    let until = tokio::time::Instant::now() + approval.timeout + Duration::from_secs(10);
    loop {
        fold.poll(Duration::from_millis(200)).await?;
        if let Some(p) = fold.state().proposals.get(id.as_str()) {
            if let Some(decided) = &p.decided {
                say!(narrator, "[safety] {id} {}", decided.outcome);
                return Ok((decided.outcome != "approved").then(|| {
                    format!(
                        "The step {what} was not run: the vote on it ended {}.",
                        decided.outcome
                    )
                }));
            }
            if let Some(reason) = &p.withdrawn {
                return Ok(Some(format!("The step {what} was not run: {reason}.")));
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(AskError::Step(format!(
                "{id} was not decided within {} s: is a tallier running (`murmur up` runs one)?",
                (approval.timeout + Duration::from_secs(10)).as_secs()
            )));
        }
    }
}

/// The assistant's knowledge space, opened (as its owner) on first use.
async fn memory(log: &EventLog) -> Result<KnowledgeReplica, AskError> {
    match murmur_knowledge::replica::open_space(
        log,
        assistant::MEMORY_SPACE,
        "the assistant's answers and episodes",
        1,
        murmur_knowledge::replica::DEFAULT_MAX_FACT_BYTES,
    )
    .await
    {
        Ok(_) | Err(murmur_knowledge::KnowledgeError::SpaceExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let replica =
        KnowledgeReplica::open(log.clone(), ReplicaConfig::space(assistant::MEMORY_SPACE)).await?;
    let me = log.identity().public_key().to_string();
    if let Some(space) = replica.base().space(assistant::MEMORY_SPACE)
        && !space.can_write(&me, u64::MAX)
    {
        return Err(AskError::Step(format!(
            "the `assistant` space is {}'s and this participant may not write it (its owner grants that: `murmur kb grant assistant {me}`)",
            space.owner
        )));
    }
    Ok(replica)
}

/// Submits steps and follows them in the task projection.
struct Steps<'a> {
    log: &'a EventLog,
    view: Projector<TaskProjection>,
    timeout: Duration,
    /// Correlation and cause of a step that follows no other step.
    origin: Option<(String, String)>,
}

impl<'a> Steps<'a> {
    fn new(log: &'a EventLog, timeout: Duration, origin: Option<(String, String)>) -> Self {
        Self {
            log,
            view: Projector::new(
                log.clone(),
                TaskProjection {
                    realm: log.realm().clone(),
                },
            ),
            timeout,
            origin,
        }
    }

    /// Submits step `id`; a later step is caused by the step before it (`after`), so the
    /// whole request shares one correlation id.
    async fn submit(
        &mut self,
        id: &str,
        capability: &str,
        input: serde_json::Value,
        labels: std::collections::BTreeMap<String, String>,
        after: Option<&Task>,
    ) -> Result<(), AskError> {
        let payload = TaskSubmitted {
            capability: capability.to_string(),
            input,
            labels,
            max_attempts: Some(2),
            lease_ms: Some(self.timeout.as_millis() as u64),
            ..Default::default()
        };
        let mut draft =
            Draft::new(Token::new(id)?, &payload).map_err(murmur_subjects::LogError::from)?;
        if let Some(parent) = after {
            draft = draft.caused_by_ids(&parent.correlation_id, &parent.last_event_id, None);
        } else if let Some((correlation, cause)) = &self.origin {
            draft = draft.caused_by_ids(correlation, cause, None);
        }
        self.log.append_expected(draft, Expected::NoEvents).await?;
        Ok(())
    }

    /// Step `id` as the log has it.
    fn task(&self, id: &str) -> Option<Task> {
        self.view.state().tasks.get(id).cloned()
    }

    /// Waits for step `id` to end; its task when it completed, the reason otherwise.
    async fn finish(&mut self, id: &str) -> Result<Task, AskError> {
        let began = Instant::now();
        loop {
            self.view.poll(Duration::from_millis(100)).await?;
            if let Some(task) = self
                .view
                .state()
                .tasks
                .get(id)
                .filter(|t| t.state.is_final())
            {
                return match &task.state {
                    TaskState::Completed { .. } => Ok(task.clone()),
                    _ => Err(AskError::Step(format!("step {id} {}", how_it_ended(task)))),
                };
            }
            if began.elapsed() > self.timeout {
                let state = self
                    .view
                    .state()
                    .tasks
                    .get(id)
                    .map_or("not in the log", |t| t.state.name());
                return Err(AskError::Step(format!(
                    "step {id} did not end within {} s (it is {state}): is an agent with its capability running? (`murmur agents ls`)",
                    self.timeout.as_secs()
                )));
            }
        }
    }
}

/// A completed task's output, fetched from the artifact store when it was offloaded.
pub async fn output_of(log: &EventLog, task: &Task) -> Result<serde_json::Value, AskError> {
    let output = task.output.clone().unwrap_or(serde_json::Value::Null);
    if output.get("offloaded").and_then(|o| o.as_bool()) != Some(true) {
        return Ok(output);
    }
    let reference: crate::artifacts::ArtifactRef =
        serde_json::from_value(output["artifact"].clone())?;
    let store = crate::artifacts::ArtifactStore::open(log).await?;
    Ok(serde_json::from_slice(&store.get(&reference).await?)?)
}

/// The first 12 characters of the agent that completed `task` (`?` otherwise).
pub fn agent_of(task: &Task) -> String {
    match &task.state {
        TaskState::Completed { agent } => agent.chars().take(12).collect(),
        _ => "?".into(),
    }
}

/// Submits `request` as an `assistant.ask` task for an orchestrator agent and follows it,
/// telling `on_line` each step line as it is reported, then who ran it.
pub async fn hand_over(
    log: &EventLog,
    request: &assistant::AskRequest,
    options: &AskOptions,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Answer, AskError> {
    use murmur_coordination::follow::{RunEvent, TaskRun};
    if request.question.trim().is_empty() {
        return Err(AskError::EmptyQuestion);
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
    let mut print_new = |told: &[String], on_line: &mut (dyn FnMut(&str) + Send)| {
        for line in told.iter().skip(printed) {
            on_line(line);
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
                print_new(&told, on_line);
            }
            // The orchestrator's plans ask nobody; a step that asks waits, then fails.
            RunEvent::Question(_) => {}
            RunEvent::Ended(task) => {
                let agent = agent_of(&task);
                return match &task.state {
                    TaskState::Completed { .. } => {
                        let answer: Answer = serde_json::from_value(output_of(log, &task).await?)
                            .map_err(|e| {
                            AskError::Step(format!(
                                "the orchestrator's output is not an answer: {e}"
                            ))
                        })?;
                        print_new(&answer.told, on_line);
                        on_line(&format!("[orchestrator] {id} run by {agent}"));
                        Ok(answer)
                    }
                    _ => Err(AskError::Step(format!(
                        "the orchestrator's request {id} {}",
                        how_it_ended(&task)
                    ))),
                };
            }
        }
    }
}

/// The worker handler of an orchestrator agent (`murmur agent run orchestrator`):
/// each `assistant.ask` task is a request run as [`ask_on`] runs it here, its steps
/// submitted as this agent and caused by the attempt, its lines reported as progress, the
/// [`Answer`] its output.
pub fn orchestrator_handler(log: EventLog) -> crate::worker::Handler {
    // One session for every request: each reads only the agent and memory events stored
    // since the last.
    let session = std::sync::Arc::new(AskSession::new(log.clone()));
    crate::worker::handler(move |ctx| {
        let log = log.clone();
        let session = session.clone();
        async move {
            let request: assistant::AskRequest = serde_json::from_value(ctx.input)
                .map_err(|e| format!("an assistant.ask task takes an AskRequest: {e}"))?;
            let mut options = AskOptions::from_request(&request).map_err(|e| format!("{e:#}"))?;
            options.request_id = Some(ctx.task.clone());
            options.caused_by = Some((ctx.correlation_id.clone(), ctx.started_id.clone()));
            let narrator = Narrator::progress(ctx.progress.clone());
            let mut answer = ask_on(&log, &session, &request.question, &options, &narrator)
                .await
                .map_err(|e| format!("{e:#}"))?;
            answer.told = narrator.lines();
            serde_json::to_value(answer).map_err(|e| e.to_string())
        }
    })
}
