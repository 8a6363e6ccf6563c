//! Reads of the log: consumers kept while quiet, one poll per held batch, several filters
//! at once, and a read whose rest is purged meanwhile.

use super::*;

/// A projection whose events are rare (cancellations, proposals) keeps its live consumer
/// while the rest of the stream moves on, and still sees its next event: "the stream moved
/// past what my consumer delivered" is not a stall.
#[tokio::test]
async fn a_quiet_projection_keeps_its_consumer_while_other_subjects_move() -> Result<()> {
    use murmur_subjects::{Projection, Refusal};
    use murmur_subjects::{SubjectFilter, VerifiedEvent};

    struct Leavers;
    impl Projection for Leavers {
        type State = u64;
        fn name(&self) -> &str {
            "leavers"
        }
        fn filter(&self) -> SubjectFilter {
            murmur_subjects::EventType::of::<AgentLeft>().filter(Some(&tok("acme")))
        }
        fn apply(&self, state: &mut u64, _: &VerifiedEvent) -> Result<(), Refusal> {
            *state += 1;
            Ok(())
        }
    }

    let nats = TestNats::start().await?;
    let writer = nats.event_log("acme").await?;
    let mut quiet = Projector::new(nats.event_log("acme").await?, Leavers);
    quiet.catch_up().await?;
    // Twelve seconds of other events (the stall check looks after 3 × 3 s of quiet).
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut k = 0;
    while tokio::time::Instant::now() < until {
        writer
            .append(Draft::new(tok(&format!("t{k}")), &submitted(k))?)
            .await?;
        k += 1;
        quiet.poll(Duration::from_millis(200)).await?;
    }
    assert_eq!(
        quiet.stats().consumers_recreated,
        0,
        "{k} other events made the quiet consumer look stalled"
    );
    // An agent leaves on its own aggregate (its key): the only `left` any fold counts.
    writer
        .append(Draft::new(
            tok(writer.identity().public_key()),
            &AgentLeft {
                reason: "done".into(),
            },
        )?)
        .await?;
    assert!(quiet.follow_until(DEADLINE, |n| *n == 1).await?);
    Ok(())
}

#[tokio::test]
async fn one_poll_reads_every_event_the_client_already_holds() -> Result<()> {
    use murmur_subjects::events::TaskSubmitted;
    use murmur_subjects::{Projection, Refusal};
    use murmur_subjects::{SubjectFilter, VerifiedEvent};

    struct Submissions;
    impl Projection for Submissions {
        type State = u64;
        fn name(&self) -> &str {
            "submissions"
        }
        fn filter(&self) -> SubjectFilter {
            murmur_subjects::EventType::of::<TaskSubmitted>().filter(Some(&tok("acme")))
        }
        fn apply(&self, state: &mut u64, _: &VerifiedEvent) -> Result<(), Refusal> {
            *state += 1;
            Ok(())
        }
    }

    let nats = TestNats::start().await?;
    let writer = nats.event_log("acme").await?;
    let mut submissions = Projector::new(nats.event_log("acme").await?, Submissions);
    // Opens the live consumer while nothing is stored.
    submissions.poll(Duration::from_millis(10)).await?;
    // Stored one at a time, each event leaves the server with nothing pending behind it, so
    // the server's count cannot tell the projector that more are already here. A poll that
    // returned at the first such event read one event per call: a busy worker fell hundreds
    // of milliseconds behind its assignments that way.
    const N: u64 = 200;
    for k in 0..N {
        writer
            .append(Draft::new(tok(&format!("t{k}")), &submitted(k))?)
            .await?;
    }
    let until = tokio::time::Instant::now() + DEADLINE;
    let mut polls = 0;
    while *submissions.state() < N && tokio::time::Instant::now() < until {
        submissions.poll(Duration::from_millis(200)).await?;
        polls += 1;
    }
    assert_eq!(*submissions.state(), N);
    // How many a poll finds depends on how the socket reads split the batch (on a slower VM
    // 26 polls were seen, on a faster one under 20); the defect read exactly one per poll.
    assert!(
        polls <= N / 4,
        "{polls} polls to read {N} events that were stored before the first"
    );
    Ok(())
}

