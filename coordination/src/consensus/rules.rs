//! Counting rules, pure: proposal checks, tallies, early decisions, response thresholds.

use std::collections::{BTreeMap, BTreeSet};

use murmur_subjects::events::{Choice, ProposalDecided, ProposalOpened, Protocol};
use serde::{Deserialize, Serialize};

/// How a proposal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule approved.
    Approved,
    /// The rule rejected.
    Rejected,
    /// Too few votes: fewer than the quorum by the deadline, or too few voters left to reach
    /// it.
    NoQuorum,
    /// The deadline passed and no voter answered at all (a sign that the voters are not
    /// there, rather than that too few agreed to take part).
    Expired,
}

impl Outcome {
    /// The name written in `proposal.decided`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Rejected => "rejected",
            Outcome::NoQuorum => "no_quorum",
            Outcome::Expired => "expired",
        }
    }
}

/// Why a vote was not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum VoteRefusal {
    /// No such proposal.
    #[error("unknown proposal")]
    UnknownProposal,
    /// Already decided or withdrawn.
    #[error("the proposal is closed")]
    Closed,
    /// Stored after the deadline.
    #[error("cast after the deadline")]
    AfterDeadline,
    /// Not in the voter set.
    #[error("not in the voter set")]
    NotAVoter,
    /// The voter already voted (the first vote counts).
    #[error("the voter already voted; the first vote counts")]
    DuplicateVote,
    /// Adaptive protocol: the voter's threshold is above the stimulus, so it does not respond.
    #[error("threshold above the proposal's stimulus: this voter does not respond")]
    NotResponding,
    /// The vote's payload did not decode.
    #[error("malformed vote: {0}")]
    Malformed(String),
}

/// Why a proposal cannot be opened. `murmur vote propose` checks before writing; the fold
/// checks every stored `opened` (one written with raw NATS included), and records a refused
/// proposal with its reason instead of opening it, so no vote on it ever counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ProposalError {
    /// The voter set is empty.
    #[error("no voters")]
    NoVoters,
    /// A voter is not a participant's public key.
    #[error("voter {key:?} is not a participant's public key: {reason}")]
    BadVoterKey {
        /// The key as given (at most 80 characters).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A quorum of 0 would decide on no votes at all.
    #[error("the quorum must be at least 1")]
    ZeroQuorum,
    /// More votes are needed than there are voters: it could never be decided.
    #[error("it needs {needed} votes but has only {voters} voter(s)")]
    QuorumAboveVoters {
        /// The quorum (for the adaptive protocol, the larger of quorum and min responders).
        needed: u32,
        /// Voters in the set.
        voters: u32,
    },
    /// The stimulus is not a number in 0..=1.
    #[error("stimulus {0} is not between 0 and 1")]
    StimulusOutOfRange(String),
    /// A qualified fraction outside (0, 1].
    #[error("fraction {numerator}/{denominator} is not above 0 and at most 1")]
    BadFraction {
        /// Numerator.
        numerator: u32,
        /// Denominator.
        denominator: u32,
    },
    /// The adaptive protocol's own rule.
    #[error(
        "the adaptive protocol counts responders by simple majority, a qualified fraction or unanimity, not by {0}"
    )]
    BadAdaptiveRule(String),
    /// The adaptive protocol needs at least one responder.
    #[error("the adaptive protocol needs at least 1 responder")]
    ZeroResponders,
    /// Weighted voting where no voter has any weight.
    #[error("weighted voting with every weight 0")]
    NoWeight,
}

