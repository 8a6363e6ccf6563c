//! Consensus against a real nats-server: voters with their own identities, an in-process
//! tallier deciding early, a deadline closing a proposal as no quorum, refused votes, and
//! the decisions rebuilt from the log by a fresh projection.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use murmur_coordination::consensus::{Consensus, ConsensusProjection, VoteRefusal};
use murmur_coordination::tallier::run_tallier;
use murmur_e2e::DEADLINE;
use murmur_subjects::events::{Choice, ProposalOpened, Protocol, VoteCast};
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, Identity, Payload as _, Projector, Token};
use murmur_testkit::TestNats;

#[path = "consensus/failures.rs"]
mod failures;

fn proposal(voters: &[&str], quorum: u32, deadline_in: Duration) -> ProposalOpened {
    ProposalOpened {
        question: "deploy 1.2?".into(),
        payload: serde_json::json!({"version": "1.2"}),
        protocol: Protocol::SimpleMajority,
        voters: voters
            .iter()
            .map(|v| (v.to_string(), 1))
            .collect::<BTreeMap<_, _>>(),
        quorum,
        deadline: chrono::Utc::now() + chrono::Duration::from_std(deadline_in).expect("duration"),
        category: "release".into(),
        stimulus: 1.0,
    }
}

/// `n` voters in realm `acme`, each with an identity of its own, and their public keys.
async fn voter_logs(
    nats: &TestNats,
    n: usize,
) -> Result<(Vec<murmur_subjects::EventLog>, Vec<String>)> {
    let mut voters = Vec::new();
    for _ in 0..n {
        voters.push(nats.event_log_as(Identity::generate(), "acme").await?);
    }
    let keys = voters
        .iter()
        .map(|v| v.identity().public_key().to_string())
        .collect();
    Ok((voters, keys))
}

/// The realm's proposals as `log` sees them (decisions counting from holders of the
/// tallier role).
fn consensus_view(log: &murmur_subjects::EventLog) -> Result<Projector<ConsensusProjection>> {
    Ok(Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: Token::new("acme")?,
        },
    ))
}

/// `murmur voter run` as a process in realm `acme` as the participant `who` names (200 ms
/// heartbeat), connected to `url` only when `pinned`; returns it with the id it prints once
/// joined.
async fn spawn_voter(
    url: &str,
    data: &std::path::Path,
    who: &[String],
    name: &str,
    policy: &std::path::Path,
    pinned: bool,
) -> Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new(murmur_e2e::murmur_binary()?);
    command
        .args(["--server", url, "--realm", "acme", "--data-dir"])
        .arg(data)
        .args(who);
    if pinned {
        command.arg("--listed-servers-only");
    }
    let mut child = command
        .args(["voter", "run", "--heartbeat-ms", "200"])
        .args(["--name", name, "--policy"])
        .arg(policy)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let id = tokio::time::timeout(
        DEADLINE,
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await??
    .context("voter exited before joining")?;
    Ok((child, id.trim().to_string()))
}

