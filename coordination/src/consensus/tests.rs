use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use murmur_subjects::events::{
    Choice, ProposalDeadlinePassed, ProposalDecided, ProposalOpened, ProposalWithdrawn, Protocol,
    VoteCast,
};
use murmur_subjects::{Payload, Projection, Token, VerifiedEvent};
use proptest::prelude::*;

use super::fold::*;
use super::rules::*;

fn opened(protocol: Protocol, voters: &[(&str, u32)], quorum: u32) -> ProposalOpened {
    ProposalOpened {
        question: "ship it?".into(),
        payload: serde_json::Value::Null,
        protocol,
        voters: voters.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        quorum,
        deadline: DateTime::<Utc>::from_timestamp(1_000, 0).expect("time"),
        category: "release".into(),
        stimulus: 0.6,
    }
}

fn at(s: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(s, 0).expect("time")
}

const FIVE: [(&str, u32); 5] = [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)];

#[test]
fn simple_majority_decides_as_soon_as_the_outcome_is_fixed() {
    let mut c = Consensus::default();
    c.open("p", opened(Protocol::SimpleMajority, &FIVE, 3));
    for v in ["a", "b"] {
        c.vote("p", v, Choice::Approve, at(10)).expect("counted");
        assert_eq!(
            c.pending_decision("p", at(10)),
            None,
            "2 of 5 cannot decide"
        );
    }
    c.vote("p", "c", Choice::Approve, at(11)).expect("counted");
    let d = c
        .pending_decision("p", at(11))
        .expect("3 of 5 approve: fixed");
    assert_eq!((d.outcome.as_str(), d.approve, d.votes), ("approved", 3, 3));
}

#[test]
fn qualified_unanimous_and_weighted_rules() {
    let two_thirds = Protocol::Qualified {
        numerator: 2,
        denominator: 3,
    };
    let votes = |list: &[(&str, Choice)]| -> BTreeMap<String, Choice> {
        list.iter().map(|(v, c)| (v.to_string(), *c)).collect()
    };
    let all: BTreeSet<String> = FIVE.iter().map(|(v, _)| v.to_string()).collect();
    let p = opened(two_thirds, &FIVE, 3);
    let three_two = votes(&[
        ("a", Choice::Approve),
        ("b", Choice::Approve),
        ("c", Choice::Approve),
        ("d", Choice::Reject),
        ("e", Choice::Reject),
    ]);
    assert_eq!(
        decide(&p, &three_two, &all, true).map(|d| d.0),
        Some(Outcome::Rejected),
        "3/5 < 2/3"
    );
    let p = opened(Protocol::Unanimous, &FIVE, 1);
    let one_no = votes(&[("a", Choice::Approve), ("b", Choice::Reject)]);
    assert_eq!(
        decide(&p, &one_no, &all, false).map(|d| d.0),
        Some(Outcome::Rejected),
        "one reject ends unanimity"
    );
    let p = opened(Protocol::Weighted, &[("big", 5), ("s1", 1), ("s2", 1)], 1);
    let w: BTreeSet<String> = ["big", "s1", "s2"].map(String::from).into();
    let big_yes = votes(&[("big", Choice::Approve)]);
    assert_eq!(
        decide(&p, &big_yes, &w, false).map(|d| d.0),
        Some(Outcome::Approved),
        "5 > 1 + 1"
    );
}

#[test]
fn no_quorum_when_it_cannot_be_reached_and_at_the_deadline() {
    let mut c = Consensus::default();
    c.open("p", opened(Protocol::SimpleMajority, &FIVE, 4));
    c.vote("p", "a", Choice::Approve, at(10)).expect("counted");
    assert_eq!(c.pending_decision("p", at(20)), None);
    let d = c.pending_decision("p", at(1_001)).expect("deadline passed");
    assert_eq!(d.outcome, "no_quorum");
    // Nobody answered by the deadline: expired.
    c.open("q", opened(Protocol::SimpleMajority, &FIVE, 1));
    assert_eq!(c.pending_decision("q", at(20)), None);
    let d = c.pending_decision("q", at(1_001)).expect("deadline passed");
    assert_eq!((d.outcome.as_str(), d.votes), ("expired", 0));
    // Too few voters left to reach the quorum is decided at once, votes or none.
    c.open("r", opened(Protocol::SimpleMajority, &[("a", 1)], 2));
    let d = c.pending_decision("r", at(20)).expect("unreachable");
    assert_eq!(d.outcome, "no_quorum");
}

