//! The event log against a real nats-server: dedupe, optimistic concurrency, dead letters for
//! every kind of bad input, projections live == replay, checkpoints, schema upgrades, replay
//! ranges.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::HeaderMap;
use bytes::Bytes;
use murmur_e2e::{
    DEADLINE, dead_letters, joined, publish_raw, spawn_auditor, submitted, wait_for_dead_letter,
};
use murmur_subjects::binding::{self, ContentMode};
use murmur_subjects::events::{AgentJoined, AgentLeft, DeadLetterReason, TaskCompleted};
use murmur_subjects::log::{Expected, MSG_ID};
use murmur_subjects::{
    Draft, EventCodec, EventLog, EventRecord, Identity, LogConfig, LogError, Projector, StartAt,
    Token,
};
use murmur_testkit::TestNats;
use murmur_tools::cli::Cli;
use murmur_tools::cli::replay::{Format, ReplayArgs};
use murmur_tools::overview::OverviewProjection;
use murmur_tools::settings::Settings;

#[path = "event_log/reads.rs"]
mod reads;

#[path = "event_log/archive.rs"]
mod archive;

#[path = "event_log/bulk.rs"]
mod bulk;

fn tok(s: &str) -> Token {
    Token::new(s).expect("valid token")
}

/// `record` encoded by the binding, with headers as a NATS client publishes them.
fn encode_nats(
    record: &murmur_subjects::EventRecord,
    mode: ContentMode,
    limit: usize,
) -> Result<(HeaderMap, bytes::Bytes), binding::BindingError> {
    binding::encode(record, mode, limit).map(|(h, b)| (h.into(), b))
}

#[tokio::test]
async fn test_kit_without_docker_falls_back_to_the_local_binary() -> Result<()> {
    let nats = TestNats::start().await?;
    if !std::path::Path::new("/var/run/docker.sock").exists()
        && std::env::var_os("DOCKER_HOST").is_none()
    {
        assert!(!nats.is_container());
    }
    // Ready means JetStream answers.
    let js = async_nats::jetstream::new(nats.client().await?);
    js.query_account().await?;
    Ok(())
}

#[tokio::test]
async fn streams_are_created_idempotently() -> Result<()> {
    let nats = TestNats::start().await?;
    let a = nats.event_log("acme").await?;
    let b = nats.event_log("acme").await?;
    a.ensure_streams().await?;
    b.ensure_streams().await?;
    let mut s = async_nats::jetstream::new(a.client().clone())
        .get_stream("MURMUR_HISTORY")
        .await?;
    let info = s.info().await?;
    assert_eq!(info.config.subjects, LogConfig::history_subjects());
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.config.num_replicas, 1);
    // Fast ingest for bulk writers, asked of a server that knows it (2.14+); a 2.12 server
    // refuses a configuration with a field it does not know.
    let version = a.client().server_info().version;
    assert_eq!(
        info.config.allow_batch_publish,
        murmur_subjects::log::stores_fast_ingest_batches(&version),
        "nats-server {version}"
    );
    Ok(())
}

#[tokio::test]
async fn opening_adds_the_subjects_an_older_stream_lacks_and_keeps_the_rest() -> Result<()> {
    let nats = TestNats::start().await?;
    let js = async_nats::jetstream::new(nats.client().await?);
    let needed = LogConfig::history_subjects();
    // A stream created by an older version (or by hand): fewer subjects, its own retention.
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "MURMUR_HISTORY".into(),
        subjects: vec!["murmur.v0.legacy.>".into()],
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await?;
    let log = nats.event_log("acme").await?;
    let config = murmur_e2e::stream_config(&log, "MURMUR_HISTORY").await?;
    for subject in &needed {
        assert!(config.subjects.contains(subject), "{subject} not added");
    }
    assert!(
        config.subjects.iter().any(|s| s == "murmur.v0.legacy.>"),
        "the stream's own subjects are kept"
    );
    assert_eq!(config.max_age, Duration::from_secs(7 * 24 * 3600));
    Ok(())
}

