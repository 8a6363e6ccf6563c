//! Proposals and votes: opened, a vote cast, decided, withdrawn, a deadline passed.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::roles::Role;
use crate::subject::{Domain, Plane};

/// A voter's answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// For.
    Approve,
    /// Against.
    Reject,
    /// Counted for quorum, not for the outcome.
    Abstain,
}

/// How a proposal is decided. Fractions are `numerator/denominator` of the counted weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// More approve than reject weight (ties reject).
    SimpleMajority,
    /// Approve weight ≥ numerator/denominator of approve + reject weight.
    Qualified {
        /// Numerator, e.g. 2.
        numerator: u32,
        /// Denominator, e.g. 3.
        denominator: u32,
    },
    /// Simple majority over the weights fixed in the proposal.
    Weighted,
    /// Every voter in the set approves.
    Unanimous,
    /// Response thresholds: a voter answers only when the proposal's stimulus reaches its
    /// threshold for the category; `rule` counts those who answered, and at least
    /// `min_responders` must answer.
    AdaptiveThreshold {
        /// Counting rule over responders (`simple_majority` or `qualified`).
        rule: Box<Protocol>,
        /// Fewest responders for a decision.
        min_responders: u32,
    },
}

/// `dev.murmur.proposal.opened`: a question put to a set of voters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalOpened {
    /// The question, for people.
    pub question: String,
    /// What is being decided (free-form, read by voter policies).
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Counting rule.
    pub protocol: Protocol,
    /// Voters (public keys) and their weights (1 unless weighted).
    pub voters: BTreeMap<String, u32>,
    /// Fewest votes (by count, abstentions included) for a decision.
    pub quorum: u32,
    /// Votes stored after this (by the stream's clock) never count.
    pub deadline: chrono::DateTime<chrono::Utc>,
    /// Category, for response thresholds.
    #[serde(default)]
    pub category: String,
    /// Urgency/value in 0..=1, compared with voters' thresholds.
    #[serde(default)]
    pub stimulus: f64,
}

impl Payload for ProposalOpened {
    const TYPE: &'static str = "dev.murmur.proposal.opened";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "opened";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a question put to a set of voters";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter, Role::Orchestrator];
}

/// `dev.murmur.proposal.vote_cast`: a vote; the voter is the event's verified emitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VoteCast {
    /// The answer.
    pub choice: Choice,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

impl Payload for VoteCast {
    const TYPE: &'static str = "dev.murmur.proposal.vote_cast";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "vote_cast";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a vote, tied to the voter's verified identity";
    const EMITTED_BY: &'static [Role] = &[Role::Voter, Role::Submitter];
}

/// `dev.murmur.proposal.decided`: the outcome and the tally that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalDecided {
    /// `approved`, `rejected`, `no_quorum` (too few votes by the deadline, or too few voters
    /// left to reach the quorum) or `expired` (the deadline passed with no vote at all).
    pub outcome: String,
    /// Approve weight counted.
    pub approve: u64,
    /// Reject weight counted.
    pub reject: u64,
    /// Abstentions counted.
    pub abstain: u64,
    /// Votes counted (by count).
    pub votes: u32,
    /// The voters whose votes were counted. The adaptive protocol's thresholds move with
    /// them, so a fold that does not read every vote (a voter agent's) adapts the same way.
    /// Absent in decisions from talliers before it existed: folds then use the votes they
    /// read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<std::collections::BTreeSet<String>>,
}

impl Payload for ProposalDecided {
    const TYPE: &'static str = "dev.murmur.proposal.decided";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "decided";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a proposal's outcome with its tally";
    const EMITTED_BY: &'static [Role] = &[Role::Tallier];
    const ROLE_CHECKED: bool = true;
}

/// `dev.murmur.proposal.withdrawn`: the proposer took the question back before a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalWithdrawn {
    /// Why.
    #[serde(default)]
    pub reason: String,
}

impl Payload for ProposalWithdrawn {
    const TYPE: &'static str = "dev.murmur.proposal.withdrawn";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "withdrawn";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "the proposer withdrew a proposal";
    const EMITTED_BY: &'static [Role] = &[Role::Submitter];
}

/// `dev.murmur.proposal.deadline_passed`: written by a tallier once its clock passed the
/// deadline; its *stored* time (the server's) is what closes the proposal, so the decision
/// stays a function of the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalDeadlinePassed {}

impl Payload for ProposalDeadlinePassed {
    const TYPE: &'static str = "dev.murmur.proposal.deadline_passed";
    const DOMAIN: Domain = Domain::Proposal;
    const VERB: &'static str = "deadline_passed";
    const PLANE: Plane = Plane::Evt;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "a tallier saw a proposal's deadline pass";
    const EMITTED_BY: &'static [Role] = &[Role::Tallier];
    const ROLE_CHECKED: bool = true;
}
