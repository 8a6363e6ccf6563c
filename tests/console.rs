//! The operator console in a real browser: `murmur up` serves it, and
//! `tools/console/e2e/console.mjs` drives Debian's Chromium through playwright-core against
//! it (agents joining, tasks changing state, a cancel and a redrive with the operator's
//! credentials, a redrive refused with the observer's, an event's signature, the replay
//! scrubber, a deployment graph's problems, the page joining as a compute agent and running
//! `compute.js` tasks in a Web Worker); and the page following an outside server over TLS
//! WebSocket (`tools/console/e2e/tls.mjs`). `scripts/install.sh` installs Chromium and the
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

/// Starts `murmur up` as `command` describes it; its stderr lines are echoed and sent to
/// the receiver.
fn start_up(
    command: &mut std::process::Command,
) -> Result<(std::process::Child, std::sync::mpsc::Receiver<String>)> {
    let mut up = command
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
    Ok((up, lines))
}

/// Stops `murmur up` with SIGTERM and waits for it, then gives back the test's `outcome`.
fn stop_up(mut up: std::process::Child, outcome: Result<()>) -> Result<()> {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status();
    murmur_e2e::wait_with_deadline(&mut up, murmur_e2e::DEADLINE)?
        .context("murmur up did not stop on SIGTERM")?;
    outcome
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
    let mut command = std::process::Command::new(murmur_e2e::murmur_binary()?);
    command
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
        .env_remove("NATS_URL");
    let (up, lines) = start_up(&mut command)?;
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
    stop_up(up, outcome)
}

/// A server murmur up did not start, listening for browsers over TLS WebSocket with a
/// self-signed certificate (made with `openssl`): the page reaches it at the `wss://` URL
/// given to `murmur up --websocket-url` and follows the log.
#[test]
fn the_page_follows_an_outside_server_over_tls_websocket() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let console_dir = root.join("tools/console");
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .context("running openssl (scripts/install.sh installs it)")?;
    anyhow::ensure!(
        made.success(),
        "openssl could not make a certificate: {made}"
    );
    let free = murmur_testkit::server::free_port;
    let (port, monitor, websocket) = (free()?, free()?, free()?);
    let store = dir.path().join("store");
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{ store_dir: \"{}\", max_file_store: 20G }}\n\
             websocket {{ listen: \"127.0.0.1:{websocket}\", tls {{ cert_file: \"{}\", key_file: \"{}\" }} }}\n",
            store.display(),
            cert.display(),
            key.display()
        ),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let _server = runtime.block_on(async {
        let server = murmur_testkit::server::NatsProcess::start_with_config(
            &config, port, monitor, &store, None,
        )
        .await?;
        murmur_testkit::server::wait_healthy(monitor, Duration::from_secs(60)).await?;
        anyhow::Ok(server)
    })?;
    let websocket_url = format!("wss://127.0.0.1:{websocket}");
    let mut command = std::process::Command::new(murmur_e2e::murmur_binary()?);
    command
        .args([
            "up",
            "--console-port",
            "0",
            "--websocket-url",
            &websocket_url,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"));
    let (up, lines) = start_up(&mut command)?;
    let outcome = (|| -> Result<()> {
        let console_url = after(&lines, &mut Vec::new(), "console: ")?;
        let mut child = std::process::Command::new("node")
            .arg("e2e/tls.mjs")
            .current_dir(&console_dir)
            .env("CONSOLE_URL", &console_url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running node (install it with scripts/install.sh)")?;
        let status = murmur_e2e::wait_with_deadline(&mut child, Duration::from_secs(180))?
            .context("the page did not finish within 180 s")?;
        let mut report = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().context("stdout")?, &mut report)?;
        anyhow::ensure!(
            status.success(),
            "the page did not follow over wss:// ({status})"
        );
        let report: serde_json::Value = serde_json::from_str(report.trim())?;
        let shown = report["status"].as_str().unwrap_or_default();
        assert!(shown.contains(&websocket_url), "{report}");
        assert!(report["last_seq"].as_u64() > Some(0), "{report}");
        Ok(())
    })();
    stop_up(up, outcome)
}