#[tokio::test]
async fn a_stream_the_server_refuses_is_an_error_that_says_so_not_a_retry() -> Result<()> {
    let nats = TestNats::start().await?;
    // Another stream already captures the history's subjects: the server refuses ours.
    async_nats::jetstream::new(nats.client().await?)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "SOMEONE_ELSES".into(),
            subjects: LogConfig::history_subjects(),
            ..Default::default()
        })
        .await?;
    let refused = nats
        .event_log("acme")
        .await
        .expect_err("the history stream cannot be created");
    let error = refused
        .chain()
        .find_map(|e| e.downcast_ref::<LogError>())
        .context("a LogError")?;
    assert_refused_for_overlap(error, "MURMUR_HISTORY");
    let text = error.to_string();
    assert!(text.contains("nats-server 2."), "{text}");
    Ok(())
}

/// `error` is the server's refusal of `stream`'s configuration (its subjects overlap another
/// stream's), which a participant gives up on with the reason instead of waiting for the
/// server forever.
fn assert_refused_for_overlap(error: &LogError, stream: &str) {
    assert!(
        matches!(error, LogError::StreamRefused { stream: s, .. } if s == stream),
        "{error:?}"
    );
    assert!(!error.is_transient());
    let text = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(text.contains("overlap"), "{text}");
}

#[tokio::test]
async fn a_bucket_the_server_refuses_is_an_error_that_says_so_not_a_retry() -> Result<()> {
    use murmur_subjects::roles::{ARTIFACT_BUCKET, PRESENCE_BUCKET};
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    // Another stream already captures the subjects of the presence bucket and of the
    // artifact store (which the realm's operator had created): the server refuses the
    // streams underneath them.
    let js = async_nats::jetstream::new(log.client().clone());
    js.delete_key_value(PRESENCE_BUCKET).await?;
    js.delete_object_store(ARTIFACT_BUCKET).await?;
    for (name, subject) in [
        ("SOMEONE_ELSES_KV", format!("$KV.{PRESENCE_BUCKET}.>")),
        ("SOMEONE_ELSES_OBJ", format!("$O.{ARTIFACT_BUCKET}.>")),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject],
            ..Default::default()
        })
        .await?;
    }
    let presence = log
        .presence_bucket(Duration::from_secs(1))
        .await
        .expect_err("the presence bucket cannot be created");
    let Err(artifacts) = log.artifact_store().await else {
        anyhow::bail!("the artifact store was created");
    };
    for (error, stream) in [
        (presence, format!("KV_{PRESENCE_BUCKET}")),
        (artifacts, format!("OBJ_{ARTIFACT_BUCKET}")),
    ] {
        assert_refused_for_overlap(&error, &stream);
    }
    // The log's own buckets that nothing holds are still created.
    log.checkpoint_bucket().await?;
    Ok(())
}

#[tokio::test]
async fn an_append_no_stream_answers_says_the_stream_may_have_no_leader() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    // No stream takes the subject any more: the server answers the publish with 503 no
    // responders, as it does while a clustered stream elects its leader.
    async_nats::jetstream::new(log.client().clone())
        .delete_stream("MURMUR_HISTORY")
        .await?;
    let refused = log
        .append(Draft::new(tok("t1"), &submitted(1))?)
        .await
        .expect_err("nothing stores the event");
    assert!(refused.is_transient(), "{refused:?}");
    let text = format!("{:#}", anyhow::Error::from(refused));
    assert!(text.contains("503 no responders"), "{text}");
    assert!(text.contains("no leader at the moment"), "{text}");
    Ok(())
}

#[tokio::test]
async fn retried_events_are_deduplicated_by_id() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let sealed = log.seal(Draft::new(tok("t1"), &submitted(1))?);
    let first = log.append_sealed(&sealed).await?.wait().await?;
    let second = log.append_sealed(&sealed).await?.wait().await?;
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);
    assert_eq!(log.last_sequence("MURMUR_HISTORY").await?, 1);
    Ok(())
}