/// Checks that proposal `id`'s events form one flow: every event carries the correlation id
/// of `opened` (a root event, its own id), every vote names `opened` as its cause, and the
/// decision names a counted vote stored before it. Reads until at least `at_least` events are
/// stored (the votes after the quorum may still be on their way).
async fn assert_one_flow(log: &murmur_subjects::EventLog, id: &str, at_least: usize) -> Result<()> {
    let until = tokio::time::Instant::now() + DEADLINE;
    let events = loop {
        let events =
            murmur_e2e::aggregate_events(log, murmur_subjects::Domain::Proposal, id).await?;
        if events.len() >= at_least || tokio::time::Instant::now() > until {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ty = |e: &murmur_subjects::VerifiedEvent| e.record.ty.clone();
    let opened = events
        .iter()
        .find(|e| ty(e) == ProposalOpened::TYPE)
        .context("no opened event")?;
    let flow = opened.record.id.as_str();
    assert_eq!(opened.record.correlation_id.as_deref(), Some(flow));
    let mut votes_before_decision = Vec::new();
    for e in &events {
        assert_eq!(
            e.record.correlation_id.as_deref(),
            Some(flow),
            "{} on {id} is outside the proposal's flow",
            e.record.ty
        );
        match e.record.ty.as_str() {
            VoteCast::TYPE => {
                assert_eq!(e.record.causation_id.as_deref(), Some(flow), "vote cause");
                votes_before_decision.push(e.record.id.clone());
            }
            murmur_subjects::events::ProposalDecided::TYPE => {
                let cause = e.record.causation_id.clone().unwrap_or_default();
                assert!(
                    votes_before_decision.contains(&cause),
                    "the decision's cause {cause} is not a vote stored before it: {votes_before_decision:?}"
                );
            }
            _ => {}
        }
    }
    assert!(
        events.len() >= at_least,
        "{} events on {id}, expected at least {at_least}",
        events.len()
    );
    Ok(())
}

/// Follows the realm's proposals until `id` is decided (up to [`DEADLINE`]).
async fn wait_decided(log: &murmur_subjects::EventLog, id: &str) -> Result<Consensus> {
    let mut live = consensus_view(log)?;
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| c
            .proposals
            .get(id)
            .is_some_and(|p| p.decided.is_some()))
            .await?,
        "{id} never decided"
    );
    Ok(live.state().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tallier_decides_early_closes_at_the_deadline_and_replays_the_same() -> Result<()> {
    let nats = TestNats::start().await?;
    let opener = nats.event_log("acme").await?;
    let tallier_log = nats.log_as("acme", Role::Tallier, "tallier").await?;
    let tallier = murmur_e2e::spawn_tallier(tallier_log);
    let (voters, keys) = voter_logs(&nats, 3).await?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let outsider = nats.event_log("acme").await?;

    // p1: 3 voters, quorum 2; two approvals decide it before the third votes.
    opener
        .append(Draft::new(
            Token::new("p1")?,
            &proposal(&key_refs, 2, Duration::from_secs(60)),
        )?)
        .await?;
    let vote = |c: Choice| VoteCast {
        choice: c,
        reason: "policy".into(),
    };
    voters[0]
        .append(Draft::new(Token::new("p1")?, &vote(Choice::Approve))?)
        .await?;
    voters[0]
        .append(Draft::new(Token::new("p1")?, &vote(Choice::Reject))?)
        .await?; // duplicate
    outsider
        .append(Draft::new(Token::new("p1")?, &vote(Choice::Reject))?)
        .await?; // not a voter
    voters[1]
        .append(Draft::new(Token::new("p1")?, &vote(Choice::Approve))?)
        .await?;

    // p2: quorum 3, one vote, deadline in 1 s: no quorum, closed by the tallier's marker.
    opener
        .append(Draft::new(
            Token::new("p2")?,
            &proposal(&key_refs, 3, Duration::from_secs(1)),
        )?)
        .await?;
    voters[2]
        .append(Draft::new(Token::new("p2")?, &vote(Choice::Approve))?)
        .await?;

    let mut live = consensus_view(&opener)?;
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| {
            c.proposals.get("p1").is_some_and(|p| p.decided.is_some())
                && c.proposals.get("p2").is_some_and(|p| p.decided.is_some())
        })
        .await?,
        "proposals never decided: {:?}",
        live.state()
            .proposals
            .values()
            .map(|p| &p.decided)
            .collect::<Vec<_>>()
    );
    let state = live.state().clone();
    let p1 = &state.proposals["p1"];
    let d1 = p1.decided.as_ref().expect("p1 decided");
    assert_eq!(
        (d1.outcome.as_str(), d1.approve, d1.votes),
        ("approved", 2, 2)
    );
    assert!(
        p1.refused
            .contains(&(keys[0].clone(), VoteRefusal::DuplicateVote)),
        "{:?}",
        p1.refused
    );
    assert!(
        p1.refused.iter().any(|(_, r)| *r == VoteRefusal::NotAVoter),
        "{:?}",
        p1.refused
    );
    let d2 = state.proposals["p2"].decided.as_ref().expect("p2 decided");
    assert_eq!(d2.outcome, "no_quorum");
    assert!(state.proposals["p2"].deadline_passed);

    // A vote after the decision is refused as closed.
    voters[2]
        .append(Draft::new(Token::new("p1")?, &vote(Choice::Reject))?)
        .await?;
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| c.proposals["p1"]
            .refused
            .iter()
            .any(|(_, r)| *r == VoteRefusal::Closed))
            .await?,
        "late vote not refused"
    );

    // A fresh projection replaying the log reaches the same state.
    let mut replay = consensus_view(&opener)?;
    replay.catch_up().await?;
    assert_eq!(replay.state(), live.state());

    tallier.stop().await??;
    Ok(())
}

