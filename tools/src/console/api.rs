//! The console's JSON API: projections as of a sequence, one stored event verified, the
//! deployment generator, and actions taken with the caller's own credentials.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use murmur_coordination::consensus::{Consensus, ConsensusProjection};
use murmur_coordination::registry::{Registry, RegistryProjection};
use murmur_coordination::tasks::{Task, TaskBook, TaskProjection, TaskState};
use murmur_subjects::connect::{Auth, ConnectOptions};
use murmur_subjects::events::DeadLettered;
use murmur_subjects::{
    Domain, EventLog, Identity, Payload, Plane, Projector, StartAt, SubjectFilter, Token,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Console;

type Shared = State<Arc<Console>>;

/// An error the page shows as it is.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

type ApiResult = Result<Json<Value>, ApiError>;

#[derive(Debug, Deserialize)]
struct Freshness {
    /// Answer once the projection has applied the log through this sequence.
    #[serde(default)]
    at_least: u64,
}

pub(super) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/api/config", get(config))
        .route("/api/agents", get(agents))
        .route("/api/tasks", get(tasks))
        .route("/api/tasks/{id}", get(task))
        .route("/api/proposals", get(proposals))
        .route("/api/assistant", get(assistant))
        .route("/api/dead-letters", get(dead_letters))
        .route("/api/knowledge", get(knowledge))
        .route("/api/knowledge/{space}/{fact}", get(fact_history))
        .route("/api/events/{seq}", get(event))
        .route("/api/as-of/{seq}", get(as_of))
        .route("/api/flake", post(flake))
        .route("/api/actions/redrive", post(redrive))
        .route("/api/actions/cancel", post(cancel))
        .route("/api/actions/vote", post(vote))
        .route("/api/participants", post(enrol))
        .with_state(console)
}

async fn config(State(c): Shared) -> Json<Value> {
    Json(json!(c.config))
}

fn stale() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the console's projections stopped; restart murmur up".into(),
    )
}

fn answered(a: super::Answered) -> Json<Value> {
    let mut value = a.value;
    if let Some(o) = value.as_object_mut() {
        o.insert("position".into(), json!(a.position));
    }
    Json(value)
}

fn agents_json(registry: &Registry) -> Value {
    json!({
        "agents": registry
            .agents
            .iter()
            .map(|(id, a)| {
                let mut v = json!(a);
                v["id"] = json!(id);
                v
            })
            .collect::<Vec<_>>()
    })
}

async fn agents(State(c): Shared, Query(f): Query<Freshness>) -> ApiResult {
    let a = c
        .registry
        .ask(f.at_least, agents_json)
        .await
        .ok_or_else(stale)?;
    Ok(answered(a))
}

/// The agent a task is (or was last) with.
fn task_agent(t: &Task) -> Option<&str> {
    match &t.state {
        TaskState::Assigned { agent, .. } | TaskState::Completed { agent } => Some(agent),
        _ => None,
    }
}

fn task_row(id: &str, t: &Task) -> Value {
    json!({
        "id": id,
        "state": t.state.name(),
        "capability": t.requirements.capability,
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
        "priority": t.priority,
        "submitter": t.submitter,
        "agent": task_agent(t),
        "failures": t.failures.len(),
        "depends_on": t.depends_on,
        "submitted_sequence": t.submitted_sequence,
        "last_sequence": t.last_sequence,
    })
}

/// Tasks per state, in lifecycle order: `[[name, count], ...]` (the book's own counts, which
/// cost a pass over the open tasks only).
fn state_counts(book: &TaskBook) -> Vec<(&'static str, usize)> {
    let counts = book.counts();
    TaskState::NAMES
        .iter()
        .map(|n| (*n, counts.get(n).copied().unwrap_or(0)))
        .collect()
}