#[tokio::test]
async fn conflicting_aggregate_writes_are_refused() -> Result<()> {
    let nats = TestNats::start().await?;
    let a = nats.event_log("acme").await?;
    let b = nats.event_log("acme").await?;
    // Another aggregate's events must not count against this one.
    a.append(Draft::new(tok("other"), &submitted(0))?).await?;
    let (_, created) = a
        .append_expected(Draft::new(tok("t1"), &submitted(1))?, Expected::NoEvents)
        .await?;
    // Creating the same aggregate again is a conflict.
    let again = b
        .append_expected(Draft::new(tok("t1"), &submitted(1))?, Expected::NoEvents)
        .await;
    assert!(
        matches!(again, Err(LogError::Conflict { expected: 0, .. })),
        "{again:?}"
    );

    // Two writers race from the same expected sequence: exactly one wins.
    let done = |log: &EventLog| {
        let log = log.clone();
        async move {
            log.append_expected(
                Draft::new(
                    tok("t1"),
                    &TaskCompleted {
                        output: serde_json::json!(null),
                        attempt: 1,
                    },
                )?,
                Expected::LastSequence(created.sequence),
            )
            .await
            .map_err(anyhow::Error::from)
        }
    };
    let (ra, rb) = tokio::join!(done(&a), done(&b));
    let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "a: {ra:?}, b: {rb:?}");
    let loser = if ra.is_ok() { rb } else { ra };
    let err = loser.expect_err("one must lose");
    assert!(
        matches!(
            err.downcast_ref::<LogError>(),
            Some(LogError::Conflict { .. })
        ),
        "{err}"
    );
    Ok(())
}

