//! The faults the suite injects, each undone by [`Injected::heal`]. Only loopback and the
//! processes the suite started itself are touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_subjects::EventLog;
use murmur_testkit::TestCluster;
use murmur_testkit::links::LinkState;
use serde::Serialize;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 of one node that does not lead the history stream, restarted after the hold.
    KillNode,
    /// kill -9 of the history stream's leader.
    KillLeader,
    /// kill -9 of two nodes (no quorum), both restarted after the hold.
    KillMajority,
    /// SIGSTOP of the stream leader's process for the hold (longer than Raft's election
    /// timeout), then SIGCONT.
    PauseNode,
    /// SIGSTOP of one worker and one voter agent for the hold (longer than their leases and
    /// heartbeats), then SIGCONT.
    PauseAgents,
    /// The stream leader's routes cut for the hold; its clients stay connected to it (the
    /// minority side of a majority/minority split).
    Partition,
    /// The stream leader's routes stalled for the hold: nothing passes and nothing is
    /// closed, as when the network drops every packet, so each side learns of it only by
    /// its own timeouts; what was held is delivered once the routes are up again. Its
    /// clients stay connected to it.
    Stall,
    /// Every route delayed by 150 ms each way for the hold.
    Delay,
    /// Every route losing 10% of what passes for the hold: a lost chunk arrives once a
    /// retransmission gets through (200 ms, doubling), and what follows it waits behind it,
    /// as TCP delivers a lossy network's packets to the servers.
    Loss,
    /// kill -9 of every node at once, then all restarted together (a power failure as
    /// far as processes go: the operating system's page cache survives it).
    RestartAll,
    /// A power failure: kill -9 of every node at once, and every store (each on a lazy
    /// disk, FUSE) loses what its node had not synced, as the page cache does when the
    /// power goes; then all restarted together. Needs root and `/dev/fuse`.
    PowerLoss,
    /// The disk under one node's store (a small tmpfs, n3) filled to the last byte for the
    /// hold, then freed. Needs root to mount the tmpfs.
    DiskFull,
    /// One worker's and one voter's wall clock 45 s ahead for the hold (libfaketime,
    /// `apt install faketime`); their monotonic clocks are left alone.
    ClockSkew,
    /// One participant floods for the hold: a worker identity appends signed events as fast
    /// as the server acknowledges them (`task.started` for tasks it does not hold: stored,
    /// then refused by the fold), and a voter identity keeps sending messages past its
    /// role's 64 KiB limit, each closing its connection.
    Flood,
    /// kill -9 of the history stream's leader, then bits flipped in its stream files: eight
    /// single-bit errors spread evenly through each message block of every stream on its
    /// store (the same offsets every run); restarted after the hold.
    CorruptStore,
    /// kill -9 of the history stream's leader, then the newest message block of every
    /// stream on its store cut to half its length (a torn write); restarted after the hold.
    TruncateStore,
    /// kill -9 of the history stream's leader, then its whole JetStream store deleted (the
    /// disk replaced: streams, Raft logs and the cluster's metadata); restarted under the
    /// same name with nothing.
    WipeStore,
    /// A membership change: the history stream's leader removed from the stream's peers
    /// (`$JS.API.STREAM.PEER.REMOVE`, what `nats stream cluster peer-remove` sends), so
    /// JetStream places the replica on the node that held none and catches it up while the
    /// workloads write. A run with this fault starts four nodes (with three, an R3 stream
    /// has nowhere to move: the server refuses with `peer remap failed`).
    ReplacePeer,
}

impl Fault {
    /// Every fault, in the order a mixed run cycles through them.
    pub const ALL: [Fault; 18] = [
        Fault::KillNode,
        Fault::KillLeader,
        Fault::PauseAgents,
        Fault::Partition,
        Fault::Stall,
        Fault::ClockSkew,
        Fault::PauseNode,
        Fault::Delay,
        Fault::Loss,
        Fault::DiskFull,
        Fault::Flood,
        Fault::CorruptStore,
        Fault::TruncateStore,
        Fault::WipeStore,
        Fault::KillMajority,
        Fault::RestartAll,
        Fault::PowerLoss,
        Fault::ReplacePeer,
    ];

