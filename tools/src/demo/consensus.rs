//! The demo's consensus step: three policy voters (own identities) and a tallier decide a
//! release; a model voter when the build has inference.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use murmur_agents::{Agent, AgentSpec};
use murmur_subjects::clock::SystemClock;
use murmur_subjects::log::Expected;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, Projector, Token};
use murmur_testkit::authority::Issuer;

use super::*;

/// A demo voter agent: joins `realm` as `name` with `labels`, then runs `voter` until
/// `stop` and leaves. Returns its key and the task running it.
async fn start_voter<V: murmur_agents::voter::Voter + 'static>(
    (issuer, realm): (&Issuer, &Token),
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
    voter: V,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(
    String,
    tokio::task::JoinHandle<Result<u64, murmur_agents::AgentError>>,
)> {
    let log = issuer.participant(realm, Role::Voter, name).await?;
    let mut m = manifest(name);
    m.kind = "voter".into();
    m.capabilities = vec!["vote".into()];
    m.labels = labels;
    let handlers = murmur_agents::handlers::EventHandlers::new().votes(std::sync::Arc::new(voter));
    m.handles = Some(handlers.types());
    let agent = Agent::join(
        log,
        AgentSpec {
            manifest: m,
            heartbeat: Duration::from_millis(500),
        },
    )
    .await?;
    let key = agent.id().to_string();
    let task = tokio::spawn(async move {
        let cast = murmur_agents::handlers::run_handlers(&agent, &handlers, stop)
            .await
            .map(|stats| stats.votes_cast);
        let _ = agent.leave("demo over").await;
        cast
    });
    Ok((key, task))
}

