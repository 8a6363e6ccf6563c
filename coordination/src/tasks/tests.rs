use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};
use murmur_subjects::events::{
    TaskAssigned, TaskCancelled, TaskCompleted, TaskDeadLettered, TaskFailed, TaskLeaseExpired,
    TaskQuestionAnswered, TaskQuestionAsked, TaskStarted, TaskSubmitted,
};
use murmur_subjects::roles::Role;
use murmur_subjects::{Projection, Token};

use super::decide::*;
use super::fold::*;
use super::*;
use crate::routing::{self, Candidate, Requirements};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

fn task(submitter: &str, cap: &str, priority: u8, seq: u64, at: DateTime<Utc>) -> Task {
    Task {
        submitter: submitter.into(),
        requirements: Requirements {
            capability: cap.into(),
            ..Requirements::default()
        },
        priority,
        max_attempts: 3,
        lease_ms: 1_000,
        attempt: 0,
        failures: vec![],
        state: TaskState::Pending { not_before: at },
        submitted_sequence: seq,
        last_sequence: seq,
        input: serde_json::Value::Null,
        correlation_id: format!("c{seq}"),
        last_event_id: format!("e{seq}"),
        depends_on: vec![],
        fail_with_dependency: false,
        output: None,
        sender: None,
        questions: Vec::new(),
    }
}

/// A task of submitter `s` in its first attempt, started on `agent` until `lease_until`.
fn leased(agent: &str, lease_until: DateTime<Utc>, seq: u64, at: DateTime<Utc>) -> Task {
    let mut t = task("s", "x", 0, seq, at);
    t.attempt = 1;
    t.state = TaskState::Assigned {
        agent: agent.into(),
        lease_until,
        started: true,
    };
    t
}

fn agent(id: &str, cap: &str) -> Candidate {
    Candidate {
        id: id.into(),
        capabilities: vec![cap.into()],
        cores: 2,
        memory_mib: 1024,
        online: true,
        ..Candidate::default()
    }
}

