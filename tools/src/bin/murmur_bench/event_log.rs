//! The event-log suite: publish (batch and single signatures), replay through a projection
//! and core dispatch, each against raw async-nats on the same server, plus a per-event CPU
//! breakdown.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use murmur_subjects::binding::ContentMode;
use murmur_subjects::events::{AgentHeartbeat, TaskSubmitted};
use murmur_subjects::log::MSG_ID;
use murmur_subjects::projection::read_stream;
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Draft, EventCodec, EventLog, Identity, Plane, Projection, Projector, Refusal, StartAt,
    SubjectFilter, Token, VerifiedEvent,
};

use super::*;

/// The event-log suite on `target`: JetStream publish, replay through a projection and core
/// dispatch, murmur against raw async-nats with the same bytes in the same run. Prints its
/// table; returns its figures (msgs/s) by name.
pub(crate) async fn event_log_suite(target: &Target, args: &Args) -> Result<Vec<(String, f64)>> {
    let url = target.url.clone();
    let version = target
        .participant(&Token::new("bench")?, Role::Observer, "version")
        .await?
        .0
        .connect()
        .await?
        .server_info()
        .version;
    println!(
        "nats-server {version} at {url}, {}; {} mode; {} events per run, {} runs, window {}",
        target.label(),
        args.mode,
        args.events,
        args.runs,
        args.window
    );
    let n = args.events;
    let (mut pub_raw, mut pub_mm, mut rep_raw, mut rep_mm, mut core_raw, mut core_mm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut pub_single = vec![];
    // murmur's bulk writer.
    let mut pub_bulk = vec![];
    // Raw publishes into a fresh stream, an ack each and through a fast-ingest batch:
    // (msgs/s, the server's CPU µs per message).
    let (mut pub_acks, mut pub_fast) = (vec![], vec![]);
    // The server's version where it has no fast-ingest batches (before 2.14).
    let mut no_fast_ingest = None;
    // Replay of the events signed one each: raw, through a projection.
    let (mut rep_single_raw, mut rep_single_mm) = (vec![], vec![]);
    // The same replay with each event decoded and checked on its own.
    let mut rep_single_alone = vec![];
    // Raw publishes of the payload alone, without the envelope.
    let mut pub_payload = vec![];
    let mut payload_bytes = 0;
    // Core-dispatch messages a subscriber never received (raw, murmur), over all runs.
    let mut core_dropped = [0u64; 2];
    // Every run's realms share the account of realm `bench`; the suite's participant
    // connects with the operator's role (its subjects span realms and planes).
    let account = Token::new("bench")?;
    for run in 0..args.runs {
        let (options, identity) = target
            .participant(&account, Role::Operator, "bench")
            .await?;
        let client = options.connect().await?;
        let realm = Token::new(format!("bench{run}"))?;
        let raw_realm = Token::new(format!("raw{run}"))?;
        let single_realm = Token::new(format!("single{run}"))?;
        let mode = if args.mode == "binary" {
            ContentMode::Binary
        } else {
            ContentMode::Structured
        };
        let log = EventLog::options(identity, realm.clone())
            .codec(EventCodec::default().content_mode(mode))
            .open(client.clone())
            .await?;
        let js = async_nats::jetstream::new(log.client().clone());

        // Raw publish baseline: the same encoded bytes and headers, pre-built, published with
        // the same window. (Subjects differ only in the realm token.)
        let mut prepared = Vec::with_capacity(n as usize);
        for i in 0..n {
            let sealed = Draft::new(Token::new(format!("t{i}"))?, &payload(i))?
                .seal(log.identity(), &raw_realm);
            let (h, b) = log.codec().encode(&sealed)?;
            let mut h = async_nats::HeaderMap::from(h);
            h.insert(MSG_ID, sealed.record.id.as_str());
            prepared.push((sealed.subject.to_string(), h, b));
        }
        pub_raw.push(publish_prepared(&js, prepared, args.window).await?);

        // Raw publish of the same payload alone: its JSON and a Nats-Msg-Id, as a user
        // would publish it without murmur's envelope (on the subject murmur would use).
        let mut prepared = Vec::with_capacity(n as usize);
        for i in 0..n {
            let subject = Draft::new(Token::new(format!("t{i}"))?, &payload(i))?
                .seal(log.identity(), &raw_realm)
                .subject
                .to_string();
            let mut h = async_nats::HeaderMap::new();
            h.insert(MSG_ID, uuid::Uuid::now_v7().to_string().as_str());
            prepared.push((
                subject,
                h,
                bytes::Bytes::from(serde_json::to_vec(&payload(i))?),
            ));
        }
        payload_bytes = prepared[0].2.len();
        pub_payload.push(publish_prepared(&js, prepared, args.window).await?);

        // murmur publish, one signature per event: build payload, sign, encode, append.
        let single_n = n / 5;
        let mut pending = VecDeque::new();
        let t = Instant::now();
        for i in 0..single_n {
            // Another realm, so the replay below reads only batch-signed events.
            let sealed = Draft::new(Token::new(format!("s{i}"))?, &payload(i))?
                .seal(log.identity(), &single_realm);
            pending.push_back(log.append_sealed(&sealed).await?);
            while pending.len() > args.window {
                if let Some(p) = pending.pop_front() {
                    p.wait().await?;
                }
            }
        }
        while let Some(p) = pending.pop_front() {
            p.wait().await?;
        }
        pub_single.push(single_n as f64 / t.elapsed().as_secs_f64());

        // murmur publish with batch signatures (256 events per signature): pipelined appends
        // with an ack each (`append_many`), and a bulk writer (one fast-ingest batch) into a
        // realm of its own, in turns.
        let bulk_log = EventLog::options(log.identity().clone(), Token::new(format!("bulk{run}"))?)
            .codec(EventCodec::default().content_mode(mode))
            .open(client.clone())
            .await?;
        // Servers before 2.14 have no fast-ingest batches: their rows are left out.
        let version = client.server_info().version;
        let fast_ingest = murmur_subjects::log::stores_fast_ingest_batches(&version);
        if !fast_ingest {
            no_fast_ingest = Some(version);
        }
        let order = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for bulk in order.into_iter().filter(|&bulk| fast_ingest || !bulk) {
            let server = target.server_pid().map(|p| p.to_string());
            let server_cpu = || server.as_deref().and_then(crate::cpu_seconds);
            let (cpu, server_before) = (crate::cpu_seconds("self"), server_cpu());
            let rate = if bulk {
                publish_bulk(&bulk_log, n).await?
            } else {
                publish_many(&log, n, args.window).await?
            };
            let own_us = cpu
                .zip(crate::cpu_seconds("self"))
                .map_or(f64::NAN, |(a, b)| (b - a) * 1e6 / n as f64);
            let server_us = server_before
                .zip(server_cpu())
                .map_or(f64::NAN, |(a, b)| (b - a) * 1e6 / n as f64);
            eprintln!(
                "run {run}: murmur publish, {}: {rate:.0} events/s, CPU an event: this process {own_us:.1} µs, the server {server_us:.1} µs",
                if bulk { "a bulk writer" } else { "append_many" }
            );
            if bulk {
                pub_bulk.push(rate);
            } else {
                pub_mm.push(rate);
            }
        }

        // Acks each or every few hundred (fast ingest): murmur's bytes, raw, each way into
        // a fresh stream of its own, with the server's CPU per message.
        // The order alternates run by run: the first write into a fresh stream can find the
        // server still busy with what came before.
        let mut ways = [(false, &mut pub_acks), (true, &mut pub_fast)];
        if run % 2 == 1 {
            ways.reverse();
        }
        for (fast, rates) in ways {
            if fast && !fast_ingest {
                continue;
            }
            let prepared = (0..n)
                .map(|i| {
                    let sealed = Draft::new(Token::new(format!("t{i}"))?, &payload(i))?
                        .seal(log.identity(), &raw_realm);
                    let (h, b) = log.codec().encode(&sealed)?;
                    let mut h = async_nats::HeaderMap::from(h);
                    h.insert(MSG_ID, sealed.record.id.as_str());
                    Ok((format!("bench.acks.t{i}"), h, b))
                })
                .collect::<Result<Vec<_>>>()?;
            let (rate, server_us) =
                publish_to_fresh_stream(&js, target.server_pid(), prepared, fast, args.window)
                    .await?;
            eprintln!(
                "run {run}: raw publish into a fresh stream, {}: {rate:.0} msgs/s, the server's CPU {server_us:.1} µs a message",
                if fast {
                    "fast-ingest batch"
                } else {
                    "an ack each"
                }
            );
            rates.push((rate, server_us));
        }

        rep_raw.push(raw_replay(&js, &realm, n).await?);

        // murmur replay: the same messages through a projection (decode, verify, fold).
        let t = Instant::now();
        // A reader with its own codec: no signature roots cached from publishing.
        let reader = EventLog::options(log.identity().clone(), realm.clone())
            .codec(EventCodec::default().content_mode(mode))
            .open(client.clone())
            .await?;
        let mut p = Projector::new(
            reader,
            Count {
                realm: realm.clone(),
            },
        );
        p.catch_up().await?;
        anyhow::ensure!(p.state().0 == n, "projection folded {}", p.state().0);
        rep_mm.push(n as f64 / t.elapsed().as_secs_f64());

        // The same for the events signed one each: every signature is checked, in batches
        // of what the projector decodes together, by a verifier that has seen none of them.
        rep_single_raw.push(raw_replay(&js, &single_realm, single_n).await?);
        let t = Instant::now();
        let (mut p, verifier) = fresh_counter(&log, &client, &single_realm, mode).await?;
        p.catch_up().await?;
        anyhow::ensure!(p.state().0 == single_n, "projection folded {}", p.state().0);
        anyhow::ensure!(
            verifier.checks() == single_n,
            "{} signatures checked for {single_n} events",
            verifier.checks()
        );
        rep_single_mm.push(single_n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (mut p, verifier) = fresh_counter(&log, &client, &single_realm, mode).await?;
        let filter = p.projection().filter();
        read_stream(
            &js,
            "MURMUR_HISTORY",
            &filter,
            StartAt::Beginning,
            None,
            |m| {
                p.fold_stored(&m);
                ControlFlow::Continue(())
            },
        )
        .await?;
        anyhow::ensure!(
            p.state().0 == single_n && verifier.batched() == 0,
            "projection folded {} alone",
            p.state().0
        );
        rep_single_alone.push(single_n as f64 / t.elapsed().as_secs_f64());

        // Core dispatch: raw publish of pre-encoded heartbeats vs murmur seal+encode+publish
        // with a subscriber that decodes and verifies.
        let hb = AgentHeartbeat {
            interval_ms: 1000,
            load: 0.5,
            queue_depth: 3,
        };
        let me = Token::new("agent1")?;
        let mut prepared = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let sealed = Draft::new(me.clone(), &hb)?.seal(log.identity(), &raw_realm);
            let (h, b) = log.codec().encode(&sealed)?;
            prepared.push((
                sealed.subject.to_string(),
                async_nats::HeaderMap::from(h),
                b,
            ));
        }
        let sub_client = target
            .participant(&account, Role::Operator, "bench-sub")
            .await?
            .0
            .connect()
            .await?;
        let raw_subject = prepared[0].0.clone();
        let mut sub = sub_client.subscribe(raw_subject).await?;
        sub_client.flush().await?;
        let received = Arrivals::new();
        let counted = received.clone();
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                if sub.next().await.is_none() {
                    break;
                }
                c += 1;
                counted.note(c);
            }
            c
        });
        for (k, (s, h, b)) in prepared.into_iter().enumerate() {
            client.publish_with_headers(s, h, b).await?;
            keep_up(&client, k as u64, &received).await?;
        }
        client.flush().await?;
        let (got, secs) = dispatched(counter, &received, n, "raw").await;
        core_dropped[0] += n - got;
        core_raw.push(got as f64 / secs);

        let mm_subject = Draft::new(me.clone(), &hb)?
            .seal(log.identity(), &realm)
            .subject
            .to_string();
        let mut sub = sub_client.subscribe(mm_subject).await?;
        sub_client.flush().await?;
        let codec = log.codec().clone();
        let received = Arrivals::new();
        let counted = received.clone();
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                let Some(m) = sub.next().await else { break };
                if codec
                    .decode(m.subject.as_str(), m.headers.as_ref(), &m.payload)
                    .is_ok()
                {
                    c += 1;
                    counted.note(c);
                }
            }
            c
        });
        let mut sent = 0;
        while sent < n {
            keep_up(&client, sent, &received).await?;
            let k = 256.min(n - sent);
            let drafts = (0..k)
                .map(|_| Draft::new(me.clone(), &hb))
                .collect::<Result<Vec<_>, _>>()?;
            sent += log.publish_live_many(drafts).await? as u64;
        }
        client.flush().await?;
        let (got, secs) = dispatched(counter, &received, n, "murmur").await;
        core_dropped[1] += n - got;
        core_mm.push(got as f64 / secs);
        eprintln!("run {run} done");
    }

    let pr = median(pub_raw);
    let pm = median(pub_mm);
    let rr = median(rep_raw);
    let rm = median(rep_mm);
    let cr = median(core_raw);
    let cm = median(core_mm);
    let ps_figure = median(pub_single.clone());
    println!("| path | raw async-nats msgs/s | murmur msgs/s | ratio | target |");
    println!("|---|---|---|---|---|");
    let ps = median(pub_single);
    println!(
        "| JetStream publish, batch signatures (append_many) | {pr:.0} | {pm:.0} | {:.2} | ≥ 0.90 |",
        pm / pr
    );
    let pb = median(pub_bulk);
    let (acks_rate, acks_cpu) = median_pairs(&pub_acks);
    let (fast_rate, fast_cpu) = median_pairs(&pub_fast);
    if let Some(version) = &no_fast_ingest {
        // The markdown table goes on below this line.
        println!(
            "| (the bulk writer and fast-ingest rows are left out: nats-server {version} has no fast-ingest batches, which came in 2.14) | | | | |"
        );
    } else {
        println!(
            "| JetStream publish, batch signatures, through a bulk writer (one fast-ingest batch) | {pr:.0} | {pb:.0} | {:.2} | ≥ 0.90 |",
            pb / pr
        );
        println!(
            "| raw publish of the same bytes into a fresh stream, through a fast-ingest batch (a flow ack every few hundred), against an ack each; the server's CPU per message {fast_cpu:.1} µs against {acks_cpu:.1} µs | {acks_rate:.0} | {fast_rate:.0} | {:.2} | — |",
            fast_rate / acks_rate
        );
    }
    let pp = median(pub_payload);
    println!(
        "| JetStream publish, batch signatures, against raw publishes of the same {payload_bytes}-byte payload without an envelope | {pp:.0} | {pm:.0} | {:.2} | — |",
        pm / pp
    );
    println!(
        "| JetStream publish, one signature per event (append_sealed) | {pr:.0} | {ps:.0} | {:.2} | ≥ 0.90 |",
        ps / pr
    );
    println!(
        "| replay: pull vs projection (decode + verify + fold), batch-signed events | {rr:.0} | {rm:.0} | {:.2} | ≥ 0.70 |",
        rm / rr
    );
    println!(
        "| core dispatch, batch signatures (publish → decoding subscriber) | {cr:.0} | {cm:.0} | {:.2} | ≥ 0.80 |",
        cm / cr
    );
    let (srr, srm) = (median(rep_single_raw), median(rep_single_mm));
    let sra = median(rep_single_alone);
    println!(
        "| replay: pull vs projection (decode + verify + fold), events signed one each | {srr:.0} | {srm:.0} | {:.2} | — |",
        srm / srr
    );
    println!(
        "| the same, each event decoded and its signature checked on its own | {srr:.0} | {sra:.0} | {:.2} | — |",
        sra / srr
    );
    if core_dropped != [0, 0] {
        println!(
            "core dispatch: the server dropped {} raw and {} murmur messages for a slow subscriber over {} runs; their rates count what arrived",
            core_dropped[0], core_dropped[1], args.runs
        );
    }
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        println!("{}", cpu_breakdown(mode)?);
        println!("{}", envelope_costs(mode)?);
    }
    Ok(vec![
        ("raw JetStream publish (msgs/s)".into(), pr),
        (
            "raw JetStream publish, the payload alone (msgs/s)".into(),
            pp,
        ),
        ("murmur publish, batch signatures (msgs/s)".into(), pm),
        ("murmur publish through a bulk writer (msgs/s)".into(), pb),
        (
            "murmur publish, one signature per event (msgs/s)".into(),
            ps_figure,
        ),
        (
            "raw publish into a fresh stream, an ack each (msgs/s)".into(),
            acks_rate,
        ),
        (
            "raw publish into a fresh stream, fast-ingest batch (msgs/s)".into(),
            fast_rate,
        ),
        ("server CPU per message, an ack each (µs)".into(), acks_cpu),
        (
            "server CPU per message, fast-ingest batch (µs)".into(),
            fast_cpu,
        ),
        ("raw replay (msgs/s)".into(), rr),
        ("murmur replay through a projection (msgs/s)".into(), rm),
        ("raw replay, events signed one each (msgs/s)".into(), srr),
        (
            "murmur replay through a projection, events signed one each (msgs/s)".into(),
            srm,
        ),
        (
            "murmur replay, events signed one each, each checked on its own (msgs/s)".into(),
            sra,
        ),
        ("raw core dispatch (msgs/s)".into(), cr),
        ("murmur core dispatch (msgs/s)".into(), cm),
    ])
}

