//! The consensus fold: proposals as aggregates, votes counted by the rules, decisions checked against their grounds.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use murmur_subjects::events::{
    Choice, ProposalDeadlinePassed, ProposalDecided, ProposalOpened, ProposalWithdrawn, Protocol,
    VoteCast,
};
use murmur_subjects::roles::Role;
use murmur_subjects::{
    Domain, Draft, EventType, Payload, Plane, Projection, Refusal, SubjectFilter, Token,
    VerifiedEvent,
};
use serde::{Deserialize, Serialize};

use super::*;

/// A proposal event, decoded once from its stored form.
#[derive(Debug, Clone, PartialEq)]
pub enum ProposalEvent {
    /// `proposal.opened`.
    Opened(ProposalOpened),
    /// `proposal.vote_cast`.
    VoteCast(VoteCast),
    /// `proposal.deadline_passed`: its stored time closes the proposal.
    DeadlinePassed(ProposalDeadlinePassed),
    /// `proposal.decided` (a tallier's decision).
    Decided(ProposalDecided),
    /// `proposal.withdrawn`.
    Withdrawn(ProposalWithdrawn),
}

impl ProposalEvent {
    /// Decodes `event` by its type; `UnknownType` for a type outside the proposal domain.
    pub fn decode(event: &VerifiedEvent) -> Result<Self, ProposalRefusal> {
        let bad =
            |e: murmur_subjects::payload::PayloadError| ProposalRefusal::Payload(e.to_string());
        Ok(match event.record.ty.as_str() {
            VoteCast::TYPE => Self::VoteCast(event.payload().map_err(bad)?),
            ProposalOpened::TYPE => Self::Opened(event.payload().map_err(bad)?),
            ProposalDeadlinePassed::TYPE => Self::DeadlinePassed(event.payload().map_err(bad)?),
            ProposalDecided::TYPE => Self::Decided(event.payload().map_err(bad)?),
            ProposalWithdrawn::TYPE => Self::Withdrawn(event.payload().map_err(bad)?),
            other => return Err(ProposalRefusal::UnknownType(other.to_string())),
        })
    }
}

/// Why the consensus fold refused an event; the proposals are left as they were, except
/// that a refused vote and a refused proposal are recorded with their reasons
/// ([`Proposal::refused`], [`Consensus::refused_proposals`]) so a voter sees why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalRefusal {
    /// The payload does not decode as its type.
    #[error("{0}")]
    Payload(String),
    /// A type the proposal domain does not declare, or one a voter does not follow.
    #[error("{0} is not a proposal event here")]
    UnknownType(String),
    /// A second `opened` for the same id.
    #[error("proposal {0} already exists")]
    AlreadyExists(String),
    /// An `opened` that breaks the rules (recorded in `refused_proposals`).
    #[error("proposal {proposal}: {error}")]
    Invalid {
        /// The proposal.
        proposal: String,
        /// What is wrong with it.
        error: ProposalError,
    },
    /// An event for a proposal never opened.
    #[error("unknown proposal {0}")]
    UnknownProposal(String),
    /// A withdrawal by someone other than the proposer.
    #[error("{emitter} did not open {proposal}")]
    NotProposer {
        /// Who tried.
        emitter: String,
        /// The proposal.
        proposal: String,
    },
    /// A vote that does not count (recorded in the proposal's `refused`).
    #[error("vote from {voter}: {refusal}")]
    Vote {
        /// The voter.
        voter: String,
        /// Why.
        refusal: VoteRefusal,
    },
    /// A decision from a key without the tallier role at that position.
    #[error("{emitter} did not hold the tallier role at {sequence}")]
    NotTallier {
        /// Who wrote it.
        emitter: String,
        /// Where.
        sequence: u64,
    },
    /// A decision naming a voter whose vote was not counted.
    #[error("the decision on {proposal} names {voter}, whose vote was not counted")]
    UncountedVoter {
        /// The proposal.
        proposal: String,
        /// The voter named.
        voter: String,
    },
    /// A decision whose outcome or tally does not follow from the counted votes.
    #[error(
        "the decision on {proposal} ({outcome}, {approve} approve, {reject} reject, {votes} votes) does not follow from the {counted} counted votes"
    )]
    Ungrounded {
        /// The proposal.
        proposal: String,
        /// The outcome it claims.
        outcome: String,
        /// Approvals it claims.
        approve: u64,
        /// Rejections it claims.
        reject: u64,
        /// Votes it claims.
        votes: u32,
        /// Votes the fold counted among those it names.
        counted: usize,
    },
}