#[test]
fn the_open_index_follows_decisions_and_withdrawals() {
    let mut c = Consensus::default();
    for id in ["p1", "p2", "p3", "p4"] {
        c.open(id, opened(Protocol::SimpleMajority, &FIVE, 3));
        c.proposals.get_mut(id).expect("opened").proposer = "alice".into();
    }
    c.record_decision("p1", Tally::default().decided(Outcome::Approved));
    c.withdraw("p2", "alice", "changed my mind".into())
        .expect("the proposer withdraws");
    assert!(c.withdraw("p3", "mallory", "no".into()).is_err());
    c.record_decision("p2", Tally::default().decided(Outcome::Approved));
    let scan: Vec<&String> = c
        .proposals
        .iter()
        .filter(|(_, p)| p.decided.is_none() && p.withdrawn.is_none())
        .map(|(id, _)| id)
        .collect();
    let open: Vec<&String> = c.open_proposals().map(|(id, _)| id).collect();
    assert_eq!(open, scan);
    assert_eq!(open, ["p3", "p4"]);
    // The first of decision and withdrawal closes it.
    let states: Vec<&str> = c.proposals.values().map(Proposal::state_name).collect();
    assert_eq!(states, ["approved", "withdrawn", "open", "open"]);
    assert!(c.proposals["p2"].decided.is_none());
}

#[test]
fn refused_votes_are_typed_and_recorded() {
    let mut c = Consensus::default();
    c.open("p", opened(Protocol::SimpleMajority, &FIVE, 5));
    assert_eq!(
        c.vote("nope", "a", Choice::Approve, at(1)),
        Err(VoteRefusal::UnknownProposal)
    );
    assert_eq!(
        c.vote("p", "mallory", Choice::Approve, at(1)),
        Err(VoteRefusal::NotAVoter)
    );
    c.vote("p", "a", Choice::Approve, at(1)).expect("counted");
    assert_eq!(
        c.vote("p", "a", Choice::Reject, at(2)),
        Err(VoteRefusal::DuplicateVote)
    );
    assert_eq!(
        c.vote("p", "b", Choice::Approve, at(1_001)),
        Err(VoteRefusal::AfterDeadline)
    );
    c.record_decision("p", Tally::default().decided(Outcome::Rejected));
    assert_eq!(
        c.vote("p", "c", Choice::Approve, at(3)),
        Err(VoteRefusal::Closed)
    );
    assert_eq!(c.proposals["p"].refused.len(), 4);
    assert_eq!(c.proposals["p"].votes.len(), 1, "the first vote counts");
}

