//! The console suite: the operator console as users run it (the page in headless Chromium,
//! following the log over NATS WebSocket; the console server's live folds) under load.
//! A realm of `--console-tasks` tasks is written first, then the page opens the Tasks view
//! (time until the counts and the newest rows are shown); then the Events view follows a
//! flood of `--console-rate` events/s for `--console-flood-s` seconds while the page
//! measures its frame times. The browser side is `tools/console/e2e/load.mjs`.
//!
//! ```text
//! cargo run --release --bin murmur-bench -- --console-tasks 100000 --console-rate 10000 --console-flood-s 60
//! ```

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use murmur_subjects::events::AgentLoadChanged;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventLog, Identity, Token};
use murmur_testkit::server::NatsProcess;

use crate::Args;
use crate::tasks::submit_tasks;

/// Appends `rate` load reports a second (in batches every 50 ms) for `seconds`; returns how
/// many were stored and the rate achieved.
async fn flood(log: &EventLog, rate: u64, seconds: u64) -> Result<(u64, f64)> {
    let agent = Token::new(log.identity().public_key())?;
    let per_tick = (rate / 20).max(1);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let drafts = (0..per_tick)
            .map(|k| {
                Draft::new(
                    agent.clone(),
                    &AgentLoadChanged {
                        load: (k % 100) as f32 / 100.0,
                        queue_depth: (k % 7) as u32,
                        lame_duck: false,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (_, p) in log.append_many(drafts).await? {
            pending.push_back(p);
        }
        sent += per_tick;
        if std::env::var_os("MURMUR_BENCH_TRACE").is_some() {
            eprintln!("flood: {sent} sent, {} acks pending", pending.len());
        }
        while pending.len() > 1024 {
            if let Some(p) = pending.pop_front() {
                p.wait().await?;
            }
        }
    }
    for p in pending {
        p.wait().await?;
    }
    Ok((sent, sent as f64 / start.elapsed().as_secs_f64()))
}

pub(crate) async fn console_suite(args: &Args, tasks: u64) -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    if !root.join("node_modules/playwright-core").exists() {
        bail!("the console's npm packages are missing: run `bash scripts/install.sh`");
    }
    if !murmur_tools::console::assets_built() {
        bail!(
            "this bench was built without the console page: run `bash scripts/install.sh`, then rebuild"
        );
    }
    let dir = tempfile::tempdir()?;
    let mut server = NatsProcess::start_serving(0, &dir.path().join("nats"), None, Some(0)).await?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let realm = Token::new("default")?;
    let client = murmur_subjects::connect::ConnectOptions::servers(&server.url())
        .connect()
        .await?;
    let log = EventLog::options(Identity::generate(), realm.clone())
        .open(client)
        .await?;
    log.provision().await?;
    murmur_testkit::authority::claim_realm(&log, "bench", &[Role::Submitter, Role::Worker]).await?;

    let t = Instant::now();
    // At most 1024 acks in flight (see `EventLog::append_sealed`).
    submit_tasks(&log, tasks, 1000, args.window.min(1024), |k| {
        format!("load-{k:07}")
    })
    .await?;
    let write_s = t.elapsed().as_secs_f64();
    eprintln!("wrote {tasks} tasks in {write_s:.1} s");
    let config = murmur_tools::console::PageConfig {
        websocket_url: server.websocket_url(),
        ..murmur_tools::console::PageConfig::for_log(&log, vec![server.url()])
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = Instant::now();
    let (addr, console) = murmur_tools::console::serve(
        log.clone(),
        config,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        async move {
            let _ = stopped.await;
        },
    )
    .await?;
    // The console's own start: its folds catch up with the realm before the page asks.
    let last = log.last_sequence(&log.config().history_stream).await?;
    let warm: serde_json::Value =
        reqwest::get(format!("http://{addr}/api/tasks?limit=1&at_least={last}"))
            .await?
            .json()
            .await?;
    let console_catch_up_s = t.elapsed().as_secs_f64();
    eprintln!(
        "console folded {} tasks in {console_catch_up_s:.1} s",
        warm["total"]
    );

    let mut node = std::process::Command::new("node")
        .arg("e2e/load.mjs")
        .current_dir(&root)
        .env("CONSOLE_URL", format!("http://{addr}/"))
        .env("TASKS", tasks.to_string())
        .env("FLOOD_S", args.console_flood_s.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running node (scripts/install.sh installs it)")?;
    let mut to_page = node.stdin.take().context("stdin")?;
    let lines = std::io::BufReader::new(node.stdout.take().context("stdout")?).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Result<String> {
        rx.recv_timeout(Duration::from_secs(300))
            .with_context(|| format!("the page did not report {what}"))
    };
    let ready = next("that it follows the events")?;
    anyhow::ensure!(ready.starts_with("ready"), "unexpected: {ready}");
    eprintln!(
        "flooding the Events view with {} events/s for {} s",
        args.console_rate, args.console_flood_s
    );
    let (sent, achieved) = flood(&log, args.console_rate, args.console_flood_s).await?;
    eprintln!("flood done: {sent} events at {achieved:.0}/s");
    let last = log.last_sequence(&log.config().history_stream).await?;
    std::io::Write::write_all(&mut to_page, format!("flood-done {last}\n").as_bytes())?;
    let report = next("its measurements")?;
    let status = node.wait()?;
    anyhow::ensure!(status.success(), "the page's load run failed: {status}");
    let _ = stop.send(());
    console.await??;
    let page: serde_json::Value = serde_json::from_str(&report)?;
    println!(
        "console suite (open server, {} build, headless Chromium)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("  tasks in the realm                 {tasks} (written in {write_s:.1} s)");
    println!("  console server caught up           {console_catch_up_s:.2} s");
    println!(
        "  Tasks view shown (open → rows)     {} ms  (api /api/tasks alone: {} ms)",
        page["tasks_view_ms"], page["tasks_api_ms"]
    );
    println!(
        "  flood                              {sent} events at {achieved:.0}/s for {} s",
        args.console_flood_s
    );
    println!(
        "  Events view frames                 {} frames, p50 {} ms, p95 {} ms, p99 {} ms, longest {} ms",
        page["frames"],
        page["frame_p50_ms"],
        page["frame_p95_ms"],
        page["frame_p99_ms"],
        page["frame_max_ms"]
    );
    println!(
        "  events the page followed           {}/s during the flood; {} behind when it ended, caught up {} ms later",
        page["events_per_s_during_flood"], page["behind_at_flood_end"], page["caught_up_after_ms"]
    );
    println!(
        "  page JS heap at the end            {} MiB",
        page["heap_mib"]
    );
    Ok(())
}
