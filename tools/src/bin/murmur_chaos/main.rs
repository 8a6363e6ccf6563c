//! `murmur-chaos`: the fault suite. A 3-node R3 cluster in secure mode runs the platform
//! (coordinator, tallier, worker and voter agents as `murmur` processes) under three
//! workloads at once (tasks, proposals and votes, knowledge writes by three writers) while
//! faults are injected and healed: kill -9 of a node, of the stream leader, of a majority;
//! SIGSTOP of a node and of agents past their leases; the leader's routes cut while its
//! clients stay, or stalled (nothing passes, nothing closes); every route delayed, or losing
//! a tenth of what passes (delivered late, as TCP retransmits it); a node's
//! disk filled; clocks skewed; a flooding participant; the leader's store corrupted,
//! truncated or deleted; every node killed and restarted together, also as a power failure
//! (every store on a lazy disk that drops what its node had not synced); the leader removed from
//! the history stream's peers (a membership change: the replica moves to a fourth node,
//! started for runs with that fault). A checker then reads the log: every acknowledged
//! write present exactly once and in causal order, every task completed or dead-lettered,
//! every proposal decided with no vote counted twice, knowledge replicas converged with
//! every acknowledged fact, projections followed live equal to a replay, every node's copy
//! of the streams equal. What is lost is counted, not hidden.
//!
//! ```text
//! murmur-chaos --faults kill-node,partition --seconds 60 --sync both
//! ```

mod check;
mod faults;
mod replicas;
mod report;
mod run;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::faults::Fault;
use crate::report::RunReport;
use crate::run::{RunConfig, run};

/// The fault suite: faults × workloads × disk sync setting, checked against the log.
#[derive(Debug, Parser)]
#[command(name = "murmur-chaos", version)]
struct Args {
    /// Faults to inject (comma-separated); all when not given.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// `alone`: one run per fault; `mixed`: one run cycling through them; `both`.
    #[arg(long, value_enum, default_value_t = Schedule::Both)]
    schedule: Schedule,
    /// The servers' `sync_interval`: `always` (every write flushed before its ack),
    /// `default` (every 2 minutes), or `both`, side by side.
    #[arg(long, value_enum, default_value_t = Sync::Both)]
    sync: Sync,
    /// How long the workloads run in each run, in seconds; longer where the faults before
    /// the last listed one ran long, since every listed fault gets its turn.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// How long each fault holds, in seconds.
    #[arg(long, default_value_t = 8)]
    hold_s: u64,
    /// Quiet seconds after each heal.
    #[arg(long, default_value_t = 4)]
    calm_s: u64,
    /// The `murmur` binary the platform's processes run (default: next to this one).
    #[arg(long)]
    murmur: Option<PathBuf>,
    /// Write every run's report here as JSON.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the processes' logs go (default: a temporary folder, removed when all runs
    /// were clean).
    #[arg(long)]
    logs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Schedule {
    Alone,
    Mixed,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sync {
    Always,
    Default,
    Both,
}

/// The allocator the `murmur` binary uses, so that in-process agents and folds run as they do
/// there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("error: {}", murmur_tools::cli::error_line(&e));
        murmur_testkit::children::kill_all();
        std::process::exit(1);
    }
}

