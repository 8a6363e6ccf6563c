//! Consensus, pure part: how votes are counted, when a proposal can be decided early, which
//! votes are refused, and the response thresholds of the adaptive protocol.
//!
//! Everything here is a function of the event sequence and the stream's stored times, never
//! of a clock: replaying the log reproduces every decision. The rule for a second vote from
//! the same voter: **the first vote counts**; later ones are refused (`DuplicateVote`) and
//! recorded as such.
//!
//! Early decision: after each vote the tally is evaluated as if every voter who has not
//! voted yet approved, and as if they all rejected; when both give the same outcome (and the
//! quorum is met), nothing can change it and the proposal is decided. When even all
//! remaining votes cannot reach the quorum, it is decided `no_quorum` at once. At the
//! deadline: the rule's verdict if the quorum was met, `no_quorum` if some but too few
//! voted, `expired` if nobody did.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use murmur_subjects::catalog::EventType;
use murmur_subjects::events::{
    Choice, ProposalDeadlinePassed, ProposalDecided, ProposalOpened, ProposalWithdrawn, Protocol,
    VoteCast,
};
use murmur_subjects::projection::{Projection, Refusal};
use murmur_subjects::roles::Role;
use murmur_subjects::{Domain, Draft, Payload, Plane, SubjectFilter, Token, VerifiedEvent};
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

fn weight(p: &ProposalOpened, voter: &str) -> u64 {
    match p.protocol {
        Protocol::Weighted => u64::from(p.voters.get(voter).copied().unwrap_or(0)),
        _ => 1,
    }
}

/// The rule's verdict on a tally (quorum aside). `electorate`: voters expected to answer.
fn verdict(protocol: &Protocol, t: &Tally, electorate: u32) -> Outcome {
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

fn quorum(p: &ProposalOpened) -> u32 {
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

/// One proposal as the log tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// As opened.
    pub opened: ProposalOpened,
    /// Voters whose votes can count (for the adaptive protocol: those who respond).
    pub electorate: BTreeSet<String>,
    /// Counted votes.
    pub votes: BTreeMap<String, Choice>,
    /// Refused votes, in log order: (voter, reason).
    pub refused: Vec<(String, VoteRefusal)>,
    /// The decision, once written.
    pub decided: Option<ProposalDecided>,
    /// A `deadline_passed` marker stored after the deadline was seen.
    #[serde(default)]
    pub deadline_passed: bool,
    /// Markers seen (a marker stored before the deadline, by clock skew, does not close it).
    #[serde(default)]
    pub deadline_checks: u32,
    /// Who opened it (the verified emitter of `opened`).
    #[serde(default)]
    pub proposer: String,
    /// Withdrawn by the proposer (with the reason).
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// Id and correlation id of the `opened` event. Every later event on the proposal
    /// (votes, withdrawal, markers, the decision) carries that correlation id, and votes name
    /// `opened` as their cause.
    #[serde(default)]
    pub opened_event: EventLineage,
    /// Id of the latest event that moved the tally (a counted vote, a deadline marker): what
    /// a decision names as its cause.
    #[serde(default)]
    pub last_cause: Option<String>,
}

/// Where an event sits in its flow: its own id and its correlation id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLineage {
    /// The event's id.
    pub id: String,
    /// The flow it belongs to (its own id for a root event).
    pub correlation: String,
}

impl Proposal {
    /// Every name [`Proposal::state_name`] gives, and `refused` (an `opened` the fold
    /// refused, kept in [`Consensus::refused_proposals`]).
    pub const STATE_NAMES: [&'static str; 7] = [
        "open",
        "withdrawn",
        "approved",
        "rejected",
        "no_quorum",
        "expired",
        "refused",
    ];

    /// `open`, `withdrawn`, or the decision's outcome.
    pub fn state_name(&self) -> &str {
        match (&self.decided, &self.withdrawn) {
            (Some(d), _) => d.outcome.as_str(),
            (None, Some(_)) => "withdrawn",
            (None, None) => "open",
        }
    }

    /// A draft on this proposal that continues its flow: `opened`'s correlation id, caused by
    /// `cause` (an event id), or by `opened` itself when none is given.
    pub fn continue_flow(&self, draft: Draft, cause: Option<&str>) -> Draft {
        if self.opened_event.id.is_empty() {
            // Folded from a checkpoint older than the lineage: start a new flow.
            return draft;
        }
        draft.caused_by_ids(
            self.opened_event.correlation.clone(),
            cause.unwrap_or(&self.opened_event.id).to_string(),
            None,
        )
    }
}