#[test]
fn proposals_that_could_not_be_decided_as_asked_are_refused() {
    use murmur_subjects::Identity;
    let keys: Vec<String> = (0..3)
        .map(|_| Identity::generate().public_key().to_string())
        .collect();
    let valid = |protocol: Protocol, quorum: u32| {
        let mut p = opened(protocol, &[], quorum);
        p.voters = keys.iter().map(|k| (k.clone(), 1)).collect();
        p
    };
    let adaptive = |rule: Protocol, min_responders: u32| Protocol::AdaptiveThreshold {
        rule: Box::new(rule),
        min_responders,
    };
    for ok in [
        valid(Protocol::SimpleMajority, 3),
        valid(Protocol::Unanimous, 1),
        valid(adaptive(Protocol::Unanimous, 2), 1),
        valid(
            Protocol::Qualified {
                numerator: 3,
                denominator: 3,
            },
            2,
        ),
    ] {
        check_proposal(&ok).expect("valid");
    }
    let with = |f: &dyn Fn(&mut ProposalOpened)| {
        let mut p = valid(Protocol::SimpleMajority, 2);
        f(&mut p);
        check_proposal(&p).expect_err("refused")
    };
    assert_eq!(with(&|p| p.voters.clear()), ProposalError::NoVoters);
    assert!(matches!(
        with(&|p| {
            p.voters.insert("UDEADBEEF".into(), 1);
        }),
        ProposalError::BadVoterKey { key, .. } if key == "UDEADBEEF"
    ));
    assert_eq!(with(&|p| p.quorum = 0), ProposalError::ZeroQuorum);
    assert_eq!(
        with(&|p| p.quorum = 4),
        ProposalError::QuorumAboveVoters {
            needed: 4,
            voters: 3
        }
    );
    assert_eq!(
        with(&|p| p.protocol = adaptive(Protocol::SimpleMajority, 5)),
        ProposalError::QuorumAboveVoters {
            needed: 5,
            voters: 3
        },
        "min responders count as the quorum"
    );
    for stimulus in [f64::NAN, -0.1, 1.5] {
        assert!(matches!(
            with(&|p| p.stimulus = stimulus),
            ProposalError::StimulusOutOfRange(_)
        ));
    }
    for (numerator, denominator) in [(0, 3), (4, 3), (1, 0)] {
        let q = Protocol::Qualified {
            numerator,
            denominator,
        };
        assert!(matches!(
            with(&|p| p.protocol = q.clone()),
            ProposalError::BadFraction { .. }
        ));
        assert!(matches!(
            with(&|p| p.protocol = adaptive(q.clone(), 1)),
            ProposalError::BadFraction { .. }
        ));
    }
    assert!(matches!(
        with(&|p| p.protocol = adaptive(adaptive(Protocol::SimpleMajority, 1), 1)),
        ProposalError::BadAdaptiveRule(_)
    ));
    assert!(matches!(
        with(&|p| p.protocol = adaptive(Protocol::Weighted, 1)),
        ProposalError::BadAdaptiveRule(_)
    ));
    assert_eq!(
        with(&|p| p.protocol = adaptive(Protocol::SimpleMajority, 0)),
        ProposalError::ZeroResponders
    );
    assert_eq!(
        with(&|p| {
            p.protocol = Protocol::Weighted;
            p.voters.values_mut().for_each(|w| *w = 0);
        }),
        ProposalError::NoWeight
    );
}

/// An `opened` written past the CLI's checks (raw NATS) is refused by the fold and
/// recorded with its reason; votes on it never count, and its id is not reusable.
#[test]
fn the_fold_records_a_refused_proposal_and_counts_no_vote_on_it() {
    use crate::test_log::Log;
    use murmur_subjects::Identity;
    let fold = ConsensusProjection {
        realm: Token::new("r").expect("token"),
    };
    let (proposer, voter) = (Identity::generate(), Identity::generate());
    let mut log = Log::new();
    let mut state = Consensus::default();
    let mut bad = opened(Protocol::SimpleMajority, &[], 1);
    bad.voters = [
        (voter.public_key().to_string(), 1),
        ("UTYPO".to_string(), 1),
    ]
    .into();
    let e = log.event(&proposer, "p", &bad, 0);
    let refusal = fold.apply(&mut state, &e).expect_err("refused");
    assert!(refusal.0.contains("UTYPO"), "{refusal}");
    assert!(matches!(
        state.refused_proposals.get("p"),
        Some(ProposalError::BadVoterKey { .. })
    ));
    assert!(state.proposals.is_empty());
    let vote = VoteCast {
        choice: Choice::Approve,
        reason: String::new(),
    };
    let e = log.event(&voter, "p", &vote, 1);
    fold.apply(&mut state, &e).expect_err("no such proposal");
    assert_eq!(
        state.orphan_votes,
        vec![("p".to_string(), voter.public_key().to_string())]
    );
    // The same id opened again, validly: still refused, the first `opened` decided.
    bad.voters = [(voter.public_key().to_string(), 1)].into();
    let e = log.event(&proposer, "p", &bad, 2);
    fold.apply(&mut state, &e).expect_err("id taken");
    assert!(state.proposals.is_empty());
}

