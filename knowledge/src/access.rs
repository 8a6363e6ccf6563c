//! A space's owner, grants and snapshots: a pure fold over its `space.*` events.
//!
//! Grants keep their stream sequence, so a change is judged by the access its author held
//! at the change's own position in the log — the same on every replica and on replay.

use std::collections::BTreeMap;

use murmur_protocol::events::{
    AccessRole, SpaceAccessGranted, SpaceAccessRevoked, SpaceOpened, SpaceSnapshotted,
};
use serde::{Deserialize, Serialize};

use crate::error::KnowledgeError;

/// One space's access state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceAccess {
    /// The space name.
    pub space: String,
    /// The owner (emitter of `space.opened`).
    pub owner: String,
    /// Settings from `space.opened`.
    pub settings: SpaceOpened,
    /// Grant history per (agent, role): (sequence, granted?) in log order.
    pub grants: BTreeMap<String, BTreeMap<AccessRole, Vec<(u64, bool)>>>,
    /// The latest accepted snapshot per document.
    pub snapshots: BTreeMap<String, SpaceSnapshotted>,
    /// Refused space events: (sequence, reason).
    pub refused: Vec<(u64, String)>,
}

impl SpaceAccess {
    /// The state after `space.opened`.
    pub fn opened(space: &str, owner: &str, settings: SpaceOpened) -> Self {
        Self {
            space: space.to_string(),
            owner: owner.to_string(),
            settings,
            grants: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            refused: Vec::new(),
        }
    }

    /// Whether `agent` held `role` just before stream sequence `at` (`u64::MAX`: now). The
    /// owner holds every role.
    pub fn holds(&self, agent: &str, role: AccessRole, at: u64) -> bool {
        if agent == self.owner {
            return true;
        }
        self.grants
            .get(agent)
            .and_then(|roles| roles.get(&role))
            .and_then(|h| h.iter().rev().find(|(seq, _)| *seq < at))
            .is_some_and(|(_, granted)| *granted)
    }

    /// Whether `agent` may write changes at sequence `at`.
    pub fn can_write(&self, agent: &str, at: u64) -> bool {
        self.holds(agent, AccessRole::Writer, at)
    }

    /// Agents currently holding `role` (the owner included), sorted.
    pub fn holders(&self, role: AccessRole) -> Vec<String> {
        let mut out: Vec<String> = self
            .grants
            .keys()
            .filter(|a| self.holds(a, role, u64::MAX))
            .cloned()
            .collect();
        if !out.contains(&self.owner) {
            out.push(self.owner.clone());
        }
        out.sort();
        out
    }

    fn owner_only(&self, emitter: &str, action: &str) -> Result<(), KnowledgeError> {
        if emitter == self.owner {
            Ok(())
        } else {
            Err(KnowledgeError::NotAllowed {
                agent: emitter.to_string(),
                action: action.to_string(),
                space: self.space.clone(),
            })
        }
    }

    /// Folds a grant.
    pub fn grant(
        &mut self,
        seq: u64,
        emitter: &str,
        e: &SpaceAccessGranted,
    ) -> Result<(), KnowledgeError> {
        self.owner_only(emitter, "grant access")?;
        self.set(seq, &e.agent, e.role, true);
        Ok(())
    }

    /// Folds a revocation.
    pub fn revoke(
        &mut self,
        seq: u64,
        emitter: &str,
        e: &SpaceAccessRevoked,
    ) -> Result<(), KnowledgeError> {
        self.owner_only(emitter, "revoke access")?;
        self.set(seq, &e.agent, e.role, false);
        Ok(())
    }

    fn set(&mut self, seq: u64, agent: &str, role: AccessRole, granted: bool) {
        self.grants
            .entry(agent.to_string())
            .or_default()
            .entry(role)
            .or_default()
            .push((seq, granted));
    }

    /// Folds a snapshot record: only replicas (and the owner) may publish one, for a
    /// document of this space.
    pub fn snapshot(
        &mut self,
        seq: u64,
        emitter: &str,
        e: &SpaceSnapshotted,
    ) -> Result<(), KnowledgeError> {
        if !self.holds(emitter, AccessRole::Replica, seq) {
            return Err(KnowledgeError::NotAllowed {
                agent: emitter.to_string(),
                action: "publish snapshots".into(),
                space: self.space.clone(),
            });
        }
        match crate::space::parse_document(&e.document) {
            Some((space, shard)) if space == self.space && shard < self.settings.shards => {}
            _ => return Err(KnowledgeError::UnknownDocument(e.document.clone())),
        }
        let newer = self
            .snapshots
            .get(&e.document)
            .is_none_or(|old| old.stream_sequence < e.stream_sequence);
        if newer {
            self.snapshots.insert(e.document.clone(), e.clone());
        }
        Ok(())
    }
}

