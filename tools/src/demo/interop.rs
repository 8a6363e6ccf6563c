//! The demo's interop step: murmur spoken from outside its own code. The reference Python
//! agent (`examples/python/murmur_agent.py`) joins with its own credentials and completes a
//! task the coordinator routes to it; then the Synadia Agent Protocol's own Python client
//! (`examples/python/agent_protocol_client.py`) finds murmur's gateway and prompts it, and
//! the prompt runs as a task on that Python agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use murmur_agents::agent_protocol::{Gateway, GatewayConfig};
use murmur_coordination::tasks::TaskState;
use murmur_subjects::Identity;
use murmur_subjects::agent_protocol::AgentAddress;
use murmur_subjects::roles::Role;
use murmur_testkit::authority::Issuer;
use tokio::io::AsyncBufReadExt as _;

use crate::demo::compile::DemoCoordinator;

/// Where the Python interop files and interpreter are, when this runs in (or under) a
/// checkout with `scripts/install.sh` run: `None` otherwise (the step is then skipped, saying why).
fn python_checkout() -> Option<(PathBuf, PathBuf)> {
    let here = std::env::current_dir().ok()?;
    here.ancestors().find_map(|root| {
        let python = root.join(".venv/bin/python");
        let examples = root.join("examples/python");
        (python.exists() && examples.join("murmur_agent.py").exists()).then_some((python, examples))
    })
}

/// Runs the step against a server that is already up (the main demo's).
pub async fn run_on(issuer: &Issuer) -> Result<()> {
    let Some((python, examples)) = python_checkout() else {
        out!(
            "[interop] skipped: run the demo from a murmur checkout after `bash scripts/install.sh` (it needs .venv/bin/python and examples/python)"
        );
        return Ok(());
    };
    if !issuer.is_secure() {
        out!(
            "[interop] skipped: the Python agent signs with the key of its .creds file, and this server takes no credentials"
        );
        return Ok(());
    }
    let realm = crate::demo::fresh_realm("interop")?;
    let coordinator = DemoCoordinator::start(issuer, &realm).await?;
    let outcome = steps(issuer, &realm, &coordinator, &python, &examples).await;
    let _ = coordinator.stop.send(true);
    coordinator.task.await??;
    outcome
}

async fn creds(
    issuer: &Issuer,
    realm: &murmur_subjects::Token,
    role: Role,
    name: &str,
) -> Result<PathBuf> {
    issuer
        .enrol_as(realm, role, name, &Identity::generate())
        .await?
        .context("a secure server issues credentials")
}

async fn steps(
    issuer: &Issuer,
    realm: &murmur_subjects::Token,
    coordinator: &DemoCoordinator,
    python: &Path,
    examples: &Path,
) -> Result<()> {
    let url = issuer.servers().join(",");
    let worker_creds = creds(issuer, realm, Role::Worker, "py-worker").await?;
    let mut agent = tokio::process::Command::new(python)
        .arg(examples.join("murmur_agent.py"))
        .args([
            "--server",
            &url,
            "--realm",
            realm.as_str(),
            "--name",
            "py-worker",
        ])
        .args(["--capability", "text.upper"])
        .arg("--creds")
        .arg(&worker_creds)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the Python agent")?;
    let key = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(agent.stdout.take().context("stdout")?)
            .lines()
            .next_line(),
    )
    .await
    .context("the Python agent did not join within 30 s")??
    .context("the Python agent exited before joining")?;
    let (tasks, finished) = coordinator
        .run_once(
            realm,
            &[(
                "shout",
                "text.upper",
                serde_json::json!({"text": "hello from rust"}),
            )],
            Duration::from_secs(30),
        )
        .await?;
    ensure!(
        finished,
        "the Python agent's task did not finish within 30 s"
    );
    let task = &tasks["shout"];
    ensure!(
        task.state == TaskState::Completed { agent: key.clone() },
        "the task ended {} (failures {:?})",
        task.state.name(),
        task.failures
    );
    out!(
        "[interop] a Python agent (examples/python/murmur_agent.py: nats-py, nkeys, the CloudEvents SDK; no murmur code) joined as {}…, verified its assignment and completed the task signed: {}",
        &key[..12],
        task.output.clone().unwrap_or_default()
    );

    // murmur as a Synadia Agent Protocol agent, prompted with that protocol's own SDK.
    let gateway_log = issuer
        .participant(realm, Role::Submitter, "gateway")
        .await?;
    let address = AgentAddress::new("shouter", realm.as_str(), "default")?;
    let gateway = Gateway::start(
        gateway_log,
        GatewayConfig {
            address: address.clone(),
            capability: "text.upper".into(),
            labels: Default::default(),
            max_tokens: 64,
            heartbeat: Duration::from_secs(30),
            prompt_timeout: Duration::from_secs(30),
            description: "the demo's gateway".into(),
        },
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));
    let caller_creds = creds(issuer, realm, Role::Submitter, "caller").await?;
    let client = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .arg(examples.join("agent_protocol_client.py"))
            .args(["--server", &url, "--agent", "shouter"])
            .arg("--creds")
            .arg(&caller_creds)
            .arg("murmur speaks the agent protocol")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the protocol client did not finish within 60 s")??;
    let _ = stop.send(());
    serving.await??;
    let answer = String::from_utf8_lossy(&client.stdout).trim().to_string();
    if !client.status.success() || answer != "MURMUR SPEAKS THE AGENT PROTOCOL" {
        bail!(
            "the protocol client got {answer:?}: {}",
            String::from_utf8_lossy(&client.stderr)
        );
    }
    out!(
        "[agent protocol] the protocol's Python client (synadia-ai-agents) discovered {} and prompted it; the prompt ran as a murmur task on the Python agent: {answer}",
        address.prompt_subject()
    );
    if let Some(pid) = agent.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), agent.wait()).await;
    Ok(())
}
