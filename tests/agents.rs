//! Agents as real separate processes: join (registry + micro-service discovery), crash
//! detection by missed heartbeats with two monitors writing one offline event, graceful
//! leave on SIGTERM, the live registry equal to a replayed one, and an idle agent giving
//! back the pages only its start ran while it goes on running tasks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_coordination::liveness::run_monitor;
use murmur_coordination::registry::{AgentStatus, Registry, RegistryProjection};
use murmur_e2e::{DEADLINE, spawn_agent};
use murmur_subjects::clock::SystemClock;
use murmur_subjects::events::{AgentJoined, AgentOffline};
use murmur_subjects::roles::Role;
use murmur_subjects::{EventType, Payload as _, Projector, StartAt, Token};
use murmur_testkit::TestNats;

async fn wait_registry(
    projector: &mut Projector<RegistryProjection>,
    what: &str,
    done: impl FnMut(&Registry) -> bool,
) -> Result<()> {
    anyhow::ensure!(
        projector.follow_until(DEADLINE, done).await?,
        "registry never showed {what}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_processes_join_crash_and_leave() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let observer = nats.event_log("acme").await?;
    let mut live = Projector::new(
        observer.clone(),
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );

    let who = murmur_e2e::enrol(&nats, Role::Compiler, "compiler", data.path()).await?;
    let (mut compiler, compiler_id) = spawn_agent(
        nats.url(),
        data.path(),
        &who,
        "compiler",
        "compiler.rust",
        &[],
    )
    .await?;
    let who = murmur_e2e::enrol(&nats, Role::Executor, "executor", data.path()).await?;
    let (executor, executor_id) = spawn_agent(
        nats.url(),
        data.path(),
        &who,
        "executor",
        "executor.test",
        &[],
    )
    .await?;
    wait_registry(&mut live, "both agents online", |r| {
        r.count(AgentStatus::Online) == 2
    })
    .await?;
    let online: Vec<_> = live
        .state()
        .online_with("compiler.rust")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(online, vec![compiler_id.clone()]);

    // Stock NATS service discovery finds the agent, with its murmur id in the metadata.
    let info = observer
        .client()
        .request("$SRV.INFO.murmur-agent-compiler", "".into())
        .await?;
    let info: serde_json::Value = serde_json::from_slice(&info.payload)?;
    assert_eq!(info["metadata"]["murmur.id"], compiler_id.as_str());

    // Two liveness monitors, so the deterministic offline id is put to the test.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut monitors = Vec::new();
    for _ in 0..2 {
        let log = nats.log_as("acme", Role::Monitor, "monitor").await?;
        let mut rx = stop_rx.clone();
        monitors.push(tokio::spawn(run_monitor(
            log,
            Arc::new(SystemClock),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )));
    }
    // Let both monitors hear at least one beat before the crash.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // kill -9: no left event; heartbeats stop.
    compiler.kill().await?;
    wait_registry(&mut live, "the killed agent offline", |r| {
        r.agents
            .get(&compiler_id)
            .is_some_and(|a| a.status == AgentStatus::Offline)
    })
    .await?;

    // SIGTERM: the agent leaves on purpose.
    let pid = executor.id().context("executor pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    wait_registry(&mut live, "the terminated agent left", |r| {
        r.agents
            .get(&executor_id)
            .is_some_and(|a| a.status == AgentStatus::Left)
    })
    .await?;

    stop_tx.send_replace(true);
    let mut declared = 0;
    for m in monitors {
        declared += m.await??;
    }
    assert_eq!(
        declared, 1,
        "one monitor wrote the offline event, the other was deduplicated"
    );
    let offline_filter = EventType::of::<AgentOffline>().filter(Some(&Token::new("acme")?));
    let offline_count = observer
        .read(&offline_filter, StartAt::Beginning, None, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .await?;
    assert_eq!(offline_count, 1, "exactly one agent.offline in the log");

    // The registry a fresh process replays equals the live one.
    let mut replayed = Projector::new(
        nats.event_log("acme").await?,
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    replayed.catch_up().await?;
    assert_eq!(replayed.state(), live.state());

    // Each membership is one flow: what an agent says about itself after joining, and the
    // offline verdict about it, carry its `agent.joined` as correlation id.
    for (agent, ending) in [
        (&compiler_id, AgentOffline::TYPE),
        (&executor_id, murmur_subjects::events::AgentLeft::TYPE),
    ] {
        let events =
            murmur_e2e::aggregate_events(&observer, murmur_subjects::Domain::Agent, agent).await?;
        let joined = events.first().context("no events")?;
        assert_eq!(joined.record.ty, AgentJoined::TYPE);
        let flow = Some(joined.record.id.as_str());
        assert_eq!(joined.record.correlation_id.as_deref(), flow);
        let last = events.last().context("no events")?;
        assert_eq!(last.record.ty, ending, "{agent}'s last event");
        for e in &events[1..] {
            assert_eq!(
                e.record.correlation_id.as_deref(),
                flow,
                "{} about {agent} is outside its membership's flow",
                e.record.ty
            );
        }
    }
    Ok(())
}

/// One `$SRV.STATS` scatter-gather: the murmur snapshot of `agent`, if it answered.
async fn srv_stats(
    client: &async_nats::Client,
    agent: &str,
) -> Result<Option<murmur_agents::metrics::MetricsSnapshot>> {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply("$SRV.STATS", inbox, "".into())
        .await?;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await
    {
        let stats: async_nats::service::Stats = serde_json::from_slice(&msg.payload)?;
        for e in stats.endpoints {
            if let Some(Ok(s)) = e
                .data
                .map(serde_json::from_value::<murmur_agents::metrics::MetricsSnapshot>)
                && s.agent == agent
            {
                return Ok(Some(s));
            }
        }
    }
    Ok(None)
}

fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_stats_prometheus_and_murmur_status_report_an_agents_work() -> Result<()> {
    use murmur_subjects::Draft;
    use murmur_subjects::events::TaskSubmitted;

    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let (mut worker, id) =
        murmur_e2e::spawn_tester(&nats, data.path(), &["--metrics-listen", &metrics_addr]).await?;
    let submitter = nats.event_log("acme").await?;
    let coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    for (n, input) in [
        // Long enough for a 200 ms heartbeat to see the agent busy.
        serde_json::json!({"n": 1, "sleep_ms": 800}),
        serde_json::json!({"n": 2}),
        serde_json::json!({"fail": "boom"}),
    ]
    .into_iter()
    .enumerate()
    {
        murmur_e2e::submit_once(&submitter, &format!("t{n}"), "test.run", input).await?;
    }

    // $SRV.STATS: the agent's counters as its status endpoint's data.
    let until = tokio::time::Instant::now() + DEADLINE;
    let snapshot = loop {
        let s = srv_stats(submitter.client(), &id).await?;
        if let Some(s) = &s
            && s.attempts_completed == 2
            && s.attempts_failed == 1
        {
            break s.clone();
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "$SRV.STATS never showed 2 completed + 1 failed: {s:?}"
        );
    };
    assert_eq!(snapshot.attempts_started, 3);
    assert_eq!(snapshot.running, 0);
    assert!(!snapshot.lame_duck);

    // The agent's own status endpoint answers the same counters.
    let status_subject = murmur_subjects::Subject::new(
        Token::new("acme")?,
        murmur_subjects::Plane::Rpc,
        murmur_subjects::Domain::Agent,
        Token::new(id.as_str())?,
        Token::new("status")?,
    );
    let reply = submitter
        .client()
        .request(status_subject.to_string(), "".into())
        .await?;
    let direct: murmur_agents::metrics::MetricsSnapshot = serde_json::from_slice(&reply.payload)?;
    assert_eq!(direct.attempts_completed, 2);

    // Prometheus text.
    let scraped = http_get(&metrics_addr, "/metrics")?;
    assert!(scraped.contains("200 OK"), "{scraped}");
    assert!(
        scraped.contains(&format!(
            "murmur_agent_attempts_completed_total{{agent=\"{id}\",kind=\"tester\"}} 2"
        )),
        "{scraped}"
    );
    assert!(http_get(&metrics_addr, "/other")?.contains("404"));

    // The agent going busy was logged as agent.load_changed.
    let mut saw_busy = false;
    submitter
        .read(
            &murmur_subjects::SubjectFilter::plane(murmur_subjects::Plane::Evt)
                .realm(Token::new("acme")?)
                .domain(murmur_subjects::Domain::Agent)
                .verb(Token::new("load_changed")?),
            StartAt::Beginning,
            None,
            |m| {
                if let Ok(ev) = submitter.decode_stored(&m.message, m.sequence, None)
                    && let Ok(p) = ev.payload::<murmur_subjects::events::AgentLoadChanged>()
                    && ev.emitter() == id
                    && p.queue_depth >= 1
                {
                    saw_busy = true;
                }
                std::ops::ControlFlow::Continue(())
            },
        )
        .await?;
    assert!(
        saw_busy,
        "no agent.load_changed with a busy queue was logged"
    );

    // `murmur status --json` sums it up from the log and the live stats, once the
    // coordinator has dead-lettered the failed task.
    let mut view = Projector::new(
        submitter.clone(),
        murmur_coordination::coordinator::CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v.tasks.counts().get("dead_lettered")
            == Some(&1))
            .await?,
        "the failed task was never dead-lettered"
    );
    // A task no online agent runs waits, and status names its capability as unserved; an
    // open proposal is counted.
    submitter
        .append(Draft::new(
            Token::new("stranded")?,
            &TaskSubmitted {
                capability: "nobody.here".into(),
                ..Default::default()
            },
        )?)
        .await?;
    submitter
        .append(Draft::new(
            Token::new("still-open")?,
            &murmur_subjects::events::ProposalOpened {
                question: "keep it?".into(),
                payload: serde_json::json!({}),
                protocol: murmur_subjects::events::Protocol::SimpleMajority,
                voters: [(id.clone(), 1)].into(),
                quorum: 1,
                deadline: chrono::Utc::now() + chrono::Duration::minutes(10),
                category: "general".into(),
                stimulus: 1.0,
            },
        )?)
        .await?;
    let who =
        murmur_e2e::enrol(&nats, Role::Observer, "status", &data.path().join("status")).await?;
    let out = std::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", nats.url(), "--realm", "acme", "--data-dir"])
        .arg(data.path().join("status"))
        .args(&who)
        .args(["--json", "status"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["tasks"]["completed"], 2, "{status:#}");
    assert_eq!(status["tasks"]["dead_lettered"], 1, "{status:#}");
    assert_eq!(status["agents"]["online"], 1, "{status:#}");
    assert_eq!(status["completed_in_window"], 2, "{status:#}");
    assert_eq!(status["queues"]["nobody.here"], 1, "{status:#}");
    assert_eq!(
        status["unserved"],
        serde_json::json!(["nobody.here"]),
        "{status:#}"
    );
    assert_eq!(
        status["proposals"],
        serde_json::json!({"open": 1}),
        "{status:#}"
    );
    assert_eq!(
        status["online"][0]["live"]["attempts_completed"], 2,
        "{status:#}"
    );

    coordinator.stop().await??;
    worker.kill().await?;
    Ok(())
}

/// Typed handlers: the agent's manifest declares the types it has handlers for; each handler
/// gets only its type, stored after the agent joined, in log order, decoded into its own
/// payload type with the verified emitter and the event's lineage. A handler for an
/// undeclared type, and a manifest naming a type the catalog lacks, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handlers_get_only_the_declared_types_stored_after_the_join() -> Result<()> {
    use murmur_agents::handlers::{EventContext, EventHandlers, run_handlers};
    use murmur_agents::{Agent, AgentError, AgentSpec};
    use murmur_subjects::Draft;
    use murmur_subjects::events::{
        ProposalOpened, Protocol, TaskCancelled, TaskSubmitted, VoteCast,
    };

    #[derive(Debug)]
    enum Seen {
        Task(TaskSubmitted, EventContext),
        Proposal(ProposalOpened, EventContext),
    }
    let nats = TestNats::start().await?;
    let other = nats.event_log("acme").await?;
    let opened = |question: &str| ProposalOpened {
        question: question.into(),
        payload: serde_json::json!({}),
        protocol: Protocol::SimpleMajority,
        voters: Default::default(),
        quorum: 1,
        deadline: chrono::Utc::now(),
        category: String::new(),
        stimulus: 1.0,
    };
    // Stored before the agent joins: not its business.
    other
        .append(Draft::new(Token::new("p0")?, &opened("before"))?)
        .await?;

    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let tasks_tx = seen_tx.clone();
    let handlers = EventHandlers::new()
        .on(move |p: ProposalOpened, ctx| {
            let tx = seen_tx.clone();
            async move {
                let _ = tx.send(Seen::Proposal(p, ctx));
                Ok(())
            }
        })
        .on(move |t: TaskSubmitted, ctx| {
            let tx = tasks_tx.clone();
            async move {
                let refuse = t.input.get("refuse").is_some();
                let _ = tx.send(Seen::Task(t, ctx));
                if refuse {
                    Err("refused by the handler".into())
                } else {
                    Ok(())
                }
            }
        });
    let spec = |handles: Option<Vec<String>>| AgentSpec {
        manifest: AgentJoined {
            handles,
            ..murmur_e2e::joined("typed")
        },
        heartbeat: Duration::from_millis(200),
    };
    let unknown = Agent::join(
        nats.event_log("acme").await?,
        spec(Some(vec!["dev.murmur.task.exploded".into()])),
    )
    .await;
    assert!(
        matches!(&unknown, Err(AgentError::UnknownEventType(t)) if t == "dev.murmur.task.exploded"),
        "{unknown:?}"
    );
    let agent = Agent::join(nats.event_log("acme").await?, spec(Some(handlers.types()))).await?;
    assert_eq!(
        agent.handles(),
        Some(
            &[
                "dev.murmur.proposal.opened".to_string(),
                "dev.murmur.task.submitted".to_string()
            ][..]
        )
    );
    let undeclared = EventHandlers::new().on(|_: VoteCast, _| async { Ok(()) });
    let refused = run_handlers(&agent, &undeclared, std::future::pending()).await;
    assert!(
        matches!(&refused, Err(AgentError::UndeclaredHandler(t)) if t == "dev.murmur.proposal.vote_cast"),
        "{refused:?}"
    );
    // The built-in behaviours are registrations too: a worker not declared is refused.
    let undeclared = EventHandlers::new().tasks(
        murmur_agents::worker::handler(|ctx| async move { Ok(ctx.input) }),
        Duration::from_secs(1),
    );
    let refused = run_handlers(&agent, &undeclared, std::future::pending()).await;
    assert!(
        matches!(&refused, Err(AgentError::UndeclaredHandler(t)) if t == "dev.murmur.task.assigned"),
        "{refused:?}"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let stats = run_handlers(&agent, &handlers, async {
                let _ = stop_rx.await;
            })
            .await;
            (agent, stats)
        })
    };
    // An event of a type it did not declare, stored in between: it reaches no handler.
    other
        .append(Draft::new(
            Token::new("t0")?,
            &TaskCancelled {
                reason: "not handled".into(),
            },
        )?)
        .await?;
    let submit = Draft::new(
        Token::new("t1")?,
        &TaskSubmitted {
            capability: "test.run".into(),
            input: serde_json::json!({"refuse": true}),
            ..Default::default()
        },
    )?
    .caused_by_ids("flow-1", "cause-1", None);
    let (submitted, _) = other.append(submit).await?;
    let (proposal, _) = other
        .append(Draft::new(Token::new("p1")?, &opened("ship it?"))?)
        .await?;

    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(
            tokio::time::timeout(DEADLINE, seen.recv())
                .await
                .context("a handled event never arrived")?
                .context("handlers stopped")?,
        );
    }
    match &got[..] {
        [Seen::Task(t, tc), Seen::Proposal(p, pc)] => {
            assert_eq!(t.capability, "test.run");
            assert_eq!(tc.id, submitted.record.id);
            assert_eq!(tc.emitter, other.identity().public_key());
            assert_eq!(tc.correlation_id.as_deref(), Some("flow-1"));
            assert_eq!(tc.causation_id.as_deref(), Some("cause-1"));
            assert_eq!(tc.aggregate, "t1");
            assert_eq!(p.question, "ship it?");
            assert_eq!(pc.id, proposal.record.id);
            assert!(pc.sequence > tc.sequence);
            // What a handler writes continues the event's flow.
            let reply = pc.continue_flow(Draft::new(Token::new("p1")?, &opened("echo"))?);
            let sealed = other.seal(reply);
            assert_eq!(sealed.record.causation_id.as_deref(), Some(pc.id.as_str()));
        }
        other => anyhow::bail!("expected the task, then the proposal: {other:?}"),
    }
    // The feed is filtered by the server, not by the agent: a consumer on the history
    // stream carries exactly the declared types' subjects, and the realm's grants, which
    // every projector folds to judge decisions by their emitters' roles (a handler's feed
    // reads them on its consumer while the stream holds few subjects, and fences them
    // past that).
    let realm = Token::new("acme")?;
    let mut declared: Vec<String> = vec![
        murmur_subjects::EventType::of::<ProposalOpened>()
            .filter(Some(&realm))
            .to_string(),
        murmur_subjects::EventType::of::<TaskSubmitted>()
            .filter(Some(&realm))
            .to_string(),
        murmur_subjects::grants::filter(&realm).to_string(),
    ];
    declared.sort();
    let mut consumers = async_nats::jetstream::new(other.client().clone())
        .get_stream("MURMUR_HISTORY")
        .await?
        .consumers();
    let mut filtered_by_server = false;
    while let Some(info) = futures::StreamExt::next(&mut consumers).await {
        let mut filters = info?.config.filter_subjects;
        filters.sort();
        filtered_by_server |= filters == declared;
    }
    assert!(filtered_by_server, "no consumer filtered to {declared:?}");
    let _ = stop_tx.send(());
    let (agent, stats) = running.await?;
    let stats = stats?;
    assert_eq!((stats.handled, stats.failed), (1, 1), "{stats:?}");
    assert!(seen.try_recv().is_err(), "nothing else was handled");

    // The registry shows what it handles.
    let mut registry = Projector::new(
        other.clone(),
        RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    registry.catch_up().await?;
    let entry = &registry.state().agents[agent.id().as_str()];
    assert_eq!(entry.handles.as_deref(), agent.handles());
    assert!(!entry.takes_tasks());
    agent.leave("done").await?;
    Ok(())
}