    /// Whether it damages a node's store (that node is then handed the stream's lead).
    pub fn damages_store(self) -> bool {
        matches!(
            self,
            Fault::CorruptStore | Fault::TruncateStore | Fault::WipeStore
        )
    }

    /// Whether a run with it needs a fourth node, where a stream's replica can move.
    pub fn needs_spare_node(self) -> bool {
        self == Fault::ReplacePeer
    }

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillNode => "kill-node",
            Fault::KillLeader => "kill-leader",
            Fault::KillMajority => "kill-majority",
            Fault::PauseNode => "pause-node",
            Fault::PauseAgents => "pause-agents",
            Fault::Partition => "partition",
            Fault::Stall => "stall",
            Fault::Delay => "delay",
            Fault::Loss => "loss",
            Fault::RestartAll => "restart-all",
            Fault::PowerLoss => "power-loss",
            Fault::DiskFull => "disk-full",
            Fault::ClockSkew => "clock-skew",
            Fault::Flood => "flood",
            Fault::CorruptStore => "corrupt-store",
            Fault::TruncateStore => "truncate-store",
            Fault::WipeStore => "wipe-store",
            Fault::ReplacePeer => "replace-peer",
        }
    }
}

/// What the faults act on besides the cluster.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Pids of one worker and one voter agent.
    pub agents: Vec<u32>,
    /// libfaketime's timestamp file those two agents read their wall-clock offset from, when
    /// libfaketime is installed.
    pub skew_file: Option<PathBuf>,
    /// The flooding worker's log.
    pub storm: Option<EventLog>,
    /// The flooding voter's credentials, and the server it connects to.
    pub oversized: Option<(PathBuf, String)>,
    /// A log with the operator's rights: the membership change asks the server through it.
    pub operator: Option<EventLog>,
}

/// The offset [`Fault::ClockSkew`] sets, in libfaketime's notation (seconds).
const SKEW: &str = "+45";

/// libfaketime's preload library, where Debian's `faketime` package puts it.
pub fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .find_map(|arch| {
            let candidate = arch.path().join("faketime/libfaketime.so.1");
            candidate.exists().then_some(candidate)
        });
    lib.or_else(|| {
        let candidate = PathBuf::from("/usr/lib/faketime/libfaketime.so.1");
        candidate.exists().then_some(candidate)
    })
}

/// A fault in effect, and what undoes it.
#[derive(Debug)]
pub enum Injected {
    /// Nodes killed; restarted together.
    Killed(Vec<usize>),
    /// Every node killed and what no node had synced dropped from the stores; restarted
    /// together.
    PoweredOff(murmur_testkit::lazy_disk::PowerLoss),
    /// A node killed and its store damaged (what was done, said in the report); restarted.
    Damaged(usize, String),
    /// A node paused.
    PausedNode(usize),
    /// Agent processes paused (pids).
    PausedAgents(Vec<u32>),
    /// Links cut or delayed.
    Links,
    /// Node `.0`'s disk filled by the file `.1`.
    DiskFilled(usize, PathBuf),
    /// Agents' clocks set ahead through this timestamp file.
    Skewed(PathBuf),
    /// Flooders running until told to stop.
    Flooding {
        /// Stops them.
        stop: tokio::sync::watch::Sender<bool>,
        /// The storm: events acknowledged.
        storm: tokio::task::JoinHandle<u64>,
        /// Oversized messages sent (each closing a connection).
        oversized: tokio::task::JoinHandle<u64>,
        /// When they started.
        since: std::time::Instant,
    },
    /// The history stream's replica on node `from` removed from its peers; healed once
    /// three current peers hold it without that node.
    Moved {
        /// The node removed.
        from: usize,
        /// Watches the stream from the removal on: how long until three current peers
        /// without `from` held it, and who they were (the last peers seen when that did not
        /// happen within 120 s).
        watch: tokio::task::JoinHandle<(Option<Duration>, Option<Vec<usize>>)>,
    },
    /// Not injected, and why (what is missing on this machine).
    Skipped(String),
}