#[tokio::test]
async fn a_read_with_several_filters_delivers_what_each_filter_delivers() -> Result<()> {
    use murmur_subjects::EventType;
    use murmur_subjects::events::TaskSubmitted;
    use murmur_subjects::projection::{read_stream, read_stream_any};
    use std::ops::ControlFlow;

    let nats = TestNats::start().await?;
    let acme = nats.event_log("acme").await?;
    // Another realm's events in the same stream (an account holds one realm where the
    // server enforces roles, but the reads filter by realm all the same).
    let other = murmur_subjects::EventLog::options(Identity::generate(), tok("other"))
        .open(acme.client().clone())
        .await?;
    // Submissions and leaves of two realms, interleaved with joins nobody asks for.
    for k in 0..30u64 {
        acme.append(Draft::new(tok(&format!("t{k}")), &submitted(k))?)
            .await?;
        other
            .append(Draft::new(tok(&format!("t{k}")), &submitted(k))?)
            .await?;
        acme.append(Draft::new(
            tok(&format!("a{k}")),
            &joined(&format!("a{k}")),
        )?)
        .await?;
        if k % 3 == 0 {
            acme.append(Draft::new(
                tok(&format!("a{k}")),
                &AgentLeft {
                    reason: "done".into(),
                },
            )?)
            .await?;
        }
    }
    let filters = [
        EventType::of::<TaskSubmitted>().filter(Some(&tok("acme"))),
        EventType::of::<AgentLeft>().filter(Some(&tok("acme"))),
    ];
    let js = async_nats::jetstream::new(acme.client().clone());
    let stream = &acme.config().history_stream;
    for (start, expected) in [(StartAt::Beginning, 40), (StartAt::Sequence(40), 24)] {
        // The oracle: each filter read on its own by the server's filter, merged by sequence.
        let mut by_server = Vec::new();
        for filter in &filters {
            read_stream(&js, stream, filter, start, None, |m| {
                by_server.push((m.sequence, m.message.subject.to_string()));
                ControlFlow::Continue(())
            })
            .await?;
        }
        by_server.sort();
        // Several filters at once: the stream read whole, filtered by subject here.
        let mut together = Vec::new();
        read_stream_any(&js, stream, &filters, start, None, |m| {
            together.push((m.sequence, m.message.subject.to_string()));
            ControlFlow::Continue(())
        })
        .await?;
        assert_eq!(by_server.len(), expected, "from {start:?}");
        assert_eq!(together, by_server, "from {start:?}");
    }
    Ok(())
}

