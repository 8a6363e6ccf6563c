//! The demo's console step: the operator console's API serves the demo realm's folds, and
//! they agree with the demo's own live projection.

use anyhow::{Result, ensure};
use murmur_subjects::EventLog;
use serde_json::Value;

/// Serves the console over `log`'s realm on a free port, asks it for the agents and tasks
/// as of `position`, and checks it sees `agents` agents and `tasks` tasks.
pub(super) async fn console_step(
    log: &EventLog,
    position: u64,
    agents: usize,
    tasks: usize,
) -> Result<()> {
    let config = crate::console::PageConfig::for_log(log, Vec::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = crate::console::serve(
        log.clone(),
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        async move {
            let _ = stopped.await;
        },
    )
    .await?;
    let get = |path: String| async move {
        let v: Value = reqwest::get(format!("http://{addr}{path}"))
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::Ok(v)
    };
    let registry = get(format!("/api/agents?at_least={position}")).await?;
    let book = get(format!("/api/tasks?at_least={position}")).await?;
    let seen_agents = registry["agents"].as_array().map_or(0, Vec::len);
    let seen_tasks = book["total"].as_u64().unwrap_or(0) as usize;
    ensure!(
        seen_agents == agents && seen_tasks == tasks,
        "the console saw {seen_agents} agents and {seen_tasks} tasks, the demo's projection {agents} and {tasks}"
    );
    out!(
        "[console] http://{addr}/ served the same {agents} agents and {tasks} tasks as of sequence {} (`murmur up` serves it with the live page on port 4280)",
        registry["position"]
    );
    let _ = stop.send(());
    server.await??;
    Ok(())
}