#[test]
fn a_flood_from_one_submitter_does_not_starve_another() {
    let now = t("2026-01-01T00:00:00Z");
    let mut book = TaskBook::default();
    for i in 0..100 {
        book.tasks
            .insert(format!("a{i:03}"), task("alice", "x", 0, i, now));
    }
    book.tasks
        .insert("b000".into(), task("bob", "x", 0, 1_000, now));
    let agents = [agent("w1", "x"), agent("w2", "x")];
    let cmds = decide(&book, &agents, now);
    let assigned: Vec<&str> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Assign { task, .. } => Some(task.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(assigned.len(), 2, "one slot per agent");
    assert!(
        assigned.contains(&"b000"),
        "bob gets one of the first two slots: {assigned:?}"
    );
}

#[test]
fn each_agent_takes_as_many_tasks_as_its_slots() {
    let now = t("2026-01-01T00:00:00Z");
    let mut book = TaskBook::default();
    for i in 0..10 {
        book.tasks
            .insert(format!("t{i:02}"), task("s", "x", 0, i, now));
    }
    // One of the big agent's three slots is already taken.
    book.tasks.insert(
        "running".into(),
        leased("big", t("2026-01-01T00:05:00Z"), 100, now),
    );
    let agents = [
        Candidate {
            slots: 3,
            ..agent("big", "x")
        },
        agent("small", "x"),
    ];
    let cmds = decide(&book, &agents, now);
    let mut per_agent: BTreeMap<&str, u32> = BTreeMap::new();
    for c in &cmds {
        if let Command::Assign { agent, .. } = c {
            *per_agent.entry(agent.as_str()).or_default() += 1;
        }
    }
    assert_eq!(
        per_agent,
        BTreeMap::from([("big", 2), ("small", 1)]),
        "{cmds:?}"
    );
}

#[test]
fn priority_first_then_fifo() {
    let now = t("2026-01-01T00:00:00Z");
    let mut book = TaskBook::default();
    book.tasks.insert("low".into(), task("s", "x", 0, 1, now));
    book.tasks.insert("high".into(), task("s", "x", 9, 2, now));
    let cmds = decide(&book, &[agent("w", "x")], now);
    assert!(matches!(&cmds[..], [Command::Assign { task, .. }] if task == "high"));
}

#[test]
fn an_attempt_waiting_for_an_answer_keeps_its_lease() {
    let now = t("2026-01-01T00:00:10Z");
    let mut book = TaskBook::default();
    let mut waiting = leased("w", t("2026-01-01T00:00:05Z"), 1, now);
    waiting.questions.push(TaskQuestion {
        id: "q1".into(),
        attempt: 1,
        prompt: "which colour?".into(),
        asked_at: t("2026-01-01T00:00:01Z"),
        answer: None,
    });
    book.tasks.insert("waiting".into(), waiting.clone());
    assert!(
        !decide(&book, &[], now)
            .iter()
            .any(|c| matches!(c, Command::ExpireLease { .. })),
        "an open question holds the lease"
    );
    // Answered (and its lease not extended past now): it expires as any other.
    waiting.questions[0].answer = Some("blue".into());
    book.tasks.insert("waiting".into(), waiting);
    assert!(
        decide(&book, &[], now)
            .iter()
            .any(|c| matches!(c, Command::ExpireLease { .. }))
    );
}

#[test]
fn expired_leases_and_exhausted_tasks() {
    let now = t("2026-01-01T00:00:10Z");
    let mut book = TaskBook::default();
    book.tasks.insert(
        "held".into(),
        leased("w", t("2026-01-01T00:00:05Z"), 1, now),
    );
    let mut spent = task("s", "x", 0, 2, now);
    spent.attempt = 3;
    spent.failures = vec!["a".into(), "b".into(), "c".into()];
    book.tasks.insert("spent".into(), spent);
    let cmds = decide(&book, &[], now);
    assert!(cmds.contains(&Command::ExpireLease {
        task: "held".into(),
        agent: "w".into(),
        attempt: 1,
        expected: 1
    }));
    assert!(cmds.contains(&Command::DeadLetter {
        task: "spent".into(),
        reasons: vec!["a".into(), "b".into(), "c".into()],
        expected: 2
    }));
}

#[test]
fn no_capable_agent_leaves_the_task_pending_and_backoff_is_respected() {
    let now = t("2026-01-01T00:00:00Z");
    let mut book = TaskBook::default();
    book.tasks
        .insert("gpu".into(), task("s", "llm.generate", 0, 1, now));
    let mut retry = task("s", "x", 0, 2, now);
    retry.attempt = 1;
    retry.state = TaskState::Pending {
        not_before: now + backoff(1),
    };
    book.tasks.insert("retry".into(), retry);
    let agents = [agent("w", "x")];
    assert!(decide(&book, &agents, now).is_empty());
    let later = now + backoff(1);
    let cmds = decide(&book, &agents, later);
    assert!(matches!(&cmds[..], [Command::Assign { task, attempt: 2, .. }] if task == "retry"));
}

#[test]
fn backoff_grows_and_caps() {
    assert_eq!(backoff(1), Duration::milliseconds(200));
    assert_eq!(backoff(2), Duration::milliseconds(400));
    assert_eq!(backoff(30), Duration::milliseconds(30_000));
}

#[test]
fn command_ids_are_deterministic() {
    let c = Command::Assign {
        task: "t1".into(),
        agent: "w".into(),
        attempt: 2,
        lease_ms: 1,
        expected: 5,
    };
    assert_eq!(c.event_id(), "t1.assign.2");
}

mod fold {
    use super::*;
    use crate::test_log::Log;
    use murmur_subjects::{Identity, VerifiedEvent};

    #[test]
    fn questions_come_from_the_holder_and_answers_from_the_submitter_once() {
        let (submitter, coord, worker, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut book = TaskBook::default();
        let submitted = TaskSubmitted {
            capability: "x".into(),
            ..Default::default()
        };
        proj.apply(&mut book, &log.event(&submitter, "t1", &submitted, 0))
            .expect("submitted");
        let ask = TaskQuestionAsked {
            attempt: 1,
            question: "q1".into(),
            prompt: "which colour?".into(),
        };
        // Nobody holds an attempt yet.
        assert!(
            proj.apply(&mut book, &log.event(&worker, "t1", &ask, 1))
                .is_err()
        );
        let assigned = TaskAssigned {
            agent: worker.public_key().into(),
            attempt: 1,
            lease_ms: 10_000,
            work: None,
        };
        proj.apply(&mut book, &log.event(&coord, "t1", &assigned, 2))
            .expect("assigned");
        assert!(
            proj.apply(&mut book, &log.event(&other, "t1", &ask, 3))
                .is_err(),
            "only the holder asks"
        );
        proj.apply(&mut book, &log.event(&worker, "t1", &ask, 4))
            .expect("asked");
        assert!(
            proj.apply(&mut book, &log.event(&worker, "t1", &ask, 5))
                .is_err(),
            "a question id is asked once"
        );
        let answer = TaskQuestionAnswered {
            question: "q1".into(),
            answer: "blue".into(),
        };
        assert!(
            proj.apply(&mut book, &log.event(&other, "t1", &answer, 6))
                .is_err(),
            "only the submitter answers"
        );
        let unknown = TaskQuestionAnswered {
            question: "q9".into(),
            answer: "red".into(),
        };
        assert!(
            proj.apply(&mut book, &log.event(&submitter, "t1", &unknown, 7))
                .is_err()
        );
        let lease = |book: &TaskBook| match &book.tasks["t1"].state {
            TaskState::Assigned { lease_until, .. } => *lease_until,
            other => panic!("not assigned: {other:?}"),
        };
        let before = lease(&book);
        proj.apply(&mut book, &log.event(&submitter, "t1", &answer, 8))
            .expect("answered");
        assert_eq!(
            lease(&book) - before,
            Duration::milliseconds(4),
            "the lease stood still from the question (at 4) to the answer (at 8)"
        );
        let again = TaskQuestionAnswered {
            question: "q1".into(),
            answer: "green".into(),
        };
        assert!(
            proj.apply(&mut book, &log.event(&submitter, "t1", &again, 9))
                .is_err(),
            "the first answer counts"
        );
        let asked = &book.tasks["t1"].questions;
        assert_eq!(asked.len(), 1);
        assert_eq!(
            (
                asked[0].id.as_str(),
                asked[0].attempt,
                asked[0].prompt.as_str()
            ),
            ("q1", 1, "which colour?")
        );
        assert_eq!(asked[0].answer.as_deref(), Some("blue"));
    }

    #[test]
    fn lifecycle_with_retry_and_idempotent_completion() {
        let (submitter, coord, w1, w2) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut book = TaskBook::default();
        let submitted = TaskSubmitted {
            capability: "x".into(),
            max_attempts: Some(2),
            lease_ms: Some(1_000),
            ..Default::default()
        };
        proj.apply(&mut book, &log.event(&submitter, "t1", &submitted, 0))
            .expect("submitted");
        assert_eq!(
            book.open_tasks()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["t1"],
            "a submitted task is open"
        );
        // Only a coordinator may assign.
        let assign1 = TaskAssigned {
            agent: w1.public_key().into(),
            attempt: 1,
            lease_ms: 1_000,
            work: None,
        };
        assert!(
            proj.apply(&mut book, &log.event(&w1, "t1", &assign1, 1))
                .is_err()
        );
        proj.apply(&mut book, &log.event(&coord, "t1", &assign1, 1))
            .expect("assigned");
        assert_eq!(book.tasks["t1"].state.name(), "assigned");
        // w1 goes silent: the lease expires, w2 gets attempt 2.
        let expired = TaskLeaseExpired {
            attempt: 1,
            agent: w1.public_key().into(),
        };
        proj.apply(&mut book, &log.event(&coord, "t1", &expired, 2_000))
            .expect("expired");
        assert_eq!(book.tasks["t1"].state.name(), "pending");
        let assign2 = TaskAssigned {
            agent: w2.public_key().into(),
            attempt: 2,
            lease_ms: 1_000,
            work: None,
        };
        proj.apply(&mut book, &log.event(&coord, "t1", &assign2, 2_500))
            .expect("assigned again");
        // A late result from w1's lost lease is refused.
        let late = TaskCompleted {
            output: serde_json::json!("late"),
            attempt: 1,
        };
        assert!(
            proj.apply(&mut book, &log.event(&w1, "t1", &late, 2_600))
                .is_err()
        );
        let done = TaskCompleted {
            output: serde_json::json!("ok"),
            attempt: 2,
        };
        proj.apply(&mut book, &log.event(&w2, "t1", &done, 2_700))
            .expect("completed");
        assert_eq!(
            book.open_tasks().count(),
            0,
            "a completed task is no longer open"
        );
        assert_eq!(
            book.tasks["t1"].state,
            TaskState::Completed {
                agent: w2.public_key().into()
            }
        );
        // A duplicate completion never produces a second "completed".
        let before = book.clone();
        assert!(
            proj.apply(&mut book, &log.event(&w2, "t1", &done, 2_800))
                .is_err()
        );
        assert_eq!(book, before);
        assert_eq!(
            book.tasks["t1"].failures,
            vec![format!("lease expired on {}", w1.public_key())]
        );
    }

    #[test]
    fn failing_task_is_dead_lettered_with_every_reason() {
        let (submitter, coord, w) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut book = TaskBook::default();
        let submitted = TaskSubmitted {
            capability: "x".into(),
            max_attempts: Some(2),
            ..Default::default()
        };
        proj.apply(&mut book, &log.event(&submitter, "t", &submitted, 0))
            .expect("submitted");
        let mut now_ms = 0;
        for attempt in 1..=2 {
            now_ms += 1_000;
            let a = TaskAssigned {
                agent: w.public_key().into(),
                attempt,
                lease_ms: 10_000,
                work: None,
            };
            proj.apply(&mut book, &log.event(&coord, "t", &a, now_ms))
                .expect("assigned");
            let f = TaskFailed {
                reason: format!("boom {attempt}"),
                attempt,
            };
            proj.apply(&mut book, &log.event(&w, "t", &f, now_ms + 10))
                .expect("failed");
        }
        let later = log.start + Duration::seconds(60);
        let cmds = decide(&book, &[], later);
        let Some(Command::DeadLetter { reasons, .. }) = cmds.first() else {
            panic!("{cmds:?}")
        };
        assert_eq!(reasons, &vec!["boom 1".to_string(), "boom 2".to_string()]);
        proj.apply(
            &mut book,
            &log.event(
                &coord,
                "t",
                &TaskDeadLettered {
                    reasons: reasons.clone(),
                },
                60_000,
            ),
        )
        .expect("dead-lettered");
        assert_eq!(book.tasks["t"].state, TaskState::DeadLettered);
    }

    /// A random walk over one realm's task events: 20 tasks from two submitters at two
    /// priorities, some graph children, a capability nobody has, and every other event
    /// (assignments, starts, completions, failures, cancellations, expiries) often from
    /// the wrong party or for the wrong attempt, so refusals are walked too. Calls
    /// `after_each(step, book, stored time, the two workers' keys)` after every event is
    /// folded.
    fn random_walk(
        steps: i64,
        mut after_each: impl FnMut(i64, &TaskBook, DateTime<Utc>, [&str; 2]),
    ) {
        let (alice, bob, coord, w1, w2) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut book = TaskBook::default();
        let mut rng = 0x9e37_79b9_u64;
        let mut next = |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let workers = [&w1, &w2];
        for step in 0..steps {
            let n = next(20);
            let task = format!("t{n:02}");
            let attempt = book.tasks.get(&task).map_or(1, |t| t.attempt.max(1));
            // Mostly the attempt's holder, sometimes a stranger (refused).
            let holder = book.tasks.get(&task).and_then(|t| match &t.state {
                TaskState::Assigned { agent, .. } => {
                    workers.into_iter().find(|w| w.public_key() == agent)
                }
                _ => None,
            });
            let w = match holder {
                Some(h) if next(4) != 0 => h,
                _ => workers[next(2) as usize],
            };
            let at = step * 50;
            let event = match next(9) {
                0 | 1 => log.event(
                    if next(3) == 0 { &bob } else { &alice },
                    &task,
                    &TaskSubmitted {
                        capability: if next(6) == 0 { "y" } else { "x" }.into(),
                        priority: if next(3) == 0 { 5 } else { 0 },
                        max_attempts: Some(2),
                        lease_ms: Some(1_000),
                        depends_on: if n > 0 && next(3) == 0 {
                            vec![format!("t{:02}", next(n))]
                        } else {
                            vec![]
                        },
                        on_dependency_failure: (next(2) == 0).then(|| "fail".into()),
                        ..Default::default()
                    },
                    at,
                ),
                2 | 3 => log.event(
                    &coord,
                    &task,
                    &TaskAssigned {
                        agent: w.public_key().into(),
                        attempt: attempt + u32::from(next(2) == 0),
                        lease_ms: 1_000,
                        work: None,
                    },
                    at,
                ),
                4 => log.event(w, &task, &TaskStarted { attempt }, at),
                5 => log.event(
                    w,
                    &task,
                    &TaskCompleted {
                        output: serde_json::json!(step),
                        attempt,
                    },
                    at,
                ),
                6 => log.event(
                    w,
                    &task,
                    &TaskFailed {
                        reason: "no".into(),
                        attempt,
                    },
                    at,
                ),
                7 => log.event(
                    &coord,
                    &task,
                    &TaskCancelled {
                        reason: "enough".into(),
                    },
                    at,
                ),
                _ => log.event(
                    &coord,
                    &task,
                    &TaskLeaseExpired {
                        attempt,
                        agent: w.public_key().into(),
                    },
                    at,
                ),
            };
            let _ = proj.apply(&mut book, &event);
            after_each(
                step,
                &book,
                log.start + Duration::milliseconds(at),
                [w1.public_key(), w2.public_key()],
            );
        }
    }

    /// The same tasks with no indexes: what a full scan of every task says.
    fn unindexed(book: &TaskBook) -> TaskBook {
        TaskBook {
            tasks: book.tasks.clone(),
            ..TaskBook::default()
        }
    }

    /// The indexes a projection keeps (open tasks, final counts) say the same as a scan of
    /// every task, after every event, refused or not.
    #[test]
    fn indexes_agree_with_a_full_scan() {
        let mut seen = BTreeSet::new();
        random_walk(400, |step, book, _, _| {
            let scanned = unindexed(book);
            assert_eq!(book.counts(), scanned.counts(), "step {step}");
            for name in TaskState::NAMES {
                assert_eq!(book.count(name), scanned.count(name), "{name} at {step}");
            }
            seen.extend(book.counts().into_keys());
            let open: Vec<&String> = book.open_tasks().map(|(id, _)| id).collect();
            let scan: Vec<&String> = scanned.open_tasks().map(|(id, _)| id).collect();
            assert_eq!(open, scan, "step {step}");
        });
        assert!(
            seen.len() >= 5,
            "the walk went through most states: {seen:?}"
        );
    }

    /// The scheduler as it was before its indexes: every open task scanned on every
    /// decision. The oracle for the indexed one.
    fn decide_by_scan(
        book: &TaskBook,
        candidates: &[Candidate],
        now: DateTime<Utc>,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut in_flight_per_agent: BTreeMap<&str, u32> = BTreeMap::new();
        let mut in_flight_per_submitter: BTreeMap<&str, u32> = BTreeMap::new();
        // One pass over the open tasks: leases in flight, and the tasks ready to go.
        let mut ready: Vec<(&String, &Task)> = Vec::new();
        for (id, t) in book.open_tasks() {
            match &t.state {
                TaskState::Assigned {
                    agent, lease_until, ..
                } => {
                    if *lease_until <= now {
                        commands.push(Command::ExpireLease {
                            task: id.clone(),
                            agent: agent.clone(),
                            attempt: t.attempt,
                            expected: t.last_sequence,
                        });
                    } else {
                        *in_flight_per_agent.entry(agent.as_str()).or_default() += 1;
                        *in_flight_per_submitter
                            .entry(t.submitter.as_str())
                            .or_default() += 1;
                    }
                }
                TaskState::Pending { not_before } if *not_before <= now => ready.push((id, t)),
                _ => {}
            }
        }
        // With every slot taken, only dependency and attempt checks can still decide anything:
        // a backlog of plain tasks is not queued up just to find nobody free.
        let any_free = candidates
            .iter()
            .any(|c| in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0) < c.slots.max(1));
        // Ready tasks grouped by priority (high first), then by submitter in FIFO order.
        #[allow(clippy::type_complexity)]
        let mut by_priority: BTreeMap<
            std::cmp::Reverse<u8>,
            BTreeMap<&str, VecDeque<(&String, &Task)>>,
        > = BTreeMap::new();
        ready.sort_by_key(|(_, t)| t.submitted_sequence);
        for (id, t) in ready {
            if !any_free && t.depends_on.is_empty() && t.attempt < t.max_attempts {
                continue;
            }
            // The dependency and attempt checks are shared with `decide`: what this scan
            // checks is which tasks `decide` walks, not how one task is gated.
            match gate(book, id, t) {
                Gate::Ready => {}
                Gate::Waiting => continue,
                Gate::Settle(command) => {
                    commands.push(command);
                    continue;
                }
            }
            by_priority
                .entry(std::cmp::Reverse(t.priority))
                .or_default()
                .entry(t.submitter.as_str())
                .or_default()
                .push_back((id, t));
        }
        for (_, mut submitters) in by_priority {
            // The submitter with the fewest tasks in flight goes next (ties: by key).
            while let Some(next) = submitters
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .min_by_key(|(s, _)| (in_flight_per_submitter.get(*s).copied().unwrap_or(0), **s))
                .map(|(s, _)| *s)
            {
                let Some((id, t)) = submitters.get_mut(next).and_then(VecDeque::pop_front) else {
                    break;
                };
                let free: Vec<Candidate> = candidates
                    .iter()
                    .filter(|c| {
                        in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0)
                            < c.slots.max(1)
                    })
                    .map(|c| {
                        let mut c = c.clone();
                        c.queue_depth +=
                            in_flight_per_agent.get(c.id.as_str()).copied().unwrap_or(0);
                        c
                    })
                    .collect();
                if free.is_empty() {
                    // Every slot is taken: the rest waits for the next decision.
                    break;
                }
                // Nobody able to take it now: it stays pending until an agent can.
                if let Some(agent) = routing::choose(&t.requirements, &free) {
                    let agent_id = agent.id.clone();
                    commands.push(Command::Assign {
                        task: id.clone(),
                        agent: agent_id.clone(),
                        attempt: t.attempt + 1,
                        lease_ms: t.lease_ms,
                        expected: t.last_sequence,
                    });
                    if let Some(c) = candidates.iter().find(|c| c.id == agent_id) {
                        *in_flight_per_agent.entry(c.id.as_str()).or_default() += 1;
                    }
                    *in_flight_per_submitter.entry(next).or_default() += 1;
                }
            }
        }
        commands
    }

    /// Decisions read from the book's incremental indexes (the queue walked only as far
    /// as free slots reach) equal the full scan's, command for command, after every
    /// event of the random walk, at several moments and slot counts (the two agents'
    /// equal or not).
    #[test]
    fn decisions_from_the_indexes_equal_a_scan_of_every_task() {
        let (mut assigns, mut other_commands) = (0, 0);
        random_walk(600, |step, book, at, [w1, w2]| {
            let scanned = unindexed(book);
            for (later_ms, slots) in [(0, [1, 1]), (300, [2, 1]), (1_500, [0, 3]), (5_000, [8, 8])]
            {
                let candidates = [
                    Candidate {
                        slots: slots[0],
                        ..super::agent(w1, "x")
                    },
                    Candidate {
                        slots: slots[1],
                        ..super::agent(w2, "x")
                    },
                ];
                let now = at + Duration::milliseconds(later_ms);
                let indexed = decide(book, &candidates, now);
                let scan = decide_by_scan(&scanned, &candidates, now);
                assert_eq!(
                    indexed, scan,
                    "step {step}, +{later_ms} ms, slots {slots:?}"
                );
                for c in &indexed {
                    match c {
                        Command::Assign { .. } => assigns += 1,
                        _ => other_commands += 1,
                    }
                }
            }
        });
        assert!(
            assigns > 100 && other_commands > 100,
            "the walk exercised the scheduler: {assigns} assignments, {other_commands} other commands"
        );
    }

    #[test]
    fn refusals_are_typed_and_leave_the_book_as_it_was() {
        let (submitter, coord, w1, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        log.grant(&coord, Role::Coordinator);
        let mut book = TaskBook::default();
        let refusal = |book: &mut TaskBook, event: &VerifiedEvent| {
            let before = book.clone();
            let decoded = TaskEvent::decode(event).expect("a task event");
            let refused = proj.apply_event(book, event, decoded).expect_err("refused");
            assert_eq!(*book, before, "{refused}: the book did not change");
            refused
        };
        let submitted = TaskSubmitted {
            capability: "x".into(),
            ..Default::default()
        };
        let completed = TaskCompleted {
            attempt: 1,
            output: serde_json::json!("done"),
        };
        assert_eq!(
            refusal(&mut book, &log.event(&w1, "ghost", &completed, 0)),
            TaskRefusal::UnknownTask("ghost".into())
        );
        proj.apply(&mut book, &log.event(&submitter, "t1", &submitted, 1))
            .expect("submitted");
        assert_eq!(
            refusal(&mut book, &log.event(&submitter, "t1", &submitted, 2)),
            TaskRefusal::AlreadyExists("t1".into())
        );
        let assign = TaskAssigned {
            agent: w1.public_key().into(),
            attempt: 1,
            lease_ms: 1_000,
            work: None,
        };
        assert!(matches!(
            refusal(&mut book, &log.event(&w1, "t1", &assign, 3)),
            TaskRefusal::NotCoordinator { .. }
        ));
        proj.apply(&mut book, &log.event(&coord, "t1", &assign, 4))
            .expect("assigned");
        assert!(matches!(
            refusal(&mut book, &log.event(&stranger, "t1", &completed, 5)),
            TaskRefusal::NotHolder {
                attempt: 1,
                current: 1,
                ..
            }
        ));
        proj.apply(&mut book, &log.event(&w1, "t1", &completed, 6))
            .expect("completed");
        assert_eq!(
            refusal(&mut book, &log.event(&w1, "t1", &completed, 7)),
            TaskRefusal::Ended {
                task: "t1".into(),
                state: "completed"
            }
        );
    }

    #[test]
    fn bad_capability_syntax_is_refused() {
        let s = Identity::generate();
        let proj = TaskProjection {
            realm: Token::new("r").expect("token"),
        };
        let mut log = Log::new();
        let mut book = TaskBook::default();
        let bad = TaskSubmitted {
            capability: "Not A Capability".into(),
            ..Default::default()
        };
        assert!(proj.apply(&mut book, &log.event(&s, "t", &bad, 0)).is_err());
        assert!(book.tasks.is_empty());
    }
}

#[test]
fn graph_children_wait_for_parents_and_follow_the_failure_policy() {
    let now = t("2026-01-01T00:00:00Z");
    let mut book = TaskBook::default();
    let parent = task("s", "x", 0, 1, now);
    let mut child = task("s", "x", 0, 2, now);
    child.depends_on = vec!["parent".into()];
    book.tasks.insert("parent".into(), parent);
    book.tasks.insert("child".into(), child.clone());
    let agents = [agent("w", "x"), agent("v", "x")];
    let cmds = decide(&book, &agents, now);
    assert!(
        matches!(&cmds[..], [Command::Assign { task, .. }] if task == "parent"),
        "{cmds:?}"
    );
    book.tasks.get_mut("parent").expect("parent").state =
        TaskState::Completed { agent: "w".into() };
    let cmds = decide(&book, &agents, now);
    assert!(
        matches!(&cmds[..], [Command::Assign { task, .. }] if task == "child"),
        "{cmds:?}"
    );
    book.tasks.get_mut("parent").expect("parent").state = TaskState::DeadLettered;
    let cmds = decide(&book, &agents, now);
    assert!(
        matches!(&cmds[..], [Command::Cancel { task, .. }] if task == "child"),
        "{cmds:?}"
    );
    book.tasks
        .get_mut("child")
        .expect("child")
        .fail_with_dependency = true;
    let cmds = decide(&book, &agents, now);
    assert!(
        matches!(&cmds[..], [Command::DeadLetter { task, .. }] if task == "child"),
        "{cmds:?}"
    );
}
