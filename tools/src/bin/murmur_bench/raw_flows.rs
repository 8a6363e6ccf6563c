//! The task and consensus event flows written with raw async-nats: the same stored messages,
//! on the same server, with the same optimistic-concurrency headers and the same hops between
//! participants, but nothing murmur adds (no signing, no verification, no CloudEvents
//! decoding, no projection). What murmur's flows are measured against, beside the single raw
//! publish: how far the *shape* of a flow (several stored events per task, each read by
//! several participants) lets the machine go at all, before any murmur cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use murmur_subjects::log::{EXPECTED_LAST_SUBJECT_SEQ, EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, MSG_ID};

/// The stream the raw flows store into: the history stream's settings (storage, limits,
/// duplicate window), other subjects.
const STREAM: &str = "BENCH_RAW_FLOWS";

/// Which worker an assignment is for; a raw worker reads every assignment, as murmur's do.
const WORKER: &str = "Bench-Worker";

/// Creates the raw flows' stream with the history stream's settings.
pub async fn ensure_stream(js: &jetstream::Context, history: &str) -> Result<()> {
    let mut config = js
        .get_stream(history)
        .await
        .context("history stream")?
        .info()
        .await?
        .config
        .clone();
    config.name = STREAM.into();
    config.subjects = vec!["rawflow.>".into(), "rawvote.>".into()];
    config.description = Some("murmur-bench raw flows".into());
    js.get_or_create_stream(config).await?;
    Ok(())
}

/// Bodies of the four task events, the sizes murmur's structured events have.
#[derive(Clone)]
pub struct TaskBodies {
    /// `submitted`.
    pub submitted: Bytes,
    /// `assigned`.
    pub assigned: Bytes,
    /// `started`.
    pub started: Bytes,
    /// `completed`.
    pub completed: Bytes,
}

fn verb_and_task(subject: &str) -> (&str, &str) {
    // rawflow.<run>.<task>.<verb>
    let mut parts = subject.rsplitn(3, '.');
    let verb = parts.next().unwrap_or_default();
    let task = parts.next().unwrap_or_default();
    (verb, task)
}

fn expecting(id: String, sequence: u64, aggregate: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, id.as_str());
    h.insert(EXPECTED_LAST_SUBJECT_SEQ, sequence.to_string().as_str());
    h.insert(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, aggregate);
    h
}

