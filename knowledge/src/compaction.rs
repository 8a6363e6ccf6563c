//! The compactor: purges the changes each recorded snapshot covers.
//!
//! A replica records a snapshot (`space.snapshotted`); dropping the changes it covers is a
//! stream purge, which only the operator may do where the server enforces roles. The
//! compactor runs with the operator (inside `murmur up`): it folds the realm's space events
//! as every replica does, so only a snapshot a replica-role holder (or the owner) recorded
//! counts, and purges up to each accepted snapshot's position once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use murmur_subjects::{
    Domain, EventLog, LogError, Plane, Projection, Projector, Refusal, SubjectFilter, Token,
    VerifiedEvent,
};

use crate::access::SpaceAccess;

/// Every space's access (owner, grants, accepted snapshots), folded from `space.*` events.
#[derive(Debug, Clone)]
pub struct SpaceAccessProjection {
    /// Realm.
    pub realm: Token,
}

impl Projection for SpaceAccessProjection {
    type State = BTreeMap<String, SpaceAccess>;

    fn name(&self) -> &str {
        "space-access"
    }

    fn filter(&self) -> SubjectFilter {
        SubjectFilter::plane(Plane::Evt)
            .realm(self.realm.clone())
            .domain(Domain::Space)
    }

    fn apply(
        &self,
        state: &mut BTreeMap<String, SpaceAccess>,
        event: &VerifiedEvent,
    ) -> Result<(), Refusal> {
        let sequence = event.stream_sequence.unwrap_or(0);
        crate::access::apply_space_event(state, sequence, event)
            .map(|_| ())
            .map_err(|e| Refusal(e.to_string()))
    }
}

/// The snapshots accepted in `spaces` whose covered position is past what `compacted`
/// records per document (pure): what the compactor purges next.
pub fn due(
    spaces: &BTreeMap<String, SpaceAccess>,
    compacted: &BTreeMap<String, u64>,
) -> Vec<murmur_subjects::events::SpaceSnapshotted> {
    spaces
        .values()
        .flat_map(|a| a.snapshots.values())
        .filter(|s| {
            compacted
                .get(&s.document)
                .is_none_or(|c| *c < s.stream_sequence)
        })
        .cloned()
        .collect()
}

/// Runs the compactor until `shutdown`; returns how many purges it made.
pub async fn run_compactor(
    log: EventLog,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, LogError> {
    let mut spaces = Projector::new(
        log.clone(),
        SpaceAccessProjection {
            realm: log.realm().clone(),
        },
    );
    let mut compacted: BTreeMap<String, u64> = BTreeMap::new();
    let mut purges = 0;
    tokio::pin!(shutdown);
    loop {
        for snapshot in due(spaces.state(), &compacted) {
            match crate::replica::compact(&log, &snapshot).await {
                Ok(()) => {
                    purges += 1;
                    compacted.insert(snapshot.document.clone(), snapshot.stream_sequence);
                    tracing::info!(
                        document = %snapshot.document,
                        up_to = snapshot.stream_sequence,
                        "changes covered by a snapshot purged"
                    );
                }
                Err(e) => {
                    tracing::warn!(document = %snapshot.document, error = %e, "compaction failed; trying again")
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            polled = spaces.poll(Duration::from_millis(250)) => {
                if let Err(e) = polled {
                    e.wait_out_if_transient("space events", Duration::from_millis(250)).await?;
                }
            }
        }
    }
    Ok(purges)
}
