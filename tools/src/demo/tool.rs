//! The demo's tool step: a `tool` agent as a separate `murmur agent run tool` process
//! serves `tool.fs` over a small workspace: a listing and a read come back, and a read that
//! leads out of its root is refused and dead-lettered with the reason.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_coordination::tasks::TaskState;

use crate::demo::compile::{DemoCoordinator, spawn_agent, stop_agents};

/// Runs the step against a server that is already up (the main demo's).
pub async fn run_on(issuer: &murmur_testkit::authority::Issuer) -> Result<()> {
    let realm = crate::demo::fresh_realm("tool")?;
    let data = tempfile::tempdir()?;
    let root = data.path().join("workspace");
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"calc\"\n")?;
    std::fs::write(root.join("src/lib.rs"), "pub fn one() -> u8 { 1 }\n")?;
    std::fs::write(data.path().join("outside.txt"), "not for the tool")?;
    let root_arg = root.to_str().context("workspace path is not UTF-8")?;

    let coordinator = DemoCoordinator::start(issuer, &realm).await?;
    let mut agents = vec![
        spawn_agent(
            issuer,
            &realm,
            data.path(),
            "tool",
            "files",
            &["--root", root_arg],
        )
        .await?,
    ];
    let fs = murmur_agents::tool::FS_CAPABILITY;
    let (tasks, finished) = coordinator
        .run_once(
            &realm,
            &[
                ("list", fs, serde_json::json!({"op": "list"})),
                (
                    "read",
                    fs,
                    serde_json::json!({"op": "read", "path": "src/lib.rs"}),
                ),
                (
                    "escape",
                    fs,
                    serde_json::json!({"op": "read", "path": "../outside.txt"}),
                ),
            ],
            Duration::from_secs(60),
        )
        .await?;
    let mut problems = stop_agents(&mut agents).await;
    let _ = coordinator.stop.send(true);
    coordinator.task.await??;
    ensure!(finished, "the tool tasks did not finish within 60 s");
    let output = |id: &str| -> Result<serde_json::Value> {
        let task = tasks.get(id).context("the task is in the view")?;
        match task.state {
            TaskState::Completed { .. } => task.output.clone().context("no output"),
            _ => bail!("{id} ended {}: {:?}", task.state.name(), task.failures),
        }
    };
    let listed = output("list")?;
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default();
    if names != ["Cargo.toml", "src"] {
        problems.push(format!("the listing was {names:?}"));
    }
    let read = output("read")?;
    if read["content"] != "pub fn one() -> u8 { 1 }\n" {
        problems.push(format!("the read gave {}", read["content"]));
    }
    let escape = tasks.get("escape").context("the task is in the view")?;
    let refused = escape.state == TaskState::DeadLettered
        && escape
            .failures
            .iter()
            .any(|f| f.contains("outside the tool's root"));
    if !refused {
        problems.push(format!(
            "a read out of the root ended {}: {:?}",
            escape.state.name(),
            escape.failures
        ));
    }
    if !problems.is_empty() {
        bail!("tool step failed:\n  {}", problems.join("\n  "));
    }
    out!(
        "[tool] a tool agent process served tool.fs over a workspace (read-only): list → {}, read src/lib.rs → {} bytes, sha256 {}…",
        names.join(" "),
        read["size"],
        read["sha256"].as_str().map(|h| &h[..12]).unwrap_or("?")
    );
    out!(
        "[tool] a read of ../outside.txt was refused and dead-lettered: {}",
        escape.failures.first().map(String::as_str).unwrap_or("?")
    );
    Ok(())
}