/// The id `murmur vote propose` printed, or why it failed.
fn proposal_id(out: std::process::Output) -> Result<String> {
    anyhow::ensure!(
        out.status.success(),
        "propose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Voters as separate `murmur voter run` processes with a policy file; a proposal opened by
/// `murmur vote propose --capability vote` is decided by the policy votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_voter_processes_decide_a_proposal_opened_from_the_cli() -> Result<()> {
    let nats = TestNats::start().await?;
    let data = tempfile::tempdir()?;
    let policy = data.path().join("policy.toml");
    std::fs::write(
        &policy,
        "default = \"abstain\"\n[[rules]]\nwhen = [{ path = \"/tests_passed\", equals = true }]\nvote = \"approve\"\nreason = \"tests pass\"\n[[rules]]\nwhen = [{ path = \"/tests_passed\", equals = false }]\nvote = \"reject\"\nreason = \"tests fail\"\n",
    )?;
    // The CLI's user opens proposals and votes by hand: a submitter.
    let cli_who =
        murmur_e2e::enrol(&nats, Role::Submitter, "cli", &data.path().join("cli")).await?;
    let murmur = |args: &[&str]| {
        let mut c =
            murmur_e2e::murmur_cli(nats.url(), &data.path().join("cli"), &cli_who).expect("murmur");
        c.args(args);
        c
    };
    let mut voters = Vec::new();
    for i in 0..3 {
        let dir = data.path().join(format!("v{i}"));
        let who = murmur_e2e::enrol(&nats, Role::Voter, &format!("v{i}"), &dir).await?;
        voters.push(spawn_voter(nats.url(), &dir, &who, &format!("v{i}"), &policy, false).await?);
    }
    let tallier_log = nats.log_as("acme", Role::Tallier, "tallier").await?;
    let tallier = murmur_e2e::spawn_tallier(tallier_log);
    // The voters are in the registry before the proposal names them by capability.
    let observer = nats.event_log("acme").await?;
    let mut registry = Projector::new(
        observer.clone(),
        murmur_coordination::registry::RegistryProjection {
            realm: Token::new("acme")?,
        },
    );
    anyhow::ensure!(
        registry
            .follow_until(DEADLINE, |r| voters
                .iter()
                .all(|(_, id)| r.agents.contains_key(id)))
            .await?,
        "voters never joined"
    );
    for (payload, expected) in [
        (r#"{"tests_passed":true}"#, "approved"),
        (r#"{"tests_passed":false}"#, "rejected"),
    ] {
        let out = murmur(&[
            "vote",
            "propose",
            "--question",
            "merge?",
            "--capability",
            "vote",
            "--quorum",
            "2",
            "--payload",
            payload,
            "--wait",
        ])
        .output()
        .await?;
        // `--wait` follows the proposal: each vote with its reason, then the outcome; the
        // exit status says whether it was approved.
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let reason = if expected == "approved" {
            "tests pass"
        } else {
            "tests fail"
        };
        assert!(
            said.lines()
                .filter(|l| l.starts_with("vote  ") && l.ends_with(reason))
                .count()
                >= 2,
            "{said}"
        );
        assert!(said.contains(&format!("  {expected} (approve")), "{said}");
        assert_eq!(out.status.success(), expected == "approved", "{said}");
        if expected != "approved" {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("ended {expected}")), "{err}");
        }
        let id = said.lines().next().unwrap_or_default().trim().to_string();
        let state = wait_decided(&observer, &id).await?;
        let p = &state.proposals[&id];
        assert_eq!(
            p.decided.as_ref().map(|d| d.outcome.as_str()),
            Some(expected),
            "{p:?}"
        );
        assert!(p.votes.len() >= 2);
        let shown = murmur(&["vote", "show", &id]).output().await?;
        let shown = String::from_utf8_lossy(&shown.stdout).to_string();
        assert!(shown.contains(expected), "{shown}");
        // Each counted vote is shown with the reason its voter gave.
        assert!(
            shown
                .lines()
                .filter(|l| l.ends_with(&format!(" — {reason}")))
                .count()
                >= 2,
            "{shown}"
        );
        // A late vote from the CLI (refused: the proposal is closed, and the CLI's identity
        // is no voter) is recorded and joins the flow all the same; the command says it does
        // not count, and fails.
        let late = murmur(&["vote", "cast", &id, "approve"]).output().await?;
        let said = String::from_utf8_lossy(&late.stderr);
        anyhow::ensure!(
            !late.status.success() && said.contains("does not count: the proposal is closed"),
            "cast: {said}"
        );
        // Opened, the two votes of the quorum, the decision and the late vote: the third
        // voter votes only if it reads `opened` before the decision (one that reads both
        // in one poll finds the proposal closed and keeps quiet), so its vote is not awaited.
        assert_one_flow(&observer, &id, 5).await?;
    }

    // The CLI's own identity as a voter: its vote counts and decides; a second one is refused.
    let me = murmur(&["identity"]).output().await?;
    let me = String::from_utf8(me.stdout)?.trim().to_string();
    let out = murmur(&["vote", "propose", "--question", "mine?", "--voter", &me])
        .output()
        .await?;
    let mine = proposal_id(out)?;
    let cast = murmur(&["vote", "cast", &mine, "reject"]).output().await?;
    let said = String::from_utf8_lossy(&cast.stdout);
    anyhow::ensure!(
        cast.status.success() && said.contains(&format!("voted reject on {mine} as {me}: counted")),
        "cast: {said} {}",
        String::from_utf8_lossy(&cast.stderr)
    );
    let state = wait_decided(&observer, &mine).await?;
    assert_eq!(
        state.proposals[&mine]
            .decided
            .as_ref()
            .map(|d| d.outcome.as_str()),
        Some("rejected")
    );
    let again = murmur(&["vote", "cast", &mine, "approve"]).output().await?;
    anyhow::ensure!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("does not count"),
        "second cast: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Withdrawing: refused before writing once decided; the proposer's withdrawal of an open
    // proposal is confirmed from the log, and `vote ls --state` lists it so.
    let decided = murmur(&["vote", "withdraw", &mine]).output().await?;
    let said = String::from_utf8_lossy(&decided.stderr);
    anyhow::ensure!(
        !decided.status.success() && said.contains("is already decided: rejected"),
        "withdraw a decided one: {said}"
    );
    let out = murmur(&[
        "vote",
        "propose",
        "--question",
        "drop it?",
        "--voter",
        &me,
        "--quorum",
        "1",
    ])
    .output()
    .await?;
    let dropped = proposal_id(out)?;
    let withdrawn = murmur(&["vote", "withdraw", &dropped, "--reason", "moot"])
        .output()
        .await?;
    anyhow::ensure!(
        withdrawn.status.success()
            && String::from_utf8_lossy(&withdrawn.stdout).contains(&format!("withdrew {dropped}")),
        "withdraw: {}",
        String::from_utf8_lossy(&withdrawn.stderr)
    );
    let listed = murmur(&["vote", "ls", "--state", "withdrawn"])
        .output()
        .await?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains(&dropped), "{listed}");
    assert!(!listed.contains(&mine), "only withdrawn ones: {listed}");

    // A proposal the CLI can see would never decide as asked is not written at all.
    let proposals = || async {
        let mut fold = Projector::new(
            observer.clone(),
            ConsensusProjection {
                realm: Token::new("acme")?,
            },
        );
        fold.catch_up().await?;
        let c = fold.state();
        anyhow::Ok(c.proposals.len() + c.refused_proposals.len())
    };
    let before = proposals().await?;
    for (args, why) in [
        (
            vec!["--voter", "UDEADBEEF"],
            "is not a participant's public key",
        ),
        (
            vec!["--voter", me.as_str(), "--quorum", "2"],
            "needs 2 votes",
        ),
        (
            vec!["--voter", me.as_str(), "--stimulus", "1.5"],
            "stimulus 1.5",
        ),
    ] {
        let out = murmur(&[&["vote", "propose", "--question", "bad"], args.as_slice()].concat())
            .output()
            .await?;
        let said = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            !out.status.success() && said.contains(why),
            "{args:?}: {said}"
        );
    }
    assert_eq!(proposals().await?, before, "nothing written");

    // Watching a proposal nobody answers gives up when told to, and says why it might be.
    let out = murmur(&["vote", "propose", "--question", "anyone?", "--voter", &me])
        .output()
        .await?;
    let unanswered = proposal_id(out)?;
    let watched = murmur(&["vote", "watch", &unanswered, "--timeout-s", "1"])
        .output()
        .await?;
    let said = String::from_utf8_lossy(&watched.stderr);
    anyhow::ensure!(
        !watched.status.success() && said.contains("is still open after 1 s"),
        "watch: {said}"
    );
    tallier.stop().await??;
    for (mut c, _) in voters {
        c.kill().await?;
    }
    Ok(())
}

