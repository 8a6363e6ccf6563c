//! `murmur task`: submit, list, show, cancel, and task graphs (`watch` is in
//! [`super::task_watch`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use murmur_coordination::routing::validate_capability;
use murmur_subjects::Projector;

use crate::settings::Settings;

/// `murmur task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task.
    Submit(SubmitArgs),
    /// Follow a task until it ends: its states from the log and its running attempt's
    /// progress (an inference agent's text as it is generated); prints the output and exits
    /// 0 when it completed, 1 otherwise.
    Watch {
        /// Task id.
        id: String,
        /// Give up after this many seconds (default: wait until it ends).
        #[arg(long)]
        timeout_s: Option<u64>,
    },
    /// List tasks (replayed from the log), oldest first.
    Ls(crate::cli::task::TaskLsArgs),
    /// Task graphs.
    Graph {
        /// What to do.
        #[command(subcommand)]
        command: GraphCommand,
    },
    /// Show one task's timeline from the log.
    Show {
        /// Task id.
        id: String,
    },
    /// Answer a question the task's running attempt asked (`task watch` shows them); only
    /// the task's submitter may.
    Answer {
        /// Task id.
        id: String,
        /// The question's id.
        question: String,
        /// The answer.
        answer: String,
    },
    /// Cancel a task; a worker running it stops the attempt.
    Cancel {
        /// Task id.
        id: String,
        /// Why.
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
    },
}

/// `murmur task graph ...`
#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Validate a task graph file (JSON, or TOML by extension) and submit its tasks; children
    /// start when their parents complete and receive the parents' outputs.
    Submit {
        /// The graph file.
        file: PathBuf,
    },
}

/// `murmur task submit` arguments.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Capability it needs.
    #[arg(long)]
    capability: String,
    /// Input (JSON).
    #[arg(long, default_value = "null")]
    input: String,
    /// Priority (higher first).
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Attempts before dead-lettering.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Lease per attempt, ms.
    #[arg(long)]
    lease_ms: Option<u64>,
    /// A label key=value the agent must carry (repeatable), e.g. an inference agent's
    /// `model_sha256=…` or `model=…`.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The task's id (default `task-` and a UUID). Submitting an id that exists is refused,
    /// so a retried submit never makes a second task.
    #[arg(long)]
    id: Option<String>,
    /// Then watch it as `murmur task watch` does, until it ends.
    #[arg(long)]
    watch: bool,
}

/// `murmur task submit`: prints and returns the new task's id.
pub async fn submit(settings: &Settings, args: &SubmitArgs) -> Result<String> {
    validate_capability(&args.capability).map_err(anyhow::Error::msg)?;
    let labels = parse_labels(&args.labels)?;
    let input: serde_json::Value =
        serde_json::from_str(&args.input).context("--input is not JSON")?;
    let log = settings.open_log("murmur-task-submit").await?;
    let id = murmur_subjects::Token::new(match &args.id {
        Some(id) => id.clone(),
        None => format!("task-{}", uuid::Uuid::now_v7().simple()),
    })
    .context("--id is not a valid task id")?;
    let payload = murmur_subjects::events::TaskSubmitted {
        capability: args.capability.clone(),
        input,
        priority: args.priority,
        max_attempts: args.max_attempts,
        lease_ms: args.lease_ms,
        labels,
        ..Default::default()
    };
    log.append_expected(
        murmur_subjects::Draft::new(id.clone(), &payload)?,
        murmur_subjects::log::Expected::NoEvents,
    )
    .await
    .with_context(|| format!("submitting task {id} (an id that exists is refused)"))?;
    out!("{id}");
    Ok(id.as_str().to_string())
}

/// `--label key=value` arguments as a map.
pub fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for l in args {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label {l:?} is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// `murmur task ls` filters.
#[derive(Debug, Default, clap::Args)]
pub struct TaskLsArgs {
    /// Only tasks in this state (pending, assigned, running, completed, dead_lettered,
    /// cancelled; repeatable).
    #[arg(long = "state", value_parser = clap::builder::PossibleValuesParser::new(murmur_coordination::tasks::TaskState::NAMES))]
    pub states: Vec<String>,
    /// Only tasks needing this capability.
    #[arg(long)]
    pub capability: Option<String>,
    /// Only the tasks of this graph (the id `task graph submit` printed before each task).
    #[arg(long)]
    pub graph: Option<String>,
    /// Only the last N that match (tasks are listed oldest first).
    #[arg(long)]
    pub last: Option<usize>,
}

/// `murmur task ls`.
pub async fn task_ls(settings: &Settings, args: TaskLsArgs) -> Result<()> {
    let log = settings.open_log("murmur-task-ls").await?;
    let mut p = Projector::new(
        log,
        murmur_coordination::tasks::TaskProjection {
            realm: settings.realm.clone(),
        },
    );
    p.catch_up().await?;
    let book = p.state();
    let rows = task_rows(book, &args);
    if settings.json {
        // An array, in the order listed (a map would sort by id).
        let tasks: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|(id, t)| serde_json::json!({ "id": id, "task": t }))
            .collect();
        out!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("no tasks match in realm {}", settings.realm);
    }
    let width = rows.iter().map(|(id, _)| id.len()).max().unwrap_or(0);
    for (id, t) in rows {
        use murmur_coordination::tasks::TaskState;
        let who = match &t.state {
            TaskState::Assigned { agent, .. } | TaskState::Completed { agent } => {
                format!("  by {}", &agent[..agent.len().min(8)])
            }
            _ => String::new(),
        };
        out!(
            "{id:<width$}  {:<13} {:<20} attempt {}/{}  failures {}{who}",
            t.state.name(),
            t.requirements.capability,
            t.attempt,
            t.max_attempts,
            t.failures.len()
        );
    }
    Ok(())
}