/// A voter agent folds only opened, decided and withdrawn events (`BallotProjection`).
/// Along adaptive proposals with shifting participation, and a withdrawal, it must
/// agree with the full fold on what is open, who is asked, and every threshold.
#[test]
fn voters_fold_without_the_votes_and_agree_with_the_full_fold() {
    use crate::test_log::Log;
    use murmur_subjects::Identity;

    let realm = Token::new("r").expect("token");
    let full = ConsensusProjection {
        realm: realm.clone(),
    };
    let ballots = BallotProjection::new(realm);
    let (proposer, tallier) = (Identity::generate(), Identity::generate());
    let voters: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mut log = Log::new();
    log.grant(&tallier, murmur_subjects::roles::Role::Tallier);
    let (mut all, mut narrow) = (Consensus::default(), Consensus::default());
    let feed = |all: &mut Consensus, narrow: &mut Consensus, event: &VerifiedEvent| {
        full.apply(all, event).expect("full fold");
        let ty = event.record.ty.as_str();
        // What the server's filters deliver to a voter.
        if [
            ProposalOpened::TYPE,
            ProposalDecided::TYPE,
            ProposalWithdrawn::TYPE,
        ]
        .contains(&ty)
        {
            ballots.apply(narrow, event).expect("ballot fold");
        }
    };
    let mut clock = 0;
    for round in 0..8 {
        let id = format!("p{round}");
        clock += 100_000;
        let mut opened = opened(
            Protocol::AdaptiveThreshold {
                rule: Box::new(Protocol::SimpleMajority),
                min_responders: 1,
            },
            &[],
            1,
        );
        opened.voters = voters
            .iter()
            .map(|v| (v.public_key().to_string(), 1))
            .collect();
        opened.deadline = log.start + chrono::Duration::milliseconds(clock + 10_000);
        let e = log.event(&proposer, &id, &opened, clock);
        feed(&mut all, &mut narrow, &e);
        if round == 7 {
            let w = ProposalWithdrawn {
                reason: "moot".into(),
            };
            let e = log.event(&proposer, &id, &w, clock + 1);
            feed(&mut all, &mut narrow, &e);
            break;
        }
        // Voter 0 always answers, voter 1 every other round, voter 2 never.
        for (i, v) in voters.iter().enumerate() {
            let asked = all.proposals[&id].electorate.contains(v.public_key());
            if asked && (i == 0 || (i == 1 && round % 2 == 0)) {
                let vote = VoteCast {
                    choice: Choice::Approve,
                    reason: String::new(),
                };
                let e = log.event(v, &id, &vote, clock + 10);
                feed(&mut all, &mut narrow, &e);
            }
        }
        // The tallier decides, at the deadline if need be, naming the participants.
        let mut decision = {
            let p = &all.proposals[&id];
            decide(&p.opened, &p.votes, &p.electorate, false)
        };
        if decision.is_none() {
            let e = log.event(&tallier, &id, &ProposalDeadlinePassed {}, clock + 20_000);
            feed(&mut all, &mut narrow, &e);
            let p = &all.proposals[&id];
            decision = decide(&p.opened, &p.votes, &p.electorate, true);
        }
        let (outcome, tally) = decision.expect("decided");
        let decided = ProposalDecided {
            participants: Some(all.proposals[&id].votes.keys().cloned().collect()),
            ..tally.decided(outcome)
        };
        let e = log.event(&tallier, &id, &decided, clock + 20_001);
        feed(&mut all, &mut narrow, &e);

        assert_eq!(narrow.thresholds, all.thresholds, "round {round}");
    }
    assert_eq!(narrow.open, all.open);
    for (id, p) in &all.proposals {
        let n = &narrow.proposals[id];
        assert_eq!(n.electorate, p.electorate, "{id}");
        assert_eq!(n.decided, p.decided, "{id}");
        assert_eq!(n.withdrawn.is_some(), p.withdrawn.is_some(), "{id}");
        assert!(n.votes.is_empty(), "no vote read");
    }
    // Participation moved the thresholds apart, so the electorates differed.
    let key = |i: usize| voters[i].public_key().to_string();
    let (eager, silent) = (
        all.thresholds.get(&key(0), "release"),
        all.thresholds.get(&key(2), "release"),
    );
    assert!(eager < silent, "{eager} vs {silent}");
    assert!(!all.proposals["p6"].electorate.contains(&key(2)));
}