#[derive(Debug, Deserialize)]
struct TaskListQuery {
    #[serde(default)]
    at_least: u64,
    /// Only tasks in this state (a name `TaskState::name` gives).
    state: Option<String>,
    /// Only tasks whose id or capability contains this.
    text: Option<String>,
    /// Newest first; this many at most (default 200).
    limit: Option<usize>,
}

/// The newest `limit` tasks matching, and the counts per state of all of them.
fn task_list(book: &TaskBook, q: &TaskListQuery) -> Value {
    let mut rows: Vec<(&String, &Task)> = book
        .tasks
        .iter()
        .filter(|(id, t)| {
            q.state.as_deref().is_none_or(|s| t.state.name() == s)
                && q.text.as_deref().is_none_or(|text| {
                    id.contains(text) || t.requirements.capability.contains(text)
                })
        })
        .collect();
    let matching = rows.len();
    rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.submitted_sequence));
    rows.truncate(q.limit.unwrap_or(200));
    json!({
        "counts": state_counts(book),
        "total": book.tasks.len(),
        "matching": matching,
        "tasks": rows.iter().map(|(id, t)| task_row(id, t)).collect::<Vec<_>>(),
    })
}

async fn tasks(State(c): Shared, Query(q): Query<TaskListQuery>) -> ApiResult {
    let at_least = q.at_least;
    let a = c
        .tasks
        .ask(at_least, move |book| task_list(book, &q))
        .await
        .ok_or_else(stale)?;
    Ok(answered(a))
}

/// Most tasks of one graph the detail draws.
const GRAPH_LIMIT: usize = 500;