impl From<ProposalRefusal> for Refusal {
    fn from(r: ProposalRefusal) -> Self {
        Refusal(r.to_string())
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
    /// The reasons counted voters gave, where they gave one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
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
    pub(super) open: BTreeSet<String>,
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
                reasons: BTreeMap::new(),
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
    pub fn withdraw(
        &mut self,
        id: &str,
        emitter: &str,
        reason: String,
    ) -> Result<(), ProposalRefusal> {
        let p = self
            .proposals
            .get_mut(id)
            .ok_or_else(|| ProposalRefusal::UnknownProposal(id.to_string()))?;
        if p.proposer != emitter {
            return Err(ProposalRefusal::NotProposer {
                emitter: emitter.to_string(),
                proposal: id.to_string(),
            });
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
    pub fn check_grounds(
        &self,
        id: &str,
        decided: &ProposalDecided,
    ) -> Result<(), ProposalRefusal> {
        let Some(p) = self.proposals.get(id) else {
            return Ok(());
        };
        if p.decided.is_some() || p.withdrawn.is_some() {
            return Ok(());
        }
        let votes: BTreeMap<String, Choice> = match &decided.participants {
            Some(named) => {
                if let Some(missing) = named.iter().find(|v| !p.votes.contains_key(*v)) {
                    return Err(ProposalRefusal::UncountedVoter {
                        proposal: id.to_string(),
                        voter: missing.clone(),
                    });
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
            Err(ProposalRefusal::Ungrounded {
                proposal: id.to_string(),
                outcome: decided.outcome.clone(),
                approve: decided.approve,
                reject: decided.reject,
                votes: decided.votes,
                counted: votes.len(),
            })
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
        self.fold(state, event, true).map_err(Refusal::from)
    }
}

impl ConsensusProjection {
    /// The fold of one event, with its refusal typed ([`Projection::apply`] gives it as a
    /// [`Refusal`]).
    pub fn apply_event(
        &self,
        state: &mut Consensus,
        event: &VerifiedEvent,
    ) -> Result<(), ProposalRefusal> {
        self.fold(state, event, true)
    }

    /// The fold; `votes_read`: whether it reads the votes (then decisions are checked
    /// against them).
    fn fold(
        &self,
        state: &mut Consensus,
        event: &VerifiedEvent,
        votes_read: bool,
    ) -> Result<(), ProposalRefusal> {
        let id = event.subject.aggregate().as_str();
        let at = event
            .stored_at
            .or(event.record.time)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let decoded = match ProposalEvent::decode(event) {
            Ok(decoded) => decoded,
            Err(e) => {
                // A vote that does not decode is recorded with the proposal, so the voter
                // sees why it did not count.
                if let ProposalRefusal::Payload(reason) = &e
                    && event.record.ty == VoteCast::TYPE
                    && let Some(p) = state.proposals.get_mut(id)
                {
                    p.refused.push((
                        event.emitter().to_string(),
                        VoteRefusal::Malformed(reason.clone()),
                    ));
                }
                return Err(e);
            }
        };
        match decoded {
            ProposalEvent::Opened(opened) => {
                if state.proposals.contains_key(id) || state.refused_proposals.contains_key(id) {
                    return Err(ProposalRefusal::AlreadyExists(id.to_string()));
                }
                if let Err(error) = check_proposal(&opened) {
                    state
                        .refused_proposals
                        .insert(id.to_string(), error.clone());
                    return Err(ProposalRefusal::Invalid {
                        proposal: id.to_string(),
                        error,
                    });
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
            ProposalEvent::Withdrawn(w) => {
                state.withdraw(id, event.emitter(), w.reason)?;
            }
            ProposalEvent::VoteCast(v) => {
                state
                    .vote(id, event.emitter(), v.choice, at)
                    .map_err(|refusal| ProposalRefusal::Vote {
                        voter: event.emitter().to_string(),
                        refusal,
                    })?;
                if let Some(p) = state.proposals.get_mut(id) {
                    p.last_cause = Some(event.record.id.clone());
                    if !v.reason.trim().is_empty() {
                        p.reasons.insert(event.emitter().to_string(), v.reason);
                    }
                }
            }
            ProposalEvent::DeadlinePassed(ProposalDeadlinePassed {}) => {
                state.deadline_marker(id, at);
                if let Some(p) = state.proposals.get_mut(id) {
                    p.last_cause = Some(event.record.id.clone());
                }
            }
            ProposalEvent::Decided(decided) => {
                if !event.roles.contains(Role::Tallier) {
                    return Err(ProposalRefusal::NotTallier {
                        emitter: event.emitter().to_string(),
                        sequence: event.stream_sequence.unwrap_or(0),
                    });
                }
                if votes_read {
                    state.check_grounds(id, &decided)?;
                }
                state.record_decision(id, decided);
            }
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
                self.full.fold(state, event, false).map_err(Refusal::from)
            }
            other => Err(ProposalRefusal::UnknownType(other.to_string()).into()),
        }
    }
}
