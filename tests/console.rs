//! The operator console in a real browser: `murmur up` serves it, and
//! `tools/console/e2e/console.mjs` drives Debian's Chromium through playwright-core against
//! it (agents joining, tasks changing state, a cancel and a redrive with the operator's
//! credentials, a redrive refused with the observer's, an event's signature, the replay
//! scrubber, a deployment graph's problems, the page joining as a compute agent and running
//! `compute.js` tasks in a Web Worker). `scripts/install.sh` installs Chromium and the
//! page's npm packages. Screenshots land in the test's temporary directory; with
//! `MURMUR_UPDATE_SCREENSHOTS=1` they also replace those in `docs/console/`.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The first stderr line of `murmur up` containing `marker`, the word after it.
fn after(
    lines: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    marker: &str,
) -> Result<String> {
    if let Some(found) = seen.iter().find_map(|l| word_after(l, marker)) {
        return Ok(found);
    }
    loop {
        let line = lines
            .recv_timeout(murmur_e2e::DEADLINE)
            .with_context(|| format!("murmur up printed no {marker:?}: {seen:#?}"))?;
        seen.push(line.clone());
        if let Some(found) = word_after(&line, marker) {
            return Ok(found);
        }
    }
}

fn word_after(line: &str, marker: &str) -> Option<String> {
    let (_, rest) = line.split_once(marker)?;
    rest.split_whitespace().next().map(str::to_string)
}

#[test]
fn the_console_follows_the_log_live_in_a_real_browser() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let console_dir = root.join("tools/console");
    if !console_dir.join("node_modules/playwright-core").exists() {
        bail!("the console's npm packages are missing: run `bash scripts/install.sh`");
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut up = std::process::Command::new(murmur_e2e::murmur_binary()?)
        .args([
            "up",
            "--port",
            "0",
            "--console-port",
            "0",
            "--websocket-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("NATS_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = up.stderr.take().context("stderr")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("murmur up: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let outcome = (|| -> Result<()> {
        let nats_url = after(&lines, &mut seen, "nats-server with JetStream at ")?;
        let console_url = after(&lines, &mut seen, "console: ")?;
        let out = dir.path().join("screenshots");
        let mut node = std::process::Command::new("node");
        node.arg("--experimental-websocket")
            .arg("e2e/console.mjs")
            .current_dir(&console_dir)
            .env("CONSOLE_URL", &console_url)
            .env("NATS_URL", &nats_url)
            .env("MURMUR_BIN", murmur_e2e::murmur_binary()?)
            .env("MURMUR_DATA_DIR", &data)
            .env("OUT_DIR", &out);
        if std::env::var("MURMUR_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            node.env("DOCS_DIR", root.join("docs/console"));
        }
        let mut child = node
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running node (install it with scripts/install.sh)")?;
        let status = murmur_e2e::wait_with_deadline(&mut child, Duration::from_secs(300))?
            .context("the browser suite did not finish within 300 s")?;
        let mut measured = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().context("stdout")?, &mut measured)?;
        eprintln!("measured: {measured}");
        if !status.success() {
            bail!(
                "the browser suite failed ({status}); screenshots in {}",
                out.display()
            );
        }
        let measured: serde_json::Value = serde_json::from_str(measured.trim())?;
        assert!(measured["agent_visible_ms"].is_number(), "{measured}");
        assert!(measured["browser_task_ms"].is_number(), "{measured}");
        assert!(
            measured["deploy_problems"].as_u64() >= Some(3),
            "{measured}"
        );
        Ok(())
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    murmur_e2e::wait_with_deadline(&mut up, murmur_e2e::DEADLINE)?
        .context("murmur up did not stop on SIGTERM")?;
    outcome
}