/// All proposals and thresholds: the fold of `proposal.*` events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// Proposals by id.
    pub proposals: BTreeMap<String, Proposal>,
    /// Response thresholds.
    pub thresholds: Thresholds,
    /// Votes for proposals that do not exist: (proposal id, voter).
    pub orphan_votes: Vec<(String, String)>,
    /// Proposals whose `opened` was refused, with the reason (the first `opened` of an id
    /// decides: a refused id is never opened later).
    #[serde(default)]
    pub refused_proposals: BTreeMap<String, ProposalError>,
    /// Ids of the proposals neither decided nor withdrawn, kept as events arrive: a
    /// tallier checks these after each event, not every proposal the realm ever had. Read
    /// through [`Consensus::open_proposals`]; kept only by the methods here.
    #[serde(default)]
    open: BTreeSet<String>,
}

impl Consensus {
    /// Applies `proposal.opened`.
    pub fn open(&mut self, id: &str, opened: ProposalOpened) {
        let electorate = match opened.protocol {
            Protocol::AdaptiveThreshold { .. } => opened
                .voters
                .keys()
                .filter(|v| {
                    self.thresholds
                        .responds(v, &opened.category, opened.stimulus)
                })
                .cloned()
                .collect(),
            _ => opened.voters.keys().cloned().collect(),
        };
        self.open.insert(id.to_string());
        self.proposals.insert(
            id.to_string(),
            Proposal {
                opened,
                electorate,
                votes: BTreeMap::new(),
                refused: Vec::new(),
                decided: None,
                deadline_passed: false,
                deadline_checks: 0,
                proposer: String::new(),
                withdrawn: None,
                opened_event: EventLineage::default(),
                last_cause: None,
            },
        );
    }

    /// Applies `proposal.vote_cast` from a verified `voter`, stored at `at`. Returns the
    /// refusal, if any (also recorded).
    pub fn vote(
        &mut self,
        id: &str,
        voter: &str,
        choice: Choice,
        at: DateTime<Utc>,
    ) -> Result<(), VoteRefusal> {
        let Some(p) = self.proposals.get_mut(id) else {
            self.orphan_votes.push((id.to_string(), voter.to_string()));
            return Err(VoteRefusal::UnknownProposal);
        };
        let refusal = if p.decided.is_some() || p.withdrawn.is_some() {
            Some(VoteRefusal::Closed)
        } else if at > p.opened.deadline {
            Some(VoteRefusal::AfterDeadline)
        } else if !p.opened.voters.contains_key(voter) {
            Some(VoteRefusal::NotAVoter)
        } else if !p.electorate.contains(voter) {
            Some(VoteRefusal::NotResponding)
        } else if p.votes.contains_key(voter) {
            Some(VoteRefusal::DuplicateVote)
        } else {
            None
        };
        match refusal {
            Some(r) => {
                p.refused.push((voter.to_string(), r.clone()));
                Err(r)
            }
            None => {
                p.votes.insert(voter.to_string(), choice);
                Ok(())
            }
        }
    }

    /// Applies `proposal.decided`; thresholds adapt for adaptive proposals. The first of
    /// decision and withdrawal in the log closes the proposal: a decision stored after a
    /// withdrawal (a tallier that had not read it yet) changes nothing.
    pub fn record_decision(&mut self, id: &str, decided: ProposalDecided) {
        let Some(p) = self.proposals.get_mut(id) else {
            return;
        };
        if p.decided.is_some() || p.withdrawn.is_some() {
            return;
        }
        if matches!(p.opened.protocol, Protocol::AdaptiveThreshold { .. }) {
            // The decision names who took part; older decisions do not, and then the
            // votes this fold read count.
            let voted: BTreeSet<String> = decided
                .participants
                .clone()
                .unwrap_or_else(|| p.votes.keys().cloned().collect());
            let opened = p.opened.clone();
            self.thresholds.update(&opened, &voted);
        }
        p.decided = Some(decided);
        self.open.remove(id);
    }

    /// Applies `proposal.withdrawn` from a verified `emitter`: only the proposer withdraws,
    /// and a decided proposal stays decided.
    pub fn withdraw(&mut self, id: &str, emitter: &str, reason: String) -> Result<(), Refusal> {
        let p = self
            .proposals
            .get_mut(id)
            .ok_or_else(|| Refusal(format!("unknown proposal {id}")))?;
        if p.proposer != emitter {
            return Err(Refusal(format!("{emitter} did not open {id}")));
        }
        if p.decided.is_none() && p.withdrawn.is_none() {
            p.withdrawn = Some(reason);
            self.open.remove(id);
        }
        Ok(())
    }