/// A decision counts only from a tallier, and only when it follows from the counted
/// votes: a tallier's key marking a proposal with no votes approved is refused, and a
/// vote stored between the tallier's read and its decision does not make the
/// decision's tally wrong (the decision names whose votes it counted).
#[test]
fn decisions_need_a_tallier_and_grounds_in_the_counted_votes() {
    use crate::test_log::Log;
    use murmur_subjects::Identity;
    use murmur_subjects::roles::Role;

    let full = ConsensusProjection {
        realm: Token::new("r").expect("token"),
    };
    let (proposer, tallier, impostor) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let voters: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mut log = Log::new();
    log.grant(&tallier, Role::Tallier);
    let mut state = Consensus::default();
    let mut p = opened(Protocol::SimpleMajority, &[], 2);
    p.voters = voters
        .iter()
        .map(|v| (v.public_key().to_string(), 1))
        .collect();
    p.deadline = log.start + chrono::Duration::seconds(60);
    full.apply(&mut state, &log.event(&proposer, "p1", &p, 0))
        .expect("opened");
    let approved = |votes: u32, named: &[&Identity]| ProposalDecided {
        outcome: "approved".into(),
        approve: u64::from(votes),
        reject: 0,
        abstain: 0,
        votes,
        participants: Some(named.iter().map(|v| v.public_key().to_string()).collect()),
    };
    // No votes yet: a tallier's "approved" has no grounds; an impostor's is not a
    // tallier's.
    let forged = full.apply(&mut state, &log.event(&tallier, "p1", &approved(0, &[]), 1));
    assert!(
        forged
            .expect_err("no grounds")
            .0
            .contains("does not follow")
    );
    let impostor_says = full.apply(
        &mut state,
        &log.event(&impostor, "p1", &approved(2, &[&voters[0], &voters[1]]), 2),
    );
    assert!(
        impostor_says
            .expect_err("not a tallier")
            .0
            .contains("tallier role")
    );
    assert!(state.proposals["p1"].decided.is_none());
    for (i, v) in voters.iter().enumerate() {
        // The first voter says why; a reason is kept with the vote it came with.
        let yes = VoteCast {
            choice: Choice::Approve,
            reason: if i == 0 {
                "the tests pass".into()
            } else {
                "  ".into()
            },
        };
        full.apply(&mut state, &log.event(v, "p1", &yes, 10 + i as i64))
            .expect("vote");
    }
    assert_eq!(
        state.proposals["p1"].reasons,
        BTreeMap::from([(
            voters[0].public_key().to_string(),
            "the tests pass".to_string()
        )])
    );
    // Naming a voter whose vote was not counted is refused.
    let stranger = Identity::generate();
    let named_stranger = full.apply(
        &mut state,
        &log.event(&tallier, "p1", &approved(2, &[&voters[0], &stranger]), 20),
    );
    assert!(
        named_stranger
            .expect_err("stranger")
            .0
            .contains("was not counted")
    );
    // The tallier decided on two votes; the third was stored before its decision.
    full.apply(
        &mut state,
        &log.event(&tallier, "p1", &approved(2, &[&voters[0], &voters[1]]), 21),
    )
    .expect("grounded in the votes it names");
    assert_eq!(
        state.proposals["p1"]
            .decided
            .as_ref()
            .map(|d| d.outcome.as_str()),
        Some("approved")
    );
}

#[test]
fn threshold_entries_split_category_and_voter() {
    let mut t = Thresholds::default();
    let p = {
        let mut p = opened(Protocol::SimpleMajority, &[("UA", 1), ("UB", 1)], 1);
        p.category = "ops/db".into();
        p
    };
    t.update(&p, &["UA".to_string()].into());
    let entries: Vec<_> = t.entries().collect();
    assert_eq!(
        entries,
        vec![
            ("ops/db", "UA", Thresholds::INITIAL - Thresholds::LEARN),
            ("ops/db", "UB", Thresholds::INITIAL + Thresholds::FORGET),
        ]
    );
}

