//! The knowledge suite: facts written, a new replica catching up, and sync over NATS, against
//! bare Automerge and reading the log.

use std::time::{Duration, Instant};

use anyhow::Result;
use murmur_subjects::{EventLog, Identity, Token};

/// Knowledge: facts written per second into one space (through the replica: Automerge edits,
/// change events signed and acked) against the same edits on bare Automerge documents; a new
/// replica catching up on the space (latest snapshot from the Object Store + the log tail)
/// against loading the same saved documents from files; and the sync protocol's bytes and
/// round trips to converge two replicas that diverged by 1,000 facts each.
pub(crate) async fn kb_suite(url: &str, facts: usize, shards: u16) -> Result<()> {
    use murmur_knowledge::replica::open_space;
    use murmur_knowledge::{FactDraft, KnowledgeDoc, Value};
    use murmur_knowledge::{KnowledgeReplica, ReplicaConfig};
    let client = async_nats::connect(url).await?;
    let realm = Token::new("kb")?;
    let open_as = |identity| EventLog::options(identity, realm.clone()).open(client.clone());
    let log = open_as(Identity::generate()).await?;
    open_space(&log, "bench", "", shards, 4096).await?;
    let fact = |i: usize| {
        FactDraft::new(format!("host:{i}"), "cores", Value::Int((i % 64) as i64))
            .tag("fleet")
            .confidence(0.9)
    };
    // Baseline: the same facts on bare documents, no NATS.
    let now = chrono::Utc::now();
    let started = Instant::now();
    let mut bare: Vec<KnowledgeDoc> = (0..shards)
        .map(|s| KnowledgeDoc::new(log.identity().public_key(), [s as u8; 8], 4096))
        .collect();
    for i in 0..facts {
        let doc = &mut bare[i % shards as usize];
        doc.assert_fact(&fact(i), now)?;
        if doc.pending_ops() >= murmur_knowledge::document::AUTO_COMMIT_OPS {
            doc.commit(now);
        }
    }
    for d in &mut bare {
        d.commit(now);
    }
    let bare_s = started.elapsed().as_secs_f64();

    let mut writer = KnowledgeReplica::open(log.clone(), ReplicaConfig::space("bench")).await?;
    let started = Instant::now();
    for i in 0..facts {
        writer.put("bench", &fact(i))?;
        if i % 10_000 == 9_999 {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    let write_s = started.elapsed().as_secs_f64();
    println!(
        "kb write: {facts} facts in {shards} documents: {:.0} facts/s through the replica ({write_s:.2} s, incl. signing and acks) vs {:.0} facts/s on bare Automerge ({bare_s:.2} s) = {:.2}x",
        facts as f64 / write_s,
        facts as f64 / bare_s,
        bare_s / write_s
    );

    let started = Instant::now();
    let snaps = writer.snapshot("bench").await?;
    let snap_s = started.elapsed().as_secs_f64();
    let snap_bytes: u64 = snaps.iter().map(|s| s.size).sum();
    for i in facts..facts + 1_000 {
        writer.put("bench", &fact(i))?;
    }
    writer.flush().await?;
    println!(
        "kb snapshot: {} documents, {snap_bytes} bytes, {snap_s:.2} s (save + Object Store + purge); then 1,000 facts written after it",
        snaps.len()
    );

    // Catch-up: a new replica (snapshot + tail) vs loading the saved documents from files.
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for (i, d) in writer_docs(&mut writer, shards).into_iter().enumerate() {
        let path = dir.path().join(format!("doc-{i}.automerge"));
        std::fs::write(&path, d)?;
        paths.push(path);
    }
    let started = Instant::now();
    let mut loaded = 0;
    for p in &paths {
        let bytes = std::fs::read(p)?;
        loaded += KnowledgeDoc::load(&bytes, log.identity().public_key(), [0; 8], 4096)?.len();
    }
    let file_s = started.elapsed().as_secs_f64();
    let reader_log = open_as(Identity::generate()).await?;
    let started = Instant::now();
    let mut late = KnowledgeReplica::open(reader_log, ReplicaConfig::space("bench")).await?;
    let catch_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        late.summary("bench") == writer.summary("bench"),
        "late joiner differs"
    );
    println!(
        "kb catch-up: {} facts: new replica (snapshot + 1,000-fact tail, verified) {catch_s:.2} s vs loading the saved documents from files {file_s:.2} s ({loaded} facts) = {:.2}x",
        facts + 1_000,
        file_s / catch_s
    );

    // Sync over NATS: a memory agent serves the space; a peer that missed 1,000 facts
    // catches up with the sync protocol (request/reply, signed replies, every change checked
    // on a fork), compared with a replica reading the same 1,000 changes from the log.
    {
        use murmur_agents::memory::{MemoryOptions, MemoryService};
        use murmur_agents::{Agent, AgentSpec};
        use murmur_knowledge::rpc::{QueryRequest, query_remote};
        use murmur_subjects::events::{AccessRole, AgentJoined};
        let memory_identity = Identity::generate();
        murmur_knowledge::replica::set_access(
            &log,
            "bench",
            memory_identity.public_key(),
            AccessRole::Replica,
            true,
        )
        .await?;
        let agent = Agent::join(
            open_as(memory_identity).await?,
            AgentSpec {
                manifest: AgentJoined {
                    name: "memory".into(),
                    kind: "memory".into(),
                    capabilities: vec!["knowledge.query".into()],
                    labels: Default::default(),
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    hardware: Default::default(),
                    slots: 1,
                    handles: Some(MemoryService::handles()),
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
        let mut from_log = KnowledgeReplica::open(
            open_as(Identity::generate()).await?,
            ReplicaConfig::space("bench"),
        )
        .await?;
        // The peer learns of the memory agent's replica role (it checks who answers) before
        // the new facts are written; it does not read the log again after that.
        let mut peer = late;
        peer.refresh().await?;
        for i in facts + 1_000..facts + 2_000 {
            writer.put("bench", &fact(i))?;
        }
        writer.flush().await?;
        let last = log.last_sequence(&log.config().history_stream).await?;
        let probe = QueryRequest {
            query: murmur_knowledge::Query {
                subject: Some("-".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let reply = query_remote(&log, "bench", &probe, Duration::from_secs(10)).await;
            if reply.as_ref().is_ok_and(|(r, _)| r.position >= last) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < until,
                "memory agent never caught up: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (mut rounds, mut sent, mut received, mut changes) = (0u32, 0u64, 0u64, 0usize);
        let started = Instant::now();
        for shard in 0..shards {
            let report = murmur_knowledge::sync::catch_up(
                &mut peer,
                &format!("bench-{shard}"),
                Duration::from_secs(30),
            )
            .await?;
            rounds += report.rounds;
            sent += report.bytes_sent;
            received += report.bytes_received;
            changes += report.changes_applied;
        }
        let sync_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        from_log.refresh().await?;
        let log_s = started.elapsed().as_secs_f64();
        let expected = writer.summary("bench");
        anyhow::ensure!(peer.summary("bench") == expected, "synced peer differs");
        anyhow::ensure!(from_log.summary("bench") == expected, "log reader differs");
        println!(
            "kb sync over NATS: a peer missing 1,000 facts in {shards} documents caught up from a memory agent: {rounds} round trips, {sent} bytes sent + {received} received, {changes} changes, {:.1} ms; reading the same changes from the log: {:.1} ms",
            sync_s * 1e3,
            log_s * 1e3
        );
        memory.stop().await?;
    }

    // Sync: two replicas share 1,000 facts, then each adds 1,000 of its own.
    let (ka, kb) = (Identity::generate(), Identity::generate());
    let mut a = KnowledgeDoc::new(ka.public_key(), [1; 8], 4096);
    for i in 0..1_000 {
        a.assert_fact(&fact(i), now)?;
    }
    a.commit(now);
    let mut b = KnowledgeDoc::new(kb.public_key(), [2; 8], 4096);
    b.apply_changes(a.changes_since(&[]))?;
    for i in 0..1_000 {
        a.assert_fact(&fact(10_000 + i), now)?;
        if i % 100 == 99 {
            a.commit(now);
        }
        b.assert_fact(&fact(20_000 + i), now)?;
        if i % 100 == 99 {
            b.commit(now);
        }
    }
    let one_side: usize = a
        .changes_since(&b.heads())
        .iter()
        .map(|c| c.raw_bytes().len())
        .sum();
    let started = Instant::now();
    let (rounds, bytes) = murmur_knowledge::sync::sync_in_process(&mut a, &mut b)?;
    anyhow::ensure!(a.heads_hex() == b.heads_hex());
    println!(
        "kb sync: replicas diverged by 1,000 facts each (10 changes each): {rounds} round trips, {bytes} bytes both ways, {:.1} ms; raw change bytes of one side: {one_side}",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

pub(crate) fn writer_docs(
    writer: &mut murmur_knowledge::KnowledgeReplica,
    shards: u16,
) -> Vec<Vec<u8>> {
    (0..shards)
        .filter_map(|s| writer.document_mut(&format!("bench-{s}")).map(|d| d.save()))
        .collect()
}