async fn real_main() -> Result<()> {
    let args = Args::parse();
    // fuser logs an error for each answer to a request whose process was killed mid-way
    // (a power loss kills every node with requests in flight): expected, so not shown.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("MURMUR_CHAOS_LOG")
                .unwrap_or_else(|_| "error,async_nats=off,fuser::reply=off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let murmur = match args.murmur {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("murmur"),
    };
    anyhow::ensure!(
        murmur.exists(),
        "no murmur binary at {}: build it (`cargo build -p murmur-tools --bin murmur`) or pass --murmur PATH",
        murmur.display()
    );
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut schedules: Vec<Vec<Fault>> = Vec::new();
    if matches!(args.schedule, Schedule::Alone | Schedule::Both) {
        schedules.extend(faults.iter().map(|f| vec![*f]));
    }
    if matches!(args.schedule, Schedule::Mixed | Schedule::Both)
        && (faults.len() > 1 || args.schedule == Schedule::Mixed)
    {
        schedules.push(faults.clone());
    }
    let syncs: &[bool] = match args.sync {
        Sync::Always => &[true],
        Sync::Default => &[false],
        Sync::Both => &[false, true],
    };
    let temp = tempfile::tempdir()?;
    let logs = args
        .logs
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut reports: Vec<RunReport> = Vec::new();
    let mut ended_early: Vec<String> = Vec::new();
    let total = schedules.len() * syncs.len();
    for (n, (schedule, &sync_always)) in schedules
        .iter()
        .flat_map(|s| syncs.iter().map(move |y| (s, y)))
        .enumerate()
    {
        let label = schedule
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join("+");
        eprintln!(
            "run {}/{total}: {label}, sync_interval {}",
            n + 1,
            if sync_always { "always" } else { "default" }
        );
        let config = RunConfig {
            faults: schedule.clone(),
            sync_always,
            workload: Duration::from_secs(args.seconds),
            hold: Duration::from_secs(args.hold_s),
            calm: Duration::from_secs(args.calm_s),
            murmur: murmur.clone(),
            logs: logs.join(format!("run{}", n + 1)),
        };
        let report = match run(&config).await {
            Ok(report) => report,
            Err(e) => {
                // A run that cannot finish (nothing left to check) fails the suite, which
                // goes on with the next run.
                let ended = format!(
                    "run {} ({label}) ended early: {}",
                    n + 1,
                    murmur_tools::cli::error_line(&e)
                );
                println!("  {ended}");
                ended_early.push(ended);
                murmur_testkit::children::kill_all();
                continue;
            }
        };
        println!("{}", row(&report));
        for name in &report.processes_exited {
            println!("  ended on its own: {name}");
        }
        for stream in &report.replicas.differing {
            println!(
                "  replicas differ: {stream} {:?}",
                report.replicas.streams.get(stream)
            );
        }
        for difference in &report.live_replay_differences {
            println!("  live ≠ replay: {difference}");
        }
        if !report.tasks.unresolved.is_empty() {
            println!(
                "  unresolved tasks: {}",
                report
                    .tasks
                    .unresolved
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        reports.push(report);
    }
    println!();
    println!("{}", HEADER);
    for r in &reports {
        println!("{}", row(r));
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let dirty = reports.iter().filter(|r| !r.clean()).count() + ended_early.len();
    if dirty > 0 {
        let kept = temp.keep();
        anyhow::bail!(
            "{dirty} of {total} runs found something lost, duplicated or unresolved, or ended early (above); the processes' logs are in {}",
            args.logs.unwrap_or(kept).display()
        );
    }
    println!("all {total} runs clean");
    Ok(())
}

/// The table's header (docs/reliability.md keeps the same columns).
const HEADER: &str = "| faults | sync | server | s | acked: tasks / proposals / facts | lost | duplicated | moved or reordered | tasks completed / dead-lettered / unresolved | completions stored twice | proposals decided / undecided | votes stored twice, counted twice | facts missing, replicas converged | live = replay | replicas equal | longest outage s | settle s | task p99 ms calm / worst fault | decision p99 ms calm / worst fault |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One table row.
fn row(r: &RunReport) -> String {
    // Longest outage; a fault the platform never recovered from within the deadline says so.
    let recovery = r
        .faults
        .iter()
        .map(|f| f.recovered_s.map(|_| f.outage_s))
        .try_fold(0f64, |max, s| s.map(|s| max.max(s)));
    format!(
        "| {} ({}×) | {} | {} | {:.0} | {} / {} / {} | {} | {} | {} | {} / {} / {} | {} | {} / {} | {}, {} | {}, {} | {} | {} | {} | {:.0} | {} / {} | {} / {} |",
        r.schedule,
        r.faults.len(),
        r.sync,
        r.server_version,
        r.workload_s,
        r.tasks.acked,
        r.proposals.acked,
        r.knowledge.acked,
        r.log.lost.len(),
        r.log.duplicated.len(),
        r.log.moved.len() + r.log.before_their_cause.len() + r.log.out_of_order_subjects.len(),
        r.tasks.completed,
        r.tasks.dead_lettered,
        r.tasks.unresolved.len(),
        r.tasks.completions_stored_twice,
        r.proposals.decided,
        r.proposals.undecided.len(),
        r.proposals.votes_stored_twice,
        r.proposals.tally_mismatches.len(),
        r.knowledge.missing,
        if r.knowledge.converged { "yes" } else { "no" },
        if r.live_equals_replay { "yes" } else { "no" },
        if r.replicas.differing.is_empty() && r.replicas.history_differing.is_empty() {
            "yes".to_string()
        } else {
            format!(
                "no: {}",
                r.replicas
                    .differing
                    .iter()
                    .chain(&r.replicas.history_differing)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
        recovery.map_or("not recovered".into(), |s| format!("{s:.1}")),
        r.settle_s,
        p99(r.calm_task_latency_ms),
        p99(worst(r, |f| f.task_latency_ms)),
        p99(r.calm_decision_latency_ms),
        p99(worst(r, |f| f.decision_latency_ms)),
    )
}

/// The highest p99 any fault's window saw.
fn worst(
    r: &RunReport,
    of: impl Fn(&report::FaultRecord) -> Option<(f64, f64)>,
) -> Option<(f64, f64)> {
    r.faults
        .iter()
        .filter_map(of)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn p99(p: Option<(f64, f64)>) -> String {
    p.map_or("–".into(), |(_, p99)| format!("{p99:.0}"))
}
