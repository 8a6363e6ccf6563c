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

mod fold;
mod rules;
#[cfg(test)]
mod tests;

pub use fold::{
    BallotProjection, Consensus, ConsensusProjection, EventLineage, Proposal, ProposalEvent,
    ProposalRefusal,
};
pub use rules::{
    Outcome, ProposalError, Tally, Thresholds, VoteRefusal, check_proposal, decide, reputation,
};