/// The tasks `args` selects, in submission order (pure).
fn task_rows<'a>(
    book: &'a murmur_coordination::tasks::TaskBook,
    args: &TaskLsArgs,
) -> Vec<(&'a String, &'a murmur_coordination::tasks::Task)> {
    let graph_prefix = args.graph.as_ref().map(|g| format!("{g}-"));
    let mut rows: Vec<_> = book
        .tasks
        .iter()
        .filter(|(_, t)| args.states.is_empty() || args.states.iter().any(|s| s == t.state.name()))
        .filter(|(_, t)| {
            args.capability
                .as_ref()
                .is_none_or(|c| *c == t.requirements.capability)
        })
        .filter(|(id, _)| {
            graph_prefix
                .as_ref()
                .is_none_or(|g| id.starts_with(g.as_str()))
        })
        .collect();
    rows.sort_by_key(|(id, t)| (t.submitted_sequence, *id));
    if let Some(n) = args.last {
        rows.drain(..rows.len().saturating_sub(n));
    }
    rows
}

/// `murmur task show ID`: the task's timeline, every event of its aggregate in log order.
pub async fn task_show(settings: &Settings, id: &str) -> Result<()> {
    let log = settings.open_log("murmur-task-show").await?;
    let lines =
        crate::cli::events::aggregate_timeline(&log, murmur_subjects::Domain::Task, id).await?;
    if lines.is_empty() {
        bail!("no task {id} in realm {}", settings.realm);
    }
    for l in lines {
        out!("{l}");
    }
    Ok(())
}

/// A task graph file: TOML when its name ends in `.toml`, JSON otherwise.
fn parse_graph(
    file: &std::path::Path,
    text: &str,
) -> Result<murmur_coordination::graph::GraphSpec> {
    Ok(if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str(text).with_context(|| format!("parsing {}", file.display()))?
    } else {
        serde_json::from_str(text).with_context(|| format!("parsing {}", file.display()))?
    })
}

/// `murmur task cancel ID`.
pub async fn task_cancel(settings: &Settings, id: &str, reason: &str) -> Result<()> {
    let log = settings.open_log("murmur-task-cancel").await?;
    cancel_on(&log, id, reason).await?;
    out!("cancelled {id}");
    Ok(())
}

/// Task `id` as the task fold holds it at the log's end.
async fn task_as_of_now(
    log: &murmur_subjects::EventLog,
    id: &str,
) -> Result<murmur_coordination::tasks::Task> {
    let mut p = Projector::new(
        log.clone(),
        murmur_coordination::tasks::TaskProjection {
            realm: log.realm().clone(),
        },
    );
    p.catch_up().await?;
    p.state()
        .tasks
        .get(id)
        .cloned()
        .with_context(|| format!("no task {id}"))
}

/// `murmur task answer ID QUESTION TEXT`.
pub async fn task_answer(
    settings: &Settings,
    id: &str,
    question: &str,
    answer: &str,
) -> Result<()> {
    let log = settings.open_log("murmur-task-answer").await?;
    let task = task_as_of_now(&log, id).await?;
    let me = log.identity().public_key();
    if task.submitter != me {
        bail!(
            "only task {id}'s submitter ({}) answers its questions; these credentials are {me}",
            task.submitter
        );
    }
    if !task
        .questions
        .iter()
        .any(|q| q.id == question && q.answer.is_none())
    {
        let open: Vec<&str> = task
            .questions
            .iter()
            .filter(|q| q.answer.is_none())
            .map(|q| q.id.as_str())
            .collect();
        bail!(
            "task {id} has no open question {question} (open: {})",
            if open.is_empty() {
                "none".to_string()
            } else {
                open.join(", ")
            }
        );
    }
    let draft = murmur_subjects::Draft::new(
        murmur_subjects::Token::new(id)?,
        &murmur_subjects::events::TaskQuestionAnswered {
            question: question.to_string(),
            answer: answer.to_string(),
        },
    )?
    .caused_by_ids(
        task.correlation_id.clone(),
        task.last_event_id.clone(),
        None,
    );
    log.append(draft).await?;
    out!("answered {question} of {id}");
    Ok(())
}