/// Injects `fault`; `leader` is the history stream's leader and `followers` its other
/// peers (0-based).
pub async fn inject(
    cluster: &mut TestCluster,
    fault: Fault,
    leader: usize,
    followers: &[usize],
    targets: &Targets,
) -> Result<Injected> {
    let nodes = cluster.cluster.nodes.len();
    // A follower of the stream (with no answer from the stream, the next node).
    let other = followers.first().copied().unwrap_or((leader + 1) % nodes);
    Ok(match fault {
        Fault::KillNode => kill(cluster, vec![other]).await?,
        Fault::KillLeader => kill(cluster, vec![leader]).await?,
        Fault::KillMajority => kill(cluster, vec![leader, other]).await?,
        Fault::RestartAll => kill(cluster, (0..nodes).collect()).await?,
        Fault::PowerLoss => Injected::PoweredOff(cluster.cluster.cut_power().await?),
        Fault::ReplacePeer => match &targets.operator {
            Some(log) if nodes > 3 => match remove_peer(log, leader).await {
                Ok(()) => Injected::Moved {
                    from: leader,
                    watch: tokio::spawn(watch_move(log.clone(), leader)),
                },
                Err(refused) => Injected::Skipped(format!(
                    "the removal of n{} was refused: {refused}",
                    leader + 1
                )),
            },
            _ => Injected::Skipped(
                "no spare node: the cluster was started with three (a run whose faults include replace-peer starts four)".into(),
            ),
        },
        Fault::CorruptStore | Fault::TruncateStore | Fault::WipeStore => {
            cluster.stop(leader).await?;
            let store = store_of(cluster, leader);
            let done = match fault {
                Fault::CorruptStore => flip_bits(&store)?,
                Fault::TruncateStore => truncate_newest_blocks(&store)?,
                _ => wipe(&store)?,
            };
            Injected::Damaged(leader, done)
        }
        Fault::PauseNode => {
            cluster.cluster.nodes[leader].pause()?;
            Injected::PausedNode(leader)
        }
        Fault::PauseAgents => {
            for pid in &targets.agents {
                signal(*pid, nix::sys::signal::Signal::SIGSTOP)?;
            }
            Injected::PausedAgents(targets.agents.clone())
        }
        Fault::Partition => {
            cluster.cluster.isolate(leader);
            Injected::Links
        }
        Fault::Stall => {
            cluster.cluster.set_between(&[leader], LinkState::Stalled);
            Injected::Links
        }
        Fault::Delay => {
            cluster
                .cluster
                .set_all_links(LinkState::Delayed(Duration::from_millis(150)));
            Injected::Links
        }
        Fault::Loss => {
            cluster.cluster.set_all_links(LinkState::Lossy {
                percent: 10,
                rto: Duration::from_millis(200),
            });
            Injected::Links
        }
        Fault::DiskFull => match cluster.cluster.small_disk() {
            Some((node, store)) => {
                let filler = store.join("filler");
                fill(&filler)?;
                Injected::DiskFilled(node, filler)
            }
            None => Injected::Skipped("no small disk under a node (needs root)".into()),
        },
        Fault::Flood => match (&targets.storm, &targets.oversized) {
            (Some(log), Some((creds, url))) => {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                Injected::Flooding {
                    storm: tokio::spawn(storm(log.clone(), stopped.clone())),
                    oversized: tokio::spawn(oversize(creds.clone(), url.clone(), stopped)),
                    stop,
                    since: std::time::Instant::now(),
                }
            }
            _ => Injected::Skipped("no flooding participants".into()),
        },
        Fault::ClockSkew => match &targets.skew_file {
            Some(file) => {
                std::fs::write(file, SKEW)?;
                Injected::Skewed(file.clone())
            }
            None => Injected::Skipped("libfaketime is not installed (apt install faketime)".into()),
        },
    })
}

/// How often the removal of a peer still listed is asked for again while the move is
/// watched: longer than a removal that was not lost takes to show (about 10 s after a
/// partition heals, on the 2-core VM alone).
const ASK_AGAIN_EVERY: Duration = Duration::from_secs(30);

