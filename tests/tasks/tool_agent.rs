//! The tool agent kind as a process: `tool.fs` confined to its root, `tool.exec` to its
//! allowlist.

use super::*;

/// A `murmur agent run tool --root DIR --exec-allow wc` process serves `tool.fs` and
/// `tool.exec`: a read comes back with the file's text and hash, a write on the read-only
/// agent and a path leading out of its root are dead-lettered with the reason, and the file
/// outside is untouched; an allowed command runs on the files it is given, one not allowed
/// is dead-lettered naming what is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_agent_serves_file_operations_confined_to_its_root() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let root = data.path().join("workspace");
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::write(root.join("src/lib.rs"), "pub fn one() -> u8 { 1 }\n")?;
    std::fs::write(data.path().join("secret"), "s3cret")?;
    let root_arg = root.to_string_lossy().to_string();
    let who = murmur_e2e::enrol(&nats, Role::Tool, "files", data.path()).await?;
    let (mut agent, agent_id) = spawn_agent(
        nats.url(),
        data.path(),
        &who,
        "tool",
        "tool.fs",
        &[
            "--root",
            &root_arg,
            "--exec-allow",
            "wc",
            "--capability",
            "tool.exec",
        ],
    )
    .await?;
    let submitter = nats.event_log("acme").await?;
    let coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    let asks = [
        (
            "read",
            serde_json::json!({"op": "read", "path": "src/lib.rs"}),
        ),
        ("list", serde_json::json!({"op": "list", "path": "src"})),
        (
            "write",
            serde_json::json!({"op": "write", "path": "src/new.rs", "content": "x"}),
        ),
        (
            "escape",
            serde_json::json!({"op": "read", "path": "../secret"}),
        ),
    ];
    let commands = [
        (
            "count",
            serde_json::json!({"command": "wc", "args": ["-l", "a.txt"], "files": {"a.txt": "1\n2\n"}}),
        ),
        (
            "remove",
            serde_json::json!({"command": "rm", "args": ["-rf", "/"]}),
        ),
    ];
    for (id, input) in &asks {
        murmur_e2e::submit_once(&submitter, id, "tool.fs", input.clone()).await?;
    }
    for (id, input) in &commands {
        murmur_e2e::submit_once(&submitter, id, "tool.exec", input.clone()).await?;
    }
    let mut view = Projector::new(
        submitter.clone(),
        CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| asks.iter().chain(&commands).all(|(id, _)| v
            .tasks
            .tasks
            .get(*id)
            .is_some_and(|t| t.state.is_final())))
            .await?,
        "the tool tasks never finished: {:?}",
        view.state().tasks.counts()
    );
    let tasks = &view.state().tasks.tasks;
    assert_eq!(
        tasks["read"].state,
        TaskState::Completed {
            agent: agent_id.clone()
        }
    );
    let read = tasks["read"].output.clone().context("an output")?;
    assert_eq!(read["content"], "pub fn one() -> u8 { 1 }\n");
    let listed = tasks["list"].output.clone().context("an output")?;
    assert_eq!(listed["entries"][0]["name"], "lib.rs");
    let counted = tasks["count"].output.clone().context("an output")?;
    assert_eq!(counted["exit_code"], 0, "{counted}");
    assert_eq!(counted["stdout"], "2 a.txt\n");
    for (id, reason) in [
        ("write", "read-only"),
        ("escape", "outside the tool's root"),
        (
            "remove",
            "`rm` is not an allowed command here (allowed: wc)",
        ),
    ] {
        let task = &tasks[id];
        assert_eq!(task.state, TaskState::DeadLettered, "{id}: {task:?}");
        assert!(
            task.failures.iter().any(|f| f.contains(reason)),
            "{id}: {:?}",
            task.failures
        );
    }
    assert!(!root.join("src/new.rs").exists());
    assert_eq!(
        std::fs::read_to_string(data.path().join("secret"))?,
        "s3cret"
    );
    coordinator.stop().await??;
    agent.kill().await?;
    Ok(())
}
