//! The console's live projections: the registry, task and consensus folds, each owned by one
//! task that follows the log and answers queries between polls (so a realm of 100,000 tasks
//! is never cloned to answer one page).

use std::time::Duration;

use murmur_subjects::{EventLog, Projection, Projector};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// How long one poll waits for new events: the console's lag behind the log at worst.
const POLL_WINDOW: Duration = Duration::from_millis(50);

/// How long a query waits for its projection to reach the position it asked for.
const QUERY_PATIENCE: Duration = Duration::from_secs(2);

type Answer<S> = Box<dyn FnOnce(&S) -> Value + Send>;

struct Query<S> {
    at_least: u64,
    asked: tokio::time::Instant,
    answer: Answer<S>,
    reply: oneshot::Sender<Answered>,
}

/// A query's answer and the log position it reflects.
#[derive(Debug, Clone)]
pub struct Answered {
    /// What the query computed.
    pub value: Value,
    /// The last stream sequence the projection had applied.
    pub position: u64,
}

/// A handle on one live projection.
pub struct LiveView<S> {
    queries: mpsc::Sender<Query<S>>,
}

impl<S> Clone for LiveView<S> {
    fn clone(&self) -> Self {
        Self {
            queries: self.queries.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> LiveView<S> {
    /// Follows `projection` on `log` from the beginning until the handle and its clones are
    /// dropped.
    pub fn spawn<P: Projection<State = S>>(log: EventLog, projection: P) -> Self {
        let (queries, mut inbox) = mpsc::channel::<Query<S>>(256);
        tokio::spawn(async move {
            let mut projector = Projector::new(log, projection);
            let mut waiting: Vec<Query<S>> = Vec::new();
            loop {
                let poll_started = tokio::time::Instant::now();
                let read = match projector.poll(POLL_WINDOW).await {
                    Ok(read) => read,
                    Err(e) => {
                        tracing::warn!(error = %e, projection = projector.projection().name(), "console view lost the log; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        0
                    }
                };
                loop {
                    match inbox.try_recv() {
                        Ok(q) => waiting.push(q),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                let position = projector.position();
                let (ready, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|q| {
                    // Reached the position asked for; or a whole quiet poll began after the
                    // question (the projection reads only some subjects, so its position
                    // may never reach a sequence of another domain); or out of patience.
                    q.at_least <= position
                        || (read == 0 && q.asked <= poll_started)
                        || q.asked.elapsed() >= QUERY_PATIENCE
                });
                waiting = later;
                for q in ready {
                    let value = (q.answer)(projector.state());
                    let _ = q.reply.send(Answered { value, position });
                }
            }
        });
        Self { queries }
    }

    /// Computes `answer` over the state once it has applied the log through `at_least` (or
    /// is caught up with what the log held when asked).
    pub async fn ask(
        &self,
        at_least: u64,
        answer: impl FnOnce(&S) -> Value + Send + 'static,
    ) -> Option<Answered> {
        let (reply, answered) = oneshot::channel();
        self.queries
            .send(Query {
                at_least,
                asked: tokio::time::Instant::now(),
                answer: Box::new(answer),
                reply,
            })
            .await
            .ok()?;
        answered.await.ok()
    }
}