/// Three voter agents with a policy (approve when tests pass, reject when risk is high) and a
/// tallier: one proposal is approved early by 2 of 3 votes, another rejected; the tallies
/// come from the log.
pub(super) async fn consensus_step(issuer: &Issuer) -> Result<()> {
    use murmur_agents::voter::PolicyVoter;
    use murmur_coordination::consensus::{Consensus, ConsensusProjection};
    use murmur_coordination::tallier::run_tallier;
    use murmur_subjects::events::{ProposalOpened, Protocol};

    let realm = fresh_realm("vote")?;
    let policy: PolicyVoter = toml::from_str(
        "[[rules]]\nwhen = [{ path = \"/risk\", greater_than = 0.7 }]\nvote = \"reject\"\nreason = \"too risky\"\n\
         [[rules]]\nwhen = [{ path = \"/tests_passed\", equals = true }]\nvote = \"approve\"\nreason = \"tests pass\"\n",
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let platform = issuer.platform(&realm, &[Role::Tallier]).await?;
    let tallier = tokio::spawn(run_tallier(
        platform.clone(),
        Arc::new(SystemClock),
        Duration::from_millis(20),
        stopped(stop_rx.clone()),
    ));
    let mut voters = Vec::new();
    let mut keys = std::collections::BTreeMap::new();
    for i in 0..3 {
        let (key, voter) = start_voter(
            (issuer, &realm),
            &format!("voter-{i}"),
            Default::default(),
            policy.clone(),
            stopped(stop_rx.clone()),
        )
        .await?;
        keys.insert(key, 1);
        voters.push(voter);
    }
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(30);
    let mut proposals = Vec::new();
    for (id, payload) in [
        (
            "release-1-2",
            serde_json::json!({"tests_passed": true, "risk": 0.2}),
        ),
        (
            "release-1-3",
            serde_json::json!({"tests_passed": true, "risk": 0.9}),
        ),
    ] {
        let opened = ProposalOpened {
            question: format!("ship {id}?"),
            payload,
            protocol: Protocol::Qualified {
                numerator: 2,
                denominator: 3,
            },
            voters: keys.clone(),
            quorum: 2,
            deadline,
            category: "release".into(),
            stimulus: 1.0,
        };
        proposals.push((id, opened));
    }
    // With candle built in, a fourth voter asks a language model (a tiny random-weight test
    // model, as in the inference step): the proposal put to it alone is decided by the
    // answer the model scores higher.
    #[cfg(feature = "inference")]
    let model_voter = {
        use murmur_agents::inference::{GgufModel, TestModel, write_test_model};
        use murmur_agents::voter::ModelVoter;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("voter.gguf");
        write_test_model(&path, &TestModel::new(2026))?;
        let model = Arc::new(GgufModel::load(&path)?);
        let (key, voter) = start_voter(
            (issuer, &realm),
            "model-voter",
            model.labels(),
            ModelVoter::new(model, ModelVoter::DEFAULT_INSTRUCTIONS),
            stopped(stop_rx.clone()),
        )
        .await?;
        voters.push(voter);
        proposals.push((
            "merge-rewrite",
            ProposalOpened {
                question: "merge the parser rewrite?".into(),
                payload: serde_json::json!({"tests_passed": true, "lines_changed": 420}),
                protocol: Protocol::SimpleMajority,
                voters: [(key.clone(), 1)].into(),
                quorum: 1,
                deadline,
                category: "review".into(),
                stimulus: 1.0,
            },
        ));
        key
    };
    let opened_count = proposals.len();
    for (id, opened) in proposals {
        platform
            .append_expected(Draft::new(Token::new(id)?, &opened)?, Expected::NoEvents)
            .await?;
    }
    let mut view = Projector::new(
        platform.clone(),
        ConsensusProjection {
            realm: realm.clone(),
        },
    );
    ensure!(
        view.follow_until(DEADLINE, |c: &Consensus| {
            c.proposals.len() == opened_count && c.proposals.values().all(|p| p.decided.is_some())
        })
        .await?,
        "proposals not decided within {DEADLINE:?}"
    );
    let _ = stop_tx.send(true);
    tallier.await??;
    for v in voters {
        v.await??;
    }
    let c = view.state();
    let outcome = |id: &str| {
        c.proposals[id]
            .decided
            .as_ref()
            .map(|d| (d.outcome.clone(), d.approve, d.reject))
    };
    let shown = |id: &str| match outcome(id) {
        Some((o, approve, reject)) => format!("{id} {o} (approve {approve} · reject {reject})"),
        None => format!("{id} undecided"),
    };
    out!(
        "[vote] 3 policy voters + tallier, qualified 2/3: {}, {}",
        shown("release-1-2"),
        shown("release-1-3")
    );
    ensure!(
        outcome("release-1-2").is_some_and(|o| o.0 == "approved"),
        "release-1-2 not approved"
    );
    ensure!(
        outcome("release-1-3").is_some_and(|o| o.0 == "rejected"),
        "release-1-3 not rejected"
    );
    #[cfg(feature = "inference")]
    {
        use anyhow::Context;
        use murmur_subjects::events::{Choice, VoteCast};
        let events = murmur_subjects::projection::read_aggregate(
            &platform,
            murmur_subjects::Domain::Proposal,
            &Token::new("merge-rewrite")?,
        )
        .await?;
        let vote = events
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .filter(|e| e.emitter() == model_voter)
            .find_map(|e| e.payload::<VoteCast>().ok())
            .context("the model voter's vote is not in the log")?;
        let outcome = outcome("merge-rewrite").map(|o| o.0);
        let expected = match vote.choice {
            Choice::Approve => "approved",
            Choice::Reject => "rejected",
            Choice::Abstain => "no_quorum",
        };
        ensure!(
            outcome.as_deref() == Some(expected),
            "merge-rewrite ended {outcome:?} after a {:?} vote",
            vote.choice
        );
        out!(
            "[vote] a model voter (candle; the tiny random-weight model, so its judgement is noise, its scoring real) put to merge-rewrite: {} — {}",
            expected,
            vote.reason
        );
    }
    // A late vote from outside the voter set (a voter of the realm, not of this proposal):
    // stored like any event, refused by the fold with a typed reason, and never counted.
    let outsider = issuer
        .participant(&realm, Role::Voter, "demo-outsider")
        .await?;
    let late = c.proposals["release-1-2"].continue_flow(
        Draft::new(
            Token::new("release-1-2")?,
            &murmur_subjects::events::VoteCast {
                choice: murmur_subjects::events::Choice::Reject,
                reason: "too late".into(),
            },
        )?,
        None,
    );
    outsider.append(late).await?;
    ensure!(
        view.follow_until(DEADLINE, |c: &Consensus| !c.proposals["release-1-2"]
            .refused
            .is_empty())
            .await?,
        "the late vote was never refused"
    );
    let p = &view.state().proposals["release-1-2"];
    ensure!(
        p.decided.as_ref().is_some_and(|d| d.reject == 0),
        "a refused vote was counted"
    );
    out!(
        "[vote] a late vote from a non-voter is stored and refused: {}",
        p.refused[0].1
    );
    Ok(())
}
