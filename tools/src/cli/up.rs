//! `murmur up`: the local platform (a nats-server in operator mode unless `--insecure`,
//! the streams, the realm claimed, and its auditor, liveness monitor, coordinator, tallier and
//! compactor) until ctrl-c.

use std::time::Duration;

use anyhow::Result;
use murmur_subjects::EventLog;
use murmur_subjects::connect::ConnectOptions;
use murmur_testkit::server::NatsProcess;

use crate::config::load_or_create_identity;
use crate::settings::{OPERATOR_CREDS, Settings};

/// Where the operator console listens.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// HTTP port on 127.0.0.1.
    pub port: u16,
    /// The local server's WebSocket port.
    pub websocket_port: u16,
    /// The WebSocket URL of a server murmur up did not start.
    pub websocket_url: Option<String>,
}

/// Runs the local platform until ctrl-c or SIGTERM.
pub async fn run(
    settings: &Settings,
    port: u16,
    insecure: bool,
    console: Option<ConsoleSettings>,
    archive: Option<crate::archive::ArchiveConfig>,
    sync_interval: Option<&str>,
) -> Result<()> {
    use murmur_subjects::roles::Role;
    // Listening from the start (SIGTERM too): a process manager's stop must not orphan the
    // nats-server started below.
    let stop = crate::signals::shutdown_signal()?;
    let identity = load_or_create_identity(&settings.identity_file)?;
    let mut _server = None;
    let mut websocket_url = console.as_ref().and_then(|c| c.websocket_url.clone());
    let connect = match &settings.connect {
        Some(_) if sync_interval.is_some() => anyhow::bail!(
            "--sync-interval sets the server murmur up starts, and with NATS_URL (or --server) it starts none: set sync_interval in that server's jetstream block instead"
        ),
        Some(c) => c.clone(),
        None => {
            let store = settings.data_dir.join("nats");
            let auth = if insecure {
                None
            } else {
                let authority = murmur_testkit::authority::Authority::open_or_create(
                    &settings.data_dir.join("auth"),
                )?;
                authority.realm_keys(&settings.realm)?;
                let creds = settings.data_dir.join(OPERATOR_CREDS);
                murmur_testkit::authority::write_secret(
                    &creds,
                    &authority.creds(
                        &settings.realm,
                        Role::Operator,
                        "operator",
                        &identity,
                        None,
                    )?,
                )?;
                Some(murmur_testkit::server::ServerAuth {
                    config: authority.server_config(&settings.log, &store.join("jwt"))?,
                    creds,
                })
            };
            let mut server = NatsProcess::start_local(
                port,
                &store,
                auth.as_ref(),
                console.as_ref().map(|c| c.websocket_port),
                sync_interval,
            )
            .await?;
            server.wait_ready(Duration::from_secs(60)).await?;
            let c = ConnectOptions::servers(&server.url());
            let c = match &auth {
                Some(auth) => {
                    eprintln!(
                        "nats-server with JetStream at {} in operator mode (store {}): connections need credentials",
                        server.url(),
                        store.display()
                    );
                    eprintln!(
                        "operator credentials: {} (only you can read them; murmur commands with this data dir use them)",
                        auth.creds.display()
                    );
                    c.auth(murmur_subjects::connect::Auth::CredsFile {
                        path: auth.creds.clone(),
                    })
                }
                None => {
                    eprintln!(
                        "INSECURE: nats-server with JetStream at {} (store {}) lets anyone who reaches it read, write and delete everything (--insecure)",
                        server.url(),
                        store.display()
                    );
                    c
                }
            };
            eprintln!(
                "{}",
                match sync_interval {
                    Some("always") => "disk sync: every write before its acknowledgement (--sync-interval always)".to_string(),
                    Some(every) => format!("disk sync: every {every} (--sync-interval): a power failure loses what was acknowledged since the last one"),
                    None => "disk sync: the server's default, every 2 minutes: a power failure loses what was acknowledged since the last one (--sync-interval always syncs every write)".to_string(),
                }
            );
            websocket_url = server.websocket_url();
            _server = Some(server);
            c
        }
    };
    let client = connect.clone().name("murmur-up").connect().await?;
    let log = EventLog::options(identity, settings.realm.clone())
        .config(settings.log.clone())
        .codec(settings.codec.clone())
        .open(client)
        .await?;
    log.provision().await?;
    murmur_testkit::authority::claim_realm(
        &log,
        "murmur up",
        &[
            Role::Coordinator,
            Role::Tallier,
            Role::Auditor,
            Role::Monitor,
        ],
    )
    .await?;
    eprintln!(
        "streams ready: {} (history), {} (dead letters); realm {} owned by {}; auditor, liveness monitor, coordinator, tallier and compactor running. ctrl-c to stop.",
        settings.log.history_stream,
        settings.log.dlq_stream,
        settings.realm,
        log.identity().public_key()
    );
    eprintln!(
        "in another shell: NATS_URL={} murmur events tail",
        connect.servers.join(",")
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    eprintln!("{}", retention_line(&settings.log, archive.as_ref()));
    let (archive, archive_interval) = match &archive {
        Some(a) => (
            Some(crate::archive::Archive::open(&a.dir)?),
            Duration::from_secs(a.interval_s.max(1)),
        ),
        None => (None, Duration::from_secs(600)),
    };
    let archiver = tokio::spawn(crate::archive::run_archiver(
        log.clone(),
        archive,
        archive_interval,
        stopped(stop_rx.clone()),
    ));
    let monitor = tokio::spawn(murmur_coordination::liveness::run_monitor(
        log.clone(),
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        stopped(stop_rx.clone()),
    ));
    let coordinator = tokio::spawn(murmur_coordination::coordinator::run_coordinator(
        log.clone(),
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        murmur_coordination::coordinator::CoordinatorConfig::default(),
        stopped(stop_rx.clone()),
    ));
    let tallier = tokio::spawn(murmur_coordination::tallier::run_tallier(
        log.clone(),
        std::sync::Arc::new(murmur_subjects::clock::SystemClock),
        Duration::from_millis(100),
        stopped(stop_rx.clone()),
    ));
    let compactor = tokio::spawn(murmur_knowledge::compaction::run_compactor(
        log.clone(),
        stopped(stop_rx.clone()),
    ));
    let console_task = match &console {
        Some(c) => Some(
            start_console(
                settings,
                &log,
                &connect,
                c.port,
                websocket_url,
                stopped(stop_rx.clone()),
            )
            .await?,
        ),
        None => None,
    };
    let auditor = tokio::spawn(murmur_subjects::audit::run_auditor(
        log,
        stopped(stop_rx),
        None,
    ));
    stop.await;
    stop_tx.send_replace(true);
    auditor.await??;
    monitor.await??;
    coordinator.await??;
    tallier.await??;
    compactor.await??;
    archiver.await??;
    if let Some(console) = console_task {
        console.await??;
    }
    eprintln!("stopped");
    Ok(())
}

/// Serves the operator console: issues the page read-only (observer) credentials of a fresh
/// key when the server has accounts, and prints where to open it.
async fn start_console(
    settings: &Settings,
    log: &EventLog,
    connect: &ConnectOptions,
    port: u16,
    websocket_url: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    use murmur_subjects::roles::Role;
    // Only for a server this murmur up started: its operator keys are the ones here. With
    // NATS_URL the page gets no credentials and asks for them.
    let (observer_creds, enroller) = match &connect.auth {
        _ if settings.connect.is_some() => (None, None),
        murmur_subjects::connect::Auth::None => (None, None),
        _ => {
            let authority = murmur_testkit::authority::Authority::open_or_create(
                &settings.data_dir.join("auth"),
            )?;
            let page = murmur_subjects::Identity::generate();
            let creds = authority.creds(&settings.realm, Role::Observer, "console", &page, None)?;
            let realm = settings.realm.clone();
            let enroller: crate::console::Enroller = std::sync::Arc::new(move |key, name| {
                authority.user_jwt(&realm, Role::Worker, name, key, None)
            });
            (Some(creds), Some(enroller))
        }
    };
    let config = crate::console::PageConfig {
        websocket_url: websocket_url.clone(),
        observer_creds,
        browser_agents: enroller.is_some(),
        enroller,
        ..crate::console::PageConfig::for_log(log, connect.servers.clone())
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (bound, task) = crate::console::serve(log.clone(), config, listen, stop).await?;
    if !crate::console::assets_built() {
        eprintln!(
            "the console's page was not built into this binary: run `bash scripts/install.sh` (it builds tools/console), then rebuild; its JSON API works meanwhile"
        );
    }
    match websocket_url {
        Some(ws) => eprintln!("console: http://{bound}/ (the page follows the log over {ws})"),
        None => eprintln!(
            "console: http://{bound}/ — but the server at {} has no WebSocket URL for the page: pass --websocket-url",
            connect.servers.join(",")
        ),
    }
    Ok(task)
}

/// What the history stream keeps, said once at start: past either limit the server drops
/// the oldest events, so the operator chooses the limits (`[log]`) and whether an archive
/// keeps a copy (`[archive]`, `--archive-dir`).
fn retention_line(
    log: &murmur_subjects::LogConfig,
    archive: Option<&crate::archive::ArchiveConfig>,
) -> String {
    let age = match log.max_age.as_secs() {
        0 => "no age limit".to_string(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s => format!("{s} s"),
    };
    let bytes = match log.max_bytes {
        b if b <= 0 => "no size limit".to_string(),
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b => format!("{b} bytes"),
    };
    let archive = match archive {
        Some(a) => format!(
            "every event archived to {} (every {} s)",
            a.dir.display(),
            a.interval_s
        ),
        None => "no archive (--archive-dir or [archive] dir keeps a copy)".to_string(),
    };
    format!(
        "history retention: {age} or {bytes}, the oldest events dropped past either ([log] max_age, max_bytes); {archive}"
    )
}