/// Watches the history stream after node `from` left its peers: how long until three
/// current peers without it held the stream, and who they were; gives up after 120 s.
/// nats-server answers a removal once its meta leader has proposed it, not once the meta
/// group has committed it, so a fault that cuts the meta leader off right after can lose
/// it: while `from` is still listed, the removal is asked for again every
/// [`ASK_AGAIN_EVERY`] (asked again while the first is under way, it is refused).
async fn watch_move(log: EventLog, from: usize) -> (Option<Duration>, Option<Vec<usize>>) {
    let since = std::time::Instant::now();
    let mut asked = since;
    let mut peers = None;
    while since.elapsed() < Duration::from_secs(120) {
        peers = crate::replicas::current_peers(&log).await;
        if peers
            .as_ref()
            .is_some_and(|p| p.len() == 3 && !p.contains(&from))
        {
            return (Some(since.elapsed()), peers);
        }
        let still_listed = peers.as_ref().is_some_and(|p| p.contains(&from));
        if still_listed && asked.elapsed() >= ASK_AGAIN_EVERY {
            let said = ask_removal(&log, from)
                .await
                .map_or_else(|refused| refused, |()| "accepted".into());
            eprintln!(
                "n{} still among the history stream's peers {ASK_AGAIN_EVERY:?} after its \
                 removal was asked for; asked again: {said}",
                from + 1
            );
            asked = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (None, peers)
}

/// Removes node `node` from the history stream's peers, asking again through elections
/// for up to 30 s; the server's refusal otherwise.
async fn remove_peer(log: &EventLog, node: usize) -> std::result::Result<(), String> {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let said = match ask_removal(log, node).await {
            Ok(()) => return Ok(()),
            Err(said) => said,
        };
        if std::time::Instant::now() > until {
            return Err(said);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks once (`$JS.API.STREAM.PEER.REMOVE`, what `nats stream cluster peer-remove` sends)
/// for node `node`'s removal from the history stream's peers; the server's refusal, or why
/// no answer came, otherwise.
async fn ask_removal(log: &EventLog, node: usize) -> std::result::Result<(), String> {
    let subject = format!("$JS.API.STREAM.PEER.REMOVE.{}", log.config().history_stream);
    let body = serde_json::json!({ "peer": format!("n{}", node + 1) }).to_string();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        log.client().request(subject, body.into()),
    )
    .await;
    match answer {
        Ok(Ok(message)) => {
            let reply: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            if reply["success"] == true {
                Ok(())
            } else {
                Err(reply["error"].to_string())
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// Appends `task.started` events for tasks that do not exist, keeping 256 unacknowledged,
/// until `stop`; returns how many were acknowledged.
async fn storm(log: EventLog, mut stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    use futures::StreamExt;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut n, mut acked) = (0u64, 0u64);
    while !*stop.borrow() {
        while in_flight.len() < 256 {
            let draft = murmur_subjects::Token::new(format!("flood{n}"))
                .map_err(|e| e.to_string())
                .and_then(|token| {
                    murmur_subjects::Draft::new(
                        token,
                        &murmur_subjects::events::TaskStarted { attempt: 1 },
                    )
                    .map_err(|e| e.to_string())
                });
            let Ok(draft) = draft else {
                return acked;
            };
            n += 1;
            let sealed = log.seal(draft);
            let log = log.clone();
            in_flight.push(async move {
                let pending = log.append_sealed(&sealed).await.ok()?;
                tokio::time::timeout(Duration::from_secs(5), pending.wait())
                    .await
                    .ok()?
                    .ok()
            });
        }
        tokio::select! {
            done = in_flight.next() => {
                if let Some(Some(_)) = done {
                    acked += 1;
                }
            }
            _ = stop.changed() => {}
        }
    }
    acked
}

/// Connects as a voter and publishes one message past its role's payload limit, again and
/// again until `stop`: each closes that connection at the server. Returns how many went.
async fn oversize(creds: PathBuf, url: String, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let big = bytes::Bytes::from(vec![
        b'x';
        murmur_subjects::roles::SMALL_PAYLOAD as usize * 2
    ]);
    let mut sent = 0;
    while !*stop.borrow() {
        let Ok(options) = async_nats::ConnectOptions::with_credentials_file(&creds).await else {
            return sent;
        };
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let connected = options
            .max_reconnects(Some(0))
            .event_callback(move |event| {
                let closed_tx = closed_tx.clone();
                async move {
                    if matches!(
                        event,
                        async_nats::Event::Disconnected | async_nats::Event::ServerError(_)
                    ) {
                        let _ = closed_tx.send(());
                    }
                }
            })
            .connect(url.as_str())
            .await;
        if let Ok(client) = connected
            && client.publish("$JS.API.INFO", big.clone()).await.is_ok()
        {
            let _ = client.flush().await;
            sent += 1;
            let _ = tokio::time::timeout(Duration::from_secs(2), closed.recv()).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}

/// Writes zeros to `path` until the disk has no byte left.
fn fill(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("filling {}", path.display())),
        }
    }
}

/// Where node `i` keeps its JetStream store (`jetstream/` under its `store_dir`).
fn store_of(cluster: &TestCluster, i: usize) -> PathBuf {
    cluster.cluster.nodes[i]
        .store_dir
        .join("js")
        .join("jetstream")
}

/// Every stream's message blocks under `store` (the account's `streams/NAME/msgs/N.blk`,
/// not the Raft logs under `_js_`), grouped by stream, each group in block order.
fn stream_blocks(store: &Path) -> Result<Vec<Vec<PathBuf>>> {
    let mut streams = Vec::new();
    for account in std::fs::read_dir(store)
        .with_context(|| format!("reading {}", store.display()))?
        .flatten()
    {
        let Ok(entries) = std::fs::read_dir(account.path().join("streams")) else {
            continue;
        };
        for stream in entries.flatten() {
            let Ok(msgs) = std::fs::read_dir(stream.path().join("msgs")) else {
                continue;
            };
            let mut blocks: Vec<(u64, PathBuf)> = msgs
                .flatten()
                .map(|e| e.path())
                .filter_map(|p| {
                    let index = p
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".blk")?
                        .parse()
                        .ok()?;
                    Some((index, p))
                })
                .collect();
            blocks.sort();
            if !blocks.is_empty() {
                streams.push(blocks.into_iter().map(|(_, p)| p).collect());
            }
        }
    }
    Ok(streams)
}

/// Flips one bit at each of eight offsets spread evenly through every message block;
/// says how many bits in how many blocks.
fn flip_bits(store: &Path) -> Result<String> {
    let (mut blocks, mut flipped) = (0, 0);
    for path in stream_blocks(store)?.into_iter().flatten() {
        let mut bytes = std::fs::read(&path)?;
        if bytes.is_empty() {
            continue;
        }
        for k in 1..=8usize {
            let at = bytes.len() * k / 9;
            bytes[at] ^= 1 << (k % 8);
            flipped += 1;
        }
        std::fs::write(&path, &bytes)?;
        blocks += 1;
    }
    Ok(format!("{flipped} bits flipped in {blocks} message blocks"))
}

/// Cuts the newest message block of every stream to half its length; says how many bytes.
fn truncate_newest_blocks(store: &Path) -> Result<String> {
    let (mut blocks, mut cut) = (0, 0u64);
    for stream in stream_blocks(store)? {
        let Some(newest) = stream.last() else {
            continue;
        };
        let file = std::fs::OpenOptions::new().write(true).open(newest)?;
        let len = file.metadata()?.len();
        file.set_len(len / 2)?;
        file.sync_all()?;
        cut += len - len / 2;
        blocks += 1;
    }
    Ok(format!(
        "the newest block of {blocks} streams cut by {cut} bytes"
    ))
}

/// Deletes everything under `store` (the folder itself stays: it may be a mount point).
fn wipe(store: &Path) -> Result<String> {
    let mut bytes = 0;
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    for entry in std::fs::read_dir(store)?.flatten() {
        let path = entry.path();
        if entry.metadata()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(format!("store deleted ({} MiB)", bytes >> 20))
}

/// The distinct warnings and errors a server logged past byte `from` of its log (the
/// timestamp cut off), at most five.
fn complaints(log: &Path, from: u64) -> Vec<String> {
    let Ok(text) = std::fs::read(log) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let mut said: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((_, message)) = line
            .split_once("[WRN] ")
            .or_else(|| line.split_once("[ERR] "))
        else {
            continue;
        };
        if !said.iter().any(|s| s == message) {
            said.push(message.to_string());
        }
    }
    said.truncate(5);
    said
}

async fn kill(cluster: &mut TestCluster, nodes: Vec<usize>) -> Result<Injected> {
    for &i in &nodes {
        cluster.stop(i).await?;
    }
    Ok(Injected::Killed(nodes))
}

/// Restarts `nodes`, all launched before any is waited for, so a majority can form.
async fn restart_together(cluster: &mut TestCluster, nodes: &[usize]) -> Result<()> {
    for &i in nodes {
        cluster.cluster.nodes[i].restart().await?;
    }
    for &i in nodes {
        cluster.cluster.nodes[i]
            .wait_ready(murmur_testkit::READY_DEADLINE * 3)
            .await?;
    }
    Ok(())
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .with_context(|| format!("{signal} to {pid}"))
}

impl Injected {
    /// Undoes the fault: killed nodes restarted (all launched before any is waited for, so
    /// a majority can form), paused processes resumed, links up, the disk freed, clocks
    /// back. Returns what the healing had to do beyond that, if anything.
    pub async fn heal(self, cluster: &mut TestCluster) -> Result<Option<String>> {
        match self {
            Injected::Killed(nodes) => restart_together(cluster, &nodes).await?,
            Injected::PoweredOff(lost) => {
                let every: Vec<usize> = (0..cluster.cluster.nodes.len()).collect();
                restart_together(cluster, &every).await?;
                return Ok(Some(format!(
                    "the stores dropped {} bytes no node had synced, in {} files",
                    lost.bytes, lost.files
                )));
            }
            Injected::Damaged(node, done) => {
                let node = &mut cluster.cluster.nodes[node];
                let logged = std::fs::metadata(node.log_path()).map_or(0, |m| m.len());
                node.restart().await?;
                node.wait_ready(murmur_testkit::READY_DEADLINE * 3).await?;
                let said = complaints(node.log_path(), logged);
                return Ok(Some(if said.is_empty() {
                    format!("{done}; the server logged no warning or error on restart")
                } else {
                    format!("{done}; the server on restart: {}", said.join(" | "))
                }));
            }
            Injected::PausedNode(i) => cluster.cluster.nodes[i].resume()?,
            Injected::PausedAgents(pids) => {
                for pid in pids {
                    signal(pid, nix::sys::signal::Signal::SIGCONT)?;
                }
            }
            Injected::Links => cluster.cluster.set_all_links(LinkState::Up),
            Injected::DiskFilled(node, filler) => {
                std::fs::remove_file(&filler)?;
                // nats-server turns JetStream off on a server whose disk filled; it stays
                // off until the server restarts.
                let node = &mut cluster.cluster.nodes[node];
                let healthy = murmur_testkit::server::wait_healthy(
                    node.monitor_port,
                    Duration::from_secs(10),
                )
                .await
                .is_ok();
                if !healthy {
                    node.restart().await?;
                    node.wait_ready(murmur_testkit::READY_DEADLINE * 3).await?;
                    return Ok(Some(
                        "JetStream stayed off on the node after the disk was freed; node restarted"
                            .into(),
                    ));
                }
            }
            Injected::Skewed(file) => std::fs::write(file, "+0")?,
            Injected::Flooding {
                stop,
                storm,
                oversized,
                since,
            } => {
                stop.send_replace(true);
                let (stored, sent) = (storm.await?, oversized.await?);
                let secs = since.elapsed().as_secs_f64();
                return Ok(Some(format!(
                    "flood: {stored} events stored ({:.0}/s), {sent} oversized messages (each closed its connection)",
                    stored as f64 / secs
                )));
            }
            Injected::Moved { from, watch } => {
                let (moved, peers) = watch.await?;
                let names = |p: &[usize]| {
                    p.iter()
                        .map(|n| format!("n{}", n + 1))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let peers = peers.map_or("unknown (no answer)".into(), |p| names(&p));
                return Ok(Some(match moved {
                    Some(after) => format!(
                        "n{} removed from the history stream's peers; three current peers ({peers}) {:.1} s later",
                        from + 1,
                        after.as_secs_f64()
                    ),
                    None => format!(
                        "n{} removed from the history stream's peers; 120 s later its current peers were {peers}",
                        from + 1
                    ),
                }));
            }
            Injected::Skipped(why) => return Ok(Some(format!("skipped: {why}"))),
        }
        Ok(None)
    }
}
