//! Submitting a task graph to the log (I/O edge): validates the whole graph first, then
//! writes one `task.submitted` per task with `depends_on`, so nothing is written for a graph
//! that is refused. Ids are `{prefix}-{file id}`; a task that already exists with that id is
//! taken as submitted, which makes a retried submission (e.g. a planner attempt that ran
//! twice) idempotent.

use std::collections::BTreeMap;

use murmur_subjects::events::TaskSubmitted;
use murmur_subjects::log::Expected;
use murmur_subjects::{Draft, EventLog, LogError, Token};

use crate::graph::{FailurePolicy, GraphError, GraphSpec, TaskGraph};
use crate::routing::validate_capability;

/// Why a graph was not submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The graph is not a valid DAG (every problem named).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A task names a capability that is not well formed.
    #[error("task {task:?}: {reason}")]
    Capability {
        /// The task's id in the graph.
        task: String,
        /// What is wrong.
        reason: String,
    },
    /// A task id does not fit in a subject token.
    #[error("task id {task:?} is not usable in a subject: {source}")]
    Id {
        /// The task id.
        task: String,
        /// The token error.
        source: murmur_subjects::subject::SubjectError,
    },
    /// A payload could not be encoded.
    #[error(transparent)]
    Payload(#[from] murmur_subjects::payload::PayloadError),
    /// The log refused a write.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The workflow a submission belongs to: its correlation id and the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Correlation id kept by every submitted task.
    pub correlation_id: String,
    /// Id of the causing event.
    pub causation_id: String,
}

/// Validates `spec` and submits every task as `{prefix}-{id}`, all under one batch
/// signature, the writes pipelined. Returns graph id → task id.
pub async fn submit_graph(
    log: &EventLog,
    spec: &GraphSpec,
    prefix: &str,
    cause: Option<&Cause>,
) -> Result<BTreeMap<String, String>, SubmitError> {
    TaskGraph::new(spec)?;
    let ids: BTreeMap<String, String> = spec
        .tasks
        .iter()
        .map(|t| (t.id.clone(), format!("{prefix}-{}", t.id)))
        .collect();
    let mut drafts = Vec::with_capacity(spec.tasks.len());
    for t in &spec.tasks {
        validate_capability(&t.capability).map_err(|reason| SubmitError::Capability {
            task: t.id.clone(),
            reason,
        })?;
        let id = Token::new(ids[&t.id].as_str()).map_err(|source| SubmitError::Id {
            task: t.id.clone(),
            source,
        })?;
        let payload = TaskSubmitted {
            capability: t.capability.clone(),
            input: t.input.clone(),
            depends_on: t.depends_on.iter().map(|d| ids[d].clone()).collect(),
            on_dependency_failure: match spec.on_failure {
                FailurePolicy::CancelDescendants => None,
                FailurePolicy::FailDescendants => Some("fail".into()),
            },
            max_attempts: t.max_attempts,
            lease_ms: t.lease_ms,
            ..Default::default()
        };
        let draft = Draft::new(id, &payload)?;
        drafts.push(match cause {
            Some(c) => draft.caused_by_ids(c.correlation_id.clone(), c.causation_id.clone(), None),
            None => draft,
        });
    }
    // One batch signature for the graph, the writes pipelined; each task is new or
    // already there (a graph submitted again under the same prefix).
    let writes: Vec<_> = log
        .seal_many(drafts)
        .into_iter()
        .map(|sealed| (sealed, Expected::NoEvents))
        .collect();
    for written in log
        .append_expected_patiently(&writes, std::time::Duration::ZERO)
        .await?
    {
        match written {
            Ok(_) | Err(LogError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids)
}
