//! `murmur kb session` processes and the memory agent as its own process: partitions healed,
//! remote queries answered.

use super::*;

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
            .context("session did not start")??;
        let Some(first) = first else {
            let status = child.wait().await?;
            bail!(
                "session exited before starting ({status}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
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
