//! `murmur-bench`: murmur's event log against raw async-nats on the same server in the same
//! run. Prints ratios (murmur / raw) for publish, replay and core dispatch, medians over
//! several runs, plus a per-event CPU breakdown.
//!
//! ```text
//! cargo run --release --bin murmur-bench -- --events 50000 --runs 5
//! ```

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use futures::StreamExt;
use murmur_subjects::binding::ContentMode;
use murmur_subjects::events::{AgentHeartbeat, TaskSubmitted};
use murmur_subjects::log::MSG_ID;
use murmur_subjects::projection::{Projection, Refusal, StartAt, read_stream};
use murmur_subjects::{
    Draft, EventCodec, EventLog, Identity, LogConfig, Plane, Projector, SubjectFilter, Token,
    VerifiedEvent,
};
use murmur_tools::nats_server::NatsProcess;

#[derive(Parser)]
struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Acks in flight.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Content mode on the wire (both the raw baseline and murmur use the same bytes).
    #[arg(long, default_value = "structured")]
    mode: String,
}

/// Counts events and sums a payload field: the cheapest real fold.
struct Count {
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

fn payload(i: u64) -> TaskSubmitted {
    // ≈128-byte payload.
    TaskSubmitted {
        capability: "compiler.rust".into(),
        input: serde_json::json!({ "n": i, "pad": "x".repeat(70) }),
        priority: (i % 7) as u8,
        ..Default::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut _server = None;
    let url = match std::env::var("NATS_URL") {
        Ok(u) => u,
        Err(_) => {
            let mut s = NatsProcess::start(0, dir.path()).await?;
            s.wait_ready(Duration::from_secs(60)).await?;
            let u = s.url();
            _server = Some(s);
            u
        }
    };
    let version = async_nats::connect(&url).await?.server_info().version;
    println!(
        "nats-server {version} at {url}; {} mode; {} events per run, {} runs, window {}",
        args.mode, args.events, args.runs, args.window
    );

    let n = args.events;
    let (mut pub_raw, mut pub_mm, mut rep_raw, mut rep_mm, mut core_raw, mut core_mm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut pub_single = vec![];
    for run in 0..args.runs {
        let client = async_nats::connect(&url).await?;
        let realm = Token::new(format!("bench{run}"))?;
        let raw_realm = Token::new(format!("raw{run}"))?;
        let single_realm = Token::new(format!("single{run}"))?;
        let mode = if args.mode == "binary" {
            ContentMode::Binary
        } else {
            ContentMode::Structured
        };
        let log = EventLog::open(
            client.clone(),
            Identity::generate(),
            realm.clone(),
            LogConfig::default(),
            EventCodec::default().content_mode(mode),
        )
        .await?;
        let js = log.jetstream().clone();

        // Raw publish baseline: the same encoded bytes and headers, pre-built, published with
        // the same window. (Subjects differ only in the realm token.)
        let mut prepared = Vec::with_capacity(n as usize);
        for i in 0..n {
            let sealed = Draft::new(Token::new(format!("t{i}"))?, &payload(i))?
                .seal(log.identity(), &raw_realm);
            let (mut h, b) = log.codec().encode(&sealed)?;
            h.insert(MSG_ID, sealed.record.id.as_str());
            prepared.push((sealed.subject.to_string(), h, b));
        }
        let mut window = VecDeque::new();
        let t = Instant::now();
        for (s, h, b) in prepared {
            window.push_back(js.publish_with_headers(s, h, b).await?);
            drain(&mut window, args.window).await?;
        }
        drain(&mut window, 0).await?;
        pub_raw.push(n as f64 / t.elapsed().as_secs_f64());

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

        // murmur publish with batch signatures (append_many, 256 events per signature).
        let mut pending = VecDeque::new();
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + 256).min(n);
            let drafts = (i..end)
                .map(|k| Ok(Draft::new(Token::new(format!("t{k}"))?, &payload(k))?))
                .collect::<Result<Vec<_>>>()?;
            for (_, p) in log.append_many(drafts).await? {
                pending.push_back(p);
            }
            while pending.len() > args.window {
                if let Some(p) = pending.pop_front() {
                    p.wait().await?;
                }
            }
            i = end;
        }
        while let Some(p) = pending.pop_front() {
            p.wait().await?;
        }
        pub_mm.push(n as f64 / t.elapsed().as_secs_f64());

        // Raw replay baseline: pull consumer, no acks, count only.
        let filter = SubjectFilter::plane(Plane::Evt)
            .realm(realm.clone())
            .domain(murmur_subjects::Domain::Task);
        let t = Instant::now();
        let mut count = 0u64;
        read_stream(
            &js,
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
        anyhow::ensure!(count == n, "raw replay read {count}");
        rep_raw.push(n as f64 / t.elapsed().as_secs_f64());

        // murmur replay: the same messages through a projection (decode, verify, fold).
        let t = Instant::now();
        // A reader with its own codec: no signature roots cached from publishing.
        let reader = EventLog::open(
            client.clone(),
            Identity::generate(),
            realm.clone(),
            LogConfig::default(),
            EventCodec::default().content_mode(mode),
        )
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
            prepared.push((sealed.subject.to_string(), h, b));
        }
        let sub_client = async_nats::connect(&url).await?;
        let raw_subject = prepared[0].0.clone();
        let mut sub = sub_client.subscribe(raw_subject).await?;
        sub_client.flush().await?;
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                if sub.next().await.is_none() {
                    break;
                }
                c += 1;
            }
            c
        });
        let t = Instant::now();
        for (s, h, b) in prepared {
            client.publish_with_headers(s, h, b).await?;
        }
        client.flush().await?;
        // Core NATS drops messages for a slow consumer: never hang on them, report them.
        match tokio::time::timeout(Duration::from_secs(60), counter).await {
            Ok(received) => anyhow::ensure!(received? == n, "raw core dispatch lost messages"),
            Err(_) => anyhow::bail!(
                "raw core dispatch: subscriber did not receive all {n} messages within 60 s (slow consumer drops)"
            ),
        }
        core_raw.push(n as f64 / t.elapsed().as_secs_f64());

        let mm_subject = Draft::new(me.clone(), &hb)?
            .seal(log.identity(), &realm)
            .subject
            .to_string();
        let mut sub = sub_client.subscribe(mm_subject).await?;
        sub_client.flush().await?;
        let codec = log.codec().clone();
        let counter = tokio::spawn(async move {
            let mut c = 0u64;
            while c < n {
                let Some(m) = sub.next().await else { break };
                if codec
                    .decode(m.subject.as_str(), m.headers.as_ref(), &m.payload)
                    .is_ok()
                {
                    c += 1;
                }
            }
            c
        });
        let t = Instant::now();
        let mut sent = 0;
        while sent < n {
            let k = 256.min(n - sent);
            let drafts = (0..k)
                .map(|_| Draft::new(me.clone(), &hb))
                .collect::<Result<Vec<_>, _>>()?;
            sent += log.publish_live_many(drafts).await? as u64;
        }
        client.flush().await?;
        // Core NATS drops messages for a slow consumer: never hang on them, report them.
        match tokio::time::timeout(Duration::from_secs(60), counter).await {
            Ok(received) => anyhow::ensure!(received? == n, "murmur core dispatch lost messages"),
            Err(_) => anyhow::bail!(
                "murmur core dispatch: subscriber did not receive all {n} messages within 60 s (slow consumer drops)"
            ),
        }
        core_mm.push(n as f64 / t.elapsed().as_secs_f64());
        eprintln!("run {run} done");
    }

    let pr = median(pub_raw);
    let pm = median(pub_mm);
    let rr = median(rep_raw);
    let rm = median(rep_mm);
    let cr = median(core_raw);
    let cm = median(core_mm);
    println!("| path | raw async-nats msgs/s | murmur msgs/s | ratio | target |");
    println!("|---|---|---|---|---|");
    let ps = median(pub_single);
    println!(
        "| JetStream publish, batch signatures (append_many) | {pr:.0} | {pm:.0} | {:.2} | ≥ 0.90 |",
        pm / pr
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
    for mode in [ContentMode::Structured, ContentMode::Binary] {
        println!("{}", cpu_breakdown(mode)?);
    }
    Ok(())
}

/// Where the CPU goes, per event, in-process, for one content mode.
fn cpu_breakdown(mode: ContentMode) -> Result<String> {
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
    let decode = |encoded: &[(async_nats::HeaderMap, bytes::Bytes)]| -> Result<f64> {
        let fresh = EventCodec::default();
        let t = Instant::now();
        for (h, b) in encoded {
            fresh.decode(&subject, Some(h), b)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(k))
    };
    let decode_us = decode(&encoded_single)?;
    let decode_batch_us = decode(&encoded_batch)?;
    let headers = murmur_subjects::binding::message_size(Some(&encoded_batch[0].0), &[]);
    let body = encoded_batch[0].1.len();
    Ok(format!(
        "{mode:?} mode, per event on one core: seal {seal_us:.1} µs (one signature each) / {seal_batch_us:.1} µs (batch); encode {encode_us:.1} µs; decode + schema + verify {decode_us:.1} µs (one signature each) / {decode_batch_us:.1} µs (batch); message {headers} header + {body} body bytes"
    ))
}