/// One task, and the graph it belongs to: every task connected to it by dependencies, either
/// way (the component of the dependency DAG), in id order.
fn task_detail(book: &TaskBook, id: &str) -> Value {
    let Some(t) = book.tasks.get(id) else {
        return json!({ "task": null });
    };
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (child, task) in &book.tasks {
        for parent in &task.depends_on {
            children.entry(parent).or_default().push(child);
        }
    }
    let mut component = std::collections::BTreeSet::from([id]);
    let mut frontier = vec![id];
    while let Some(at) = frontier.pop() {
        let parents = book
            .tasks
            .get(at)
            .map(|t| t.depends_on.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        let kids = children.get(at).cloned().unwrap_or_default();
        for next in parents.into_iter().chain(kids) {
            if component.len() < GRAPH_LIMIT && component.insert(next) {
                frontier.push(next);
            }
        }
    }
    let graph: Vec<Value> = component
        .iter()
        .filter_map(|id| book.tasks.get(*id).map(|t| task_row(id, t)))
        .collect();
    json!({ "task": t, "row": task_row(id, t), "graph": graph })
}

/// A stored message as the page lists it: decoded and verified, or the reason it is not.
fn event_row(log: &EventLog, stored: &murmur_subjects::StoredMessage) -> Value {
    let header = |name: &str| {
        stored
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    match log.decode_stored(&stored.message, stored.sequence, Some(stored.stored_at)) {
        Ok(e) => json!({
            "sequence": stored.sequence,
            "stored_at": stored.stored_at,
            "subject": stored.message.subject.as_str(),
            "type": e.record.ty,
            "id": e.record.id,
            "source": e.record.source,
            "verified": true,
            "signature": format!("valid Ed25519 signature by {}", e.emitter()),
        }),
        Err(error) => json!({
            "sequence": stored.sequence,
            "stored_at": stored.stored_at,
            "subject": stored.message.subject.as_str(),
            "type": header("ce-type"),
            "id": header("Nats-Msg-Id"),
            "source": header("ce-source"),
            "verified": false,
            "signature": format!("refused ({}): {error}", error.reason()),
        }),
    }
}

async fn task(State(c): Shared, Path(id): Path<String>, Query(f): Query<Freshness>) -> ApiResult {
    let token = Token::new(id.as_str()).map_err(|e| bad_request(e.to_string()))?;
    let lookup = id.clone();
    let mut a = c
        .tasks
        .ask(f.at_least, move |book| task_detail(book, &lookup))
        .await
        .ok_or_else(stale)?;
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(c.log.realm().clone())
        .domain(Domain::Task)
        .aggregate(token);
    let mut events = Vec::new();
    c.log
        .read(&filter, StartAt::Beginning, None, |stored| {
            events.push(event_row(&c.log, &stored));
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    a.value["events"] = json!(events);
    Ok(answered(a))
}

fn proposals_json(c: &Consensus) -> Value {
    json!({
        "proposals": c.proposals.iter().map(|(id, p)| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for choice in p.votes.values() {
                *counts.entry(format!("{choice:?}").to_lowercase()).or_default() += 1;
            }
            json!({
                "id": id,
                "opened": p.opened,
                "proposer": p.proposer,
                "electorate": p.electorate,
                "votes": p.votes,
                "reasons": p.reasons,
                "counts": counts,
                "refused": p.refused.iter().map(|(voter, why)| json!({"voter": voter, "reason": why.to_string()})).collect::<Vec<_>>(),
                "decided": p.decided,
                "withdrawn": p.withdrawn,
                "state": if p.decided.is_some() { "decided" } else if p.withdrawn.is_some() { "withdrawn" } else { "open" },
            })
        }).collect::<Vec<_>>(),
    })
}

/// Most assistant requests the view lists.
const ASSISTANT_LIMIT: usize = 100;

/// The assistant's requests, newest first: question, steps, answer
/// (`murmur_agents::assistant::requests`).
async fn assistant(State(c): Shared, Query(f): Query<Freshness>) -> ApiResult {
    let a = c
        .tasks
        .ask(f.at_least, |book| {
            json!({ "requests": murmur_agents::assistant::requests::requests(book, ASSISTANT_LIMIT) })
        })
        .await
        .ok_or_else(stale)?;
    Ok(answered(a))
}

async fn proposals(State(c): Shared, Query(f): Query<Freshness>) -> ApiResult {
    let a = c
        .consensus
        .ask(f.at_least, proposals_json)
        .await
        .ok_or_else(stale)?;
    Ok(answered(a))
}

async fn dead_letters(State(c): Shared) -> ApiResult {
    let filter = SubjectFilter::plane(Plane::Dlq).realm(c.log.realm().clone());
    let mut stored = Vec::new();
    c.log
        .read_dead_letters(&filter, StartAt::Beginning, None, |m| {
            stored.push(m);
            ControlFlow::Continue(())
        })
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let rows: Vec<Value> = stored
        .iter()
        .rev()
        .take(1000)
        .map(|m| {
            match c
                .log
                .decode_stored(&m.message, m.sequence, Some(m.stored_at))
            {
                Ok(ev) if ev.record.ty == DeadLettered::TYPE => match ev.payload::<DeadLettered>() {
                    Ok(d) => json!({
                        "sequence": m.sequence,
                        "stored_at": m.stored_at,
                        "reason": d.reason,
                        "detail": d.detail,
                        "original_subject": d.original_subject,
                        "original_size": d.original_size,
                        "sha256": d.sha256,
                        "body_base64": d.body_base64,
                        "prefix_base64": d.prefix_base64,
                        "redrivable": d.body_base64.is_some(),
                        "detected_by": d.detected_by,
                    }),
                    Err(e) => json!({"sequence": m.sequence, "error": e.to_string()}),
                },
                // The dead-letter plane's other records (a `sys.redriven` note).
                Ok(ev) => json!({
                    "sequence": m.sequence,
                    "stored_at": m.stored_at,
                    "type": ev.record.ty,
                    "data": ev.record.data.as_deref().and_then(|d| serde_json::from_slice::<Value>(d).ok()),
                }),
                Err(e) => json!({"sequence": m.sequence, "error": e.to_string()}),
            }
        })
        .collect();
    Ok(Json(json!({ "dead_letters": rows })))
}

async fn event(State(c): Shared, Path(seq): Path<u64>) -> ApiResult {
    let stored = c
        .log
        .history_at(seq)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no event at sequence {seq}")))?;
    let mut row = event_row(&c.log, &stored);
    let headers: BTreeMap<String, String> = stored
        .message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(k, vs)| {
            vs.iter()
                .map(move |v| (k.to_string(), v.as_str().to_string()))
        })
        .collect();
    row["headers"] = json!(headers);
    match c
        .log
        .decode_stored(&stored.message, seq, Some(stored.stored_at))
    {
        Ok(e) => {
            row["cloudevent"] = json!(e.record.to_cloudevent());
            row["correlation_id"] = json!(e.record.correlation_id);
            row["causation_id"] = json!(e.record.causation_id);
        }
        Err(_) => {
            row["data_text"] = json!(String::from_utf8_lossy(&stored.message.payload));
        }
    }
    Ok(Json(row))
}

/// Runs `read` on the console's knowledge replica, opened on first use and brought up to
/// date with the log first.
async fn with_knowledge<T>(
    c: &Console,
    read: impl FnOnce(&murmur_knowledge::KnowledgeReplica) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    use murmur_knowledge::{KnowledgeReplica, ReplicaConfig};
    let fail =
        |e: murmur_knowledge::KnowledgeError| ApiError(StatusCode::BAD_GATEWAY, e.to_string());
    let mut slot = c.knowledge.lock().await;
    let replica = match slot.as_mut() {
        Some(replica) => {
            replica.refresh().await.map_err(fail)?;
            replica
        }
        None => slot.insert(
            KnowledgeReplica::open(
                c.log.clone(),
                ReplicaConfig::all().compacting(false).dead_lettering(false),
            )
            .await
            .map_err(fail)?,
        ),
    };
    read(replica)
}

/// Every space with its owner and grants, its facts with provenance, and which of them are
/// in conflict (the disputed fields with every author's value).
async fn knowledge(State(c): Shared) -> ApiResult {
    with_knowledge(&c, |replica| {
        let base = replica.base();
        let mut spaces = Vec::new();
        for access in base.spaces() {
            let facts = base
                .facts(&access.space, None)
                .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e.to_string()))?;
            let conflicts: Vec<Value> = facts
                .iter()
                .filter(|f| !f.conflicting_fields().is_empty())
                .map(|f| json!({"id": f.id.to_string(), "fields": f.conflicting_fields()}))
                .collect();
            spaces.push(json!({
                "space": access.space,
                "owner": access.owner,
                "grants": access.grants,
                "facts": facts.iter().take(1000).collect::<Vec<_>>(),
                "fact_count": facts.len(),
                "conflicts": conflicts,
            }));
        }
        Ok(Json(
            json!({ "spaces": spaces, "position": replica.position() }),
        ))
    })
    .await
}

