//! The README's main job: `murmur demo` exits 0 and reports every step; and `murmur up`, the
//! long-running platform, stops the server it started.

use std::time::Duration;

use anyhow::{Context, Result};
use murmur_e2e::DEADLINE;

#[test]
fn murmur_demo_succeeds() -> Result<()> {
    // The demo gives up on its own after 300 s; the test's deadline is the last resort. An
    // empty NATS_URL (as `NATS_URL= murmur demo` leaves it) names no server: the demo starts
    // its own.
    let out = murmur_e2e::murmur_output_with(
        &["demo", "--deadline-s", "300"],
        &[("NATS_URL", "")],
        Duration::from_secs(420),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // What the demo does on purpose (a forged result, refused connections) is reported on
    // its own lines; a warning or an error in its log means something unexpected, and a log
    // written to a file carries no terminal colour codes.
    for unexpected in [" WARN ", " ERROR ", "\u{1b}["] {
        assert!(
            !stderr.contains(unexpected),
            "{unexpected:?} in the demo's log:\n{stderr}"
        );
    }
    for step in 0..=9 {
        assert!(
            stdout.contains(&format!("[{step}]")),
            "step {step} missing:\n{stdout}"
        );
    }
    for expected in [
        "workflow ok",
        "[compile 5] results:",
        "demo compile ok",
        "[inference] an inference agent process ran llm.generate",
        "[interop] a Python agent",
        "[agent protocol] the protocol's Python client",
        "[vote] 3 policy voters + tallier",
        "[kb] an automerge-repo peer",
        "[flake] examples/shop.toml → 6 files",
        "demo ok",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    Ok(())
}

/// Reads `murmur demo`'s stdout on a thread, line by line.
fn lines_of(child: &mut std::process::Child) -> Result<std::sync::mpsc::Receiver<String>> {
    Ok(lines_from(child.stdout.take().context("stdout")?))
}

/// Reads `output` on a thread, line by line.
fn lines_from(output: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The port of the nats-server the demo says it started (`[0] started nats-server ... at
/// nats://127.0.0.1:PORT ...`), and that first line.
fn server_port(lines: &std::sync::mpsc::Receiver<String>) -> Result<(u16, String)> {
    let line = lines.recv_timeout(DEADLINE)?;
    let port = line
        .split("nats://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .with_context(|| format!("no server URL in {line:?}"))?;
    Ok((port.parse()?, line))
}

/// Waits until nothing listens on `port` any more.
fn wait_closed(port: u16) -> Result<()> {
    let until = std::time::Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the nats-server on port {port} outlived the murmur process that started it"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie (an orphan whose reaper has not reaped it
/// yet has stopped all the same).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state ...`; comm may contain spaces, the state follows the last ')'.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn spawn_demo(args: &[&str]) -> Result<std::process::Child> {
    Ok(std::process::Command::new(murmur_e2e::murmur_binary()?)
        .arg("demo")
        .args(args)
        .env_remove("NATS_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?)
}

/// Waits for the process to exit (up to [`DEADLINE`]); its stderr.
fn exited(mut child: std::process::Child) -> Result<(std::process::ExitStatus, String)> {
    use std::io::Read;
    let status = murmur_e2e::wait_with_deadline(&mut child, DEADLINE)?
        .with_context(|| format!("the demo did not exit within {DEADLINE:?}"))?;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    Ok((status, stderr))
}

#[test]
fn a_demo_past_its_deadline_names_its_last_step_and_stops_its_server() -> Result<()> {
    let mut demo = spawn_demo(&["--deadline-s", "3"])?;
    let lines = lines_of(&mut demo)?;
    let (port, first) = server_port(&lines)?;
    let (status, stderr) = exited(demo)?;
    assert!(!status.success(), "{stderr}");
    // The step it names is the last line it printed (the reader ends with stdout).
    let last = lines.iter().last().unwrap_or(first);
    assert!(
        stderr.contains(&format!(
            "the demo did not finish within 3s; the last line it printed: {last:?}"
        )),
        "{stderr}"
    );
    wait_closed(port)
}

#[test]
fn sigterm_stops_the_demo_and_the_processes_it_started() -> Result<()> {
    let mut demo = spawn_demo(&[])?;
    let lines = lines_of(&mut demo)?;
    let (port, _) = server_port(&lines)?;
    // Once the compile step's four agents run as processes of their own (`    NAME pid N
    // id ...`), the demo holds a server and child processes.
    let mut agents = Vec::new();
    while agents.len() < 4 {
        let line = lines.recv_timeout(Duration::from_secs(120))?;
        if let Some(pid) = line
            .split(" pid ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            agents.push(pid.parse::<u32>()?);
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()?;
    let (status, stderr) = exited(demo)?;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("the demo was interrupted"), "{stderr}");
    wait_closed(port)?;
    let until = std::time::Instant::now() + DEADLINE;
    for pid in agents {
        while running(pid) {
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "agent process {pid} outlived the demo"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// `murmur up` starts a server only where nothing else holds its port or its store, says so
/// at once, and stops that server when it gets SIGTERM (as from a process manager).
#[test]
fn murmur_up_refuses_a_taken_port_or_store_and_stops_its_server_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (data, other_data) = (dir.path().join("a"), dir.path().join("b"));
    let port = murmur_testkit::server::free_port()?;
    let up = |port: u16, data: &std::path::Path| -> Result<std::process::Child> {
        Ok(std::process::Command::new(murmur_e2e::murmur_binary()?)
            .args(["up", "--port", &port.to_string()])
            .args(["--console-port", "0", "--websocket-port", "0", "--data-dir"])
            .arg(data)
            .env_remove("NATS_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?)
    };
    let mut first = up(port, &data)?;
    let lines = lines_from(first.stderr.take().context("stderr")?);
    loop {
        let line = lines.recv_timeout(DEADLINE)?;
        if line.starts_with("streams ready") {
            break;
        }
    }
    // The same port with another store, then the same store on another port.
    let refusals = [
        (port, other_data.as_path(), format!("port {port} is in use")),
        (
            murmur_testkit::server::free_port()?,
            data.as_path(),
            "is in use by another nats-server".to_string(),
        ),
    ];
    for (port, data, expected) in refusals {
        let (status, stderr) = exited(up(port, data)?)?;
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains(&expected), "{expected:?} missing: {stderr}");
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()?;
    let status = murmur_e2e::wait_with_deadline(&mut first, DEADLINE)?
        .context("murmur up did not exit on SIGTERM")?;
    assert!(status.success(), "{status}");
    wait_closed(port)
}
