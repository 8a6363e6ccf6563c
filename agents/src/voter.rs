//! Voter agents: a [`Voter`] answers proposals it is asked about; [`PolicyVoter`] answers by
//! rules over the proposal's payload (read from a TOML file), and
//! [`EventHandlers::votes`](crate::handlers::EventHandlers::votes) runs any voter as an agent: it follows the proposals of its realm and casts one signed vote on
//! each open proposal whose electorate includes it (the adaptive protocol's thresholds
//! decide that, deterministically). Other voters implement [`Voter`]: [`ModelVoter`] (feature
//! `inference`) answers with a language model.

use std::collections::BTreeSet;
use std::time::Duration;

use std::ops::ControlFlow;

use murmur_coordination::consensus::{BallotProjection, Consensus};
use murmur_subjects::events::{Choice, ProposalOpened, VoteCast};
use murmur_subjects::projection::SMALL_STREAM_SUBJECTS;
use murmur_subjects::{
    Domain, Draft, EventLog, LogError, Plane, Projector, StartAt, SubjectFilter, Token,
};
use serde::{Deserialize, Serialize};

use crate::runtime::{Agent, AgentError};

/// Something that answers proposals. `None`: no answer (the voter stays silent).
pub trait Voter: Send + Sync {
    /// The vote on `proposal`.
    fn vote(&self, proposal: &ProposalOpened) -> Option<VoteCast>;

    /// Whether [`vote`](Self::vote) computes for long (a model's forward passes):
    /// the voter agent then calls it where it does not hold up the agent's other tasks.
    fn blocking(&self) -> bool {
        false
    }
}

/// `voter.vote(proposal)`, off the async worker when the voter says it blocks and the
/// runtime has other workers to carry on (a current-thread runtime just waits).
fn answer(voter: &dyn Voter, proposal: &ProposalOpened) -> Option<VoteCast> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if voter.blocking() && multi_thread {
        tokio::task::block_in_place(|| voter.vote(proposal))
    } else {
        voter.vote(proposal)
    }
}

/// A condition on the payload at a JSON pointer (`/risk`, `/change/kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// JSON pointer into the payload.
    pub path: String,
    /// Matches when the value equals this.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// Matches when the value is a number greater than this.
    #[serde(default)]
    pub greater_than: Option<f64>,
    /// Matches when the value is a number less than this.
    #[serde(default)]
    pub less_than: Option<f64>,
}

impl Condition {
    fn holds(&self, payload: &serde_json::Value) -> bool {
        let Some(v) = payload.pointer(&self.path) else {
            return false;
        };
        self.equals.as_ref().is_none_or(|e| e == v)
            && self
                .greater_than
                .is_none_or(|g| v.as_f64().is_some_and(|x| x > g))
            && self
                .less_than
                .is_none_or(|l| v.as_f64().is_some_and(|x| x < l))
    }
}

/// One rule: when every condition holds, vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Conditions (all must hold).
    pub when: Vec<Condition>,
    /// The vote.
    pub vote: Choice,
    /// The reason given.
    #[serde(default)]
    pub reason: String,
}

/// Rules over the proposal payload; the first rule that matches decides.
///
/// ```toml
/// default = "abstain"
/// [[rules]]
/// when = [{ path = "/risk", greater_than = 0.7 }]
/// vote = "reject"
/// reason = "too risky"
/// [[rules]]
/// when = [{ path = "/tests_passed", equals = true }]
/// vote = "approve"
/// reason = "tests pass"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyVoter {
    /// Vote when no rule matches (`None`: stay silent).
    #[serde(default)]
    pub default: Option<Choice>,
    /// Rules, in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Voter for PolicyVoter {
    fn vote(&self, proposal: &ProposalOpened) -> Option<VoteCast> {
        for rule in &self.rules {
            if rule.when.iter().all(|c| c.holds(&proposal.payload)) {
                return Some(VoteCast {
                    choice: rule.vote,
                    reason: rule.reason.clone(),
                });
            }
        }
        self.default.map(|choice| VoteCast {
            choice,
            reason: "default".into(),
        })
    }
}

/// A voter that asks a language model: the proposal's question and payload go into a prompt
/// ending in "Answer (accept or reject):", and the vote is approve or reject, whichever of
/// " accept" and " reject" the model gives the higher log-probability
/// ([`GgufModel::score`]), with both scores in the reason. The two answers have the same
/// length in bytes, so a model that spells them out byte by byte does not favour the
/// shorter. No sampling: the same model and proposal give the same vote.
///
/// [`GgufModel::score`]: crate::inference::GgufModel::score
#[cfg(feature = "inference")]
pub struct ModelVoter {
    model: std::sync::Arc<crate::inference::GgufModel>,
    instructions: String,
}

#[cfg(feature = "inference")]
impl ModelVoter {
    /// The instructions a prompt starts with unless others are given.
    pub const DEFAULT_INSTRUCTIONS: &'static str = "You review proposals for a team of agents. Accept what is safe and useful; reject the rest.";