/// Checks a proposal before it is opened (pure): voters are participants' public keys, the
/// quorum can be reached, the stimulus is in 0..=1, fractions are fractions, and the adaptive
/// protocol's rule is one that counts responders.
pub fn check_proposal(p: &ProposalOpened) -> Result<(), ProposalError> {
    if p.voters.is_empty() {
        return Err(ProposalError::NoVoters);
    }
    for key in p.voters.keys() {
        murmur_subjects::identity::check_public_key(key).map_err(|e| {
            ProposalError::BadVoterKey {
                key: key.chars().take(80).collect(),
                reason: match e {
                    murmur_subjects::identity::IdentityError::InvalidPublicKey {
                        reason, ..
                    } => reason,
                    other => other.to_string(),
                },
            }
        })?;
    }
    if p.quorum == 0 {
        return Err(ProposalError::ZeroQuorum);
    }
    if !(0.0..=1.0).contains(&p.stimulus) {
        return Err(ProposalError::StimulusOutOfRange(p.stimulus.to_string()));
    }
    let fraction = |protocol: &Protocol| match *protocol {
        Protocol::Qualified {
            numerator,
            denominator,
        } if numerator == 0 || denominator == 0 || numerator > denominator => {
            Err(ProposalError::BadFraction {
                numerator,
                denominator,
            })
        }
        _ => Ok(()),
    };
    fraction(&p.protocol)?;
    match &p.protocol {
        Protocol::AdaptiveThreshold {
            rule,
            min_responders,
        } => {
            match rule.as_ref() {
                Protocol::SimpleMajority | Protocol::Qualified { .. } | Protocol::Unanimous => {}
                Protocol::Weighted => {
                    return Err(ProposalError::BadAdaptiveRule("weight".into()));
                }
                Protocol::AdaptiveThreshold { .. } => {
                    return Err(ProposalError::BadAdaptiveRule(
                        "another adaptive rule".into(),
                    ));
                }
            }
            fraction(rule)?;
            if *min_responders == 0 {
                return Err(ProposalError::ZeroResponders);
            }
        }
        Protocol::Weighted if p.voters.values().all(|w| *w == 0) => {
            return Err(ProposalError::NoWeight);
        }
        _ => {}
    }
    let voters = u32::try_from(p.voters.len()).unwrap_or(u32::MAX);
    let needed = quorum(p);
    if needed > voters {
        return Err(ProposalError::QuorumAboveVoters { needed, voters });
    }
    Ok(())
}

/// Counted weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Approve weight.
    pub approve: u64,
    /// Reject weight.
    pub reject: u64,
    /// Abstentions (count).
    pub abstain: u64,
    /// Votes counted.
    pub votes: u32,
    /// Voters who approved (count), for unanimity.
    pub approvers: u32,
}

impl Tally {
    fn add(&mut self, choice: Choice, weight: u64) {
        self.votes += 1;
        match choice {
            Choice::Approve => {
                self.approve += weight;
                self.approvers += 1;
            }
            Choice::Reject => self.reject += weight,
            Choice::Abstain => self.abstain += 1,
        }
    }

    /// The `proposal.decided` payload for `outcome`.
    pub fn decided(&self, outcome: Outcome) -> ProposalDecided {
        ProposalDecided {
            outcome: outcome.as_str().into(),
            approve: self.approve,
            reject: self.reject,
            abstain: self.abstain,
            votes: self.votes,
            participants: None,
        }
    }
}

pub(super) fn weight(p: &ProposalOpened, voter: &str) -> u64 {
    match p.protocol {
        Protocol::Weighted => u64::from(p.voters.get(voter).copied().unwrap_or(0)),
        _ => 1,
    }
}

/// The rule's verdict on a tally (quorum aside). `electorate`: voters expected to answer.
pub(super) fn verdict(protocol: &Protocol, t: &Tally, electorate: u32) -> Outcome {
    let yes = |b: bool| {
        if b {
            Outcome::Approved
        } else {
            Outcome::Rejected
        }
    };
    match protocol {
        Protocol::SimpleMajority | Protocol::Weighted => yes(t.approve > t.reject),
        Protocol::Qualified {
            numerator,
            denominator,
        } => {
            let counted = t.approve + t.reject;
            yes(counted > 0
                && t.approve * u64::from(*denominator) >= u64::from(*numerator) * counted)
        }
        Protocol::Unanimous => yes(electorate > 0 && t.approvers == electorate),
        Protocol::AdaptiveThreshold { rule, .. } => verdict(rule, t, electorate),
    }
}

pub(super) fn quorum(p: &ProposalOpened) -> u32 {
    match &p.protocol {
        Protocol::AdaptiveThreshold { min_responders, .. } => p.quorum.max(*min_responders),
        _ => p.quorum,
    }
}