/// A tallier stopped mid-vote and a new one started later resumes from the log and decides
/// what the votes say; the decision is written once although two talliers ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_tallier_resumes_from_the_log() -> Result<()> {
    let nats = TestNats::start().await?;
    let opener = nats.event_log("acme").await?;
    let (voters, keys) = voter_logs(&nats, 5).await?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut p = proposal(&key_refs, 5, Duration::from_secs(60));
    p.protocol = Protocol::Qualified {
        numerator: 2,
        denominator: 3,
    };
    opener.append(Draft::new(Token::new("p")?, &p)?).await?;
    let vote = |c: Choice| VoteCast {
        choice: c,
        reason: String::new(),
    };

    let tallier = nats.log_as("acme", Role::Tallier, "tallier").await?;
    let start = || {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let log = tallier.clone();
        let handle = tokio::spawn(async move {
            run_tallier(
                log,
                std::sync::Arc::new(murmur_subjects::clock::SystemClock),
                Duration::from_millis(50),
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
            )
            .await
        });
        (tx, handle)
    };
    let (stop1, first) = start();
    for v in &voters[..2] {
        v.append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
            .await?;
    }
    let _ = stop1.send(true);
    first.await??;
    // While no tallier runs, the rest vote: 4 approve, 1 reject = 4/5 ≥ 2/3.
    voters[2]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
        .await?;
    voters[3]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
        .await?;
    voters[4]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Reject))?)
        .await?;
    let (stop2, second) = start();
    let (stop3, third) = start();
    let d = wait_decided(&opener, "p").await?.proposals["p"]
        .decided
        .clone()
        .expect("decided");
    assert_eq!(
        (d.outcome.as_str(), d.approve, d.reject),
        ("approved", 4, 1)
    );
    let _ = stop2.send(true);
    let _ = stop3.send(true);
    let written = second.await?? + third.await??;
    assert_eq!(written, 1, "two talliers, one decision event stored");
    Ok(())
}