async fn ordered(client: &async_nats::Client, filter: String) -> Result<consumer::pull::Ordered> {
    let js = jetstream::new(client.clone());
    let consumer = js
        .get_stream(STREAM)
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// `n` tasks through submitted → assigned → started → completed with `workers` workers,
/// each participant on its own connection: a coordinator reading every task event and
/// writing each assignment with the task's expected last sequence (acks awaited beside its
/// loop, up to `window` in flight), workers reading every assignment and writing `started`
/// and then the result, each expecting the event before, and a reader counting completions.
/// Without `started`, a worker writes the result straight after the assignment (three
/// stored events per task, the fewest the issue allows). Returns tasks per second from the
/// first submission to the last completion read.
pub async fn task_flow(
    connect_options: &murmur_subjects::connect::ConnectOptions,
    n: u64,
    window: usize,
    workers: usize,
    bodies: TaskBodies,
    started: bool,
) -> Result<f64> {
    let connect = || connect_options.connect();
    let run = format!("{:x}", rand_run());
    let bodies = std::sync::Arc::new(bodies);
    let workers = workers.max(1);

    // The coordinator.
    let coordinator = {
        let client = connect().await?;
        let mut feed = ordered(&client, format!("rawflow.{run}.>")).await?;
        let js = jetstream::new(client);
        let bodies = bodies.clone();
        let run = run.clone();
        tokio::spawn(async move {
            let (acks, mut pending) = tokio::sync::mpsc::channel(window.max(1));
            let settle = tokio::spawn(async move {
                while let Some(ack) = pending.recv().await {
                    let ack: jetstream::context::PublishAckFuture = ack;
                    ack.await?;
                }
                Ok::<_, anyhow::Error>(())
            });
            let (mut completed, mut next_worker) = (0, 0);
            while let Some(m) = feed.next().await {
                let m = m?;
                let (verb, task) = verb_and_task(m.subject.as_str());
                match verb {
                    "submitted" => {
                        let sequence = m.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
                        let mut h = expecting(
                            format!("{run}.{task}.assign.1"),
                            sequence,
                            &format!("rawflow.{run}.{task}.*"),
                        );
                        h.insert(WORKER, next_worker.to_string().as_str());
                        next_worker = (next_worker + 1) % workers;
                        let ack = js
                            .publish_with_headers(
                                format!("rawflow.{run}.{task}.assigned"),
                                h,
                                bodies.assigned.clone(),
                            )
                            .await?;
                        acks.send(ack).await?;
                    }
                    "completed" => {
                        completed += 1;
                        if completed == n {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            drop(acks);
            settle.await??;
            Ok::<_, anyhow::Error>(())
        })
    };

    // The workers.
    let mut worker_tasks = Vec::new();
    for k in 0..workers {
        let client = connect().await?;
        let mut feed = ordered(&client, format!("rawflow.{run}.*.assigned")).await?;
        let js = jetstream::new(client);
        let bodies = bodies.clone();
        let run = run.clone();
        let me = k.to_string();
        worker_tasks.push(tokio::spawn(async move {
            let mut attempts = tokio::task::JoinSet::new();
            // Round robin: worker k gets tasks k, k + workers, ...
            let share = (n + (workers - 1 - k) as u64) / workers as u64;
            let mut mine = 0;
            while mine < share {
                let Some(m) = feed.next().await else { break };
                let m = m?;
                if m.headers
                    .as_ref()
                    .and_then(|h| h.get(WORKER))
                    .is_none_or(|w| w.as_str() != me)
                {
                    continue;
                }
                mine += 1;
                let assigned_at = m.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
                let task = verb_and_task(m.subject.as_str()).1.to_string();
                let (js, bodies, run) = (js.clone(), bodies.clone(), run.clone());
                attempts.spawn(async move {
                    let aggregate = format!("rawflow.{run}.{task}.*");
                    let before_result = if started {
                        js.publish_with_headers(
                            format!("rawflow.{run}.{task}.started"),
                            expecting(format!("{run}.{task}.started.1"), assigned_at, &aggregate),
                            bodies.started.clone(),
                        )
                        .await?
                        .await?
                        .sequence
                    } else {
                        assigned_at
                    };
                    let result = js
                        .publish_with_headers(
                            format!("rawflow.{run}.{task}.completed"),
                            expecting(
                                format!("{run}.{task}.completed.1"),
                                before_result,
                                &aggregate,
                            ),
                            bodies.completed.clone(),
                        )
                        .await?
                        .await?;
                    // A duplicate would not be stored, and nobody would read it.
                    anyhow::ensure!(
                        !result.duplicate,
                        "raw task flow: {task}'s result was a duplicate"
                    );
                    Ok::<_, anyhow::Error>(())
                });
                while let Some(done) = attempts.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = attempts.join_next().await {
                done??;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }

    // Completions, and the submitter.
    let reader = connect().await?;
    let mut completions = ordered(&reader, format!("rawflow.{run}.*.completed")).await?;
    let submitter = jetstream::new(connect().await?);
    let t = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..n {
        let mut h = HeaderMap::new();
        h.insert(MSG_ID, format!("{run}-{i}").as_str());
        inflight.push_back(
            submitter
                .publish_with_headers(
                    format!("rawflow.{run}.t{i}.submitted"),
                    h,
                    bodies.submitted.clone(),
                )
                .await?,
        );
        while inflight.len() > window {
            if let Some(ack) = inflight.pop_front() {
                ack.await?;
            }
        }
    }
    for ack in inflight {
        ack.await?;
    }
    let mut done = 0;
    while done < n {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(120), completions.next()).await
        else {
            // Say why: a participant that stopped on an error.
            for handle in worker_tasks.into_iter().chain([coordinator]) {
                if handle.is_finished() {
                    handle.await??;
                }
            }
            anyhow::bail!("raw task flow: no completion for 120 s ({done} of {n})");
        };
        next.context("completions ended")??;
        done += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    coordinator.await??;
    for w in worker_tasks {
        w.await??;
    }
    Ok(rate)
}

/// Raw decisions, one after another: `opened` stored (ack awaited), fanned out from one core
/// subscription to `voters` voters that each store a vote (ack awaited, as murmur's minimal
/// voters do), a tallier reading the votes from an ordered consumer that stores `decided`
/// (deduplicated by its id) once `voters / 2 + 1` arrived, and the opener
/// waiting for `decided` on a core subscription. Returns the latencies, the rate and where
/// the time went.
pub async fn vote_flow(url: &str, voters: usize, proposals: usize) -> Result<VoteFlowRun> {
    let run = format!("{:x}", rand_run());
    let quorum = voters / 2 + 1;
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client.clone());

    // The tallier, on its own connection like murmur's.
    let tallier = {
        let client = async_nats::connect(url).await?;
        let mut feed = ordered(&client, format!("rawvote.{run}.*.vote")).await?;
        let js = jetstream::new(client);
        let run = run.clone();
        tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            while let Some(m) = feed.next().await {
                let m = m?;
                let proposal = verb_and_task(m.subject.as_str()).1.to_string();
                let votes = counts.entry(proposal.clone()).or_default();
                *votes += 1;
                if *votes == quorum {
                    // Deduplicated by id, no expected sequence: murmur's tallier writes
                    // `decided` the same way (votes after the quorum may be stored first).
                    let mut h = HeaderMap::new();
                    h.insert(MSG_ID, format!("{run}-{proposal}-decided").as_str());
                    js.publish_with_headers(
                        format!("rawvote.{run}.{proposal}.decided"),
                        h,
                        Bytes::from_static(br#"{"outcome":"approved"}"#),
                    )
                    .await?
                    .await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    };

    // Voters fed by one core subscription, all on the opener's connection (as in the murmur
    // consensus suite).
    let (fan_tx, _) = tokio::sync::broadcast::channel::<String>(1024);
    let mut opened = client.subscribe(format!("rawvote.{run}.*.opened")).await?;
    let fan = fan_tx.clone();
    let fanout = tokio::spawn(async move {
        while let Some(m) = opened.next().await {
            let _ = fan.send(verb_and_task(m.subject.as_str()).1.to_string());
        }
    });
    let mut voter_tasks = Vec::new();
    for v in 0..voters {
        let mut rx = fan_tx.subscribe();
        let (js, run) = (js.clone(), run.clone());
        voter_tasks.push(tokio::spawn(async move {
            while let Ok(proposal) = rx.recv().await {
                let mut h = HeaderMap::new();
                h.insert(MSG_ID, format!("{run}-{proposal}-{v}").as_str());
                if let Ok(ack) = js
                    .publish_with_headers(
                        format!("rawvote.{run}.{proposal}.vote"),
                        h,
                        Bytes::from_static(br#"{"choice":"approve","reason":""}"#),
                    )
                    .await
                {
                    let _ = ack.await;
                }
            }
        }));
    }
    let mut decided = client.subscribe(format!("rawvote.{run}.*.decided")).await?;
    let mut latencies = Vec::with_capacity(proposals);
    let t_all = Instant::now();
    for i in 0..proposals {
        let proposal = format!("p{i}");
        let t = Instant::now();
        let mut h = HeaderMap::new();
        h.insert(MSG_ID, format!("{run}-{proposal}-opened").as_str());
        js.publish_with_headers(
            format!("rawvote.{run}.{proposal}.opened"),
            h,
            Bytes::from_static(br#"{"question":"bench","protocol":"simple_majority"}"#),
        )
        .await?
        .await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), decided.next())
                .await
                .context("raw vote flow: no decision for 30 s")?
                .context("decided subscription ended")?;
            if verb_and_task(m.subject.as_str()).1 == proposal {
                break;
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rate = proposals as f64 / t_all.elapsed().as_secs_f64();
    fanout.abort();
    for t in voter_tasks {
        t.abort();
    }
    tallier.abort();
    latencies.sort_by(f64::total_cmp);
    let (to_quorum, to_decided) = vote_stages(&client, &run, quorum, proposals).await?;
    Ok(VoteFlowRun {
        latencies,
        rate,
        to_quorum,
        to_decided,
    })
}

/// One run of the raw decision flow.
pub struct VoteFlowRun {
    /// Open → `decided` received, ms, sorted.
    pub latencies: Vec<f64>,
    /// Proposals decided per second.
    pub rate: f64,
    /// From the stored timestamps, ms, sorted: `opened` → the vote that reached the quorum.
    pub to_quorum: Vec<f64>,
    /// … that vote → `decided`.
    pub to_decided: Vec<f64>,
}

/// The same split of a decision as murmur's suite reports (from the stream's stored
/// timestamps), for the raw flow's run.
async fn vote_stages(
    client: &async_nats::Client,
    run: &str,
    quorum: usize,
    proposals: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut times: HashMap<String, DecisionTimes> = HashMap::new();
    let mut feed = ordered(client, format!("rawvote.{run}.>")).await?;
    let mut decided = 0;
    // Every proposal's `decided` is stored before the run ends; trailing votes may still be
    // arriving, so read until the feed is quiet once all decisions are in.
    loop {
        let quiet = if decided < proposals {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(200)
        };
        let Ok(Some(m)) = tokio::time::timeout(quiet, feed.next()).await else {
            break;
        };
        let m = m?;
        let at = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.published;
        let at = at.timestamp_nanos_opt().unwrap_or_default();
        let (verb, proposal) = verb_and_task(m.subject.as_str());
        let entry = times.entry(proposal.to_string()).or_default();
        match verb {
            "opened" => entry.opened = Some(at),
            "vote" => entry.votes.push(at),
            "decided" => {
                entry.decided = Some(at);
                decided += 1;
            }
            _ => {}
        }
    }
    let (mut to_quorum, mut to_decided) = (Vec::new(), Vec::new());
    for t in times.into_values() {
        if let Some(s) = t.stages(quorum) {
            to_quorum.push(ms(s.opened, s.quorum_vote));
            to_decided.push(ms(s.quorum_vote, s.decided));
        }
    }
    to_quorum.sort_by(f64::total_cmp);
    to_decided.sort_by(f64::total_cmp);
    Ok((to_quorum, to_decided))
}

/// Stored times (ns since the epoch) of one proposal's events, murmur's or the raw flow's.
#[derive(Default)]
pub struct DecisionTimes {
    /// `opened`.
    pub opened: Option<i64>,
    /// Every vote, in any order.
    pub votes: Vec<i64>,
    /// `decided`.
    pub decided: Option<i64>,
}

/// A decided proposal's stored times, ns since the epoch.
pub struct DecisionStages {
    /// `opened`.
    pub opened: i64,
    /// The first vote.
    pub first_vote: i64,
    /// The vote that reached the quorum.
    pub quorum_vote: i64,
    /// `decided`.
    pub decided: i64,
}

impl DecisionTimes {
    /// The stages, when the proposal was opened, reached `quorum` votes and was decided.
    pub fn stages(mut self, quorum: usize) -> Option<DecisionStages> {
        self.votes.sort_unstable();
        Some(DecisionStages {
            opened: self.opened?,
            first_vote: *self.votes.first()?,
            quorum_vote: *self.votes.get(quorum.checked_sub(1)?)?,
            decided: self.decided?,
        })
    }
}

/// Milliseconds from `a` to `b`, both ns.
pub fn ms(a: i64, b: i64) -> f64 {
    (b - a) as f64 / 1e6
}

/// A run id, so runs in one stream never share subjects.
fn rand_run() -> u128 {
    uuid::Uuid::new_v4().as_u128() & 0xffff_ffff_ffff
}