/// One fact's states along the log.
async fn fact_history(State(c): Shared, Path((space, fact)): Path<(String, String)>) -> ApiResult {
    let id = murmur_knowledge::FactId::parse(&fact).map_err(|e| bad_request(e.to_string()))?;
    with_knowledge(&c, |replica| {
        let history = replica
            .fact_history(&space, &id)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
        Ok(Json(json!({
            "history": history.iter().map(|(seq, f)| json!({"sequence": seq, "fact": f})).collect::<Vec<_>>(),
        })))
    })
    .await
}

/// The registry, task counts and proposals as of stream sequence `seq`: the same folds
/// replayed from the beginning and stopped there.
async fn as_of(State(c): Shared, Path(seq): Path<u64>) -> ApiResult {
    let log = c.log.clone();
    let realm = log.realm().clone();
    let fail = |e: murmur_subjects::LogError| ApiError(StatusCode::BAD_GATEWAY, e.to_string());
    let mut registry = Projector::new(
        log.clone(),
        RegistryProjection {
            realm: realm.clone(),
        },
    );
    registry.catch_up_to(seq).await.map_err(fail)?;
    let mut tasks = Projector::new(
        log.clone(),
        TaskProjection {
            realm: realm.clone(),
        },
    );
    tasks.catch_up_to(seq).await.map_err(fail)?;
    let mut consensus = Projector::new(log, ConsensusProjection { realm });
    consensus.catch_up_to(seq).await.map_err(fail)?;
    let last = c
        .log
        .last_sequence(&c.log.config().history_stream)
        .await
        .map_err(fail)?;
    let mut value = agents_json(registry.state());
    value["task_counts"] = json!(state_counts(tasks.state()));
    value["proposals"] = proposals_json(consensus.state())["proposals"].clone();
    value["as_of"] = json!(seq.min(last));
    value["last_sequence"] = json!(last);
    Ok(Json(value))
}