/// A knowledge snapshot purges the changes it covers, at any moment, also while a read of
/// them is under way. A read whose remaining messages are purged after its consumer was
/// created must end with what it got, not wait for messages that will never come (this hung
/// `murmur demo`: a replica refreshing while the memory agent snapshotted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_rest_is_purged_meanwhile_ends() -> Result<()> {
    use murmur_subjects::SubjectFilter;
    use murmur_subjects::projection::read_stream;
    use std::ops::ControlFlow;

    const MESSAGES: usize = 30_000;
    let nats = TestNats::start().await?;
    let log = nats.event_log("acme").await?;
    let js = async_nats::jetstream::new(log.client().clone());
    let stream = log.config().history_stream.clone();
    // More than one batch of the read (10,000), so the rest is asked for after the purge.
    // Pipelined in chunks: the client bounds the acks in flight.
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for k in chunk {
            acks.push(
                js.publish(
                    format!("murmur.v1.acme.evt.knowledge.doc-{}.changed", k % 7),
                    Bytes::from_static(b"change"),
                )
                .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let purger = js.get_stream(&stream).await?;
    let filter = SubjectFilter::plane(murmur_subjects::Plane::Evt).realm(tok("acme"));
    let mut read = 0;
    let mut purged = false;
    let runtime = tokio::runtime::Handle::current();
    let reading = read_stream(&js, &stream, &filter, StartAt::Beginning, None, |_| {
        read += 1;
        if !purged {
            // The snapshotter's purge, between the consumer's creation and its deliveries.
            tokio::task::block_in_place(|| runtime.block_on(purger.purge().into_future()))
                .expect("purge");
            purged = true;
        }
        ControlFlow::Continue(())
    });
    let count = tokio::time::timeout(DEADLINE, reading)
        .await
        .map_err(|_| anyhow::anyhow!("the read never ended after the purge"))??;
    assert_eq!(count, read);
    assert!(
        (1..MESSAGES as u64).contains(&read),
        "{read} of {MESSAGES} read: the purge did not happen mid-read"
    );
    Ok(())
}

/// Events stored one at a time carry a signature each. A projector that finds them already
/// stored reads them together, live (its consumer's backlog) and on replay, and checks
/// their signatures in batches: the forged ones among them are refused as they are when
/// checked alone, and the state is the one a fold of one event at a time reaches.
#[tokio::test]
async fn signatures_that_arrive_together_are_checked_together() -> Result<()> {
    use murmur_subjects::identity::SignatureVerifier;
    use std::ops::ControlFlow;
    use std::sync::Arc;

    let nats = TestNats::start().await?;
    let writer = nats.event_log("acme").await?;
    let realm = tok("acme");
    const N: u64 = 150;
    // Forged events (mallory's signature, the writer's key claimed) early and late: the
    // batches holding them fail and are checked one by one; the one between holds.
    const FORGED: [u64; 2] = [7, 140];
    append_singles_with_forged(&writer, N, &FORGED).await?;
    let reader = |checks: &Arc<SignatureVerifier>| {
        let projection = OverviewProjection {
            realm: realm.clone(),
        };
        let open = EventLog::options(Identity::generate(), realm.clone())
            .codec(EventCodec::default().verifier(checks.clone()))
            .open(writer.client().clone());
        async move { Ok::<_, LogError>(Projector::new(open.await?, projection)) }
    };
    let good = N - FORGED.len() as u64;

    // Live: the consumer starts at the first event, and the client holds many at once.
    let live_checks = Arc::new(SignatureVerifier::new());
    let mut live = reader(&live_checks).await?;
    assert!(live.follow_until(DEADLINE, |s| s.events >= good).await?);
    // Replay.
    let replay_checks = Arc::new(SignatureVerifier::new());
    let mut replayed = reader(&replay_checks).await?;
    replayed.catch_up().await?;
    // One at a time: each signature checked alone.
    let alone_checks = Arc::new(SignatureVerifier::new());
    let mut alone = reader(&alone_checks).await?;
    let filter = writer.realm_filter();
    writer
        .read(&filter, StartAt::Beginning, None, |stored| {
            alone.fold_stored(&stored);
            ControlFlow::Continue(())
        })
        .await?;

    assert_eq!(alone.state().events, good);
    assert_eq!(alone.stats().invalid, FORGED.len() as u64);
    assert_eq!((alone_checks.checks(), alone_checks.batched()), (N, 0));
    for (how, projector, checks) in [
        ("live", &live, &live_checks),
        ("replay", &replayed, &replay_checks),
    ] {
        assert_eq!(projector.state(), alone.state(), "{how}");
        assert_eq!(projector.stats().invalid, FORGED.len() as u64, "{how}");
        assert!(checks.batched() > 0, "{how}: no batch was checked");
    }
    // The replay decodes 64 at a time: the two batches with a forged event are checked
    // again one by one, the one between them holds at once.
    assert!(
        replay_checks.checks() <= 2 * N - 64,
        "replay checked {} signatures",
        replay_checks.checks()
    );
    Ok(())
}