/// Folds one `space.*` event (sequence from the log) into `spaces`, the access of every
/// space: what every replica and the compactor fold. Returns the space's access when the
/// event opened it. A refusal leaves the access unchanged (it is noted in the space's
/// `refused` when the space exists) and is returned.
pub fn apply_space_event(
    spaces: &mut BTreeMap<String, SpaceAccess>,
    sequence: u64,
    event: &murmur_protocol::VerifiedEvent,
) -> Result<Option<SpaceAccess>, KnowledgeError> {
    use murmur_protocol::Payload;
    let space = event.subject.aggregate().as_str().to_string();
    let emitter = event.emitter().to_string();
    let payload_err = |e: murmur_protocol::payload::PayloadError| KnowledgeError::Ingest(e.into());
    let result = match event.record.ty.as_str() {
        SpaceOpened::TYPE => {
            let opened: SpaceOpened = event.payload().map_err(payload_err)?;
            if spaces.contains_key(&space) {
                Err(KnowledgeError::SpaceExists(space.clone()))
            } else if opened.shards == 0 || opened.shards > crate::space::MAX_SHARDS {
                Err(KnowledgeError::InvalidSpace(
                    space.clone(),
                    format!("{} shards", opened.shards),
                ))
            } else {
                crate::space::space_token(&space)?;
                let access = SpaceAccess::opened(&space, &emitter, opened);
                spaces.insert(space.clone(), access.clone());
                return Ok(Some(access));
            }
        }
        SpaceAccessGranted::TYPE => {
            let e: SpaceAccessGranted = event.payload().map_err(payload_err)?;
            match spaces.get_mut(&space) {
                Some(access) => access.grant(sequence, &emitter, &e),
                None => Err(KnowledgeError::UnknownSpace(space.clone())),
            }
        }
        SpaceAccessRevoked::TYPE => {
            let e: SpaceAccessRevoked = event.payload().map_err(payload_err)?;
            match spaces.get_mut(&space) {
                Some(access) => access.revoke(sequence, &emitter, &e),
                None => Err(KnowledgeError::UnknownSpace(space.clone())),
            }
        }
        SpaceSnapshotted::TYPE => {
            let e: SpaceSnapshotted = event.payload().map_err(payload_err)?;
            match spaces.get_mut(&space) {
                Some(access) => access.snapshot(sequence, &emitter, &e),
                None => Err(KnowledgeError::UnknownSpace(space.clone())),
            }
        }
        other => Err(KnowledgeError::Layout(format!(
            "{other} is not a space event"
        ))),
    };
    if let Err(e) = &result
        && let Some(access) = spaces.get_mut(&space)
    {
        access.refused.push((sequence, e.to_string()));
    }
    result.map(|()| None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SpaceAccess {
        SpaceAccess::opened(
            "s",
            "OWNER",
            SpaceOpened {
                title: String::new(),
                shards: 2,
                max_fact_bytes: 4096,
            },
        )
    }

    #[test]
    fn access_is_judged_at_the_changes_position() {
        let mut s = space();
        assert!(s.can_write("OWNER", 1));
        assert!(!s.can_write("A", 5));
        s.grant(
            10,
            "OWNER",
            &SpaceAccessGranted {
                agent: "A".into(),
                role: AccessRole::Writer,
            },
        )
        .expect("grant");
        assert!(!s.can_write("A", 10), "not before the grant's own position");
        assert!(s.can_write("A", 11));
        s.revoke(
            20,
            "OWNER",
            &SpaceAccessRevoked {
                agent: "A".into(),
                role: AccessRole::Writer,
            },
        )
        .expect("revoke");
        assert!(s.can_write("A", 15));
        assert!(!s.can_write("A", 21));
        assert!(!s.holds("A", AccessRole::Replica, 15));
        assert!(matches!(
            s.grant(
                30,
                "A",
                &SpaceAccessGranted {
                    agent: "A".into(),
                    role: AccessRole::Writer
                }
            ),
            Err(KnowledgeError::NotAllowed { .. })
        ));
    }

    #[test]
    fn snapshots_need_a_replica_and_a_known_document() {
        let mut s = space();
        let snap = |doc: &str, seq| SpaceSnapshotted {
            document: doc.into(),
            object: "o".into(),
            heads: vec![],
            stream_sequence: seq,
            size: 1,
            sha256: String::new(),
        };
        assert!(s.snapshot(3, "M", &snap("s-0", 2)).is_err());
        s.grant(
            4,
            "OWNER",
            &SpaceAccessGranted {
                agent: "M".into(),
                role: AccessRole::Replica,
            },
        )
        .expect("g");
        s.snapshot(5, "M", &snap("s-0", 4)).expect("snapshot");
        assert!(matches!(
            s.snapshot(6, "M", &snap("s-7", 4)),
            Err(KnowledgeError::UnknownDocument(_))
        ));
        s.snapshot(7, "M", &snap("s-0", 3))
            .expect("older is accepted but not latest");
        assert_eq!(s.snapshots["s-0"].stream_sequence, 4);
    }
}