#[test]
fn thresholds_move_with_participation() {
    let adaptive = Protocol::AdaptiveThreshold {
        rule: Box::new(Protocol::SimpleMajority),
        min_responders: 1,
    };
    let mut c = Consensus::default();
    for round in 0..3 {
        let id = format!("p{round}");
        c.open(
            &id,
            opened(adaptive.clone(), &[("eager", 1), ("quiet", 1)], 1),
        );
        assert!(c.proposals[&id].electorate.contains("eager"));
        c.vote(&id, "eager", Choice::Approve, at(5))
            .expect("responds");
        let d = c
            .pending_decision(&id, at(1_001))
            .expect("decided at deadline");
        c.record_decision(&id, d);
    }
    let eager = c.thresholds.get("eager", "release");
    let quiet = c.thresholds.get("quiet", "release");
    assert!((eager - 0.2).abs() < 1e-9, "responding lowered it: {eager}");
    assert!((quiet - 0.65).abs() < 1e-9, "silence raised it: {quiet}");
    // At 0.65, the quiet voter no longer responds to a 0.6 stimulus.
    c.open("p3", opened(adaptive, &[("eager", 1), ("quiet", 1)], 1));
    assert!(!c.proposals["p3"].electorate.contains("quiet"));
    // The whole state serialises (checkpoints) and reads back equal.
    let json = serde_json::to_string(&c).expect("serialises");
    assert_eq!(
        serde_json::from_str::<Consensus>(&json).expect("reads back"),
        c
    );
    assert_eq!(
        c.vote("p3", "quiet", Choice::Reject, at(5)),
        Err(VoteRefusal::NotResponding)
    );
}

#[test]
fn reputation_counts_completed_tasks() {
    let mut book = crate::tasks::TaskBook::default();
    let task = |state| crate::tasks::Task {
        submitter: "s".into(),
        requirements: Default::default(),
        priority: 0,
        max_attempts: 3,
        lease_ms: 1,
        attempt: 1,
        failures: vec![],
        state,
        submitted_sequence: 1,
        last_sequence: 1,
        input: serde_json::Value::Null,
        correlation_id: String::new(),
        last_event_id: String::new(),
        depends_on: vec![],
        fail_with_dependency: false,
        output: None,
        sender: None,
        questions: Vec::new(),
    };
    let done = |a: &str| crate::tasks::TaskState::Completed { agent: a.into() };
    book.tasks.insert("t1".into(), task(done("alice")));
    book.tasks.insert("t2".into(), task(done("alice")));
    book.tasks.insert("t3".into(), task(done("bob")));
    book.tasks
        .insert("t4".into(), task(crate::tasks::TaskState::Cancelled));
    let rep = reputation(&book);
    assert_eq!(rep.get("alice"), Some(&3));
    assert_eq!(rep.get("bob"), Some(&2));
    assert_eq!(
        rep.get("carol"),
        None,
        "unknown agents default to 1 at the caller"
    );
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        Just(Choice::Approve),
        Just(Choice::Reject),
        Just(Choice::Abstain)
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::SimpleMajority),
        Just(Protocol::Qualified {
            numerator: 2,
            denominator: 3
        }),
        Just(Protocol::Weighted),
        Just(Protocol::Unanimous),
    ]
}

proptest! {
    /// The order of votes within the deadline never changes the decision, early
    /// decisions agree with the full count, and votes after the deadline never count.
    #[test]
    fn vote_order_does_not_change_the_result(
        protocol in protocol(),
        weights in proptest::collection::vec(1u32..5, 1..9),
        choices in proptest::collection::vec(choice(), 9),
        late in proptest::collection::vec(choice(), 0..4),
        quorum in 1u32..9,
        seed in any::<u64>(),
    ) {
        let voters: Vec<(String, u32)> = weights.iter().enumerate().map(|(i, w)| (format!("v{i}"), *w)).collect();
        let voter_refs: Vec<(&str, u32)> = voters.iter().map(|(v, w)| (v.as_str(), *w)).collect();
        let p = opened(protocol, &voter_refs, quorum);
        let cast: Vec<(String, Choice)> = voters.iter().zip(&choices).map(|((v, _), c)| (v.clone(), *c)).collect();
        let run = |order: &[(String, Choice)]| {
            let mut c = Consensus::default();
            c.open("p", p.clone());
            for (v, ch) in order {
                if c.pending_decision("p", at(500)).is_some() {
                    break;
                }
                let _ = c.vote("p", v, *ch, at(500));
            }
            // Late votes (after the deadline) are refused.
            for (i, ch) in late.iter().enumerate() {
                let v = &voters[i % voters.len()].0;
                let _ = c.vote("p", v, *ch, at(2_000));
            }
            c.pending_decision("p", at(500))
                .or_else(|| c.pending_decision("p", at(2_000)))
                .map(|d| d.outcome)
        };
        let full = {
            let all: BTreeMap<String, Choice> = cast.iter().cloned().collect();
            let electorate: BTreeSet<String> = voters.iter().map(|(v, _)| v.clone()).collect();
            decide(&p, &all, &electorate, true).map(|d| d.0.as_str().to_string())
        };
        let mut shuffled = cast.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let in_order = run(&cast);
        let reordered = run(&shuffled);
        prop_assert_eq!(&in_order, &reordered);
        prop_assert_eq!(in_order, full);
    }
}

