//! Knowledge spaces against a real nats-server: agents editing one space concurrently,
//! conflicts reported with their authors, a late joiner catching up from a snapshot and the
//! log tail, refused changes dead-lettered, and a memory agent answering queries and sync.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
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

#[path = "knowledge/processes.rs"]
mod processes;

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
    let memory_identity = Identity::generate();
    let memory_key = memory_identity.public_key().to_string();
    set_access(&owner_log, "ops", &memory_key, AccessRole::Replica, true).await?;
    let memory = memory_agent(&nats, &memory_identity).await?;

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

/// `node examples/automerge-repo/peer.mjs` with `args`: its exit code and stdout lines.
async fn automerge_repo_peer(args: &[String]) -> Result<(i32, Vec<serde_json::Value>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/automerge-repo");
    ensure!(
        dir.join("node_modules/@automerge/automerge-repo").exists(),
        "{}/node_modules is missing: run `bash scripts/install.sh`",
        dir.display()
    );
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("node")
            .arg("peer.mjs")
            .args(args)
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the automerge-repo peer did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if !out.status.success() {
        eprintln!("peer stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((out.status.code().unwrap_or(-1), lines))
}

/// A memory agent with `identity` (the key automerge-repo peers dial), serving until stopped.
async fn memory_agent(nats: &TestNats, identity: &Identity) -> Result<MemoryService> {
    let log = nats.event_log_as(identity.clone(), REALM).await?;
    let agent = Agent::join(
        log,
        AgentSpec {
            manifest: AgentJoined {
                handles: Some(MemoryService::handles()),
                ..murmur_e2e::joined("memory")
            },
            heartbeat: Duration::from_secs(1),
        },
    )
    .await?;
    Ok(MemoryService::spawn(
        agent,
        MemoryOptions {
            snapshot_every: None,
            ..Default::default()
        },
    ))
}

/// A realm with space `notes` (one document), a memory agent holding its replica role (the
/// gateway automerge-repo peers reach), and a fact its owner wrote.
struct RepoSetup {
    nats: TestNats,
    owner_log: EventLog,
    owner: KnowledgeReplica,
    memory: Option<MemoryService>,
    memory_identity: Identity,
    memory_key: String,
    fact: murmur_knowledge::FactId,
}

impl RepoSetup {
    async fn start() -> Result<Self> {
        let nats = TestNats::start().await?;
        ensure!(nats.is_secure(), "peers connect with their own creds");
        let owner_log = nats.event_log(REALM).await?;
        open_space(&owner_log, "notes", "", 1, 4096).await?;
        let memory_identity = Identity::generate();
        let memory_key = memory_identity.public_key().to_string();
        set_access(&owner_log, "notes", &memory_key, AccessRole::Replica, true).await?;
        let memory = memory_agent(&nats, &memory_identity).await?;
        let mut owner =
            KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("notes")).await?;
        let fact = owner.put(
            "notes",
            &FactDraft::new("murmur", "syncs-with", Value::Text("automerge-repo".into())),
        )?;
        owner.flush().await?;
        let setup = Self {
            nats,
            owner_log,
            owner,
            memory: Some(memory),
            memory_identity,
            memory_key,
            fact,
        };
        // A peer asking before the agent has folded the fact would be told the document is
        // unavailable.
        setup.memory_holds_the_fact().await?;
        Ok(setup)
    }

    /// Waits until the memory agent answers a query with the fact: it is subscribed to its
    /// repo subject and has folded the fact by then.
    async fn memory_holds_the_fact(&self) -> Result<()> {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            let answer = query_remote(
                &self.owner_log,
                "notes",
                &QueryRequest::default(),
                Duration::from_secs(1),
            )
            .await;
            if answer.is_ok_and(|(reply, _)| reply.facts.iter().any(|f| f.id == self.fact)) {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < until,
                "the memory agent never answered with the fact"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the memory agent; returns what it did.
    async fn stop_memory(&mut self) -> Result<murmur_agents::memory::MemoryStats> {
        Ok(self
            .memory
            .take()
            .context("no memory agent runs")?
            .stop()
            .await?)
    }

    /// Starts a memory agent with the same key (and no sessions) and waits until it answers
    /// a query with the fact.
    async fn start_memory(&mut self) -> Result<()> {
        self.memory = Some(memory_agent(&self.nats, &self.memory_identity).await?);
        self.memory_holds_the_fact().await
    }

    /// Waits until the owner's replica reads field `field` of the fact; returns its value.
    async fn field(
        &mut self,
        field: &str,
    ) -> Result<murmur_knowledge::document::Disputed<murmur_knowledge::document::Stamped>> {
        let until = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.owner.refresh().await?;
            if let Some(f) = self
                .owner
                .fact("notes", &self.fact)?
                .and_then(|f| f.fields.get(field).cloned())
            {
                return Ok(f);
            }
            ensure!(
                tokio::time::Instant::now() < until,
                "the peer's edit never reached the log"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// automerge-repo peers: the JavaScript `Repo` (npm `@automerge/automerge-repo`, with
/// `examples/automerge-repo`'s NATS network adapter and its own creds) opens a knowledge
/// document through a memory agent, reads a fact an agent wrote, and its edit lands in the
/// log as its own — seen by every replica's fold, live and on replay. A peer without write
/// access is refused, told so, and dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automerge_repo_peer_reads_and_edits_a_space_through_a_memory_agent() -> Result<()> {
    let mut setup = RepoSetup::start().await?;
    let server = setup.nats.url().to_string();
    let (owner_log, memory_key, fact) = (
        setup.owner_log.clone(),
        setup.memory_key.clone(),
        setup.fact.clone(),
    );
    let (writer, writer_creds) = setup
        .nats
        .creds(REALM, Role::Submitter, "js-writer")
        .await?;
    let writer_key = writer.public_key().to_string();
    set_access(&owner_log, "notes", &writer_key, AccessRole::Writer, true).await?;
    let url = murmur_knowledge::repo::automerge_url(REALM, "notes-0");
    let peer_args = |creds: &std::path::Path, value: &str| -> Vec<String> {
        [
            "--servers",
            &server,
            "--realm",
            REALM,
            "--gateway",
            &memory_key,
            "--url",
            &url,
            "--creds",
            &creds.display().to_string(),
            "--set",
            fact.as_str(),
            "reviewed-by",
            value,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let writer_creds = writer_creds.context("secure mode issues creds")?;
    let (code, lines) = automerge_repo_peer(&peer_args(&writer_creds, "the js peer")).await?;
    ensure!(code == 0, "the writer peer exited {code}: {lines:?}");
    let read = &lines[0]["facts"];
    ensure!(
        read.as_array().is_some_and(|facts| facts
            .iter()
            .any(|f| f["id"] == fact.as_str() && f["object"]["value"] == "automerge-repo")),
        "the peer did not read the agent's fact: {lines:?}"
    );
    ensure!(
        lines.iter().any(|l| l.get("accepted").is_some()),
        "{lines:?}"
    );

    // The edit is in the log as the peer's: the owner's live replica and a fresh replay.
    let field = setup.field("reviewed-by").await?;
    ensure!(field.winner.author == writer_key, "{field:?}");
    ensure!(field.winner.value.value == Value::Text("the js peer".into()));
    let mut replay = replica(&setup.nats, Identity::generate(), "notes").await?;
    replay.refresh().await?;
    ensure!(
        replay.summary("notes") == setup.owner.summary("notes"),
        "live and replay differ"
    );

    // A peer with a realm's creds but no write access to the space.
    let (_, stranger_creds) = setup
        .nats
        .creds(REALM, Role::Submitter, "js-stranger")
        .await?;
    let stranger_creds = stranger_creds.context("secure mode issues creds")?;
    let (code, lines) = automerge_repo_peer(&peer_args(&stranger_creds, "not allowed")).await?;
    ensure!(
        code == 3,
        "the stranger's edit was not refused ({code}): {lines:?}"
    );
    ensure!(
        lines.iter().any(|l| l["refused"]
            .as_str()
            .is_some_and(|r| r.contains("no write access"))),
        "{lines:?}"
    );
    let dead = murmur_e2e::wait_for_dead_letter(&owner_log, "the stranger's frame", |d| {
        d.detected_by == "knowledge-repo" && d.reason == DeadLetterReason::Refused
    })
    .await?;
    ensure!(dead.detail.contains("no write access"), "{dead:?}");
    setup.owner.refresh().await?;
    ensure!(
        setup
            .owner
            .fact("notes", &fact)?
            .and_then(|f| f.fields.get("reviewed-by").cloned())
            .is_some_and(|f| f.winner.author == writer_key && !f.in_conflict()),
        "the refused edit reached the space"
    );

    // A memory agent is trusted for nothing: a relay whose frame the named peer did not
    // sign is refused by the fold (and dead-lettered), whoever stored it.
    let rogue_log = setup.nats.log_as(REALM, Role::Memory, "rogue").await?;
    let rogue = Identity::generate();
    let frame = murmur_knowledge::repo::WireMessage {
        kind: "sync".into(),
        data: Some(b"not even a sync message".to_vec().into()),
        ..Default::default()
    }
    .encode();
    let forged = murmur_subjects::events::KnowledgeRelayed {
        space: "notes".into(),
        peer: writer_key.clone(),
        session: "s1".into(),
        frame: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &frame),
        signature: rogue.sign_detached(&murmur_knowledge::repo::frame_signed_bytes("s1", &frame)),
    };
    rogue_log
        .append(Draft::new(Token::new("notes-0")?, &forged)?)
        .await?;
    murmur_e2e::wait_for_dead_letter(&owner_log, "the forged relay", |d| {
        d.detected_by == "knowledge" && d.reason == DeadLetterReason::BadSignature
    })
    .await?;

    let stats = setup.stop_memory().await?;
    ensure!(
        stats.repo_frames >= 4 && stats.repo_refused == 1,
        "{stats:?}"
    );
    Ok(())
}

/// `examples/automerge-repo/peer.mjs` with `creds`, holding the document open after reading
/// it until a line on its standard input, then setting `field` of the fact to `value`: the
/// child and its standard output's lines (the first, the facts, already read).
async fn waiting_js_peer(
    setup: &RepoSetup,
    creds: &std::path::Path,
    field: &str,
    value: &str,
) -> Result<(
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
)> {
    use tokio::io::AsyncBufReadExt as _;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/automerge-repo");
    ensure!(
        dir.join("node_modules/@automerge/automerge-repo").exists(),
        "{}/node_modules is missing: run `bash scripts/install.sh`",
        dir.display()
    );
    let mut peer = tokio::process::Command::new("node")
        .arg("peer.mjs")
        .args(["--servers", setup.nats.url(), "--realm", REALM])
        .args(["--gateway", &setup.memory_key, "--creds"])
        .arg(creds)
        .args([
            "--url",
            &murmur_knowledge::repo::automerge_url(REALM, "notes-0"),
        ])
        .args(["--wait-stdin", "--set", setup.fact.as_str(), field, value])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(peer.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("the peer did not read the document")??
        .context("the peer ended")?;
    ensure!(first.contains("automerge-repo"), "{first}");
    Ok((peer, lines))
}

/// Tells a [`waiting_js_peer`] to edit.
async fn edit_now(peer: &mut tokio::process::Child) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = peer.stdin.take().context("stdin")?;
    stdin.write_all(b"edit\n").await?;
    stdin.flush().await?;
    Ok(())
}

/// Waits for a [`waiting_js_peer`] to end; fails unless its edit was acknowledged.
async fn edit_acknowledged(
    mut peer: tokio::process::Child,
    mut lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Result<()> {
    let status = tokio::time::timeout(DEADLINE, peer.wait())
        .await
        .context("the peer's edit was never acknowledged")??;
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    ensure!(status.success(), "the peer exited {status}: {rest:?}");
    ensure!(rest.iter().any(|l| l.contains("accepted")), "{rest:?}");
    Ok(())
}

/// A JavaScript peer with the document open outlives its gateway. The memory agent
/// restarts: the new one does not know the peer's session and tells it to join again
/// (nothing dead-lettered), the adapter does, and the edit made afterwards lands. Then no
/// memory agent runs while the peer edits: the server answers its frame "no responders",
/// the adapter joins again each second, and the edit lands once a memory agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automerge_repo_peer_rejoins_a_restarted_memory_agent() -> Result<()> {
    let mut setup = RepoSetup::start().await?;
    let (writer, creds) = setup
        .nats
        .creds(REALM, Role::Submitter, "js-writer")
        .await?;
    let creds = creds.context("secure mode issues creds")?;
    let writer_key = writer.public_key().to_string();
    set_access(
        &setup.owner_log,
        "notes",
        &writer_key,
        AccessRole::Writer,
        true,
    )
    .await?;

    let (mut peer, lines) =
        waiting_js_peer(&setup, &creds, "reviewed-by", "after the restart").await?;
    setup.stop_memory().await?;
    setup.start_memory().await?;
    edit_now(&mut peer).await?;
    edit_acknowledged(peer, lines).await?;
    let field = setup.field("reviewed-by").await?;
    ensure!(field.winner.author == writer_key, "{field:?}");
    let stats = setup.stop_memory().await?;
    ensure!(
        stats.repo_rejoins >= 1 && stats.repo_refused == 0,
        "{stats:?}"
    );
    ensure!(
        murmur_e2e::dead_letters(&setup.owner_log).await?.is_empty(),
        "a rejoin is not bad input"
    );

    // No gateway at all while the peer edits.
    setup.start_memory().await?;
    let (mut peer, mut lines) =
        waiting_js_peer(&setup, &creds, "checked-by", "while none ran").await?;
    setup.stop_memory().await?;
    edit_now(&mut peer).await?;
    let waiting = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("the peer never noticed that no gateway answers")??
        .context("the peer ended")?;
    ensure!(waiting.contains("waiting"), "{waiting}");
    setup.start_memory().await?;
    edit_acknowledged(peer, lines).await?;
    let field = setup.field("checked-by").await?;
    ensure!(field.winner.author == writer_key, "{field:?}");
    setup.stop_memory().await?;
    Ok(())
}

/// Sets shared field `field` of `fact` to text `value` in a samod document, as murmur's
/// layout writes it (`f:{field}`: a stamped value, an immutable string).
fn set_field_in(
    doc: &samod::DocHandle,
    fact: &murmur_knowledge::FactId,
    field: &str,
    value: &str,
) -> Result<()> {
    use automerge::transaction::Transactable as _;
    use automerge::{ROOT, ReadDoc as _};
    let stamped = serde_json::to_string(&murmur_knowledge::document::Stamped {
        value: Value::Text(value.into()),
        at: chrono::Utc::now(),
    })?;
    doc.with_document(|d| -> Result<()> {
        let (_, obj) = d.get(ROOT, fact.as_str())?.context("the fact")?;
        d.transact(|tx| tx.put(&obj, format!("f:{field}"), stamped.as_str()))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    })
}

/// samod, the Rust automerge-repo, reaches the same gateway over NATS with
/// `murmur_knowledge::samod_nats::GatewayDialer`: it finds the document by its automerge-repo
/// id, reads the agent's fact, and its edit (with the peer's key as the actor) lands in the
/// log as the peer's; after the memory agent restarts it connects again and its next edit
/// lands too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samod_peer_reads_and_edits_a_space_over_nats() -> Result<()> {
    use automerge::{ROOT, ReadDoc as _, Value as AmValue};
    let mut setup = RepoSetup::start().await?;
    let peer_log = setup
        .nats
        .log_as(REALM, Role::Submitter, "samod-writer")
        .await?;
    let peer_key = peer_log.identity().public_key().to_string();
    set_access(
        &setup.owner_log,
        "notes",
        &peer_key,
        AccessRole::Writer,
        true,
    )
    .await?;

    let repo = samod::Repo::build_tokio().load().await;
    let dialer = std::sync::Arc::new(murmur_knowledge::samod_nats::GatewayDialer::new(
        peer_log.client().clone(),
        Token::new(REALM)?,
        &setup.memory_key,
        peer_log.identity().clone(),
    ));
    let dialing = repo
        .dial(samod::BackoffConfig::default(), dialer)
        .map_err(|e| anyhow::anyhow!("the repo stopped: {e:?}"))?;
    tokio::time::timeout(DEADLINE, dialing.established())
        .await
        .context("no handshake with the gateway")?
        .map_err(|e| anyhow::anyhow!("dial failed: {e:?}"))?;
    let id: samod::DocumentId = murmur_knowledge::repo::document_id(REALM, "notes-0")
        .parse()
        .map_err(|e| anyhow::anyhow!("document id: {e:?}"))?;
    let doc = tokio::time::timeout(DEADLINE, repo.find(id))
        .await
        .context("the document was not found in time")?
        .map_err(|e| anyhow::anyhow!("the repo stopped: {e:?}"))?
        .context("the gateway did not have the document")?;
    let fact = setup.fact.clone();
    let core = doc.with_document(|d| -> Result<String> {
        let (_, obj) = d.get(ROOT, fact.as_str())?.context("the fact")?;
        match d.get(&obj, "core")? {
            Some((AmValue::Scalar(s), _)) => Ok(s.as_str().unwrap_or_default().to_string()),
            other => anyhow::bail!("core is {other:?}"),
        }
    })?;
    ensure!(core.contains("automerge-repo"), "{core}");

    // The layout wants the peer's key as the actor of its changes.
    doc.with_document(|d| {
        d.set_actor(murmur_knowledge::space::actor_for(&peer_key, [7; 8]));
    });
    set_field_in(&doc, &fact, "reviewed-by", "a samod peer")?;
    let field = setup.field("reviewed-by").await?;
    ensure!(field.winner.author == peer_key, "{field:?}");
    ensure!(field.winner.value.value == Value::Text("a samod peer".into()));

    // The gateway restarts (same key, no sessions): told "unknown connection", samod closes
    // the connection and its dialer connects again; the next edit lands.
    setup.stop_memory().await?;
    setup.start_memory().await?;
    set_field_in(&doc, &fact, "checked-by", "after the restart")?;
    let field = setup.field("checked-by").await?;
    ensure!(field.winner.author == peer_key, "{field:?}");

    // No gateway at all while it edits: its frame is answered "no responders", the
    // transport ends and the dialer keeps connecting; once a memory agent runs again the
    // edit lands.
    let stats = setup.stop_memory().await?;
    ensure!(
        stats.repo_refused == 0 && stats.repo_rejoins >= 1,
        "{stats:?}"
    );
    let mut events = dialing.events();
    set_field_in(&doc, &fact, "queued-by", "while no gateway ran")?;
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = futures::StreamExt::next(&mut events).await {
            if matches!(event, samod::DialerEvent::Disconnected { .. }) {
                return;
            }
        }
    })
    .await
    .context("samod never noticed that no gateway answers")?;
    setup.start_memory().await?;
    let field = setup.field("queued-by").await?;
    ensure!(field.winner.author == peer_key, "{field:?}");
    repo.stop().await;
    let stats = setup.stop_memory().await?;
    ensure!(stats.repo_refused == 0, "{stats:?}");
    Ok(())
}