/// Decides if possible. `votes`: counted votes by voter; `electorate`: voters whose votes
/// can count (the voter set, or for the adaptive protocol those who respond); `closed`: the
/// deadline has passed (by the stream's clock).
pub fn decide(
    p: &ProposalOpened,
    votes: &BTreeMap<String, Choice>,
    electorate: &BTreeSet<String>,
    closed: bool,
) -> Option<(Outcome, Tally)> {
    let mut t = Tally::default();
    for (voter, choice) in votes {
        t.add(*choice, weight(p, voter));
    }
    let size = electorate.len() as u32;
    let remaining: Vec<&String> = electorate
        .iter()
        .filter(|v| !votes.contains_key(*v))
        .collect();
    let need = quorum(p);
    if closed {
        return Some(if t.votes == 0 {
            (Outcome::Expired, t)
        } else if t.votes < need {
            (Outcome::NoQuorum, t)
        } else {
            (verdict(&p.protocol, &t, size), t)
        });
    }
    if t.votes + (remaining.len() as u32) < need {
        return Some((Outcome::NoQuorum, t));
    }
    if t.votes < need {
        return None;
    }
    let extreme = |choice: Choice| {
        let mut e = t;
        for v in &remaining {
            e.add(choice, weight(p, v));
        }
        verdict(&p.protocol, &e, size)
    };
    let (best, worst) = (extreme(Choice::Approve), extreme(Choice::Reject));
    (best == worst && best == verdict(&p.protocol, &t, size)).then_some((best, t))
}

/// Reputation from past task outcomes: 1 + the number of tasks each agent completed (pure).
/// A proposer snapshots these into a weighted proposal's voter weights, so the tally stays a
/// function of the proposal itself and replays identically.
pub fn reputation(book: &crate::tasks::TaskBook) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for t in book.tasks.values() {
        if let crate::tasks::TaskState::Completed { agent } = &t.state {
            *out.entry(agent.clone()).or_insert(1) += 1;
        }
    }
    out
}

/// Response thresholds (per voter and category) of the adaptive protocol, as in the
/// response-threshold model of social insects: a voter responds when the stimulus reaches
/// its threshold; responding lowers the threshold (it specialises), staying silent raises it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Threshold by `category/voter` (a string key, so the state serialises as JSON);
    /// missing means [`Thresholds::INITIAL`].
    pub by: BTreeMap<String, f64>,
}

impl Thresholds {
    /// A voter's threshold before it ever took part.
    pub const INITIAL: f64 = 0.5;
    /// How much responding lowers it.
    pub const LEARN: f64 = 0.1;
    /// How much staying silent raises it.
    pub const FORGET: f64 = 0.05;

    fn key(voter: &str, category: &str) -> String {
        format!("{category}/{voter}")
    }

    /// The threshold of `voter` for `category`.
    pub fn get(&self, voter: &str, category: &str) -> f64 {
        self.by
            .get(&Self::key(voter, category))
            .copied()
            .unwrap_or(Self::INITIAL)
    }

    /// Every threshold that moved from [`Thresholds::INITIAL`]: (category, voter, threshold),
    /// sorted by category, then voter.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.by.iter().filter_map(|(key, t)| {
            // Voter keys never hold '/', categories may.
            key.rsplit_once('/')
                .map(|(category, voter)| (category, voter, *t))
        })
    }

    /// Whether `voter` responds to a stimulus (deterministic, so replay agrees).
    pub fn responds(&self, voter: &str, category: &str, stimulus: f64) -> bool {
        stimulus >= self.get(voter, category)
    }

    /// After a decision: those who voted learn, the other voters of the set forget.
    pub fn update(&mut self, p: &ProposalOpened, voted: &BTreeSet<String>) {
        for voter in p.voters.keys() {
            let key = Self::key(voter, &p.category);
            let now = self.by.get(&key).copied().unwrap_or(Self::INITIAL);
            let next = if voted.contains(voter) {
                (now - Self::LEARN).max(0.0)
            } else {
                (now + Self::FORGET).min(1.0)
            };
            self.by.insert(key, next);
        }
    }
}
