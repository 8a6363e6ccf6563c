//! `murmur ask QUESTION`: the assistant. Each step of the plan is a task in the log, routed
//! by capability like any other: a planning step (`llm.generate`, its tool call constrained
//! to a JSON Schema), a tool step (`tool.fs`, `tool.memory` or `tool.exec`, run by a tool or
//! memory agent) when the plan calls one, and an answering step (`llm.generate`). The steps
//! share one correlation id and each names the event that caused it; their ids are the
//! request's id with `-plan`, `-tool` and `-answer` appended, which `--explain` reads back.
//! [`ask_on`] runs a plan; an orchestrator agent runs it for each `assistant.ask` task
//! ([`orchestrator_handler`]), and `murmur ask` hands the request to one when one is online
//! ([`ask_orchestrator`]), else runs it in this process. The decisions (prompts, schema,
//! the call → task mapping) are `murmur_agents::assistant`'s.

mod history;

use anyhow::Result;
use murmur_agents::assistant;
use murmur_subjects::EventLog;

use crate::settings::Settings;

use history::{explain, tasks_read};

pub use history::training_pairs;
pub use murmur_agents::assistant::orchestrate::{
    Answer, Approval, AskOptions, AskSession, Narrator, ask_on, orchestrator_handler,
};

/// Hands `request` to an online orchestrator agent, printing its step lines on stderr as
/// they come.
pub async fn ask_orchestrator(
    log: &EventLog,
    request: &assistant::AskRequest,
    options: &AskOptions,
) -> Result<Answer> {
    Ok(
        murmur_agents::assistant::orchestrate::hand_over(log, request, options, &mut |line| {
            eprintln!("{line}")
        })
        .await?,
    )
}

/// `murmur ask` arguments.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The question.
    #[arg(required_unless_present_any = ["explain", "export"])]
    pub question: Option<String>,
    /// Write every model step of earlier requests from the log as training data instead:
    /// one JSON object per line (`jsonl`) with the request, step, prompt messages, response,
    /// model hash and outcome.
    #[arg(long, value_name = "FORMAT", value_parser = ["jsonl"], conflicts_with_all = ["question", "explain"])]
    pub export: Option<String>,
    /// Print the steps of an earlier request (its id, as `murmur ask` printed it) from the
    /// log instead: each step's input, output, agent and timeline.
    #[arg(long, value_name = "REQUEST", conflicts_with = "question")]
    pub explain: Option<String>,
    /// How the question is asked.
    #[command(flatten)]
    pub how: HowToAsk,
}

/// `murmur chat` arguments: a conversation, one question per line of standard input.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// How each question is asked.
    #[command(flatten)]
    pub how: HowToAsk,
}

/// How `murmur ask` and `murmur chat` ask.
#[derive(Debug, Clone, clap::Args)]
pub struct HowToAsk {
    /// Only inference agents with this label run the model steps (key=value, repeatable),
    /// e.g. `model=SmolLM2 135M Instruct`.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Give up when a step has not ended after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub step_timeout_s: u64,
    /// Answer even a question asked before (within the cache's lifetime) from scratch.
    #[arg(long)]
    pub no_cache: bool,
    /// How long an answer is reused for the same question (normalized), in seconds.
    #[arg(long, default_value_t = 3600)]
    pub cache_ttl_s: u64,
    /// Also allow this tool (repeatable; `read_file`, `list_directory` and `search` always
    /// are). A tool that changes anything (`write_file`) still runs only once a vote
    /// approves the step.
    #[arg(long = "allow", value_name = "TOOL")]
    pub allow: Vec<String>,
    /// Who approves a risky step: the online agents offering this capability (e.g. policy
    /// voters, `murmur voter run`) …
    #[arg(long, default_value = "vote")]
    pub approvers_capability: String,
    /// … and these participants by public key (repeatable; they vote with `murmur vote
    /// cast`).
    #[arg(long = "approver", value_name = "KEY")]
    pub approvers: Vec<String>,
    /// How long a risky step waits for its vote, in seconds.
    #[arg(long, default_value_t = 300)]
    pub approval_timeout_s: u64,
    /// Run the plan in this process even when an orchestrator agent is online.
    #[arg(long)]
    pub local: bool,
}

impl HowToAsk {
    /// The request an orchestrator runs (or this process, with `--local`).
    fn request(&self, question: &str) -> Result<assistant::AskRequest> {
        Ok(assistant::AskRequest {
            labels: crate::cli::task::parse_labels(&self.labels)?,
            step_timeout_s: self.step_timeout_s,
            no_cache: self.no_cache,
            cache_ttl_s: self.cache_ttl_s,
            allow: self.allow.clone(),
            approvers_capability: self.approvers_capability.clone(),
            approvers: self.approvers.clone(),
            approval_timeout_s: self.approval_timeout_s,
            ..assistant::AskRequest::new(question)
        })
    }
}

/// Runs `murmur ask`.
pub async fn run(settings: &Settings, args: AskArgs) -> Result<()> {
    if let Some(request) = &args.explain {
        return explain(settings, request).await;
    }
    if args.export.is_some() {
        let log = settings.open_log("murmur-ask-export").await?;
        let view = tasks_read(&log).await?;
        for pair in training_pairs(view.state()) {
            out!("{}", serde_json::to_string(&pair)?);
        }
        return Ok(());
    }
    let question = args.question.as_deref().unwrap_or_default();
    let log = settings.open_log("murmur-ask").await?;
    let session = AskSession::new(log.clone());
    let answer = ask(&log, &session, &args.how.request(question)?, args.how.local).await?;
    out!("{}", answer.text.trim());
    Ok(())
}

/// Runs `murmur chat`: each line of standard input is a question asked with the
/// conversation so far; each answer is printed as it comes. Ends at end of input or `/exit`.
pub async fn chat(settings: &Settings, args: ChatArgs) -> Result<()> {
    use std::io::IsTerminal as _;
    use tokio::io::AsyncBufReadExt as _;
    let log = settings.open_log("murmur-chat").await?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("murmur chat: one question per line; /exit or ctrl-d ends");
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut history: Vec<assistant::Turn> = Vec::new();
    // One session for the conversation: each line reads only the agent and memory events
    // since the last.
    let session = AskSession::new(log.clone());
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let question = line.trim();
        if question.is_empty() {
            continue;
        }
        if question == "/exit" {
            break;
        }
        let mut request = args.how.request(question)?;
        request.history = history.clone();
        let answer = ask(&log, &session, &request, args.how.local).await?;
        out!("{}", answer.text.trim());
        history.push(assistant::Turn {
            question: question.to_string(),
            answer: answer.text.trim().to_string(),
        });
    }
    Ok(())
}

/// Asks `request`: plans, runs the tool the plan calls, answers; prints each step on
/// stderr as it ends. An online orchestrator agent runs the plan (unless `local`); else
/// this process does.
pub async fn ask(
    log: &EventLog,
    session: &AskSession,
    request: &assistant::AskRequest,
    local: bool,
) -> Result<Answer> {
    let options = AskOptions::from_request(request)?;
    if !local && session.registry().offers(assistant::ASK_CAPABILITY).await? {
        return ask_orchestrator(log, request, &options).await;
    }
    Ok(ask_on(
        log,
        session,
        &request.question,
        &options,
        &Narrator::stderr(),
    )
    .await?)
}