/// Publishes each kind of bad input raw and reads its dead letter back from the stream.
#[tokio::test]
async fn every_kind_of_bad_input_is_dead_lettered() -> Result<()> {
    let nats = TestNats::start().await?;
    let identity = Identity::generate();
    let client = nats.client().await?;
    let limit = 8 * 1024;
    let log = EventLog::options(identity.clone(), tok("acme"))
        .codec(EventCodec::default().max_event_bytes(limit))
        .open(client)
        .await?;
    let auditor = spawn_auditor(&log);

    let good = log.seal(Draft::new(tok("t1"), &submitted(1))?);
    let (good_headers, good_body) = encode_nats(&good.record, ContentMode::Structured, limit)?;
    let subject = good.subject.to_string();
    let structured = |body: &str| {
        let mut h = HeaderMap::new();
        h.insert("Content-Type", binding::STRUCTURED_CONTENT_TYPE);
        (h, body.as_bytes().to_vec())
    };
    let with_id = |mut h: HeaderMap, id: &str| {
        h.insert(MSG_ID, id);
        h
    };

    // 1. Malformed JSON.
    let (h, b) = structured("{\"specversion\": \"1.0\", oops");
    publish_raw(&log, &subject, with_id(h, "bad-1"), b).await?;
    // 2. Missing required attribute (no source).
    let (h, b) = structured(
        r#"{"specversion":"1.0","id":"x2","type":"dev.murmur.task.submitted","subject":"t1","data":{"v":1}}"#,
    );
    publish_raw(&log, &subject, with_id(h, "bad-2"), b).await?;
    // 3. Wrong specversion.
    let (h, b) = structured(
        r#"{"specversion":"0.3","id":"x3","source":"s","type":"dev.murmur.task.submitted"}"#,
    );
    publish_raw(&log, &subject, with_id(h, "bad-3"), b).await?;
    // 4. Unknown type.
    let mut unknown = good.record.clone();
    unknown.ty = "dev.murmur.task.exploded".into();
    unknown.id = "x4".into();
    let (h, b) = encode_nats(&unknown, ContentMode::Binary, limit)?;
    publish_raw(&log, &subject, with_id(h, "bad-4"), b.to_vec()).await?;
    // 5. Payload failing its schema (capability must be a string), properly signed.
    let mut bad_payload = good.record.clone();
    bad_payload.id = "x5".into();
    bad_payload.data = Some(Bytes::from_static(
        br#"{"v":1,"capability":42,"input":null}"#,
    ));
    identity.sign(&mut bad_payload, &subject);
    let (h, b) = encode_nats(&bad_payload, ContentMode::Binary, limit)?;
    publish_raw(&log, &subject, with_id(h, "bad-5"), b.to_vec()).await?;
    // 6. Invalid subject tokens: an undeclared domain, and a verb that does not match the type.
    publish_raw(
        &log,
        "murmur.v1.acme.evt.nodomain.t1.submitted",
        with_id(good_headers.clone(), "bad-6"),
        good_body.to_vec(),
    )
    .await?;
    publish_raw(
        &log,
        "murmur.v1.acme.evt.task.t1.completed",
        with_id(good_headers.clone(), "bad-6b"),
        good_body.to_vec(),
    )
    .await?;
    // 7. Oversized: over murmur's limit, under the server's max_payload.
    let mut big = good.record.clone();
    big.id = "x7".into();
    let filler = "x".repeat(limit * 2);
    big.data = Some(Bytes::from(format!(
        r#"{{"v":1,"capability":"c","input":"{filler}"}}"#
    )));
    let (h, b) = encode_nats(&big, ContentMode::Binary, usize::MAX)?;
    publish_raw(&log, &subject, with_id(h, "bad-7"), b.to_vec()).await?;
    // 8. Forged: signed by mallory, claiming identity's key.
    let mallory = Identity::generate();
    let mut forged = Draft::new(tok("t1"), &submitted(8))?.seal(&mallory, &tok("acme"));
    forged.record.source = identity.public_key().to_string();
    let (h, b) = encode_nats(&forged.record, ContentMode::Binary, limit)?;
    publish_raw(&log, &subject, with_id(h, "bad-8"), b.to_vec()).await?;
    // And one good event, which must not be dead-lettered.
    log.append_sealed(&good).await?.wait().await?;

    let expect = [
        DeadLetterReason::Malformed,
        DeadLetterReason::MissingAttribute,
        DeadLetterReason::WrongSpecVersion,
        DeadLetterReason::UnknownType,
        DeadLetterReason::SchemaViolation,
        DeadLetterReason::BadSubject,
        DeadLetterReason::Oversized,
        DeadLetterReason::BadSignature,
    ];
    for reason in expect {
        let d = wait_for_dead_letter(&log, reason.as_str(), |d| d.reason == reason).await?;
        assert!(!d.detail.is_empty());
        assert!(d.stream_sequence.is_some());
        if reason == DeadLetterReason::Oversized {
            assert!(d.body_base64.is_none(), "oversized keeps only a prefix");
            assert_eq!(d.prefix_base64.as_ref().map(|p| p.len()), Some(1368));
            assert!(d.original_size > limit);
            assert_eq!(d.sha256.len(), 64);
        } else {
            assert!(d.body_base64.is_some(), "{reason}: original bytes kept");
        }
    }
    wait_for_dead_letter(&log, "wrong verb", |d| {
        d.original_subject.ends_with("t1.completed")
    })
    .await?;
    let all = dead_letters(&log).await?;
    assert_eq!(
        all.len(),
        9,
        "{:#?}",
        all.iter()
            .map(|(_, d)| (&d.reason, &d.original_subject))
            .collect::<Vec<_>>()
    );
    auditor.stop.send(()).ok();
    let stats = auditor.task.await??;
    assert_eq!(stats.dead_lettered, 9);
    assert_eq!(stats.valid, 1);
    Ok(())
}

/// Stores `n` task submissions (`t0`, `t1`, …) in `writer`'s realm, each signed on its own
/// by `writer`, except those numbered in `forged`: signed by another key that claims to be
/// `writer`'s, and published raw.
async fn append_singles_with_forged(writer: &EventLog, n: u64, forged: &[u64]) -> Result<()> {
    let mallory = Identity::generate();
    for k in 0..n {
        let draft = Draft::new(tok(&format!("t{k}")), &submitted(k))?;
        if forged.contains(&k) {
            let mut sealed = draft.seal(&mallory, writer.realm());
            sealed.record.source = writer.identity().public_key().to_string();
            let (h, b) = encode_nats(&sealed.record, ContentMode::Structured, 1 << 20)?;
            publish_raw(writer, sealed.subject.as_str(), h, b.to_vec()).await?;
        } else {
            writer.append(draft).await?;
        }
    }
    Ok(())
}