/// Cancels task `id` on `log` as its identity (expected sequence: the task's last event).
pub async fn cancel_on(log: &murmur_subjects::EventLog, id: &str, reason: &str) -> Result<()> {
    let task = task_as_of_now(log, id).await?;
    if task.state.is_final() {
        bail!("task {id} is already {}", task.state.name());
    }
    let draft = murmur_subjects::Draft::new(
        murmur_subjects::Token::new(id)?,
        &murmur_subjects::events::TaskCancelled {
            reason: reason.to_string(),
        },
    )?
    .caused_by_ids(
        task.correlation_id.clone(),
        task.last_event_id.clone(),
        None,
    );
    log.append_expected(
        draft,
        murmur_subjects::log::Expected::LastSequence(task.last_sequence),
    )
    .await?;
    Ok(())
}

/// `murmur task graph submit FILE`.
pub async fn graph_submit(settings: &Settings, file: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec = parse_graph(file, &text)?;
    let log = settings.open_log("murmur-graph-submit").await?;
    let graph = format!("g{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    for (file_id, task_id) in
        murmur_coordination::submit::submit_graph(&log, &spec, &graph, None).await?
    {
        out!("{file_id}\t{task_id}");
    }
    eprintln!("graph {graph}: follow it with `murmur task ls --graph {graph}`");
    Ok(())
}

/// Runs `murmur task ...`.
pub async fn run(settings: &Settings, command: TaskCommand) -> Result<()> {
    match command {
        TaskCommand::Submit(args) => {
            let id = submit(settings, &args).await?;
            if args.watch {
                super::task_watch::run(settings, &id, None).await?;
            }
            Ok(())
        }
        TaskCommand::Watch { id, timeout_s } => {
            super::task_watch::run(settings, &id, timeout_s.map(Duration::from_secs)).await
        }
        TaskCommand::Ls(args) => task_ls(settings, args).await,
        TaskCommand::Show { id } => task_show(settings, &id).await,
        TaskCommand::Graph {
            command: GraphCommand::Submit { file },
        } => graph_submit(settings, &file).await,
        TaskCommand::Cancel { id, reason } => task_cancel(settings, &id, &reason).await,
        TaskCommand::Answer {
            id,
            question,
            answer,
        } => task_answer(settings, &id, &question, &answer).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ls_filters_by_state_capability_and_graph_in_submission_order() {
        use murmur_coordination::tasks::{Task, TaskBook, TaskState};
        let task = |seq: u64, capability: &str, state: TaskState| Task {
            submitter: "UA".into(),
            requirements: murmur_coordination::routing::Requirements {
                capability: capability.into(),
                ..Default::default()
            },
            priority: 0,
            max_attempts: 3,
            lease_ms: 1_000,
            attempt: 1,
            failures: vec![],
            state,
            submitted_sequence: seq,
            last_sequence: seq,
            input: serde_json::Value::Null,
            correlation_id: String::new(),
            last_event_id: String::new(),
            depends_on: vec![],
            fail_with_dependency: false,
            output: None,
            sender: None,
            questions: Vec::new(),
        };
        let done = || TaskState::Completed { agent: "UW".into() };
        let mut book = TaskBook::default();
        // Ids that sort the other way round from their submission.
        book.tasks
            .insert("z-first".into(), task(1, "test.run", done()));
        book.tasks
            .insert("g1-build".into(), task(2, "compiler.rust", done()));
        book.tasks
            .insert("a-third".into(), task(3, "test.run", TaskState::Cancelled));
        book.tasks.insert(
            "g1-test".into(),
            task(4, "test.run", TaskState::DeadLettered),
        );
        let ids = |args: TaskLsArgs| -> Vec<String> {
            task_rows(&book, &args)
                .into_iter()
                .map(|(id, _)| id.clone())
                .collect()
        };
        assert_eq!(
            ids(TaskLsArgs::default()),
            ["z-first", "g1-build", "a-third", "g1-test"]
        );
        let states = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            ids(TaskLsArgs {
                states: states(&["completed", "dead_lettered"]),
                ..Default::default()
            }),
            ["z-first", "g1-build", "g1-test"]
        );
        assert_eq!(
            ids(TaskLsArgs {
                capability: Some("test.run".into()),
                graph: Some("g1".into()),
                ..Default::default()
            }),
            ["g1-test"]
        );
        assert_eq!(
            ids(TaskLsArgs {
                last: Some(2),
                ..Default::default()
            }),
            ["a-third", "g1-test"]
        );
    }

    #[test]
    fn the_example_task_graph_is_a_valid_dag() {
        let path = std::path::Path::new("examples/task-graph.toml");
        let spec =
            parse_graph(path, include_str!("../../../examples/task-graph.toml")).expect("parses");
        let graph = murmur_coordination::graph::TaskGraph::new(&spec).expect("valid");
        assert_eq!(graph.ready(&Default::default()), vec!["fetch".to_string()]);
        let fetched = ["fetch".to_string()].into();
        assert_eq!(
            graph.ready(&fetched),
            vec!["build".to_string(), "lint".to_string()]
        );
    }
}