#[derive(Debug, Deserialize)]
struct FlakeRequest {
    /// The graph file's text.
    text: String,
    /// `toml` or `json`.
    #[serde(default)]
    format: Option<String>,
}

/// The same validation and generation as `murmur flake`: every problem with the nodes it
/// is about, or the flake's files.
async fn flake(Json(r): Json<FlakeRequest>) -> Json<Value> {
    use murmur_nix::{Deployment, DeploymentSpec, Format, NixError};
    let format = match r.format.as_deref() {
        Some("json") => Format::Json,
        _ => Format::Toml,
    };
    let spec = match DeploymentSpec::parse(&r.text, format) {
        Ok(spec) => spec,
        Err(e) => {
            let (line, column) = match &e {
                NixError::Parse { line, column, .. } => (Some(*line), Some(*column)),
                _ => (None, None),
            };
            return Json(json!({
                "ok": false,
                "problems": [{"message": e.to_string(), "nodes": [], "line": line, "column": column}],
            }));
        }
    };
    // The parsed graph goes back too: the page's form edits it and sends it again as JSON.
    let parsed = serde_json::to_value(&spec).unwrap_or(Value::Null);
    match Deployment::new(spec) {
        Ok(d) => {
            let flake = murmur_nix::generate(&d);
            Json(json!({
                "ok": true,
                "spec": parsed,
                "hosts": d.spec.hosts.len(),
                "nodes": d.spec.nodes.iter().map(|n| json!({"name": n.name, "host": n.host, "type": n.kind.type_name()})).collect::<Vec<_>>(),
                "edges": d.spec.edges.len(),
                "files": flake.files,
            }))
        }
        Err(errors) => Json(json!({
            "ok": false,
            "spec": parsed,
            "problems": errors.0.iter().map(|p| json!({"message": p.to_string(), "nodes": p.nodes()})).collect::<Vec<_>>(),
        })),
    }
}

/// The part of every action's body that says who acts.
#[derive(Debug, Deserialize)]
struct Acting {
    /// A `.creds` file's text: the identity the action is taken as (its seed signs the
    /// events; the server checks its role's permissions).
    creds: String,
}

