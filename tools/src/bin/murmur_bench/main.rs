//! `murmur-bench`: murmur's event log against raw async-nats on the same server in the same
//! run. Prints ratios (murmur / raw) for publish, replay and core dispatch, medians over
//! several runs, plus a per-event CPU breakdown.
//!
//! ```text
//! cargo run --release --bin murmur-bench -- --events 50000 --runs 5
//! ```

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use murmur_subjects::roles::Role;
use murmur_subjects::{EventCodec, EventLog, Identity, LogConfig, Token};
use murmur_testkit::server::NatsProcess;

mod consensus;
mod console;
mod event_log;
mod flake;
mod inference;
mod knowledge;
mod raw_flows;
mod tasks;

use consensus::consensus_suite;
use event_log::event_log_suite;
use flake::flake_suite;
use knowledge::kb_suite;
use tasks::task_suite;

#[derive(Parser)]
pub(crate) struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Acks in flight.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Content mode on the wire (both the raw baseline and murmur use the same bytes).
    #[arg(long, default_value = "structured")]
    mode: String,
    /// Run the task suite (issue 3) with this many no-op tasks instead of the event-log suite.
    #[arg(long)]
    tasks: Option<u64>,
    /// No-op worker agents in the task suite.
    #[arg(long, default_value_t = 2)]
    task_workers: usize,
    /// Open tasks the task suite's backpressured run (`SubmitWindow`) allows at once.
    #[arg(long, default_value_t = 128)]
    submit_window: usize,
    /// Steer the submit window to keep each task's submit → complete within this many
    /// milliseconds (`SubmitWindow::with_latency_target`); `--submit-window` is then the
    /// most it allows.
    #[arg(long)]
    submit_latency_target_ms: Option<u64>,
    /// The `murmur` binary whose idle agent the task suite measures (RSS), e.g. one built
    /// with `--profile deploy`; by default the `murmur` next to this bench.
    #[arg(long)]
    agent_binary: Option<std::path::PathBuf>,
    /// Only the event log's per-event CPU breakdown and envelope sizes (seal, encode,
    /// decode and verify in-process, each field's bytes), repeated `--runs` times; needs no
    /// NATS (for a profiler).
    #[arg(long)]
    breakdown: bool,
    /// Run the flake suite (issue 6) for these graph sizes (nodes), e.g. 100,1000,10000;
    /// needs no NATS.
    #[arg(long, value_delimiter = ',')]
    flake_nodes: Vec<usize>,
    /// Run the consensus suite (issue 4) with these voter counts, e.g. 5,25,100.
    #[arg(long, value_delimiter = ',')]
    voters: Vec<usize>,
    /// Proposals per voter count in the consensus suite.
    #[arg(long, default_value_t = 100)]
    proposals: usize,
    /// In the consensus suite, run the voters as agents (`EventHandlers::votes` with a policy that
    /// approves everything, each following the proposals from the log) instead of the
    /// minimal in-process voters fed by one core subscription.
    #[arg(long)]
    voter_agents: bool,
    /// Run the knowledge suite (issue 5) with a space of this many facts, e.g. 100000.
    #[arg(long)]
    kb_facts: Option<usize>,
    /// Documents the benchmark space is split into.
    #[arg(long, default_value_t = 8)]
    kb_shards: u16,
    /// The server the event-log and task suites run on: in operator mode (every participant
    /// with credentials for its role, as `murmur up` runs), open (no authentication), or
    /// both, one after the other, with the ratio of each figure (secure / open). The
    /// consensus and knowledge suites run on an open server.
    #[arg(long, value_enum, default_value_t = AuthMode::Secure)]
    auth: AuthMode,
    /// Run the inference suite on this GGUF model instead: murmur against llama.cpp on the
    /// same file (`scripts/bench-inference.sh` installs the baseline). Threads: candle's
    /// setting, RAYON_NUM_THREADS (default: every core), given to llama.cpp as well.
    #[arg(long, value_name = "GGUF")]
    inference: Option<std::path::PathBuf>,
    /// Tokens generated per run in the inference suite.
    #[arg(long, default_value_t = 60)]
    inference_tokens: usize,
    /// Run the console suite with a realm of this many tasks (the page in headless
    /// Chromium; `scripts/install.sh` installs it).
    #[arg(long)]
    console_tasks: Option<u64>,
    /// Events a second the console suite floods the Events view with.
    #[arg(long, default_value_t = 10_000)]
    console_rate: u64,
    /// Seconds the console suite's flood lasts.
    #[arg(long, default_value_t = 60)]
    console_flood_s: u64,
    /// The Python with `xllamacpp` that runs the llama.cpp baseline (none: murmur only).
    #[arg(long, value_name = "PYTHON")]
    baseline_python: Option<std::path::PathBuf>,
    /// The local server's JetStream `sync_interval` (`always`: every write synced before
    /// its ack; a duration such as `2m`); the server's default when not given.
    #[arg(long, value_name = "INTERVAL")]
    sync_interval: Option<String>,
}

