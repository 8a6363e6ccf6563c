//! The demo's knowledge step: two agents edit one Automerge space, a memory agent serves it.

use std::time::Duration;

use anyhow::{Result, ensure};
use murmur_agents::{Agent, AgentSpec};
use murmur_subjects::roles::Role;
use murmur_testkit::authority::Issuer;

use super::*;

/// Two writer agents edit one knowledge space concurrently (one conflicting field), a memory
/// agent answers a query over NATS and snapshots the space, the conflict is shown with both
/// authors and resolved, and a late joiner (snapshot + log tail) ends with the same heads.
pub(super) async fn knowledge_step(issuer: &Issuer) -> Result<()> {
    use murmur_agents::memory::{MemoryOptions, MemoryService};
    use murmur_knowledge::ResolutionPolicy;
    use murmur_knowledge::replica::{open_space, set_access};
    use murmur_knowledge::rpc::{QueryRequest, query_remote};
    use murmur_knowledge::{FactDraft, Query, Value};
    use murmur_knowledge::{KnowledgeReplica, ReplicaConfig};
    use murmur_subjects::events::AccessRole;

    let realm = fresh_realm("kb")?;
    let owner_log = issuer
        .participant(&realm, Role::Submitter, "demo-kb-owner")
        .await?;
    open_space(
        &owner_log,
        "release",
        "what we know about the release",
        2,
        4096,
    )
    .await?;
    let memory_log = issuer
        .participant(&realm, Role::Memory, "demo-memory")
        .await?;
    let writer_log = issuer
        .participant(&realm, Role::Submitter, "demo-kb-writer")
        .await?;
    set_access(
        &owner_log,
        "release",
        memory_log.identity().public_key(),
        AccessRole::Replica,
        true,
    )
    .await?;
    set_access(
        &owner_log,
        "release",
        writer_log.identity().public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let memory_key = memory_log.identity().public_key().to_string();
    let mut m = manifest("memory");
    m.kind = "memory".into();
    m.capabilities = vec!["knowledge.query".into()];
    m.handles = Some(MemoryService::handles());
    let memory = Agent::join(
        memory_log,
        AgentSpec {
            manifest: m,
            heartbeat: Duration::from_millis(500),
        },
    )
    .await?;
    let memory_service = MemoryService::spawn(
        memory,
        MemoryOptions {
            snapshot_every: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    );

    let mut a = KnowledgeReplica::open(owner_log.clone(), ReplicaConfig::space("release")).await?;
    let mut b = KnowledgeReplica::open(writer_log.clone(), ReplicaConfig::space("release")).await?;
    let fact = a.put(
        "release",
        &FactDraft::new("crate:app", "tests", Value::Text("passing".into())).confidence(0.6),
    )?;
    for (i, module) in ["parser", "codegen", "runtime"].iter().enumerate() {
        b.put(
            "release",
            &FactDraft::new(
                format!("module:{module}"),
                "coverage",
                Value::Float(0.7 + i as f64 / 10.0),
            )
            .tag("quality"),
        )?;
    }
    a.flush().await?;
    b.refresh().await?;
    // Concurrent: both set the same field without seeing each other.
    a.set_field("release", &fact, "owner", Value::Text("alice".into()))?;
    b.set_field("release", &fact, "owner", Value::Text("bob".into()))?;
    b.set_confidence("release", &fact, 0.9)?;
    let (fa, fb) = tokio::join!(a.flush(), b.flush());
    fa?;
    fb?;
    let until = tokio::time::Instant::now() + DEADLINE;
    let (reply, signer) = loop {
        let q = QueryRequest {
            query: Query {
                conflicts_only: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = query_remote(&owner_log, "release", &q, Duration::from_secs(2)).await;
        if let Ok(r) = &answer
            && !r.0.facts.is_empty()
        {
            break answer?;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "memory agent never reported the conflict: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let owners: Vec<String> = reply.facts[0].fields["owner"]
        .all()
        .map(|v| format!("{} by {}…", v.value.value, &v.author[..8]))
        .collect();
    out!(
        "[kb] memory agent {}… reports a conflict on owner: {}",
        &signer[..8],
        owners.join(" vs ")
    );
    a.refresh().await?;
    let record = a.resolve(
        "release",
        &fact,
        "owner",
        ResolutionPolicy::HighestConfidence,
    )?;
    a.flush().await?;
    out!(
        "[kb] resolved by highest confidence → {} (recorded with {} candidates)",
        record.chosen,
        record.candidates.len()
    );
    automerge_repo_peer(issuer, &realm, &owner_log, &mut a, &fact, &memory_key).await?;
    // Wait for the memory agent's snapshot, then a late joiner catches up from it.
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        a.refresh().await?;
        let snapshotted = a
            .base()
            .space("release")
            .is_some_and(|s| !s.snapshots.is_empty());
        if snapshotted {
            break;
        }
        ensure!(tokio::time::Instant::now() < until, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The late joiner only reads: an observer.
    let late_log = issuer
        .participant(&realm, Role::Observer, "demo-kb-late")
        .await?;
    let mut late = KnowledgeReplica::open(late_log, ReplicaConfig::space("release")).await?;
    a.refresh().await?;
    let (sa, sl) = (a.summary("release"), late.summary("release"));
    ensure!(sa == sl, "late joiner differs: {sl:?} vs {sa:?}");
    let facts = late.query("release", &Query::default(), None)?;
    out!(
        "[kb] late joiner loaded snapshot + tail: {} facts, heads equal to the writers' ({} documents)",
        facts.len(),
        sl.len()
    );
    let stats = memory_service.stop().await?;
    ensure!(stats.queries >= 1, "memory agent answered no query");
    Ok(())
}

/// Where the automerge-repo peer is, with its npm packages installed (`scripts/install.sh`),
/// when the demo runs in (or under) a checkout.
fn automerge_repo_checkout() -> Option<std::path::PathBuf> {
    let here = std::env::current_dir().ok()?;
    here.ancestors().find_map(|root| {
        let dir = root.join("examples/automerge-repo");
        dir.join("node_modules/@automerge/automerge-repo")
            .exists()
            .then_some(dir)
    })
}

/// A JavaScript automerge-repo `Repo` opens the space's document through the memory agent's
/// gateway, reads the fact and sets a field of it as itself; the owner's replica then reads
/// that edit from the log, with the peer as its author.
async fn automerge_repo_peer(
    issuer: &Issuer,
    realm: &murmur_subjects::Token,
    owner_log: &murmur_subjects::EventLog,
    owner: &mut murmur_knowledge::KnowledgeReplica,
    fact: &murmur_knowledge::FactId,
    gateway: &str,
) -> Result<()> {
    use anyhow::Context as _;
    use murmur_subjects::events::AccessRole;
    let Some(dir) = automerge_repo_checkout() else {
        out!(
            "[kb] automerge-repo peer skipped: run the demo from a murmur checkout after `bash scripts/install.sh` (it needs examples/automerge-repo/node_modules)"
        );
        return Ok(());
    };
    if !issuer.is_secure() {
        out!(
            "[kb] automerge-repo peer skipped: it signs with the key of its .creds file, and this server takes no credentials"
        );
        return Ok(());
    }
    let peer = murmur_subjects::Identity::generate();
    let creds = issuer
        .enrol_as(realm, Role::Submitter, "demo-js-peer", &peer)
        .await?
        .context("a secure server issues credentials")?;
    murmur_knowledge::replica::set_access(
        owner_log,
        "release",
        peer.public_key(),
        AccessRole::Writer,
        true,
    )
    .await?;
    let document = owner
        .base()
        .documents_of("release")
        .into_iter()
        .find(|d| {
            owner
                .base()
                .document(d)
                .is_some_and(|s| s.doc.fact(fact).ok().flatten().is_some())
        })
        .context("the fact's document")?;
    let url = murmur_knowledge::repo::automerge_url(realm.as_str(), &document);
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("node")
            .arg("peer.mjs")
            .args([
                "--servers",
                &issuer.servers().join(","),
                "--realm",
                realm.as_str(),
            ])
            .args(["--gateway", gateway, "--url", &url, "--creds"])
            .arg(&creds)
            .args(["--set", fact.as_str(), "reviewed-by", "a JavaScript peer"])
            .current_dir(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the automerge-repo peer did not finish")?
    .context("running node (install Node.js >= 20)")?;
    ensure!(
        out.status.success(),
        "the automerge-repo peer failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let read = lines
        .iter()
        .find_map(|l| l["facts"].as_array().map(Vec::len))
        .unwrap_or(0);
    let until = tokio::time::Instant::now() + DEADLINE;
    let author = loop {
        owner.refresh().await?;
        if let Some(field) = owner
            .fact("release", fact)?
            .and_then(|f| f.fields.get("reviewed-by").cloned())
        {
            break field.winner.author;
        }
        ensure!(
            tokio::time::Instant::now() < until,
            "the peer's edit never reached the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(author == peer.public_key(), "edit attributed to {author}");
    out!(
        "[kb] an automerge-repo peer (npm @automerge/automerge-repo, examples/automerge-repo) opened {document} through the memory agent's gateway, read {read} facts and set reviewed-by; the log counts it as the peer's ({}…)",
        &author[..8]
    );
    Ok(())
}