/// A process that asks the registry again and again (an orchestrator before each step,
/// `murmur chat` before each line) reads only the agent events stored since its last
/// question, and each answer is the registry as of then.
#[tokio::test]
async fn a_live_registry_reads_only_what_is_new_at_each_question() -> Result<()> {
    use murmur_coordination::registry::LiveRegistry;
    use murmur_e2e::joined;
    use murmur_subjects::Draft;
    use murmur_subjects::events::AgentLeft;

    let nats = TestNats::start().await?;
    let agents: Vec<murmur_subjects::EventLog> =
        futures::future::try_join_all((0..3).map(|_| nats.event_log("acme"))).await?;
    for (k, agent) in agents.iter().enumerate() {
        let me = Token::new(agent.identity().public_key())?;
        agent
            .append(Draft::new(me, &joined(&format!("tool-{k}")))?)
            .await?;
    }
    let registry = LiveRegistry::new(nats.event_log("acme").await?);
    assert!(registry.offers("tool.fs").await?);
    assert!(!registry.offers("tool.exec").await?);
    assert_eq!(
        registry.events_read().await,
        3,
        "the first question replays"
    );
    // The joins leave the stream: a registry that replayed at each question would no
    // longer know these agents, one that reads only what is new still does.
    let stream_name = agents[0].config().history_stream.clone();
    let last = agents[0].last_sequence(&stream_name).await?;
    async_nats::jetstream::new(agents[0].client().clone())
        .get_stream(&stream_name)
        .await?
        .purge()
        .sequence(last + 1)
        .await?;
    let leave = |agent: murmur_subjects::EventLog| async move {
        let me = Token::new(agent.identity().public_key())?;
        agent
            .append(Draft::new(
                me,
                &AgentLeft {
                    reason: "done".into(),
                },
            )?)
            .await?;
        Ok::<_, anyhow::Error>(())
    };
    leave(agents[0].clone()).await?;
    assert!(
        registry.offers("tool.fs").await?,
        "two of the three are still online"
    );
    assert_eq!(registry.events_read().await, 4);
    for agent in &agents[1..] {
        leave(agent.clone()).await?;
    }
    assert!(!registry.offers("tool.fs").await?, "all three left");
    assert_eq!(
        registry.events_read().await,
        6,
        "the second read the three leaves only"
    );
    let online = registry.now(|r| r.online_with("tool.fs").count()).await?;
    assert_eq!(online, 0);
    assert_eq!(registry.events_read().await, 6);
    Ok(())
}