/// The auditor checks a backlog of events signed one each in batches of what its consumer
/// holds together: the forged ones among them are dead-lettered as bad signatures, the rest
/// count as valid.
#[tokio::test]
async fn the_auditor_checks_a_backlog_together_and_dead_letters_the_forged() -> Result<()> {
    use murmur_subjects::identity::SignatureVerifier;
    use std::sync::Arc;

    let nats = TestNats::start().await?;
    let writer = nats.event_log("acme").await?;
    let realm = tok("acme");
    const N: u64 = 100;
    const FORGED: [u64; 2] = [5, 90];
    append_singles_with_forged(&writer, N, &FORGED).await?;
    let checks = Arc::new(SignatureVerifier::new());
    let auditor_log = EventLog::options(Identity::generate(), realm.clone())
        .codec(EventCodec::default().verifier(checks.clone()))
        .open(writer.client().clone())
        .await?;
    let mut auditor = spawn_auditor(&auditor_log);
    let good = N - FORGED.len() as u64;
    tokio::time::timeout(
        DEADLINE,
        auditor
            .stats
            .wait_for(|s| s.dead_lettered >= 2 && s.valid >= good),
    )
    .await
    .context("the auditor did not check the backlog")??;
    let all = dead_letters(&writer).await?;
    let mut forged: Vec<&str> = all
        .iter()
        .filter(|(_, d)| d.reason == DeadLetterReason::BadSignature)
        .map(|(_, d)| d.original_subject.as_str())
        .collect();
    forged.sort();
    assert_eq!(forged.len(), 2, "{forged:?}");
    assert!(
        forged[0].contains(".t5.") && forged[1].contains(".t90."),
        "{forged:?}"
    );
    assert!(checks.batched() > 0, "no batch was checked");
    auditor.stop.send(()).ok();
    let stats = auditor.task.await??;
    assert_eq!(stats.dead_lettered, 2);
    Ok(())
}