/// Which server the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AuthMode {
    /// Operator mode.
    Secure,
    /// No authentication.
    Open,
    /// Both, in that order: open, then secure.
    Both,
}

/// The server a suite runs on, and how its participants connect to it.
pub(crate) struct Target {
    url: String,
    /// Issues each participant credentials for its role (operator mode); `None`: open.
    issuer: Option<murmur_testkit::authority::Issuer>,
    /// The local server's `sync_interval`, when set.
    sync_interval: Option<String>,
    _server: Option<NatsProcess>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// The process id of the server this bench started (none with `NATS_URL`).
    pub(crate) fn server_pid(&self) -> Option<u32> {
        self._server.as_ref().and_then(NatsProcess::pid)
    }

    /// A local server of its own (or `NATS_URL`, open), in operator mode when `secure`.
    async fn start(secure: bool, sync_interval: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        if let Ok(url) = std::env::var("NATS_URL")
            && !url.trim().is_empty()
        {
            anyhow::ensure!(
                !secure,
                "with NATS_URL the bench connects anonymously: run it with --auth open, or without NATS_URL"
            );
            return Ok(Self {
                url,
                issuer: None,
                sync_interval: None,
                _server: None,
                _dir: Some(dir),
            });
        }
        let (auth, authority) = if secure {
            let authority =
                murmur_testkit::authority::Authority::open_or_create(&dir.path().join("auth"))?;
            let creds = dir.path().join("system.creds");
            murmur_testkit::authority::write_secret(&creds, &authority.system_creds()?)?;
            let config = authority.server_config(&LogConfig::default(), &dir.path().join("jwt"))?;
            (
                Some(murmur_testkit::server::ServerAuth { config, creds }),
                Some(authority),
            )
        } else {
            (None, None)
        };
        let mut server = NatsProcess::start_local(
            0,
            &dir.path().join("nats"),
            auth.as_ref(),
            None,
            sync_interval,
        )
        .await?;
        server.wait_ready(Duration::from_secs(60)).await?;
        eprintln!(
            "server log: {}",
            dir.path().join("nats/nats-server.log").display()
        );
        let url = server.url();
        let issuer = authority.map(|a| {
            murmur_testkit::authority::Issuer::new(
                Some(a),
                vec![url.clone()],
                Identity::generate(),
                &dir.path().join("creds"),
                LogConfig::default(),
                EventCodec::default(),
            )
        });
        Ok(Self {
            url,
            issuer,
            sync_interval: sync_interval.map(str::to_string),
            _server: Some(server),
            // MURMUR_BENCH_KEEP: the server's store and log stay after the run.
            _dir: if std::env::var_os("MURMUR_BENCH_KEEP").is_some() {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
        })
    }

    fn label(&self) -> String {
        let mode = if self.issuer.is_some() {
            "operator mode"
        } else {
            "open"
        };
        match &self.sync_interval {
            Some(sync) => format!("{mode}, sync_interval {sync}"),
            None => mode.to_string(),
        }
    }

    /// Connection options for a fresh participant with `role` in `realm`'s account, and its
    /// identity (the key its credentials name, in operator mode).
    async fn participant(
        &self,
        realm: &Token,
        role: Role,
        name: &str,
    ) -> Result<(murmur_subjects::connect::ConnectOptions, Identity)> {
        let identity = Identity::generate();
        let options = match &self.issuer {
            Some(issuer) => {
                issuer.open_realm(realm).await?;
                let creds = issuer.creds_file(realm, role, name, &identity)?;
                issuer.connect_options(creds.as_deref())
            }
            None => murmur_subjects::connect::ConnectOptions::servers(&self.url),
        };
        Ok((options.name(name), identity))
    }

    /// An event log for a fresh participant with `role` in `realm`.
    async fn log(&self, realm: &Token, role: Role, name: &str) -> Result<EventLog> {
        let (options, identity) = self.participant(realm, role, name).await?;
        Ok(EventLog::options(identity, realm.clone())
            .open(options.connect().await?)
            .await?)
    }

    /// Grants `log`'s identity `roles` in the log as the realm's owner would (in operator
    /// mode the issuer's owner; open: `log` claims the realm itself).
    async fn grant(&self, log: &EventLog, roles: &[Role]) -> Result<()> {
        match &self.issuer {
            Some(issuer) => {
                let owner = issuer.owner_log(log.realm()).await?;
                for role in roles {
                    murmur_testkit::authority::grant(
                        &owner,
                        log.identity().public_key(),
                        *role,
                        "bench",
                        None,
                    )
                    .await?;
                }
                Ok(())
            }
            None => murmur_testkit::authority::claim_realm(log, "bench", roles).await,
        }
    }
}

/// Connecting and authenticating, `n` times in turn (each connection's first round trip
/// included): medians and p99 in ms.
pub(crate) async fn connect_times(target: &Target, n: usize) -> Result<(f64, f64)> {
    let (options, _) = target
        .participant(&Token::new("bench")?, Role::Worker, "connect")
        .await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let client = options.connect().await?;
        client.flush().await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(client);
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// User + system CPU seconds of `/proc/{pid}/stat` (`pid` may be `self`).
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: the
    // third field (state) first, so utime and stime (fields 14 and 15) are at 11 and 12.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    const USER_HZ: f64 = 100.0;
    Some((utime + stime) / USER_HZ)
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
pub(crate) fn vm_rss_kib(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The allocator the `murmur` binary uses, so that in-process agents and folds run as they do
/// there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Diagnostics on stderr when asked for (RUST_LOG=murmur_coordination=debug, …).
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Some(model) = &args.inference {
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        return inference::inference_suite(
            model,
            threads,
            args.inference_tokens,
            args.runs,
            args.baseline_python.as_deref(),
        );
    }
    if args.breakdown {
        for _ in 0..args.runs {
            for mode in [
                murmur_subjects::binding::ContentMode::Structured,
                murmur_subjects::binding::ContentMode::Binary,
            ] {
                println!("{}", event_log::cpu_breakdown(mode)?);
                println!("{}", event_log::envelope_costs(mode)?);
            }
        }
        return Ok(());
    }
    if !args.flake_nodes.is_empty() {
        return flake_suite(&args.flake_nodes, args.runs);
    }
    if let Some(tasks) = args.console_tasks {
        return console::console_suite(&args, tasks).await;
    }
    if args.kb_facts.is_some() || !args.voters.is_empty() {
        let target = Target::start(false, args.sync_interval.as_deref()).await?;
        let url = target.url.clone();
        let version = async_nats::connect(&url).await?.server_info().version;
        println!("nats-server {version} at {url} (open)");
        if let Some(facts) = args.kb_facts {
            return kb_suite(&url, facts, args.kb_shards).await;
        }
        return consensus_suite(&url, &args.voters, args.proposals, args.voter_agents).await;
    }
    let modes: &[bool] = match args.auth {
        AuthMode::Secure => &[true],
        AuthMode::Open => &[false],
        AuthMode::Both => &[false, true],
    };
    let mut figures: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for &secure in modes {
        let target = Target::start(secure, args.sync_interval.as_deref()).await?;
        let (connect_p50, connect_p99) = connect_times(&target, 200).await?;
        println!(
            "\n## {} server at {}: connect + authenticate (first round trip included), 200 in turn: p50 {connect_p50:.2} ms, p99 {connect_p99:.2} ms",
            target.label(),
            target.url
        );
        let mut these = vec![(
            "connect + authenticate p50 (ms; lower is better)".to_string(),
            connect_p50,
        )];
        if let Some(tasks) = args.tasks {
            these.extend(
                task_suite(
                    &target,
                    tasks,
                    args.window,
                    args.task_workers,
                    args.submit_window,
                    args.submit_latency_target_ms.map(Duration::from_millis),
                    args.agent_binary.clone(),
                )
                .await?,
            );
        } else {
            these.extend(event_log_suite(&target, &args).await?);
        }
        figures.push((target.label(), these));
    }
    if let [(open_label, open), (secure_label, secure)] = &figures[..] {
        println!("\n| figure | {open_label} | {secure_label} | {secure_label} / {open_label} |");
        println!("|---|---:|---:|---:|");
        for ((name, o), (_, s)) in open.iter().zip(secure) {
            println!("| {name} | {o:.2} | {s:.2} | {:.3} |", s / o);
        }
    }
    Ok(())
}