/// Heartbeats of many agents that arrive at once are decoded together, their signatures
/// (one per agent) checked in one batch: each genuine beat is heard, a tampered one and one
/// sent for another agent are not. Once all fall silent, exactly the genuine agents are
/// declared offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_hears_beats_that_arrive_together_and_only_genuine_ones() -> Result<()> {
    use murmur_subjects::clock::ManualClock;
    use murmur_subjects::events::AgentHeartbeat;
    use murmur_subjects::{Draft, Identity};

    const AGENTS: usize = 200;
    let nats = TestNats::start().await?;
    let observer = nats.event_log("acme").await?;
    let realm = Token::new("acme")?;
    let beat = AgentHeartbeat {
        interval_ms: 1_000,
        load: 0.0,
        queue_depth: 0,
    };
    let agents: Vec<Identity> = (0..AGENTS).map(|_| Identity::generate()).collect();
    let mut beats = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let me = Token::new(agent.public_key())?;
        // Agent 9's beat is signed by agent 8.
        let signer = if i == 9 { &agents[8] } else { agent };
        let sealed = Draft::new(me, &beat)?.seal(signer, &realm);
        let (headers, mut body) = observer.codec().encode(&sealed)?;
        if i == 17 {
            // Agent 17's beat with its queue depth changed after signing.
            let text = String::from_utf8(body.to_vec())?;
            let tampered = text.replace("\"queue_depth\":0", "\"queue_depth\":7");
            anyhow::ensure!(tampered != text, "the beat's body changed: {text}");
            body = tampered.into_bytes().into();
        }
        beats.push((
            sealed.subject.to_string(),
            async_nats::HeaderMap::from(headers),
            body,
        ));
    }
    let genuine: std::collections::BTreeSet<String> = agents
        .iter()
        .enumerate()
        .filter(|(i, _)| ![9, 17].contains(i))
        .map(|(_, a)| a.public_key().to_string())
        .collect();

    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn(run_monitor(
        nats.log_as("acme", Role::Monitor, "monitor").await?,
        clock.clone(),
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let offline_filter = EventType::of::<AgentOffline>().filter(Some(&realm));
    let declared = || async {
        let mut agents = std::collections::BTreeSet::new();
        observer
            .read(&offline_filter, StartAt::Beginning, None, |m| {
                if let Ok(subject) = murmur_subjects::Subject::parse(&m.message.subject) {
                    agents.insert(subject.aggregate().to_string());
                }
                std::ops::ControlFlow::Continue(())
            })
            .await?;
        anyhow::Ok(agents)
    };
    // All beats at once. The monitor subscribes when it has read the grants, so the first
    // beats may come before it listens: until every genuine agent is declared, the same
    // beats go again (the same events, so the same offline ids).
    let client = nats.client().await?;
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut offline = declared().await?;
    while offline != genuine {
        if monitor.is_finished() {
            anyhow::bail!("the monitor stopped: {:?}", monitor.await?);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "{} of {} genuine agents declared offline; others declared: {:?}",
            offline.intersection(&genuine).count(),
            genuine.len(),
            offline.difference(&genuine).collect::<Vec<_>>()
        );
        for (subject, headers, body) in &beats {
            client
                .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                .await?;
        }
        client.flush().await?;
        // The monitor hears the beats when it gets to them: the clock moves past three
        // intervals again and again, so each beat falls silent after it was heard. Each
        // declaration is an append: the monitor is given time for all of them before the
        // same beats go again (an agent heard again after its verdict is "resumed").
        let settled = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < settled && offline != genuine {
            clock.advance(Duration::from_secs(4));
            tokio::time::sleep(Duration::from_millis(100)).await;
            offline = declared().await?;
        }
    }
    stop_tx.send_replace(true);
    monitor.await??;
    // Nothing declared for the tampered beat's agent or the one another agent beat for.
    assert_eq!(declared().await?, genuine);
    Ok(())
}

/// Realm `acme` with its history stream deleted; its operator's log.
async fn without_its_history_stream(nats: &TestNats) -> Result<murmur_subjects::EventLog> {
    let operator = nats.event_log("acme").await?;
    async_nats::jetstream::new(operator.client().clone())
        .delete_stream(operator.config().history_stream.as_str())
        .await?;
    Ok(operator)
}

#[tokio::test]
async fn a_service_whose_stream_the_server_refuses_stops_and_says_why() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    // Another stream holds the history's subjects: the operator's services cannot create
    // the history stream again.
    let operator = without_its_history_stream(&nats).await?;
    async_nats::jetstream::new(operator.client().clone())
        .create_stream(async_nats::jetstream::stream::Config {
            name: "SOMEONE_ELSES".into(),
            subjects: murmur_subjects::LogConfig::history_subjects(),
            ..Default::default()
        })
        .await?;
    // A coordinator runs with the operator's credentials, as `murmur up` runs it.
    let who = murmur_e2e::enrol(&nats, Role::Operator, "coordinator", data.path()).await?;
    let coordinator = tokio::process::Command::new(murmur_e2e::murmur_binary()?)
        .args(["--server", nats.url(), "--realm", "acme", "--data-dir"])
        .arg(data.path())
        .args(&who)
        .arg("coordinator")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(DEADLINE, coordinator.wait_with_output())
        .await
        .context("the coordinator kept retrying a stream the server refuses for good")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("MURMUR_HISTORY") && stderr.contains("refused its configuration"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn an_agent_started_before_its_realms_stream_exists_says_what_is_missing() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    // A worker may not create the history stream.
    let operator = without_its_history_stream(&nats).await?;
    let who = murmur_e2e::enrol(&nats, Role::Worker, "worker", data.path()).await?;
    let mut agent = murmur_e2e::agent_process(
        nats.url(),
        data.path(),
        &who,
        &[],
        "tester",
        "test.run",
        &["--builtin-handler"],
        true,
    )?;
    // It waits for the operator, saying what is missing on each try.
    let mut lines = tokio::io::BufReader::new(agent.stderr.take().context("stderr")?).lines();
    let said = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("retrying") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("the agent ended without a word on the missing stream")
    })
    .await
    .context("the agent said nothing of the missing stream")??;
    assert!(
        said.contains("MURMUR_HISTORY") && said.contains("does not exist"),
        "{said}"
    );
    assert!(said.contains("only an operator creates it"), "{said}");
    // Once the operator creates it, the agent joins.
    operator.ensure_streams().await?;
    let id = murmur_e2e::joined_id(&mut agent).await?;
    assert!(!id.is_empty());
    Ok(())
}