#[tokio::test]
async fn dead_letters_keep_the_original_and_can_be_redriven() -> Result<()> {
    // An operator redrives a dead letter: the original bytes go back to the original subject.
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let auditor = spawn_auditor(&log);
    let mallory = Identity::generate();
    let mut forged = Draft::new(tok("t9"), &submitted(9))?.seal(&mallory, &tok("acme"));
    forged.record.source = log.identity().public_key().to_string();
    let (h, b) = encode_nats(&forged.record, ContentMode::Binary, 1 << 20)?;
    publish_raw(&log, forged.subject.as_str(), h, b.to_vec()).await?;
    let d = wait_for_dead_letter(&log, "forgery", |d| {
        d.reason == DeadLetterReason::BadSignature
    })
    .await?;
    assert_eq!(d.original_subject, forged.subject.as_str());
    assert!(
        d.original_headers
            .iter()
            .any(|(k, v)| k == "ce-source" && v == log.identity().public_key())
    );
    let (dl_seq, _) = dead_letters(&log).await?.remove(0);
    let before = log.last_sequence("MURMUR_HISTORY").await?;
    let subject = murmur_tools::cli::dlq::redrive(&log, dl_seq).await?;
    assert_eq!(subject, forged.subject.as_str());
    // The original bytes are back in the history, byte for byte.
    let stream = async_nats::jetstream::new(log.client().clone())
        .get_stream("MURMUR_HISTORY")
        .await?;
    let until = tokio::time::Instant::now() + DEADLINE;
    let again = loop {
        if let Ok(m) = stream.get_raw_message(before + 1).await {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "redriven message not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(again.subject.as_str(), forged.subject.as_str());
    assert_eq!(again.payload, b);
    // The auditor refuses it again (still forged): a second dead letter, same reason.
    let until = tokio::time::Instant::now() + DEADLINE;
    while dead_letters(&log).await?.len() < 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "redriven forgery not dead-lettered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    auditor.stop.send(()).ok();
    auditor.task.await??;
    Ok(())
}

#[tokio::test]
async fn projection_live_equals_full_replay() -> Result<()> {
    let nats = TestNats::start().await?;
    let realm = tok("acme");
    let workers: Vec<EventLog> =
        futures::future::try_join_all((0..3).map(|_| nats.event_log("acme"))).await?;
    let projection = OverviewProjection {
        realm: realm.clone(),
    };
    let live_log = workers[0].clone();
    let total = 3 + 20 + 20 + 3;
    let live = tokio::spawn(async move {
        let mut p = Projector::new(live_log, projection);
        let reached = p.follow_until(DEADLINE, |s| s.events >= total).await?;
        Ok::<_, LogError>((reached, p.state().clone(), p.position()))
    });
    for w in &workers {
        let me = tok(w.identity().public_key());
        w.append(Draft::new(me, &joined("w"))?).await?;
    }
    let mut pending = Vec::new();
    for i in 0..20u64 {
        let sealed =
            workers[(i % 3) as usize].seal(Draft::new(tok(&format!("task-{i}")), &submitted(i))?);
        pending.push((
            sealed.clone(),
            workers[(i % 3) as usize].append_sealed(&sealed).await?,
        ));
    }
    let mut acked = Vec::new();
    for (sealed, p) in pending {
        acked.push((sealed, p.wait().await?));
    }
    for (i, (sealed, ack)) in acked.iter().enumerate() {
        let w = &workers[(i + 1) % 3];
        w.append_expected(
            Draft::new(
                sealed.subject.aggregate().clone(),
                &TaskCompleted {
                    output: serde_json::json!(i),
                    attempt: 1,
                },
            )?
            .caused_by(&sealed.record),
            Expected::LastSequence(ack.sequence),
        )
        .await?;
    }
    for w in &workers {
        w.append(Draft::new(
            tok(w.identity().public_key()),
            &AgentLeft {
                reason: "done".into(),
            },
        )?)
        .await?;
    }
    let (reached, live_state, live_position) = live.await??;
    assert!(reached, "live projection saw every event");

    let mut replayed = Projector::new(
        workers[1].clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    replayed.catch_up().await?;
    assert_eq!(replayed.state(), &live_state);
    assert_eq!(replayed.position(), live_position);
    assert_eq!(live_state.count("completed"), 20);
    assert_eq!(live_state.agents.len(), 3);

    Ok(())
}

/// A consumer recreated behind its predecessor hands a projector messages it has folded
/// already (seen on a cluster during a leader change): each stream sequence counts once.
#[tokio::test]
async fn a_message_delivered_again_is_folded_once() -> Result<()> {
    use murmur_subjects::EventType;
    use murmur_subjects::events::TaskSubmitted;
    use murmur_subjects::projection::read_stream;
    use std::ops::ControlFlow;

    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let realm = tok("acme");
    for i in 0..6 {
        log.append(Draft::new(tok(&format!("t{i}")), &submitted(i))?)
            .await?;
    }
    let mut live = Projector::new(
        log.clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    live.catch_up().await?;
    let folded = live.state().clone();
    assert_eq!(folded.events, 6);

    // Every stored message again, as a second consumer from the start delivers them.
    let js = async_nats::jetstream::new(log.client().clone());
    let stream = log.config().history_stream.clone();
    let filter = EventType::of::<TaskSubmitted>().filter(Some(&realm));
    let read_from = |start: u64| {
        let (js, stream, filter) = (&js, &stream, &filter);
        async move {
            let mut read = Vec::new();
            read_stream(js, stream, filter, StartAt::Sequence(start), None, |m| {
                read.push(m);
                ControlFlow::Continue(())
            })
            .await?;
            Ok::<_, LogError>(read)
        }
    };
    let again = read_from(1).await?;
    assert_eq!(again.len(), 6);
    for stored in &again {
        live.fold_stored(stored);
    }
    assert_eq!(live.state(), &folded, "nothing folded twice");
    assert_eq!(live.stats().applied, 6);
    assert_eq!(live.stats().redelivered, 6);

    // What comes after the position is folded as usual, and counts once too.
    log.append(Draft::new(tok("t6"), &submitted(6))?).await?;
    let after = read_from(live.position() + 1).await?;
    assert_eq!(after.len(), 1);
    for stored in after.iter().chain(&after) {
        live.fold_stored(stored);
    }
    assert_eq!(live.state().events, 7);
    assert_eq!(live.stats().redelivered, 7);
    let mut replayed = Projector::new(log, OverviewProjection { realm });
    replayed.catch_up().await?;
    assert_eq!(replayed.state(), live.state());
    Ok(())
}

#[tokio::test]
async fn batch_signed_appends_are_stored_and_verified() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let mut auditor = spawn_auditor(&log);
    let drafts = (0..600u64)
        .map(|i| Draft::new(tok(&format!("t{i}")), &submitted(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let pending = log.append_many(drafts).await?;
    for (sealed, p) in pending {
        assert!(
            sealed
                .record
                .signature
                .as_deref()
                .is_some_and(|s| s.starts_with("ed25519-merkle:"))
        );
        p.wait().await?;
    }
    // A reader in another process (a fresh log handle, empty caches) verifies every event.
    let reader = nats.event_log("acme").await?;
    let mut p = Projector::new(reader, OverviewProjection { realm: tok("acme") });
    p.catch_up().await?;
    assert_eq!(p.stats().applied, 600);
    assert_eq!(p.stats().invalid, 0);
    let until = tokio::time::Instant::now() + DEADLINE;
    while auditor.stats.borrow().valid < 600 {
        tokio::time::timeout_at(until, auditor.stats.changed()).await??;
    }
    assert_eq!(auditor.stats.borrow().dead_lettered, 0);
    auditor.stop.send(()).ok();
    auditor.task.await??;
    Ok(())
}

#[tokio::test]
async fn checkpoint_resumes_from_its_position() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let realm = tok("acme");
    for i in 0..5 {
        log.append(Draft::new(tok(&format!("t{i}")), &submitted(i))?)
            .await?;
    }
    let mut first = Projector::new(
        log.clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    first.catch_up().await?;
    first.save_checkpoint().await?;
    for i in 5..9 {
        log.append(Draft::new(tok(&format!("t{i}")), &submitted(i))?)
            .await?;
    }
    let mut resumed = Projector::new(
        log.clone(),
        OverviewProjection {
            realm: realm.clone(),
        },
    );
    assert!(resumed.load_checkpoint().await?);
    assert_eq!(resumed.position(), 5);
    let applied = resumed.catch_up().await?;
    assert_eq!(applied, 4, "only the events after the checkpoint are read");
    let mut full = Projector::new(log, OverviewProjection { realm });
    full.catch_up().await?;
    assert_eq!(resumed.state(), full.state());
    assert_eq!(full.state().tasks.len(), 9);
    Ok(())
}

#[tokio::test]
async fn v1_events_in_the_log_decode_as_v2_on_replay() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let me = log.identity().clone();
    // Write an agent.joined exactly as a v1 build did: {"v":1,name,kind,capabilities}.
    let v2 = log.seal(Draft::new(tok(me.public_key()), &joined("modern"))?);
    let mut v1: EventRecord = v2.record.clone();
    v1.id = "legacy-1".into();
    v1.data = Some(Bytes::from_static(
        br#"{"v":1,"name":"legacy","kind":"executor","capabilities":["executor.test"]}"#,
    ));
    me.sign(&mut v1, v2.subject.as_str());
    let (mut h, b) = encode_nats(&v1, ContentMode::Binary, 1 << 20)?;
    h.insert(MSG_ID, "legacy-1");
    publish_raw(&log, v2.subject.as_str(), h, b.to_vec()).await?;
    log.append_sealed(&v2).await?.wait().await?;

    let mut decoded = Vec::new();
    log.read(
        &murmur_subjects::SubjectFilter::plane(murmur_subjects::Plane::Evt),
        StartAt::Beginning,
        None,
        |stored| {
            decoded.push(
                log.decode_stored(&stored.message, stored.sequence, None)
                    .map(|e| e.payload::<AgentJoined>()),
            );
            std::ops::ControlFlow::Continue(())
        },
    )
    .await?;
    assert_eq!(decoded.len(), 2);
    let legacy = decoded.remove(0)??;
    assert_eq!(legacy.name, "legacy");
    assert_eq!(legacy.agent_version, "unknown");
    assert_eq!(decoded.remove(0)??.name, "modern");
    Ok(())
}

#[tokio::test]
async fn replay_exports_exactly_the_range() -> Result<()> {
    let nats = TestNats::start().await?;
    let dir = tempfile::tempdir()?;
    let (_, creds) = nats
        .creds("acme", murmur_subjects::roles::Role::Observer, "replayer")
        .await?;
    let creds = creds.expect("a secure server issues credentials");
    let log = nats.event_log("acme").await?;
    for i in 0..30 {
        log.append(Draft::new(tok(&format!("t{i}")), &submitted(i))?)
            .await?;
    }
    let out = dir.path().join("range.jsonl");
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "murmur",
        "--server",
        nats.url(),
        "--realm",
        "acme",
        "--creds",
        creds.to_str().unwrap_or_default(),
        "replay",
    ])?;
    let settings = Settings::resolve(&cli.global)?;
    let totals = murmur_tools::cli::replay::run(
        &settings,
        ReplayArgs {
            from_seq: Some(11),
            to_seq: Some(20),
            since: None,
            until: None,
            subject: None,
            ty: None,
            format: Format::Jsonl,
            output: Some(out.clone()),
            archive: None,
        },
    )
    .await?;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 10);
    assert_eq!(totals.events, 10);
    assert_eq!(lines[0]["sequence"], 11);
    assert_eq!(lines[9]["sequence"], 20);
    assert_eq!(lines[0]["type"], "dev.murmur.task.submitted");
    assert_eq!(lines[0]["data"]["input"]["n"], 10);
    // Up to a time: what was stored before the 16th event (inside the first batch read).
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(lines[5]["stored_at"].clone())?;
    let before = murmur_tools::cli::replay::run(
        &settings,
        ReplayArgs {
            from_seq: None,
            to_seq: None,
            since: None,
            until: Some(until),
            subject: None,
            ty: None,
            format: Format::Jsonl,
            output: Some(dir.path().join("before.jsonl")),
            archive: None,
        },
    )
    .await?;
    assert_eq!(
        (before.events, before.first, before.last),
        (15, Some(1), Some(15))
    );
    // By type: nothing but task.submitted exists; agent.joined gives zero.
    let none = murmur_tools::cli::replay::run(
        &settings,
        ReplayArgs {
            from_seq: None,
            to_seq: None,
            since: None,
            until: None,
            subject: None,
            ty: Some("dev.murmur.agent.joined".into()),
            format: Format::Jsonl,
            output: Some(dir.path().join("none.jsonl")),
            archive: None,
        },
    )
    .await?;
    assert_eq!(none.events, 0);
    Ok(())
}

#[tokio::test]
async fn oversized_submissions_are_a_typed_error_before_sending() -> Result<()> {
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let mut big = submitted(1);
    big.input = serde_json::json!({ "blob": "x".repeat(600 * 1024) });
    let result = log.append(Draft::new(tok("big"), &big)?).await;
    assert!(
        matches!(
            result,
            Err(LogError::Encode(
                murmur_subjects::binding::BindingError::Oversized { .. }
            ))
        ),
        "{result:?}"
    );
    assert_eq!(
        log.last_sequence("MURMUR_HISTORY").await?,
        0,
        "nothing was sent"
    );
    Ok(())
}