/// Each refusal of the consensus fold is its own typed kind, and leaves the state as it
/// was but for what it records on purpose (a refused vote, a refused proposal).
#[test]
fn refusals_are_typed_and_leave_the_proposals_as_they_were() {
    use crate::test_log::Log;
    use murmur_subjects::Identity;
    use murmur_subjects::roles::Role;
    let fold = ConsensusProjection {
        realm: Token::new("r").expect("token"),
    };
    let (proposer, voter, outsider, tallier) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut log = Log::new();
    log.grant(&tallier, Role::Tallier);
    let mut state = Consensus::default();
    let unchanged = |state: &mut Consensus, event: &VerifiedEvent| {
        let before = state.clone();
        let refused = fold.apply_event(state, event).expect_err("refused");
        assert_eq!(*state, before, "{refused}: the proposals did not change");
        refused
    };
    let withdraw = ProposalWithdrawn {
        reason: "no".into(),
    };
    assert_eq!(
        unchanged(&mut state, &log.event(&proposer, "p", &withdraw, 0)),
        ProposalRefusal::UnknownProposal("p".into())
    );
    let mut asked = opened(Protocol::SimpleMajority, &[], 1);
    asked.deadline = log.start + chrono::Duration::days(1);
    assert!(matches!(
        fold.apply_event(&mut state, &log.event(&proposer, "bad", &asked, 1)),
        Err(ProposalRefusal::Invalid {
            error: ProposalError::NoVoters,
            ..
        })
    ));
    asked.voters = [(voter.public_key().to_string(), 1)].into();
    fold.apply_event(&mut state, &log.event(&proposer, "p", &asked, 2))
        .expect("opened");
    assert_eq!(
        unchanged(&mut state, &log.event(&proposer, "p", &asked, 3)),
        ProposalRefusal::AlreadyExists("p".into())
    );
    assert!(matches!(
        unchanged(&mut state, &log.event(&outsider, "p", &withdraw, 4)),
        ProposalRefusal::NotProposer { .. }
    ));
    let approve = VoteCast {
        choice: Choice::Approve,
        reason: String::new(),
    };
    assert_eq!(
        fold.apply_event(&mut state, &log.event(&outsider, "p", &approve, 5)),
        Err(ProposalRefusal::Vote {
            voter: outsider.public_key().into(),
            refusal: VoteRefusal::NotAVoter
        })
    );
    assert_eq!(
        state.proposals["p"].refused.len(),
        1,
        "the refused vote is recorded"
    );
    let claimed = ProposalDecided {
        outcome: "approved".into(),
        approve: 1,
        reject: 0,
        abstain: 0,
        votes: 1,
        participants: Some([voter.public_key().to_string()].into()),
    };
    assert!(matches!(
        unchanged(&mut state, &log.event(&outsider, "p", &claimed, 6)),
        ProposalRefusal::NotTallier { .. }
    ));
    assert!(matches!(
        unchanged(&mut state, &log.event(&tallier, "p", &claimed, 7)),
        ProposalRefusal::UncountedVoter { .. }
    ));
    fold.apply_event(&mut state, &log.event(&voter, "p", &approve, 8))
        .expect("counted");
    let wrong = ProposalDecided {
        outcome: "rejected".into(),
        approve: 0,
        reject: 1,
        ..claimed.clone()
    };
    assert!(matches!(
        unchanged(&mut state, &log.event(&tallier, "p", &wrong, 9)),
        ProposalRefusal::Ungrounded { counted: 1, .. }
    ));
    fold.apply_event(&mut state, &log.event(&tallier, "p", &claimed, 10))
        .expect("decided");
    assert!(!state.is_open("p"));
}