    /// Whether proposal `id` is open (opened, neither decided nor withdrawn).
    pub fn is_open(&self, id: &str) -> bool {
        self.open.contains(id)
    }

    /// The proposals neither decided nor withdrawn, by id.
    pub fn open_proposals(&self) -> impl Iterator<Item = (&String, &Proposal)> {
        self.open
            .iter()
            .filter_map(|id| self.proposals.get_key_value(id))
    }

    /// Applies `proposal.deadline_passed` stored at `at`.
    pub fn deadline_marker(&mut self, id: &str, at: DateTime<Utc>) {
        if let Some(p) = self.proposals.get_mut(id) {
            p.deadline_checks += 1;
            if at > p.opened.deadline {
                p.deadline_passed = true;
            }
        }
    }

    /// Whether a `decided` event for `id` follows from the votes this fold counted: the
    /// voters it names each have a counted vote, and the rule applied to their votes (closed
    /// when a `deadline_passed` marker closed the proposal) gives the same outcome and
    /// tally. A decision naming no participants (from a tallier before they were named) is
    /// checked against every counted vote. A proposal already decided or withdrawn, or one
    /// this fold does not know, is left to [`Consensus::record_decision`], which ignores it.
    pub fn check_grounds(&self, id: &str, decided: &ProposalDecided) -> Result<(), Refusal> {
        let Some(p) = self.proposals.get(id) else {
            return Ok(());
        };
        if p.decided.is_some() || p.withdrawn.is_some() {
            return Ok(());
        }
        let votes: BTreeMap<String, Choice> = match &decided.participants {
            Some(named) => {
                if let Some(missing) = named.iter().find(|v| !p.votes.contains_key(*v)) {
                    return Err(Refusal(format!(
                        "the decision on {id} names {missing}, whose vote was not counted"
                    )));
                }
                named.iter().map(|v| (v.clone(), p.votes[v])).collect()
            }
            None => p.votes.clone(),
        };
        let follows = decide(&p.opened, &votes, &p.electorate, p.deadline_passed).is_some_and(
            |(outcome, t)| {
                outcome.as_str() == decided.outcome
                    && t.approve == decided.approve
                    && t.reject == decided.reject
                    && t.abstain == decided.abstain
                    && t.votes == decided.votes
            },
        );
        if follows {
            Ok(())
        } else {
            Err(Refusal(format!(
                "the decision on {id} ({}, {} approve, {} reject, {} votes) does not follow from the {} counted votes",
                decided.outcome,
                decided.approve,
                decided.reject,
                decided.votes,
                votes.len()
            )))
        }
    }

    /// What a tallier should write for `id` now (`now` from the stream's clock): the
    /// decision, when one can be made and none is recorded.
    pub fn pending_decision(&self, id: &str, now: DateTime<Utc>) -> Option<ProposalDecided> {
        let p = self.proposals.get(id)?;
        if p.decided.is_some() || p.withdrawn.is_some() {
            return None;
        }
        decide(&p.opened, &p.votes, &p.electorate, now > p.opened.deadline)
            .map(|(outcome, tally)| tally.decided(outcome))
    }
}

/// The fold of a realm's `proposal.*` events into [`Consensus`]. A decision counts only
/// from an identity holding the tallier role at its position, and only when it follows from
/// the votes counted ([`Consensus::check_grounds`]).
#[derive(Debug, Clone)]
pub struct ConsensusProjection {
    /// Realm.
    pub realm: Token,
}

impl Projection for ConsensusProjection {
    type State = Consensus;

    fn name(&self) -> &str {
        "consensus"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt)
            .realm(self.realm.clone())
            .domain(Domain::Proposal)
    }

    fn apply(&self, state: &mut Consensus, event: &VerifiedEvent) -> Result<(), Refusal> {
        self.fold(state, event, true)
    }
}