/// How long an action waits before it calls a silent refusal a refusal.
const ACTION_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `action` on a log opened with the caller's credentials; a publish the server
/// refused (its role lacks the permission) is a 403 with the server's words.
async fn acting<F, Fut>(c: &Console, who: &Acting, action: F) -> ApiResult
where
    F: FnOnce(EventLog) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let creds = murmur_subjects::credentials::parse_creds(&who.creds, chrono::Utc::now())
        .map_err(|e| bad_request(format!("these credentials are not usable: {e}")))?;
    let identity = Identity::from_seed(&creds.seed)
        .map_err(|e| bad_request(format!("the credentials' seed: {e}")))?;
    let dir = tempfile::tempdir().map_err(anyhow::Error::from)?;
    let path = dir.path().join("action.creds");
    murmur_testkit::authority::write_secret(&path, &who.creds)?;
    let conn = ConnectOptions::servers(&c.config.nats_urls.join(","))
        .auth(Auth::CredsFile { path })
        .name("murmur-console-action")
        .connect_watched()
        .await
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    let mut denied = conn.denied.clone();
    let log = EventLog::options(identity, c.log.realm().clone())
        .config(c.log.config().clone())
        .codec(c.log.codec().clone())
        .open(conn.client.clone())
        .await
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    // A refused publish is not an error the publisher sees (the server drops it and says
    // so on the connection): whichever comes first, the action's end or the refusal.
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(ACTION_PATIENCE, action(log)) => outcome,
        _ = denied.wait_for(Option::is_some) => Ok(Err(anyhow::anyhow!("refused"))),
    };
    let refused = denied.borrow().clone();
    if let Some(refusal) = refused {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the NATS server refused it: {refusal}; these credentials' role may not do this (an operator's may)"
            ),
        ));
    }
    match outcome {
        Ok(Ok(value)) => Ok(Json(value)),
        Ok(Err(e)) => Err(ApiError(StatusCode::CONFLICT, format!("{e:#}"))),
        Err(_) => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the server within 10 s".into(),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct EnrolRequest {
    #[serde(flatten)]
    acting: Acting,
    /// The participant key the page generated.
    public_key: String,
    /// Its name.
    name: String,
}

