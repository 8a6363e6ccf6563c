//! Knowledge spaces against a real nats-server: agents editing one space concurrently,
//! conflicts reported with their authors, a late joiner catching up from a snapshot and the
//! log tail, refused changes dead-lettered, and a memory agent answering queries and sync.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use murmur_agents::memory::{MemoryOptions, MemoryService};
use murmur_agents::{Agent, AgentSpec};
use murmur_e2e::DEADLINE;
use murmur_knowledge::base::DocumentSummary;
use murmur_knowledge::replica::{open_space, set_access};
use murmur_knowledge::rpc::{QueryRequest, query_remote};
use murmur_knowledge::{
    FactDraft, KnowledgeDoc, KnowledgeError, KnowledgeReplica, Query, ReplicaConfig,
    ResolutionPolicy, Value,
};
use murmur_subjects::events::{AccessRole, AgentJoined, DeadLetterReason, KnowledgeChanged};
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Draft, EventLog, Identity, Token};
use murmur_testkit::TestNats;

const REALM: &str = "acme";

/// Refreshes every replica until all report the same heads for `space` (up to [`DEADLINE`]).
async fn converge(
    replicas: &mut [&mut KnowledgeReplica],
    space: &str,
) -> Result<BTreeMap<String, DocumentSummary>> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut summaries = Vec::new();
        for r in replicas.iter_mut() {
            r.refresh().await?;
            summaries.push(r.summary(space));
        }
        if summaries.windows(2).all(|w| w[0] == w[1]) {
            return Ok(summaries.remove(0));
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "replicas did not converge: {summaries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn replica(nats: &TestNats, identity: Identity, space: &str) -> Result<KnowledgeReplica> {
    let log = nats.event_log_as(identity, REALM).await?;
    Ok(KnowledgeReplica::open(log, ReplicaConfig::space(space)).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_edit_concurrently_converge_and_see_the_conflict() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner = nats.event_log(REALM).await?;
    open_space(&owner, "team", "team facts", 2, 4096).await?;
    let (kb, kc) = (Identity::generate(), Identity::generate());
    for k in [&kb, &kc] {
        set_access(&owner, "team", k.public_key(), AccessRole::Writer, true).await?;
    }
    let mut a = KnowledgeReplica::open(owner.clone(), ReplicaConfig::space("team")).await?;
    let mut b = replica(&nats, kb.clone(), "team").await?;
    let mut c = replica(&nats, kc.clone(), "team").await?;
    let shared = a.put(
        "team",
        &FactDraft::new("crate:app", "builds", Value::Bool(true)).confidence(0.5),
    )?;
    a.flush().await?;
    converge(&mut [&mut a, &mut b, &mut c], "team").await?;

    // Concurrent edits: nobody reads the others' changes until all are published.
    a.set_field("team", &shared, "owner", Value::Text("alice".into()))?;
    b.set_field("team", &shared, "owner", Value::Text("bob".into()))?;
    b.set_confidence("team", &shared, 0.9)?;
    for i in 0..40 {
        c.put(
            "team",
            &FactDraft::new(format!("module:{i}"), "lines", Value::Int(i * 10)),
        )?;
    }
    // Reading the log with local edits pending must not swallow them.
    c.refresh().await?;
    c.set_confidence("team", &shared, 0.2)?;
    let (ra, rb, rc) = tokio::join!(a.flush(), b.flush(), c.flush());
    ra?;
    rb?;
    rc?;
    let summary = converge(&mut [&mut a, &mut b, &mut c], "team").await?;
    ensure!(
        summary.values().map(|d| d.facts).sum::<usize>() == 41,
        "{summary:?}"
    );

    for r in [&a, &b, &c] {
        let view = r.fact("team", &shared)?.context("shared fact")?;
        let owner_field = &view.fields["owner"];
        ensure!(
            owner_field.in_conflict(),
            "conflict hidden: {owner_field:?}"
        );
        let mut authors: Vec<&str> = owner_field.all().map(|v| v.author.as_str()).collect();
        authors.sort();
        let mut expected = vec![owner.identity().public_key(), kb.public_key()];
        expected.sort();
        ensure!(authors == expected, "authors {authors:?}");
        ensure!(
            view.confidences.len() == 3,
            "each agent's confidence kept: {:?}",
            view.confidences
        );
    }
    let conflicts = c.query(
        "team",
        &Query {
            conflicts_only: true,
            ..Default::default()
        },
        None,
    )?;
    ensure!(conflicts.len() == 1 && conflicts[0].id == shared);

    // Resolution by highest confidence picks bob (0.9) and is recorded for everyone.
    let record = c.resolve(
        "team",
        &shared,
        "owner",
        ResolutionPolicy::HighestConfidence,
    )?;
    ensure!(record.chosen == Value::Text("bob".into()), "{record:?}");
    c.flush().await?;
    converge(&mut [&mut a, &mut b, &mut c], "team").await?;
    let view = a.fact("team", &shared)?.context("shared")?;
    ensure!(!view.fields["owner"].in_conflict());
    ensure!(view.resolutions["owner"].winner.author == kc.public_key());

    // A fresh reader rebuilt from the log equals the live replicas.
    let mut fresh = replica(&nats, Identity::generate(), "team").await?;
    ensure!(
        fresh.summary("team") == a.summary("team"),
        "replay differs from live"
    );
    ensure!(
        fresh.query("team", &Query::default(), None)?
            == a.query("team", &Query::default(), None)?
    );
    // A reader without write access is refused locally.
    ensure!(matches!(
        fresh.put("team", &FactDraft::new("x", "y", Value::Int(1))),
        Err(KnowledgeError::NoWriteAccess { .. })
    ));
    Ok(())
}

/// The stream sequences of one knowledge document's stored changes.
async fn change_messages(log: &EventLog, document: &str) -> Result<Vec<u64>> {
    let stored =
        murmur_subjects::projection::read_aggregate(log, Domain::Knowledge, &Token::new(document)?)
            .await?;
    Ok(stored.into_iter().map(|(sequence, _)| sequence).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up_from_snapshot_and_log_tail() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner_log = nats.event_log(REALM).await?;
    open_space(&owner_log, "big", "", 1, 4096).await?;
    let mut owner = KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("big")).await?;
    for i in 0..300 {
        owner.put(
            "big",
            &FactDraft::new(format!("host:{i}"), "cores", Value::Int(i % 64)),
        )?;
        if i % 100 == 99 {
            owner.flush().await?;
        }
    }
    let before_snapshot = owner_log.last_sequence("MURMUR_HISTORY").await?;
    let written = owner.snapshot("big").await?;
    ensure!(written.len() == 1, "{written:?}");
    let covered = written[0].stream_sequence;
    let remaining = change_messages(&owner_log, "big-0").await?;
    ensure!(
        remaining.iter().all(|s| *s > covered),
        "changes up to {covered} purged: {remaining:?}"
    );
    for i in 0..25 {
        owner.put(
            "big",
            &FactDraft::new(format!("disk:{i}"), "size_gb", Value::Int(100)),
        )?;
    }
    owner.flush().await?;
    owner.refresh().await?;

    let mut late = replica(&nats, Identity::generate(), "big").await?;
    let doc = late.base().document("big-0").context("document")?;
    ensure!(
        doc.base.as_ref().is_some_and(|(seq, _)| *seq == covered),
        "loaded from the snapshot"
    );
    ensure!(
        late.summary("big") == owner.summary("big"),
        "late joiner differs"
    );
    ensure!(late.query("big", &Query::default(), None)?.len() == 325);
    // History before the snapshot was compacted: reading as of it is a typed error.
    ensure!(matches!(
        late.query("big", &Query::default(), Some(before_snapshot / 2)),
        Err(KnowledgeError::Snapshot(_))
    ));
    // As of the snapshot's own position: the 300 facts, without the 25 after it.
    ensure!(late.query("big", &Query::default(), Some(covered))?.len() == 300);
    Ok(())
}

/// A snapshot purges the changes it covers. A replica that took the snapshot list before that
/// purge and reads the changes after it must still end with every change: here a writer, a
/// snapshotter in a tight loop and late joiners opening all the time race for a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_lose_no_change_to_a_concurrent_snapshot() -> Result<()> {
    const FACTS: i64 = 150;
    let nats = TestNats::start().await?;
    let owner_log = nats.event_log(REALM).await?;
    open_space(&owner_log, "hot", "", 1, 4096).await?;
    let writer_id = Identity::generate();
    set_access(
        &owner_log,
        "hot",
        writer_id.public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let mut writer = replica(&nats, writer_id, "hot").await?;
    let mut snapshotter =
        KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("hot")).await?;
    let writing = tokio::spawn(async move {
        for i in 0..FACTS {
            writer.put(
                "hot",
                &FactDraft::new(format!("job:{i}"), "done", Value::Bool(true)),
            )?;
            // The race loads the server; an ack that comes late fails the flush and keeps
            // the change in the outbox for the next one (its documented contract).
            let until = tokio::time::Instant::now() + DEADLINE;
            while let Err(e) = writer.flush().await {
                ensure!(
                    tokio::time::Instant::now() < until,
                    "flush kept failing: {e}"
                );
            }
        }
        anyhow::Ok(writer)
    });
    let snapshotting = {
        let writing = writing.abort_handle();
        tokio::spawn(async move {
            let mut written = 0;
            while !writing.is_finished() {
                written += snapshotter.snapshot("hot").await?.len();
            }
            anyhow::Ok((snapshotter, written))
        })
    };
    // Three reader tasks, each opening late joiners and refreshing them while the race runs.
    let mut reading = Vec::new();
    for _ in 0..3 {
        let snapshotting = snapshotting.abort_handle();
        let mut logs = Vec::new();
        for _ in 0..6 {
            logs.push(nats.event_log(REALM).await?);
        }
        reading.push(tokio::spawn(async move {
            let mut readers: Vec<KnowledgeReplica> = Vec::new();
            while let Some(log) = logs.pop()
                && !snapshotting.is_finished()
            {
                readers.push(KnowledgeReplica::open(log, ReplicaConfig::space("hot")).await?);
                for r in readers.iter_mut() {
                    r.refresh().await?;
                }
            }
            anyhow::Ok(readers)
        }));
    }
    let mut readers = Vec::new();
    for task in reading {
        readers.extend(task.await??);
    }
    let mut writer = writing.await??;
    let (mut snapshotter, written) = snapshotting.await??;
    ensure!(written >= 2, "only {written} snapshots raced the readers");
    writer.refresh().await?;
    let expected = writer.summary("hot");
    ensure!(writer.query("hot", &Query::default(), None)?.len() == FACTS as usize);
    let opened = readers.len();
    eprintln!("{opened} readers, {written} snapshots");
    let mut all: Vec<&mut KnowledgeReplica> = readers.iter_mut().collect();
    all.push(&mut snapshotter);
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut differ = Vec::new();
        for (i, r) in all.iter_mut().enumerate() {
            r.refresh().await?;
            if r.summary("hot") != expected {
                differ.push((i, r.query("hot", &Query::default(), None)?.len()));
            }
        }
        if differ.is_empty() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "{} of {opened} readers (+ snapshotter) miss changes, (index, facts): {differ:?}",
            differ.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn publish_change(log: &EventLog, document: &str, space: &str, bytes: &[u8]) -> Result<()> {
    use base64::Engine;
    let payload = KnowledgeChanged {
        space: space.to_string(),
        change: base64::engine::general_purpose::STANDARD.encode(bytes),
    };
    log.append(Draft::new(Token::new(document)?, &payload)?)
        .await?;
    Ok(())
}

fn one_change(author: &Identity, max: usize, draft: FactDraft) -> Result<Vec<u8>> {
    let mut doc = KnowledgeDoc::new(author.public_key(), [9; 8], max);
    doc.assert_fact(&draft, chrono::Utc::now())?;
    let mut change = doc.commit(chrono::Utc::now()).context("change")?;
    Ok(change.bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_get_typed_errors_and_dead_letters() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner = nats.event_log(REALM).await?;
    open_space(&owner, "guarded", "", 1, 1024).await?;
    let (writer, intruder) = (Identity::generate(), Identity::generate());
    set_access(
        &owner,
        "guarded",
        writer.public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let wlog = nats.event_log_as(writer.clone(), REALM).await?;
    let ilog = nats.event_log_as(intruder.clone(), REALM).await?;

    publish_change(
        &wlog,
        "guarded-0",
        "guarded",
        b"\x85\x6f\x4a\x83 not a change",
    )
    .await?;
    let fine = one_change(&writer, 1024, FactDraft::new("ok", "is", Value::Bool(true)))?;
    publish_change(&wlog, "guarded-9", "guarded", &fine).await?;
    // An oversized fact, and a small one the same writer committed after it: the second
    // change depends on the first, so it could never apply — refused too, not left waiting.
    let (big, built_on_big) = {
        let mut doc = KnowledgeDoc::new(writer.public_key(), [7; 8], 100_000);
        let now = chrono::Utc::now();
        doc.assert_fact(
            &FactDraft::new("blob", "is", Value::Text("z".repeat(4000))),
            now,
        )?;
        let first = doc.commit(now).context("change")?.bytes().to_vec();
        doc.assert_fact(&FactDraft::new("after", "is", Value::Int(1)), now)?;
        let second = doc.commit(now).context("change")?.bytes().to_vec();
        (first, second)
    };
    publish_change(&wlog, "guarded-0", "guarded", &big).await?;
    publish_change(&wlog, "guarded-0", "guarded", &built_on_big).await?;
    let intruders = one_change(
        &intruder,
        1024,
        FactDraft::new("evil", "is", Value::Bool(true)),
    )?;
    publish_change(&ilog, "guarded-0", "guarded", &intruders).await?;
    publish_change(&wlog, "guarded-0", "guarded", &intruders).await?; // someone else's change
    publish_change(&wlog, "guarded-0", "guarded", &fine).await?;

    let guard_log = nats.event_log(REALM).await?;
    let mut guard =
        KnowledgeReplica::open(guard_log.clone(), ReplicaConfig::all().dead_lettering(true))
            .await?;
    guard.refresh().await?;
    let refused = guard.base().refused().to_vec();
    let reasons: Vec<DeadLetterReason> = refused.iter().map(|r| r.reason).collect();
    ensure!(
        reasons
            == vec![
                DeadLetterReason::Malformed,
                DeadLetterReason::Refused,
                DeadLetterReason::Oversized,
                DeadLetterReason::Refused,
                DeadLetterReason::Refused,
                DeadLetterReason::BadSignature
            ],
        "{refused:#?}"
    );
    ensure!(
        refused[3].detail.contains("depends on refused change"),
        "{}",
        refused[3].detail
    );
    ensure!(
        refused[1].detail.contains("unknown knowledge document"),
        "{}",
        refused[1].detail
    );
    ensure!(
        refused[4].detail.contains("no write access"),
        "{}",
        refused[4].detail
    );
    for (reason, what) in [
        (DeadLetterReason::Malformed, "corrupt change"),
        (DeadLetterReason::Oversized, "oversized fact"),
        (DeadLetterReason::BadSignature, "forged author"),
    ] {
        murmur_e2e::wait_for_dead_letter(&guard_log, what, |d| {
            d.reason == reason && d.detected_by == "knowledge"
        })
        .await?;
    }
    let dl = murmur_e2e::dead_letters(&guard_log).await?;
    ensure!(
        dl.iter()
            .filter(|(_, d)| d.reason == DeadLetterReason::Refused)
            .count()
            == 3,
        "{dl:#?}"
    );
    // The valid change went through.
    ensure!(guard.query("guarded", &Query::default(), None)?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_agent_answers_queries_and_catches_a_peer_up() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner_log = nats.event_log(REALM).await?;
    open_space(&owner_log, "ops", "", 1, 4096).await?;
    let memory_log = nats.event_log(REALM).await?;
    set_access(
        &owner_log,
        "ops",
        memory_log.identity().public_key(),
        AccessRole::Replica,
        true,
    )
    .await?;
    let memory_key = memory_log.identity().public_key().to_string();
    let agent = Agent::join(
        memory_log,
        AgentSpec {
            manifest: AgentJoined {
                handles: Some(MemoryService::handles()),
                ..murmur_e2e::joined("memory")
            },
            heartbeat: Duration::from_secs(1),
        },
    )
    .await?;
    let memory = MemoryService::spawn(
        agent,
        MemoryOptions {
            snapshot_every: None,
            ..Default::default()
        },
    );

    // A peer that opened the space before anything was written.
    let mut peer = replica(&nats, Identity::generate(), "ops").await?;
    let mut owner = KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("ops")).await?;
    for i in 0..30 {
        owner.put(
            "ops",
            &FactDraft::new(format!("svc:{i}"), "port", Value::Int(8000 + i)).tag("net"),
        )?;
    }
    owner.flush().await?;

    let request = QueryRequest {
        query: Query {
            tag: Some("net".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let until = tokio::time::Instant::now() + DEADLINE;
    let (reply, signer) = loop {
        match query_remote(&owner_log, "ops", &request, Duration::from_secs(2)).await {
            Ok(r) if r.0.facts.len() == 30 => break r,
            other => {
                ensure!(
                    tokio::time::Instant::now() < until,
                    "no full answer: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    ensure!(signer == memory_key, "answered by {signer}");
    ensure!(reply.facts.iter().all(|f| f.core.tags.contains("net")));

    ensure!(
        peer.base()
            .document("ops-0")
            .is_some_and(|d| d.doc.is_empty())
    );
    let report =
        murmur_knowledge::sync::catch_up(&mut peer, "ops-0", Duration::from_secs(5)).await?;
    ensure!(
        report.changes_applied >= 1 && report.rounds >= 1,
        "{report:?}"
    );
    let owner_summary = owner.summary("ops");
    ensure!(
        peer.summary("ops") == owner_summary,
        "peer {:?} owner {:?}",
        peer.summary("ops"),
        owner_summary
    );

    let stats = memory.stop().await?;
    ensure!(stats.queries >= 1 && stats.sync_requests >= 1, "{stats:?}");
    Ok(())
}

/// A `murmur kb session` process: commands go in on stdin, each answered by output lines and
/// a status line (`-- ok pending=N position=P` or `-- error pending=N position=P: why`).
struct KbSession {
    _child: tokio::process::Child,
    /// The first line: who, where, and what an earlier session left.
    banner: String,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: std::path::PathBuf,
}

/// What one session command answered.
#[derive(Debug)]
struct Answer {
    output: Vec<String>,
    ok: bool,
    pending: usize,
    status: String,
}

impl KbSession {
    /// Starts a session on `space` as `identity`, connected to `url` only (no failover to
    /// the peers the server advertises), so that stopping that node cuts it off.
    async fn start(
        url: &str,
        dir: &std::path::Path,
        identity: &Identity,
        creds: &std::path::Path,
        space: &str,
    ) -> Result<Self> {
        use tokio::io::AsyncBufReadExt;
        std::fs::write(dir.join("murmur.toml"), "[log]\nreplicas = 3\n")?;
        let stderr = dir.join("stderr.log");
        let mut child = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
            .args(["--server", url, "--listed-servers-only", "--realm", REALM])
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(dir.join("murmur.toml"))
            .arg("--creds")
            .arg(creds)
            .args(["kb", "session", space, "--wait-ms", "20000"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .context("session did not start")??
            .context("session exited before starting")?;
        ensure!(
            first.contains(identity.public_key()),
            "unexpected banner {first:?}"
        );
        Ok(Self {
            _child: child,
            banner: first,
            stdin,
            lines,
            stderr,
        })
    }

    async fn run(&mut self, command: &str) -> Result<Answer> {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        let mut output = Vec::new();
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
                .await
                .with_context(|| format!("no answer to {command:?}"))??
                .with_context(|| {
                    format!(
                        "session exited during {command:?}; stderr: {}",
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    )
                })?;
            if let Some(status) = line.strip_prefix("-- ") {
                let pending = status
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("pending="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                return Ok(Answer {
                    output,
                    ok: status.starts_with("ok"),
                    pending,
                    status: status.to_string(),
                });
            }
            output.push(line);
        }
    }

    /// Runs `command`, which must succeed.
    async fn ok(&mut self, command: &str) -> Result<Answer> {
        let answer = self.run(command).await?;
        ensure!(answer.ok, "{command:?} failed: {}", answer.status);
        Ok(answer)
    }

    /// `heads SPACE`, parsed.
    async fn heads(&mut self, space: &str) -> Result<serde_json::Value> {
        let answer = self.ok(&format!("heads {space}")).await?;
        Ok(serde_json::from_str(&answer.output.join("\n"))?)
    }

    /// Publishes until nothing is pending (up to `within`).
    async fn drain(&mut self, within: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let answer = self.run("flush").await?;
            if answer.ok && answer.pending == 0 {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < until,
                "edits still pending: {}",
                answer.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until both sessions report the same heads for `space`.
async fn sessions_converge(
    a: &mut KbSession,
    b: &mut KbSession,
    space: &str,
    within: Duration,
) -> Result<serde_json::Value> {
    let until = tokio::time::Instant::now() + within;
    loop {
        let (ha, hb) = (a.heads(space).await?, b.heads(space).await?);
        if ha == hb {
            return Ok(ha);
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "sessions did not converge:\n{ha:#}\n{hb:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two agent processes on different nodes of a 3-node cluster (R3 streams) edit one space;
/// the node of one of them is stopped, so each edits without seeing the other (the cut-off
/// one keeps its edits in its outbox, on disk) and is then killed; when the node is back a
/// new process on its data dir publishes that outbox and the two converge to identical
/// heads, every fact written on either side is there, the conflicting field shows both
/// authors, and a fresh replay of the log equals them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_agents_converge_when_their_node_returns() -> Result<()> {
    const SPACE: &str = "field";
    const EACH: usize = 8;
    let (mut cluster, owner) = murmur_e2e::r3_cluster(Identity::generate()).await?;
    open_space(&owner, SPACE, "sensor field", 2, 4096).await?;
    let (ka, kb) = (Identity::generate(), Identity::generate());
    for k in [&ka, &kb] {
        set_access(&owner, SPACE, k.public_key(), AccessRole::Writer, true).await?;
    }
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ca, cb) = (
        cluster.creds_for(REALM, Role::Submitter, &ka)?,
        cluster.creds_for(REALM, Role::Submitter, &kb)?,
    );
    let mut a =
        KbSession::start(&cluster.cluster.nodes[0].url(), da.path(), &ka, &ca, SPACE).await?;
    let mut b =
        KbSession::start(&cluster.cluster.nodes[1].url(), db.path(), &kb, &cb, SPACE).await?;

    // Connected: a shared fact, seen by both.
    let shared = a.ok("put field sensor-1 status ok").await?.output[0].clone();
    let other = b.ok("put field sensor-2 status ok").await?.output[0].clone();
    sessions_converge(&mut a, &mut b, SPACE, DEADLINE).await?;

    // Cut off: A's node stops. Both keep editing, including the same field of one fact.
    murmur_e2e::ensure_r3(&owner).await?;
    cluster.stop(0).await?;
    let mut written = vec![shared.clone(), other];
    for i in 0..EACH {
        let answer = a.ok(&format!("put field a-{i} reading {i}")).await?;
        ensure!(answer.pending > 0, "A's edit was stored while cut off");
        written.push(answer.output[0].clone());
    }
    a.ok(&format!("set field {shared} owner alice")).await?;
    for i in 0..EACH {
        written.push(b.ok(&format!("put field b-{i} reading {i}")).await?.output[0].clone());
    }
    b.ok(&format!("set field {shared} owner bob")).await?;
    // B reaches the rest of the cluster (after a leader election if n1 led the stream).
    b.drain(DEADLINE * 2).await?;
    let seen_by_a = a.ok("query field").await?.output.len();
    assert_eq!(seen_by_a, 2 + EACH, "A cannot see B's edits while cut off");
    let pending = a.run("flush").await?;
    ensure!(
        !pending.ok && pending.pending > 0,
        "A published while cut off: {}",
        pending.status
    );

    // A's process dies while cut off (SIGKILL); its outbox is on disk. The node returns and
    // a new session on the same data dir publishes what the dead one left, and both converge.
    drop(a);
    cluster.restart(0).await?;
    let mut a =
        KbSession::start(&cluster.cluster.nodes[0].url(), da.path(), &ka, &ca, SPACE).await?;
    ensure!(
        a.banner.contains("of an earlier session"),
        "the new session took over the outbox: {}",
        a.banner
    );
    a.drain(DEADLINE * 2).await?;
    let heads = sessions_converge(&mut a, &mut b, SPACE, DEADLINE * 2).await?;

    let listed = a.ok("query field --json").await?;
    let facts: Vec<serde_json::Value> = serde_json::from_str(&listed.output.join("\n"))?;
    let mut ids: Vec<String> = facts
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    written.sort();
    assert_eq!(ids, written, "every fact written on either side survived");
    let conflicts = b.ok("conflicts field").await?.output.join("\n");
    for author in [ka.public_key(), kb.public_key()] {
        assert!(
            conflicts.contains(author),
            "conflict lists author {author}: {conflicts}"
        );
    }

    // The log alone rebuilds the same state.
    let mut fresh = KnowledgeReplica::open(owner.clone(), ReplicaConfig::space(SPACE)).await?;
    assert_eq!(serde_json::to_value(fresh.summary(SPACE))?, heads);
    Ok(())
}

/// Runs `murmur --server URL --realm acme --data-dir DIR WHO... ARGS...` to completion.
async fn murmur_cli(
    url: &str,
    dir: &std::path::Path,
    who: &[String],
    args: &[&str],
) -> Result<std::process::Output> {
    Ok(tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", url, "--realm", REALM, "--data-dir"])
        .arg(dir)
        .args(who)
        .args(args)
        .output()
        .await?)
}

fn stdout_of(out: &std::process::Output) -> Result<String> {
    ensure!(
        out.status.success(),
        "murmur failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout.clone())?)
}

/// The memory agent as its own process (`murmur agent run memory`) answers
/// `murmur kb query --remote` from another process that holds no replica and no access,
/// with a reply signed by the agent's key; on SIGTERM it leaves and reports what it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_agent_process_answers_remote_cli_queries() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let nats = TestNats::start().await?;
    let url = nats.url();
    let (owner, memory, reader) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    // The space's owner writes (a submitter); the reader holds no replica and no access
    // (an observer).
    let owner_who = murmur_e2e::enrol(&nats, Role::Submitter, "owner", owner.path()).await?;
    let reader_who = murmur_e2e::enrol(&nats, Role::Observer, "reader", reader.path()).await?;
    stdout_of(
        &murmur_cli(
            url,
            owner.path(),
            &owner_who,
            &["kb", "open", "ops", "--shards", "2"],
        )
        .await?,
    )?;
    let memory_key = Identity::generate();
    let memory_creds = nats
        .issuer()
        .creds_file(&Token::new(REALM)?, Role::Memory, "memory", &memory_key)?
        .context("a secure server issues credentials")?;
    stdout_of(
        &murmur_cli(
            url,
            owner.path(),
            &owner_who,
            &[
                "kb",
                "grant",
                "ops",
                memory_key.public_key(),
                "--role",
                "replica",
            ],
        )
        .await?,
    )?;
    let mut agent = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", url, "--realm", REALM, "--data-dir"])
        .arg(memory.path())
        .arg("--creds")
        .arg(&memory_creds)
        .args(["agent", "run", "memory", "--heartbeat-ms", "200"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(agent.stdout.take().context("stdout")?).lines();
    let id = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("memory agent did not join")??
        .context("memory agent exited")?;
    assert_eq!(
        id.trim(),
        memory_key.public_key(),
        "agent id is its public key"
    );

    let mut ids = Vec::new();
    for (i, tag) in [(1, "net"), (2, "net"), (3, "disk")] {
        let out = murmur_cli(
            url,
            owner.path(),
            &owner_who,
            &[
                "kb",
                "put",
                "ops",
                &format!("svc:{i}"),
                "port",
                &format!("{}", 8000 + i),
                "--tag",
                tag,
            ],
        )
        .await?;
        ids.push(stdout_of(&out)?.trim().to_string());
    }
    let out = murmur_cli(
        url,
        reader.path(),
        &reader_who,
        &["kb", "query", "ops", "--tag", "net", "--remote", "--json"],
    )
    .await?;
    let facts: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&out)?)?;
    let mut got: Vec<&str> = facts.iter().filter_map(|f| f["id"].as_str()).collect();
    got.sort_unstable();
    let mut want = vec![ids[0].as_str(), ids[1].as_str()];
    want.sort_unstable();
    assert_eq!(
        got, want,
        "the memory agent answered with the writer's latest facts"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "answered by memory agent {}",
            memory_key.public_key()
        )),
        "signed by the memory agent: {stderr}"
    );

    // Without a memory agent the remote query fails with a clear error, not an empty answer.
    let pid = agent.id().context("pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(DEADLINE, agent.wait()).await??;
    assert!(status.success(), "memory agent exits cleanly on SIGTERM");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(agent.stderr.as_mut().context("stderr")?, &mut stderr)
        .await?;
    assert!(
        stderr.contains("answered 1 queries"),
        "the agent reports what it served: {stderr}"
    );
    let out = murmur_cli(
        url,
        reader.path(),
        &reader_who,
        &["kb", "query", "ops", "--remote"],
    )
    .await?;
    ensure!(
        !out.status.success(),
        "a remote query with no memory agent fails"
    );
    Ok(())
}

/// A fact's history read along the log: where it appears, each field change (with its
/// author) and its retraction, in order; the same as reading the whole space as of every
/// position of its document and keeping the positions where the fact changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facts_history_follows_the_log() -> Result<()> {
    let nats = TestNats::start().await?;
    let owner_log = nats.event_log(REALM).await?;
    open_space(&owner_log, "hist", "", 2, 4096).await?;
    let other = Identity::generate();
    set_access(
        &owner_log,
        "hist",
        other.public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let mut owner = KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("hist")).await?;
    let mut second = replica(&nats, other.clone(), "hist").await?;
    let id = owner.put(
        "hist",
        &FactDraft::new("svc:api", "state", Value::Text("new".into())),
    )?;
    owner.flush().await?;
    for i in 0..5 {
        owner.put(
            "hist",
            &FactDraft::new(format!("noise:{i}"), "n", Value::Int(i)),
        )?;
        owner.flush().await?;
    }
    owner.set_field("hist", &id, "phase", Value::Text("a".into()))?;
    owner.flush().await?;
    second.refresh().await?;
    second.set_field("hist", &id, "phase", Value::Text("b".into()))?;
    second.flush().await?;
    owner.refresh().await?;
    owner.retract("hist", &id, "gone")?;
    owner.flush().await?;

    let reader = replica(&nats, Identity::generate(), "hist").await?;
    let history = reader.fact_history("hist", &id)?;
    let phases: Vec<Option<String>> = history
        .iter()
        .map(|(_, f)| {
            f.fields
                .get("phase")
                .map(|d| d.winner.value.value.to_string())
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            None,
            Some("\"a\"".into()),
            Some("\"b\"".into()),
            Some("\"b\"".into())
        ],
        "{history:#?}"
    );
    assert_eq!(
        history[2].1.fields["phase"].winner.author,
        other.public_key(),
        "the second change is the other writer's"
    );
    assert!(history[3].1.status.is_some(), "retracted last");
    assert!(history.windows(2).all(|w| w[0].0 < w[1].0));

    // The same as reading the whole space as of every position and keeping the changes.
    let mut brute: Vec<(u64, String)> = Vec::new();
    let last = reader.position();
    for seq in 1..=last {
        let facts = reader.base().facts("hist", Some(seq))?;
        if let Some(f) = facts.iter().find(|f| f.id == id) {
            let text = serde_json::to_string(f)?;
            if brute.last().is_none_or(|(_, t)| *t != text) {
                brute.push((seq, text));
            }
        }
    }
    let fast: Vec<(u64, String)> = history
        .iter()
        .map(|(s, f)| Ok((*s, serde_json::to_string(f)?)))
        .collect::<Result<_>>()?;
    assert_eq!(fast, brute);
    Ok(())
}