    /// The answers the model chooses between, as they follow the prompt.
    pub const ANSWERS: [(Choice, &'static str); 2] =
        [(Choice::Approve, " accept"), (Choice::Reject, " reject")];

    /// A voter asking `model`, its prompts starting with `instructions`.
    pub fn new(
        model: std::sync::Arc<crate::inference::GgufModel>,
        instructions: impl Into<String>,
    ) -> Self {
        Self {
            model,
            instructions: instructions.into(),
        }
    }

    /// The prompt for `proposal`.
    pub fn prompt(&self, proposal: &ProposalOpened) -> String {
        format!(
            "{}\nQuestion: {}\nDetails: {}\nAnswer (accept or reject):",
            self.instructions, proposal.question, proposal.payload
        )
    }

    /// The model's log-probability of each of [`ANSWERS`](Self::ANSWERS) for `proposal`.
    pub fn scores(
        &self,
        proposal: &ProposalOpened,
    ) -> Result<[(Choice, f64); 2], crate::inference::InferenceError> {
        let answers = Self::ANSWERS.map(|(_, text)| text);
        let scores = self.model.score(&self.prompt(proposal), &answers)?;
        Ok([
            (Self::ANSWERS[0].0, scores[0]),
            (Self::ANSWERS[1].0, scores[1]),
        ])
    }
}

#[cfg(feature = "inference")]
impl Voter for ModelVoter {
    fn vote(&self, proposal: &ProposalOpened) -> Option<VoteCast> {
        let [(approve, a), (reject, r)] = match self.scores(proposal) {
            Ok(scores) => scores,
            Err(e) => {
                // No vote is cast: the proposal decides without this voter, or at its
                // deadline.
                tracing::warn!(error = %e, question = %proposal.question, "the model could not answer; not voting");
                return None;
            }
        };
        let choice = match a.total_cmp(&r) {
            std::cmp::Ordering::Greater => approve,
            std::cmp::Ordering::Less => reject,
            std::cmp::Ordering::Equal => Choice::Abstain,
        };
        let name = self.model.name().unwrap_or("the model");
        Some(VoteCast {
            choice,
            reason: format!(
                "{name} (sha256 {}…) scored accept {a:.3}, reject {r:.3} (log-probability)",
                &self.model.sha256()[..12]
            ),
        })
    }

    fn blocking(&self) -> bool {
        true
    }
}

/// The event types a voter handles, for its manifest's `handles`: what its ballot
/// projection reads.
pub(crate) fn handled_types() -> Vec<String> {
    use murmur_subjects::Payload as _;
    use murmur_subjects::events::{ProposalDecided, ProposalWithdrawn};
    vec![
        ProposalDecided::TYPE.into(),
        ProposalOpened::TYPE.into(),
        ProposalWithdrawn::TYPE.into(),
    ]
}

/// Runs `voter` as `agent` until `shutdown`; returns how many votes it cast.
pub(crate) async fn run_voter(
    agent: &Agent,
    voter: &dyn Voter,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<u64, AgentError> {
    let log = agent.log().clone();
    let me = agent.id().to_string();
    // Opened, decided and withdrawn only: not every other voter's vote (see
    // `BallotProjection`), so this voter remembers its own votes.
    // Each proposal waits on its votes: the grants come on the consumer while the stream is
    // small, not by a fence's round trip per proposal.
    let mut proposals = Projector::new(log.clone(), BallotProjection::new(log.realm().clone()))
        .grants_on_the_consumer_below(SMALL_STREAM_SUBJECTS);
    // The history first, read whole and filtered here: one linear pass. A live consumer
    // with the projection's three filters starting at sequence 1 made the server intersect
    // its subject index with them for every message (100 voters starting on 1,000
    // proposals: about 50 s before the first decision).
    loop {
        match proposals.catch_up().await {
            Ok(_) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "log unavailable; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Proposals this voter answered (or chose not to), while they are open. Having read
    // every proposal event stored when it started, a restarted voter finds its votes on the
    // proposals still open before it votes.
    let mut answered: Option<BTreeSet<String>> = None;
    let mut own_votes_failures = 0;
    let mut cast = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            polled = proposals.poll(Duration::from_millis(100)) => {
                if let Err(e) = polled {
                    e.wait_out_if_transient("proposals", Duration::from_millis(250)).await?;
                    continue;
                }
            }
        }
        let answered = match &mut answered {
            Some(answered) => answered,
            None => match own_votes(&log, proposals.state(), &me).await {
                Ok(mine) => answered.insert(mine),
                // Never fatal: at worst this voter votes again on a proposal it answered
                // before it started, and that vote is refused as a duplicate (recorded).
                Err(e) if own_votes_failures < 3 => {
                    own_votes_failures += 1;
                    tracing::warn!(error = %e, "own votes unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "own votes unavailable; voting without them");
                    answered.insert(BTreeSet::new())
                }
            },
        };
        let mut drafts = Vec::new();
        // Only open proposals: walking every proposal the realm ever had after each poll
        // made a long-running voter slower with history (as it did the tallier).
        let state = proposals.state();
        for (id, p) in state.open_proposals() {
            if !p.electorate.contains(&me) || answered.contains(id) {
                continue;
            }
            answered.insert(id.clone());
            if let Some(vote) = answer(voter, &p.opened) {
                drafts.push(p.continue_flow(Draft::new(Token::new(id.as_str())?, &vote)?, None));
            }
        }
        // What was answered matters only while the proposal is open.
        if answered.len() > 2 * state.open_proposals().count() + 64 {
            let open: BTreeSet<&String> = state.open_proposals().map(|(id, _)| id).collect();
            answered.retain(|id| open.contains(id));
        }
        if !drafts.is_empty() {
            let sealed = log.seal_many(drafts);
            cast += log
                .append_sealed_patiently(&sealed, Duration::from_secs(30))
                .await?
                .len() as u64;
        }
    }
    Ok(cast)
}

/// The open proposals of `state` on which `me` has a vote stored (read per proposal: its
/// `vote_cast` events only).
async fn own_votes(
    log: &EventLog,
    state: &Consensus,
    me: &str,
) -> Result<BTreeSet<String>, LogError> {
    let mut mine = BTreeSet::new();
    let verb = Token::new("vote_cast").map_err(|e| LogError::Consumer(e.into()))?;
    for (id, p) in state.open_proposals() {
        if !p.electorate.contains(me) {
            continue;
        }
        let aggregate = Token::new(id.as_str()).map_err(|e| LogError::Consumer(e.into()))?;
        let filter = SubjectFilter::plane(Plane::Evt)
            .realm(log.realm().clone())
            .domain(Domain::Proposal)
            .aggregate(aggregate)
            .verb(verb.clone());
        let mut voted = false;
        log.read(&filter, StartAt::Beginning, None, |m| {
            voted = log
                .decode_stored(&m.message, m.sequence, Some(m.stored_at))
                .is_ok_and(|e| e.emitter() == me);
            if voted {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        if voted {
            mine.insert(id.clone());
        }
    }
    Ok(mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(payload: serde_json::Value) -> ProposalOpened {
        ProposalOpened {
            question: "q".into(),
            payload,
            protocol: murmur_subjects::events::Protocol::SimpleMajority,
            voters: Default::default(),
            quorum: 1,
            deadline: chrono::Utc::now(),
            category: String::new(),
            stimulus: 1.0,
        }
    }

    #[cfg(feature = "inference")]
    #[test]
    fn a_model_voter_votes_for_the_answer_its_model_scores_higher() {
        use crate::inference::{GgufModel, TestModel, write_test_model};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.gguf");
        let mut choices = BTreeSet::new();
        for seed in 0..6 {
            write_test_model(&path, &TestModel::new(seed)).expect("written");
            let model = std::sync::Arc::new(GgufModel::load(&path).expect("loads"));
            let voter = ModelVoter::new(model, "Vote.");
            let asked = proposal(serde_json::json!({"risk": 0.2}));
            let [(_, approve), (_, reject)] = voter.scores(&asked).expect("scores");
            let vote = voter.vote(&asked).expect("a vote");
            let expected = if approve > reject {
                Choice::Approve
            } else {
                Choice::Reject
            };
            assert_eq!(vote.choice, expected, "seed {seed}: {}", vote.reason);
            assert_eq!(
                voter.vote(&asked),
                Some(vote.clone()),
                "the same vote again"
            );
            assert!(vote.reason.contains(&format!("{approve:.3}")));
            choices.insert(format!("{:?}", vote.choice));
            // A proposal too long for the model's context gets no vote.
            let long = proposal(serde_json::json!({"notes": "x".repeat(4000)}));
            assert_eq!(voter.vote(&long), None);
        }
        // The vote follows the model: random models do not all agree.
        assert_eq!(choices.len(), 2, "{choices:?}");
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy: PolicyVoter = toml::from_str(
            r#"
default = "abstain"
[[rules]]
when = [{ path = "/risk", greater_than = 0.7 }]
vote = "reject"
reason = "too risky"
[[rules]]
when = [{ path = "/tests_passed", equals = true }]
vote = "approve"
reason = "tests pass"
"#,
        )
        .expect("policy parses");
        let v = |p| policy.vote(&proposal(p)).map(|v| v.choice);
        assert_eq!(
            v(serde_json::json!({"risk": 0.9, "tests_passed": true})),
            Some(Choice::Reject)
        );
        assert_eq!(
            v(serde_json::json!({"risk": 0.1, "tests_passed": true})),
            Some(Choice::Approve)
        );
        assert_eq!(v(serde_json::json!({"risk": 0.1})), Some(Choice::Abstain));
        let silent = PolicyVoter {
            default: None,
            rules: vec![],
        };
        assert_eq!(silent.vote(&proposal(serde_json::json!({}))), None);
    }
}