/// What a core-dispatch subscriber has counted since publishing began, and when its latest
/// thousandth message arrived.
pub(crate) struct Arrivals {
    count: std::sync::atomic::AtomicU64,
    latest_thousand_ns: std::sync::atomic::AtomicU64,
    since: Instant,
}

impl Arrivals {
    fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            count: Default::default(),
            latest_thousand_ns: Default::default(),
            since: Instant::now(),
        })
    }

    /// The subscriber's count is now `count`.
    fn note(&self, count: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.count.store(count, Relaxed);
        if count.is_multiple_of(1_000) {
            self.latest_thousand_ns
                .store(self.since.elapsed().as_nanos() as u64, Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How many of `n` core messages the subscriber counted, and over how many seconds: all of
/// them until now, or (core NATS drops messages for a slow consumer) what it had once its
/// count stood still for [`DISPATCH_STALL`], over the time until its latest thousandth
/// message (not the time spent waiting for messages that were dropped), reported and not
/// fatal, so one run's drops do not end the suite.
async fn dispatched(
    counter: tokio::task::JoinHandle<u64>,
    received: &Arrivals,
    n: u64,
    which: &str,
) -> (u64, f64) {
    let mut counter = counter;
    let mut progress = Progress::new(received);
    let got = loop {
        match tokio::time::timeout(Duration::from_millis(100), &mut counter).await {
            Ok(Ok(count)) => break count,
            Ok(Err(_)) => break received.count(),
            Err(_) if progress.stalled(received) => {
                counter.abort();
                break received.count();
            }
            Err(_) => {}
        }
    };
    let mut secs = received.since.elapsed().as_secs_f64();
    if got < n {
        eprintln!(
            "{which} core dispatch: {got} of {n} messages arrived ({} dropped for a slow subscriber) in {secs:.1} s",
            n - got,
        );
        let latest = received
            .latest_thousand_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        if latest > 0 {
            secs = latest as f64 / 1e9;
        }
    }
    (got, secs)
}

/// Where the CPU goes, per event, in-process, for one content mode.
pub(crate) fn cpu_breakdown(mode: ContentMode) -> Result<String> {
    let id = Identity::generate();
    let realm = Token::new("cpu")?;
    let codec = EventCodec::default().content_mode(mode);
    let k = 5_000u32;
    let drafts = || {
        (0..k).map(|i| {
            Draft::new(Token::new("t").expect("token"), &payload(u64::from(i))).expect("draft")
        })
    };
    let t = Instant::now();
    let single: Vec<_> = drafts().map(|d| d.seal(&id, &realm)).collect();
    let seal_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let t = Instant::now();
    let batch = murmur_subjects::codec::seal_batch(drafts(), &id, &realm);
    let seal_batch_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let t = Instant::now();
    let encoded_single: Vec<_> = single
        .iter()
        .map(|s| codec.encode(s))
        .collect::<Result<_, _>>()?;
    let encode_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let encoded_batch: Vec<_> = batch
        .iter()
        .map(|s| codec.encode(s))
        .collect::<Result<_, _>>()?;
    let subject = single[0].subject.to_string();
    // Each measure with a verifier of its own, which has checked none of the signatures.
    let fresh = || {
        EventCodec::default().verifier(std::sync::Arc::new(
            murmur_subjects::identity::SignatureVerifier::new(),
        ))
    };
    let decode = |encoded: &[(murmur_subjects::Headers, bytes::Bytes)]| -> Result<f64> {
        let fresh = fresh();
        let t = Instant::now();
        for (h, b) in encoded {
            fresh.decode(&subject, Some(h), b)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(k))
    };
    let decode_us = decode(&encoded_single)?;
    let decode_batch_us = decode(&encoded_batch)?;
    // As a projector decodes what it holds together: 64 at a time.
    let together = fresh();
    let t = Instant::now();
    for chunk in encoded_single.chunks(murmur_subjects::codec::DECODED_TOGETHER) {
        let messages: Vec<_> = chunk
            .iter()
            .map(|(h, b)| (subject.as_str(), Some(h), b))
            .collect();
        for decoded in together.decode_many(&messages) {
            decoded?;
        }
    }
    let decode_together_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(k);
    let headers = murmur_subjects::binding::message_size(Some(&encoded_batch[0].0), &[]);
    let body = encoded_batch[0].1.len();
    Ok(format!(
        "{mode:?} mode, per event on one core: seal {seal_us:.1} µs (one signature each) / {seal_batch_us:.1} µs (batch); encode {encode_us:.1} µs; decode + schema + verify {decode_us:.1} µs (one signature each; {decode_together_us:.1} µs decoded 64 together) / {decode_batch_us:.1} µs (batch); message {headers} header + {body} body bytes"
    ))
}

/// What each envelope field costs on the wire, for a batch-signed event (256 per signature)
/// carrying the suite's payload, in one content mode: the message's size with the field, less
/// its size without it (headers and body together).
pub(crate) fn envelope_costs(mode: ContentMode) -> Result<String> {
    use murmur_subjects::binding;
    let id = Identity::generate();
    let realm = Token::new("bench0")?;
    let drafts = (0..256u64)
        .map(|i| Draft::new(Token::new(format!("t{i}")).expect("token"), &payload(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = murmur_subjects::codec::seal_batch(drafts, &id, &realm);
    let record = &batch[7].record;
    let size = |r: &murmur_subjects::EventRecord| -> Result<usize> {
        let (h, b) = binding::encode(r, mode, binding::DEFAULT_MAX_EVENT_BYTES)?;
        Ok(binding::message_size(Some(&h), &[]) + b.len())
    };
    // What `strip` takes off `event`'s size.
    let cost = |event: &murmur_subjects::EventRecord,
                strip: &dyn Fn(&mut murmur_subjects::EventRecord)|
     -> Result<usize> {
        let mut r = event.clone();
        strip(&mut r);
        Ok(size(event)? - size(&r)?)
    };
    let whole = size(record)?;
    let without = |strip: &dyn Fn(&mut murmur_subjects::EventRecord)| cost(record, strip);
    // A root event leaves its lineage out (both equal its id); a later descendant names both.
    let mut descendant = record.clone();
    descendant.correlation_id = Some(uuid::Uuid::now_v7().to_string());
    descendant.causation_id = Some(uuid::Uuid::now_v7().to_string());
    let descendant_size = size(&descendant)?;
    let lineage_cost = |strip: &dyn Fn(&mut murmur_subjects::EventRecord)| cost(&descendant, strip);
    let signature = record.signature.as_deref().unwrap_or_default();
    // `ed25519-merkle:{root signature}:{leaf index}:{sibling hashes}`: the path is the last part.
    let path = signature.rsplit(':').next().map_or(0, str::len);
    let data = record.data.as_ref().map_or(0, |d| d.len());
    let costs = [
        ("murmursig", without(&|r| r.signature = None)?),
        ("  of it the Merkle path", path),
        ("traceparent", without(&|r| r.traceparent = None)?),
        (
            "correlationid (a descendant's)",
            lineage_cost(&|r| r.correlation_id = None)?,
        ),
        (
            "causationid (a descendant's)",
            lineage_cost(&|r| r.causation_id = None)?,
        ),
        (
            "source (its value)",
            without(&|r| r.source = String::new())?,
        ),
        ("id (its value)", lineage_cost(&|r| r.id = String::new())?),
        ("time", without(&|r| r.time = None)?),
        ("datacontenttype", without(&|r| r.datacontenttype = None)?),
        ("type (its value)", without(&|r| r.ty = String::new())?),
        ("subject", without(&|r| r.subject = None)?),
        ("data (the payload)", data),
    ];
    let listed = costs
        .iter()
        .map(|(name, bytes)| format!("{name} {bytes}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "{mode:?} mode, bytes per field of a {whole}-byte batch-signed root event ({descendant_size} for a descendant naming its correlation and cause): {listed}"
    ))
}

/// Reads realm `realm`'s task events from the start with a pull consumer, no acks, counting
/// them: the raw replay baseline. Messages per second; `expected` must be read.
async fn raw_replay(
    js: &async_nats::jetstream::Context,
    realm: &Token,
    expected: u64,
) -> Result<f64> {
    let filter = SubjectFilter::plane(Plane::Evt)
        .realm(realm.clone())
        .domain(murmur_subjects::Domain::Task);
    let t = Instant::now();
    let mut count = 0u64;
    read_stream(
        js,
        "MURMUR_HISTORY",
        &filter,
        StartAt::Beginning,
        None,
        |m| {
            count += 1;
            std::hint::black_box(&m.message.payload);
            ControlFlow::Continue(())
        },
    )
    .await?;
    anyhow::ensure!(count == expected, "raw replay read {count}");
    Ok(expected as f64 / t.elapsed().as_secs_f64())
}

/// A [`Count`] projector over `realm` whose codec checks signatures with a verifier of its
/// own, which has seen none of them (returned, to count its checks).
async fn fresh_counter(
    log: &EventLog,
    client: &async_nats::Client,
    realm: &Token,
    mode: ContentMode,
) -> Result<(
    Projector<Count>,
    std::sync::Arc<murmur_subjects::identity::SignatureVerifier>,
)> {
    let verifier = std::sync::Arc::new(murmur_subjects::identity::SignatureVerifier::new());
    let reader = EventLog::options(log.identity().clone(), realm.clone())
        .codec(
            EventCodec::default()
                .content_mode(mode)
                .verifier(verifier.clone()),
        )
        .open(client.clone())
        .await?;
    let counter = Count {
        realm: realm.clone(),
    };
    Ok((Projector::new(reader, counter), verifier))
}

/// Counts events and sums a payload field: the cheapest real fold.
pub(crate) struct Count {
    realm: Token,
}

impl Projection for Count {
    type State = (u64, u64);
    fn name(&self) -> &str {
        "bench-count"
    }
    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt).realm(self.realm.clone())
    }
    fn apply(&self, state: &mut (u64, u64), event: &VerifiedEvent) -> Result<(), Refusal> {
        let p: TaskSubmitted = event.payload().map_err(|e| Refusal(e.to_string()))?;
        state.0 += 1;
        state.1 += u64::from(p.priority);
        Ok(())
    }
}

pub(crate) fn payload(i: u64) -> TaskSubmitted {
    // ≈128-byte payload.
    TaskSubmitted {
        capability: "compiler.rust".into(),
        input: serde_json::json!({ "n": i, "pad": "x".repeat(70) }),
        priority: (i % 7) as u8,
        ..Default::default()
    }
}

/// Publishes pre-built messages to JetStream with `window` acks in flight; returns msgs/s.
pub(crate) async fn publish_prepared(
    js: &async_nats::jetstream::Context,
    prepared: Vec<(String, async_nats::HeaderMap, bytes::Bytes)>,
    window: usize,
) -> Result<f64> {
    let n = prepared.len();
    let mut acks = VecDeque::new();
    let t = Instant::now();
    for (s, h, b) in prepared {
        acks.push_back(js.publish_with_headers(s, h, b).await?);
        drain(&mut acks, window).await?;
    }
    drain(&mut acks, 0).await?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The suite's event `k`: a task submission on aggregate `t{k}`.
fn suite_draft(k: u64) -> Result<Draft> {
    Ok(Draft::new(Token::new(format!("t{k}"))?, &payload(k))?)
}

/// murmur's pipelined publish of `n` events with batch signatures (`append_many`, 256 a
/// signature, `window` acks in flight); returns events/s.
async fn publish_many(log: &EventLog, n: u64, window: usize) -> Result<f64> {
    let t = Instant::now();
    crate::tasks::append_in_batches(log, n, 256, window, suite_draft).await?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The same events through a bulk writer (one fast-ingest batch); returns events/s, and
/// fails unless the batch stored every one.
async fn publish_bulk(log: &EventLog, n: u64) -> Result<f64> {
    let t = Instant::now();
    let mut writer = log.bulk_writer().await?;
    let mut i = 0;
    while i < n {
        let end = (i + 256).min(n);
        writer
            .append((i..end).map(suite_draft).collect::<Result<Vec<_>>>()?)
            .await?;
        i = end;
    }
    let stored = writer.finish().await?;
    anyhow::ensure!(
        stored.events == n && stored.batched == n,
        "the bulk writer stored {stored:?}"
    );
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Publishes pre-built messages (on `bench.acks.…`) into a fresh stream that allows fast
/// ingest where the server has it: with `window` acks in flight, or through one fast-ingest
/// batch. Returns msgs/s and the server's CPU per message in µs (NaN without a local
/// server).
async fn publish_to_fresh_stream(
    js: &async_nats::jetstream::Context,
    server: Option<u32>,
    prepared: Vec<(String, async_nats::HeaderMap, bytes::Bytes)>,
    fast: bool,
    window: usize,
) -> Result<(f64, f64)> {
    let n = prepared.len() as f64;
    let _ = js.delete_stream("BENCH_ACKS").await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_ACKS".into(),
        subjects: vec!["bench.acks.>".into()],
        duplicate_window: Duration::from_secs(120),
        allow_batch_publish: murmur_subjects::log::stores_fast_ingest_batches(
            &js.client().server_info().version,
        ),
        ..Default::default()
    })
    .await?;
    let cpu = || server.and_then(|p| crate::cpu_seconds(&p.to_string()));
    let before = cpu();
    let rate = if fast {
        let t = Instant::now();
        let mut batch = murmur_subjects::bulk::FastIngestBatch::open(&js.client()).await?;
        for (subject, headers, body) in prepared {
            if let Err(ended) = batch.send(&subject, headers, body).await {
                anyhow::bail!("the raw fast-ingest batch ended: {ended:?}");
            }
        }
        match batch.commit().await {
            Ok((count, _)) if count as f64 == n => {}
            other => anyhow::bail!("the raw fast-ingest batch stored {other:?} of {n}"),
        }
        n / t.elapsed().as_secs_f64()
    } else {
        publish_prepared(js, prepared, window).await?
    };
    let server_us = match (before, cpu()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / n,
        _ => f64::NAN,
    };
    js.delete_stream("BENCH_ACKS").await?;
    Ok((rate, server_us))
}

/// The medians of each half of `pairs`.
fn median_pairs(pairs: &[(f64, f64)]) -> (f64, f64) {
    (
        median(pairs.iter().map(|p| p.0).collect()),
        median(pairs.iter().map(|p| p.1).collect()),
    )
}

async fn drain(
    window: &mut VecDeque<async_nats::jetstream::context::PublishAckFuture>,
    keep: usize,
) -> Result<()> {
    while window.len() > keep {
        if let Some(f) = window.pop_front() {
            f.await?;
        }
    }
    Ok(())
}

/// Most messages a core-dispatch publisher runs ahead of its subscriber. Unchecked, a
/// burst of 50,000 ~1 KB messages outgrew the server's buffer for a subscriber that fell
/// behind, and the server dropped messages (a slow consumer) in some runs; bounded, the run
/// measures the rate a subscriber keeps up with, for raw and murmur alike.
pub(crate) const DISPATCH_AHEAD: u64 = 2_000;

/// Before publishing message `sent`, waits while the subscriber is more than
/// [`DISPATCH_AHEAD`] behind and still counting. Messages the server dropped for a slow
/// subscriber never arrive: once its count has stood still for [`DISPATCH_STALL`], the
/// publisher goes on, and [`dispatched`] reports what arrived.
pub(crate) async fn keep_up(
    client: &async_nats::Client,
    sent: u64,
    received: &Arrivals,
) -> Result<()> {
    if !sent.is_multiple_of(1_000) {
        return Ok(());
    }
    let mut progress = Progress::new(received);
    while sent.saturating_sub(received.count()) > DISPATCH_AHEAD {
        client.flush().await?;
        if progress.stalled(received) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(())
}

/// How long a core-dispatch subscriber's count may stand still before the publisher takes
/// the missing messages as dropped.
const DISPATCH_STALL: Duration = Duration::from_secs(2);

/// Whether a subscriber's count has stood still for [`DISPATCH_STALL`].
struct Progress {
    seen: u64,
    moved: Instant,
}

impl Progress {
    fn new(received: &Arrivals) -> Self {
        Self {
            seen: received.count(),
            moved: Instant::now(),
        }
    }

    /// Notes the count now; true once it has not moved for [`DISPATCH_STALL`].
    fn stalled(&mut self, received: &Arrivals) -> bool {
        let count = received.count();
        if count != self.seen {
            (self.seen, self.moved) = (count, Instant::now());
        }
        self.moved.elapsed() > DISPATCH_STALL
    }
}