/// A browser agent's enrolment: the acting credentials grant its key the worker role in the
/// log (so the NATS server decides: only an operator may), then the authority mints its
/// JWT. The key's seed never leaves the page.
async fn enrol(State(c): Shared, Json(r): Json<EnrolRequest>) -> ApiResult {
    let enroller = c.config.enroller.clone().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "this console cannot enrol participants: only the murmur up that started the server holds its keys".into(),
        )
    })?;
    murmur_subjects::identity::check_public_key(&r.public_key)
        .map_err(|e| bad_request(e.to_string()))?;
    murmur_subjects::Token::new(r.name.as_str())
        .map_err(|e| bad_request(format!("the name: {e}")))?;
    acting(&c, &r.acting, |log| async move {
        let sequence = murmur_testkit::authority::grant(
            &log,
            &r.public_key,
            murmur_subjects::roles::Role::Worker,
            &r.name,
            None,
        )
        .await?;
        let jwt = enroller(&r.public_key, &r.name)?;
        Ok(json!({ "jwt": jwt, "role": "worker", "granted_at": sequence }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct RedriveRequest {
    #[serde(flatten)]
    acting: Acting,
    /// Dead-letter stream sequence.
    sequence: u64,
}

async fn redrive(State(c): Shared, Json(r): Json<RedriveRequest>) -> ApiResult {
    acting(&c, &r.acting, |log| async move {
        let subject = crate::cli::dlq::redrive(&log, r.sequence).await?;
        Ok(json!({ "redriven": r.sequence, "subject": subject }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct CancelRequest {
    #[serde(flatten)]
    acting: Acting,
    /// Task id.
    task: String,
    /// Why.
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel(State(c): Shared, Json(r): Json<CancelRequest>) -> ApiResult {
    acting(&c, &r.acting, |log| async move {
        let reason = r
            .reason
            .unwrap_or_else(|| "cancelled from the console".into());
        crate::cli::task::cancel_on(&log, &r.task, &reason).await?;
        Ok(json!({ "cancelled": r.task }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct VoteRequest {
    #[serde(flatten)]
    acting: Acting,
    /// Proposal id.
    proposal: String,
    /// approve, reject or abstain.
    choice: String,
    /// Why.
    #[serde(default)]
    reason: String,
}

async fn vote(State(c): Shared, Json(r): Json<VoteRequest>) -> ApiResult {
    acting(&c, &r.acting, |log| async move {
        let said = crate::cli::vote::cast_on(&log, &r.proposal, &r.choice, r.reason).await?;
        Ok(json!({ "voted": said }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(seq: u64, capability: &str, state: TaskState) -> Task {
        serde_json::from_value(json!({
            "submitter": "UA",
            "requirements": {"capability": capability},
            "priority": 0,
            "max_attempts": 3,
            "lease_ms": 1000,
            "attempt": 1,
            "failures": [],
            "state": state,
            "submitted_sequence": seq,
            "last_sequence": seq,
            "input": {},
            "correlation_id": format!("c{}", seq % 2),
            "last_event_id": "e",
        }))
        .expect("a task")
    }

    fn book() -> TaskBook {
        let mut book = TaskBook::default();
        for (seq, cap, state) in [
            (1, "compile", TaskState::Cancelled),
            (2, "test.run", TaskState::DeadLettered),
            (3, "compile", TaskState::Cancelled),
            (4, "tool.fs", TaskState::Cancelled),
        ] {
            book.tasks.insert(format!("t{seq}"), task(seq, cap, state));
        }
        book
    }

    #[test]
    fn task_list_counts_every_state_and_lists_the_newest_matching_first() {
        let q = |state: Option<&str>, text: Option<&str>, limit: Option<usize>| TaskListQuery {
            at_least: 0,
            state: state.map(str::to_string),
            text: text.map(str::to_string),
            limit,
        };
        let ids = |v: &Value| -> Vec<String> {
            v["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_string())
                .collect()
        };
        let all = task_list(&book(), &q(None, None, None));
        assert_eq!(ids(&all), ["t4", "t3", "t2", "t1"]);
        assert_eq!(
            all["counts"],
            json!([
                ["pending", 0],
                ["assigned", 0],
                ["running", 0],
                ["completed", 0],
                ["dead_lettered", 1],
                ["cancelled", 3]
            ])
        );
        let cancelled = task_list(&book(), &q(Some("cancelled"), None, Some(2)));
        assert_eq!(ids(&cancelled), ["t4", "t3"]);
        assert_eq!(cancelled["matching"], 3);
        let compile = task_list(&book(), &q(None, Some("compile"), None));
        assert_eq!(ids(&compile), ["t3", "t1"]);
    }

    #[test]
    fn a_task_detail_holds_the_tasks_its_dependencies_connect_it_to() {
        let mut book = book();
        book.tasks.get_mut("t3").expect("t3").depends_on = vec!["t1".into()];
        let detail = task_detail(&book, "t1");
        let graph: Vec<&str> = detail["graph"]
            .as_array()
            .expect("graph")
            .iter()
            .map(|t| t["id"].as_str().expect("id"))
            .collect();
        assert_eq!(graph, ["t1", "t3"]);
        assert_eq!(task_detail(&book, "nope")["task"], Value::Null);
    }

    #[tokio::test]
    async fn the_flake_endpoint_lists_every_problem_with_its_nodes_or_the_files() {
        let bad = r#"
name = "x"
[hosts.h]
address = "10.0.0.1"
[[nodes]]
name = "a"
host = "nowhere"
type = "service"
command = "/bin/true"
[[nodes]]
name = "b"
host = "elsewhere"
type = "service"
command = "/bin/true"
"#;
        let Json(v) = flake(Json(FlakeRequest {
            text: bad.into(),
            format: None,
        }))
        .await;
        assert_eq!(v["ok"], false);
        let problems = v["problems"].as_array().expect("problems");
        assert_eq!(problems.len(), 2, "{v}");
        assert_eq!(problems[0]["nodes"], json!(["a"]));
        assert_eq!(problems[1]["nodes"], json!(["b"]));
        let good = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop.toml"),
        )
        .expect("example");
        let Json(v) = flake(Json(FlakeRequest {
            text: good,
            format: Some("toml".into()),
        }))
        .await;
        assert_eq!(v["ok"], true, "{v}");
        assert!(
            v["files"]["flake.nix"]
                .as_str()
                .expect("flake.nix")
                .contains("nixosConfigurations")
        );
        let Json(v) = flake(Json(FlakeRequest {
            text: "{ not json".into(),
            format: Some("json".into()),
        }))
        .await;
        assert_eq!(v["ok"], false);
        assert!(v["problems"][0]["line"].is_number(), "{v}");
    }
}