impl ConsensusProjection {
    /// The fold; `votes_read`: whether it reads the votes (then decisions are checked
    /// against them).
    fn fold(
        &self,
        state: &mut Consensus,
        event: &VerifiedEvent,
        votes_read: bool,
    ) -> Result<(), Refusal> {
        let id = event.subject.aggregate().as_str();
        let at = event
            .stored_at
            .or(event.record.time)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let bad = |e: murmur_subjects::payload::PayloadError| Refusal(e.to_string());
        match event.record.ty.as_str() {
            ProposalOpened::TYPE => {
                if state.proposals.contains_key(id) || state.refused_proposals.contains_key(id) {
                    return Err(Refusal(format!("proposal {id} already exists")));
                }
                let opened: ProposalOpened = event.payload().map_err(bad)?;
                if let Err(e) = check_proposal(&opened) {
                    let refusal = Refusal(format!("proposal {id}: {e}"));
                    state.refused_proposals.insert(id.to_string(), e);
                    return Err(refusal);
                }
                state.open(id, opened);
                if let Some(p) = state.proposals.get_mut(id) {
                    p.proposer = event.emitter().to_string();
                    p.opened_event = EventLineage {
                        id: event.record.id.clone(),
                        correlation: event
                            .record
                            .correlation_id
                            .clone()
                            .unwrap_or_else(|| event.record.id.clone()),
                    };
                }
            }
            ProposalWithdrawn::TYPE => {
                let w: ProposalWithdrawn = event.payload().map_err(bad)?;
                state.withdraw(id, event.emitter(), w.reason)?;
            }
            VoteCast::TYPE => {
                let v: VoteCast = match event.payload() {
                    Ok(v) => v,
                    Err(e) => {
                        // Recorded with the proposal, so the voter sees why it did not count.
                        if let Some(p) = state.proposals.get_mut(id) {
                            p.refused.push((
                                event.emitter().to_string(),
                                VoteRefusal::Malformed(e.to_string()),
                            ));
                        }
                        return Err(bad(e));
                    }
                };
                state
                    .vote(id, event.emitter(), v.choice, at)
                    .map_err(|r| Refusal(format!("vote from {}: {r}", event.emitter())))?;
                if let Some(p) = state.proposals.get_mut(id) {
                    p.last_cause = Some(event.record.id.clone());
                }
            }
            ProposalDeadlinePassed::TYPE => {
                state.deadline_marker(id, at);
                if let Some(p) = state.proposals.get_mut(id) {
                    p.last_cause = Some(event.record.id.clone());
                }
            }
            ProposalDecided::TYPE => {
                if !event.roles.contains(Role::Tallier) {
                    return Err(Refusal(format!(
                        "{} did not hold the tallier role at {}",
                        event.emitter(),
                        event.stream_sequence.unwrap_or(0)
                    )));
                }
                let decided: ProposalDecided = event.payload().map_err(bad)?;
                if votes_read {
                    state.check_grounds(id, &decided)?;
                }
                state.record_decision(id, decided);
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a voter agent follows: the same fold as [`ConsensusProjection`] over only the
/// `opened`, `decided` and `withdrawn` events. A voter that read every vote decoded and
/// verified all n votes of each proposal, n² verifications across n voters. Without the
/// votes, a proposal's `votes` stay empty here (a voter remembers its own), and the
/// adaptive thresholds move with the participants each decision names.
#[derive(Debug, Clone)]
pub struct BallotProjection {
    full: ConsensusProjection,
}

impl BallotProjection {
    /// For `realm`. Decisions count from holders of the tallier role; without the votes,
    /// their grounds are not checked here.
    pub fn new(realm: Token) -> Self {
        Self {
            full: ConsensusProjection { realm },
        }
    }
}

impl Projection for BallotProjection {
    type State = Consensus;

    fn name(&self) -> &str {
        "ballots"
    }

    fn filter(&self) -> SubjectFilter {
        self.full.filter()
    }

    fn filters(&self) -> Vec<SubjectFilter> {
        let realm = Some(&self.full.realm);
        vec![
            EventType::of::<ProposalOpened>().filter(realm),
            EventType::of::<ProposalDecided>().filter(realm),
            EventType::of::<ProposalWithdrawn>().filter(realm),
        ]
    }

    fn apply(&self, state: &mut Consensus, event: &VerifiedEvent) -> Result<(), Refusal> {
        match event.record.ty.as_str() {
            ProposalOpened::TYPE | ProposalDecided::TYPE | ProposalWithdrawn::TYPE => {
                self.full.fold(state, event, false)
            }
            other => Err(Refusal(format!("{other} is not followed by voters"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let yes = VoteCast {
            choice: Choice::Approve,
            reason: String::new(),
        };
        for (i, v) in voters.iter().enumerate() {
            full.apply(&mut state, &log.event(v, "p1", &yes, 10 + i as i64))
                .expect("vote");
        }
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
}
