//! The tallier: the I/O loop beside the consensus fold. It follows the proposals, and
//! writes what [`crate::consensus::decide`] fixes as soon as it is fixed, with ids derived
//! from the proposal so several talliers store one decision.

use std::sync::Arc;

use murmur_subjects::clock::Clock;
use murmur_subjects::events::{ProposalDeadlinePassed, ProposalDecided};
use murmur_subjects::projection::SMALL_STREAM_SUBJECTS;
use murmur_subjects::roles::Role;
use murmur_subjects::{Draft, EventLog, LogError, Projector, Token};

use crate::consensus::{ConsensusProjection, decide};

/// Runs a tallier until `shutdown`: follows the proposals, writes `proposal.decided` as soon
/// as an outcome is fixed (id `<proposal>-decided`, so several talliers write one), and a
/// `deadline_passed` marker once `clock` passes a deadline (the marker's *stored* time is what
/// closes the proposal in the fold). Returns events written.
pub async fn run_tallier(
    log: EventLog,
    clock: Arc<dyn Clock>,
    tick: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<u64, LogError> {
    // A decision waits on the tallier reading the vote that makes it: the grants come on
    // the consumer while the stream is small, not by a fence's round trip per vote.
    let mut projector = Projector::new(
        log.clone(),
        ConsensusProjection {
            realm: log.realm().clone(),
        },
    )
    .grants_on_the_consumer_below(SMALL_STREAM_SUBJECTS);
    tokio::pin!(shutdown);
    if !projector
        .catch_up_patiently("proposals", tick, shutdown.as_mut())
        .await?
    {
        return Ok(0);
    }
    crate::coordinator::warn_without_role(projector.roles(), &log, Role::Tallier);
    let mut written = 0;
    // Proposals whose decision this tallier wrote and has not read back yet.
    let mut written_for: std::collections::BTreeSet<String> = Default::default();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            polled = projector.poll_until(tick, |state| {
                state.open_proposals().any(|(id, p)| {
                    !written_for.contains(id)
                        && decide(&p.opened, &p.votes, &p.electorate, p.deadline_passed).is_some()
                })
            }) => {
                if let Err(e) = polled {
                    e.wait_out_if_transient("proposals", tick).await?;
                    continue;
                }
            }
        }
        let state = projector.state();
        written_for.retain(|id| state.is_open(id));
        let mut drafts = Vec::new();
        // Decisions drafted this round, to decide again if their write fails.
        let mut deciding = Vec::new();
        for (id, p) in state.open_proposals() {
            let aggregate = Token::new(id.as_str()).map_err(|e| LogError::Consumer(e.into()))?;
            if let Some((outcome, tally)) =
                decide(&p.opened, &p.votes, &p.electorate, p.deadline_passed)
            {
                if written_for.contains(id) {
                    continue;
                }
                written_for.insert(id.clone());
                deciding.push(id.clone());
                let decided = ProposalDecided {
                    participants: Some(p.votes.keys().cloned().collect()),
                    ..tally.decided(outcome)
                };
                drafts.push(p.continue_flow(
                    Draft::new(aggregate, &decided)?.with_id(format!("{id}-decided")),
                    p.last_cause.as_deref(),
                ));
            } else if clock.now() > p.opened.deadline && !p.deadline_passed {
                drafts.push(
                    p.continue_flow(
                        Draft::new(aggregate, &ProposalDeadlinePassed {})?
                            .with_id(format!("{id}-deadline-{}", p.deadline_checks)),
                        None,
                    ),
                );
            }
        }
        if drafts.is_empty() {
            continue;
        }
        let sealed = log.seal_many(drafts);
        match log
            .append_sealed_patiently(&sealed, std::time::Duration::from_secs(30))
            .await
        {
            Ok(appended) => written += appended.iter().filter(|a| !a.duplicate).count() as u64,
            // A failover longer than the patience: the tallier stays up and decides again
            // (the ids are deterministic, so what did get stored is deduplicated); exiting
            // would leave proposals undecided.
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "writing decisions failed; deciding again");
                for id in &deciding {
                    written_for.remove(id);
                }
                tokio::time::sleep(tick).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