/// A vote forged with raw async-nats under a voter's key is dead-lettered (bad signature)
/// and never takes that voter's place; only the proposer can withdraw, and a withdrawn
/// proposal takes no votes and is never decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_votes_are_dead_lettered_and_only_the_proposer_withdraws() -> Result<()> {
    use murmur_subjects::binding::{self, ContentMode};
    use murmur_subjects::events::{DeadLetterReason, ProposalWithdrawn};
    let nats = TestNats::start().await?;
    let opener = nats.event_log("acme").await?;
    let auditor = murmur_e2e::spawn_auditor(&opener);
    let (voters, keys) = voter_logs(&nats, 3).await?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    opener
        .append(Draft::new(
            Token::new("p")?,
            &proposal(&key_refs, 3, Duration::from_secs(60)),
        )?)
        .await?;
    opener
        .append(Draft::new(
            Token::new("q")?,
            &proposal(&key_refs, 3, Duration::from_secs(60)),
        )?)
        .await?;
    let vote = |c: Choice| VoteCast {
        choice: c,
        reason: String::new(),
    };
    voters[0]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
        .await?;

    // Mallory signs a reject and claims voter 1's key.
    let mallory = Identity::generate();
    let mut forged =
        Draft::new(Token::new("p")?, &vote(Choice::Reject))?.seal(&mallory, &Token::new("acme")?);
    forged.record.source = keys[1].clone();
    let (h, b) = binding::encode(&forged.record, ContentMode::Binary, 1 << 20)?;
    murmur_e2e::publish_raw(&opener, forged.subject.as_str(), h.into(), b.to_vec()).await?;
    murmur_e2e::wait_for_dead_letter(&opener, "the forged vote", |d| {
        d.reason == DeadLetterReason::BadSignature && d.original_subject == forged.subject.as_str()
    })
    .await?;

    // An outsider cannot withdraw q; the proposer can.
    let outsider = nats.event_log("acme").await?;
    outsider
        .append(Draft::new(
            Token::new("q")?,
            &ProposalWithdrawn {
                reason: "mine now".into(),
            },
        )?)
        .await?;
    opener
        .append(Draft::new(
            Token::new("q")?,
            &ProposalWithdrawn {
                reason: "superseded".into(),
            },
        )?)
        .await?;
    voters[2]
        .append(Draft::new(Token::new("q")?, &vote(Choice::Approve))?)
        .await?;

    // Voter 1's own vote still counts: its place was not taken by the forgery.
    voters[1]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
        .await?;
    voters[2]
        .append(Draft::new(Token::new("p")?, &vote(Choice::Approve))?)
        .await?;
    let mut live = consensus_view(&opener)?;
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| {
            c.proposals.get("p").is_some_and(|p| p.votes.len() == 3)
                && c.proposals.get("q").is_some_and(|q| !q.refused.is_empty())
        })
        .await?,
        "votes not seen"
    );
    let c = live.state();
    assert_eq!(c.proposals["p"].votes.get(&keys[1]), Some(&Choice::Approve));
    assert!(
        c.proposals["p"].refused.is_empty(),
        "{:?}",
        c.proposals["p"].refused
    );
    assert_eq!(c.proposals["q"].withdrawn.as_deref(), Some("superseded"));
    assert_eq!(
        c.proposals["q"].refused,
        vec![(keys[2].clone(), VoteRefusal::Closed)]
    );
    // The forgery failed verification; the outsider's withdrawal was refused by the fold.
    assert!(live.stats().invalid >= 1, "{:?}", live.stats());
    assert!(live.stats().refused >= 1, "{:?}", live.stats());
    // A tallier decides p and leaves the withdrawn q alone.
    let tallier = murmur_e2e::spawn_tallier(nats.log_as("acme", Role::Tallier, "tallier").await?);
    anyhow::ensure!(
        live.follow_until(DEADLINE, |c: &Consensus| c.proposals["p"].decided.is_some())
            .await?,
        "p never decided"
    );
    assert!(live.state().proposals["q"].decided.is_none());
    tallier.stop().await??;
    let _ = auditor.stop.send(());
    auditor.task.await??;
    Ok(())
}