/// The resident set of process `pid` in KiB (`/proc/PID/smaps_rollup`).
#[cfg(target_os = "linux")]
fn resident_kib(pid: u32) -> Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no Rss in smaps_rollup")
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_gives_back_its_startup_pages_and_still_runs_tasks() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    // Its own copy of the binary: the kernel leaves pages that other processes map too (the
    // agents of the tests running beside this one) where they are.
    let program = data.path().join("murmur");
    std::fs::copy(murmur_e2e::murmur_binary()?, &program)?;
    let who = murmur_e2e::enrol(&nats, Role::Worker, "worker", data.path()).await?;
    let mut worker = murmur_e2e::agent_process_of(
        &program,
        nats.url(),
        data.path(),
        &who,
        &[],
        "tester",
        "test.run",
        &["--builtin-handler"],
        false,
    )?;
    murmur_e2e::joined_id(&mut worker).await?;
    let pid = worker.id().context("the agent's pid")?;
    // Joined: everything its start ran is resident now.
    let joined = resident_kib(pid)?;
    let until = tokio::time::Instant::now() + DEADLINE;
    let idle = loop {
        let now = resident_kib(pid)?;
        if now * 10 < joined * 8 {
            break now;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < until,
            "the agent's resident set never went down from {joined} KiB (now {now} KiB)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The code a task runs comes back as it runs.
    let submitter = nats.event_log("acme").await?;
    let _coordinator = murmur_e2e::spawn_coordinator(
        nats.log_as("acme", Role::Coordinator, "coordinator")
            .await?,
    );
    murmur_e2e::submit_once(&submitter, "t1", "test.run", serde_json::json!({"n": 1})).await?;
    let mut view = Projector::new(
        submitter.clone(),
        murmur_coordination::coordinator::CoordinatorProjection::new(Token::new("acme")?),
    );
    anyhow::ensure!(
        view.follow_until(DEADLINE, |v| v.tasks.counts().get("completed") == Some(&1))
            .await?,
        "the agent ran no task after giving back its pages (resident {joined} → {idle} KiB)"
    );
    Ok(())
}
