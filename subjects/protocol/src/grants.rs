//! Who held which role when: the fold of the realm's `role.*` events.
//!
//! A realm is claimed once (`role.claimed`, the first claim in the log wins); its owner
//! holds the operator role and signs `role.granted` / `role.revoked` events, as may anyone
//! holding the operator role at that position. [`RoleBook::roles_at`] answers which roles a
//! key held at any position of the log, so a decision is judged by the authority its
//! emitter had when it was written, on live reads and on a replay alike, with no server's
//! word needed. [`RoleBook::admit`] is the gate every fold applies before an event counts.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::VerifiedEvent;
use crate::events::{RealmClaimed, RoleGranted, RoleRevoked};
use crate::fold::Refusal;
use crate::identity::check_public_key;
use crate::payload::Payload;
use crate::roles::{Role, RoleSet};
use crate::subject::{Domain, Plane, SubjectFilter, Token};

/// One grant of one role to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The participant's name, as granted.
    pub name: String,
    /// The key that signed the grant.
    pub granted_by: String,
    /// Log position of the grant: it holds from here.
    pub from: u64,
    /// When it was stored.
    pub granted_at: Option<DateTime<Utc>>,
    /// When it ends by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// Log position of its revocation: it holds up to, not including, here.
    pub until: Option<u64>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
}

impl Grant {
    /// Whether it holds at log position `seq`, stored at `at` (`None`: time not known,
    /// expiry not checked).
    pub fn holds(&self, seq: u64, at: Option<DateTime<Utc>>) -> bool {
        self.from <= seq
            && self.until.is_none_or(|u| seq < u)
            && match (self.expires_at, at) {
                (Some(end), Some(at)) => at < end,
                _ => true,
            }
    }

    /// Its state at `now`: `active`, `expired` or `revoked`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.until.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// The realm's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its key.
    pub key: String,
    /// Its name, as claimed.
    pub name: String,
    /// Log position of the claim.
    pub since: u64,
}

/// One realm's authority: its owner and every grant ever made, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmRoles {
    /// Who claimed the realm first.
    pub owner: Option<Owner>,
    /// Grants by participant key, in log order.
    pub grants: BTreeMap<String, Vec<Grant>>,
}

impl RealmRoles {
    /// The roles `key` held at log position `seq`, stored at `at`.
    pub fn roles_at(&self, key: &str, seq: u64, at: Option<DateTime<Utc>>) -> RoleSet {
        let mut set = RoleSet::EMPTY;
        if let Some(owner) = &self.owner
            && owner.key == key
            && owner.since <= seq
        {
            set = set.with(Role::Operator);
        }
        for grant in self.grants.get(key).into_iter().flatten() {
            if grant.holds(seq, at) {
                set = set.with(grant.role);
            }
        }
        set
    }
}

/// Every realm's authority, folded from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBook {
    realms: BTreeMap<String, RealmRoles>,
    position: u64,
}

/// The subjects of `realm`'s authority events.
pub fn filter(realm: &Token) -> SubjectFilter {
    SubjectFilter::plane(Plane::Evt)
        .realm(realm.clone())
        .domain(Domain::Role)
}

impl RoleBook {
    /// The last log position folded (0: none).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Notes that everything up to `position` has been read (role events or not), so a
    /// reader knows how far the book is current.
    pub fn advance(&mut self, position: u64) {
        self.position = self.position.max(position);
    }

    /// One realm's authority.
    pub fn realm(&self, realm: &str) -> Option<&RealmRoles> {
        self.realms.get(realm)
    }

    /// The roles `key` held in `realm` at log position `seq`, stored at `at`.
    pub fn roles_at(&self, realm: &str, key: &str, seq: u64, at: Option<DateTime<Utc>>) -> RoleSet {
        self.realms
            .get(realm)
            .map_or(RoleSet::EMPTY, |r| r.roles_at(key, seq, at))
    }

    /// Folds one `role.*` event; anything else is ignored. Events at or before the
    /// book's position were folded already and are skipped, so a reader may feed an event
    /// twice (inline and from a separate read) without effect.
    pub fn apply(&mut self, event: &VerifiedEvent) -> Result<(), Refusal> {
        if event.subject.domain() != Domain::Role {
            return Ok(());
        }
        let Some(seq) = event.stream_sequence else {
            return Err(Refusal("a role event must come from the log".into()));
        };
        if seq <= self.position {
            return Ok(());
        }
        self.position = seq;
        let realm = self
            .realms
            .entry(event.subject.realm().as_str().to_string())
            .or_default();
        let emitter = event.emitter();
        let key = event.subject.aggregate().as_str();
        let bad = |e: crate::payload::PayloadError| Refusal(e.to_string());
        match event.record.ty.as_str() {
            RealmClaimed::TYPE => {
                let claim: RealmClaimed = event.payload().map_err(bad)?;
                if key != emitter {
                    return Err(Refusal(format!("{emitter} claimed the realm for {key}")));
                }
                if let Some(owner) = &realm.owner {
                    return Err(Refusal(format!(
                        "the realm was claimed by {} ({}) at {}",
                        owner.key, owner.name, owner.since
                    )));
                }
                realm.owner = Some(Owner {
                    key: emitter.to_string(),
                    name: claim.name,
                    since: seq,
                });
            }
            RoleGranted::TYPE | RoleRevoked::TYPE => {
                if !realm
                    .roles_at(emitter, seq, event.stored_at)
                    .contains(Role::Operator)
                {
                    return Err(Refusal(format!(
                        "{emitter} is neither the realm's owner nor an operator at {seq}"
                    )));
                }
                check_public_key(key).map_err(|e| Refusal(e.to_string()))?;
                if event.record.ty == RoleGranted::TYPE {
                    let g: RoleGranted = event.payload().map_err(bad)?;
                    realm
                        .grants
                        .entry(key.to_string())
                        .or_default()
                        .push(Grant {
                            role: g.role,
                            name: g.name,
                            granted_by: emitter.to_string(),
                            from: seq,
                            granted_at: event.stored_at,
                            expires_at: g.expires_at,
                            until: None,
                            revoked_reason: None,
                        });
                } else {
                    let r: RoleRevoked = event.payload().map_err(bad)?;
                    for grant in realm.grants.entry(key.to_string()).or_default() {
                        if grant.until.is_none() && r.role.is_none_or(|role| role == grant.role) {
                            grant.until = Some(seq);
                            grant.revoked_reason = Some(r.reason.clone());
                        }
                    }
                }
            }
            other => return Err(Refusal(format!("{other} is not a role event"))),
        }
        Ok(())
    }

    /// The gate before any fold counts `event`: sets [`VerifiedEvent::roles`] to what its
    /// emitter held at the event's position (the book's position for an event from the
    /// live plane), and refuses a decision ([`Payload::ROLE_CHECKED`]) from an identity
    /// without one of the roles its type names, and an event on another identity's own
    /// aggregate ([`Payload::OWN_AGGREGATE`]).
    pub fn admit(&self, event: &mut VerifiedEvent) -> Result<(), Refusal> {
        let seq = event.stream_sequence.unwrap_or(self.position);
        let at = event.stored_at.or(event.record.time);
        event.roles = self.roles_at(event.subject.realm().as_str(), event.emitter(), seq, at);
        let t = &event.event_type;
        if t.own_aggregate && event.subject.aggregate().as_str() != event.emitter() {
            return Err(Refusal(format!(
                "{} is about {}, but {} signed it",
                t.ty,
                event.subject.aggregate(),
                event.emitter()
            )));
        }
        if t.role_checked && !event.roles.any_of(t.emitted_by) {
            return Err(Refusal(format!(
                "{} counts only from a {}; {} held {} at {}",
                t.ty,
                t.emitted_by
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                event.emitter(),
                event.roles,
                seq
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AgentJoined, Hardware, TaskAssigned, TaskLeaseExpired};
    use crate::{Draft, EventCodec, Identity};

    struct Log {
        codec: EventCodec,
        seq: u64,
    }

    impl Log {
        fn event<P: Payload>(&mut self, who: &Identity, aggregate: &str, p: &P) -> VerifiedEvent {
            let sealed = Draft::new(Token::new(aggregate).expect("token"), p)
                .expect("draft")
                .seal(who, &Token::new("acme").expect("token"));
            let (h, b) = self.codec.encode(&sealed).expect("encode");
            let mut ev = self
                .codec
                .decode(sealed.subject.as_str(), Some(&h), &b)
                .expect("decode");
            self.seq += 1;
            ev.stream_sequence = Some(self.seq);
            ev.stored_at = Some(
                "2026-01-01T00:00:00Z"
                    .parse::<DateTime<Utc>>()
                    .expect("time")
                    + chrono::Duration::seconds(self.seq as i64),
            );
            ev
        }
    }

    fn log() -> Log {
        Log {
            codec: EventCodec::default(),
            seq: 0,
        }
    }

    fn grant(role: Role) -> RoleGranted {
        RoleGranted {
            role,
            name: "x".into(),
            expires_at: None,
        }
    }

    fn assigned() -> TaskAssigned {
        TaskAssigned {
            agent: "a".into(),
            attempt: 1,
            lease_ms: 1000,
            work: None,
        }
    }

    #[test]
    fn the_first_claim_owns_the_realm_and_only_its_owner_or_operators_grant() {
        let (owner, other, coord) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let mut log = log();
        let mut book = RoleBook::default();
        let claim = RealmClaimed { name: "up".into() };
        book.apply(&log.event(&owner, owner.public_key(), &claim))
            .expect("first claim");
        let second = book.apply(&log.event(&other, other.public_key(), &claim));
        assert!(
            second
                .expect_err("second claim")
                .0
                .contains("was claimed by")
        );
        // Another key cannot grant; the owner can.
        let forged = book.apply(&log.event(&other, coord.public_key(), &grant(Role::Coordinator)));
        assert!(
            forged
                .expect_err("not owner")
                .0
                .contains("neither the realm's owner")
        );
        book.apply(&log.event(&owner, coord.public_key(), &grant(Role::Coordinator)))
            .expect("owner grants");
        assert!(
            book.roles_at("acme", coord.public_key(), log.seq, None)
                .contains(Role::Coordinator)
        );
        assert!(
            book.roles_at("acme", owner.public_key(), log.seq, None)
                .contains(Role::Operator)
        );
        assert!(
            book.roles_at("acme", other.public_key(), log.seq, None)
                .is_empty()
        );
        // An operator grants too.
        book.apply(&log.event(&owner, other.public_key(), &grant(Role::Operator)))
            .expect("owner makes an operator");
        let third = Identity::generate();
        book.apply(&log.event(&other, third.public_key(), &grant(Role::Voter)))
            .expect("operator grants");
        assert!(
            book.roles_at("acme", third.public_key(), log.seq, None)
                .contains(Role::Voter)
        );
    }

    #[test]
    fn a_decision_counts_only_while_its_emitter_holds_the_role() {
        let (owner, coord) = (Identity::generate(), Identity::generate());
        let mut log = log();
        let mut book = RoleBook::default();
        book.apply(&log.event(
            &owner,
            owner.public_key(),
            &RealmClaimed { name: "up".into() },
        ))
        .expect("claim");
        // Before the grant: refused.
        let mut early = log.event(&coord, "t1", &assigned());
        let why = book.admit(&mut early).expect_err("not yet a coordinator");
        assert!(why.0.contains("counts only from a coordinator"), "{why}");
        book.apply(&log.event(&owner, coord.public_key(), &grant(Role::Coordinator)))
            .expect("grant");
        let mut during = log.event(&coord, "t1", &assigned());
        book.admit(&mut during).expect("a coordinator now");
        assert!(during.roles.contains(Role::Coordinator));
        let revoked = RoleRevoked {
            role: Some(Role::Coordinator),
            reason: "rotated".into(),
        };
        book.apply(&log.event(&owner, coord.public_key(), &revoked))
            .expect("revoke");
        let mut after = log.event(
            &coord,
            "t1",
            &TaskLeaseExpired {
                attempt: 1,
                agent: "a".into(),
            },
        );
        assert!(book.admit(&mut after).is_err());
        // Judged by its position, not by when it is read: the event from during the grant
        // still counts after the revocation.
        let mut again = during.clone();
        book.admit(&mut again).expect("held at its position");
        // The owner is an operator, not a coordinator.
        let mut by_owner = log.event(&owner, "t2", &assigned());
        assert!(book.admit(&mut by_owner).is_err());
    }

    #[test]
    fn expired_grants_stop_at_their_time_and_own_aggregates_are_checked() {
        let (owner, agent) = (Identity::generate(), Identity::generate());
        let mut log = log();
        let mut book = RoleBook::default();
        book.apply(&log.event(
            &owner,
            owner.public_key(),
            &RealmClaimed { name: "up".into() },
        ))
        .expect("claim");
        let mut g = grant(Role::Coordinator);
        g.expires_at = Some("2026-01-01T00:00:04Z".parse().expect("time"));
        book.apply(&log.event(&owner, agent.public_key(), &g))
            .expect("grant");
        let mut inside = log.event(&agent, "t", &assigned()); // stored at 00:00:03
        book.admit(&mut inside).expect("before expiry");
        let mut outside = log.event(&agent, "t", &assigned()); // 00:00:04
        assert!(book.admit(&mut outside).is_err());
        let joined = AgentJoined {
            name: "a".into(),
            kind: "worker".into(),
            capabilities: vec![],
            labels: Default::default(),
            agent_version: "1".into(),
            hardware: Hardware::default(),
            slots: 1,
            handles: None,
        };
        let mut own = log.event(&agent, agent.public_key(), &joined);
        book.admit(&mut own).expect("its own aggregate");
        let mut other = log.event(&agent, owner.public_key(), &joined);
        assert!(
            book.admit(&mut other)
                .expect_err("another's")
                .0
                .contains("signed it")
        );
    }

    #[test]
    fn feeding_an_event_twice_changes_nothing() {
        let (owner, coord) = (Identity::generate(), Identity::generate());
        let mut log = log();
        let mut book = RoleBook::default();
        let claim = log.event(
            &owner,
            owner.public_key(),
            &RealmClaimed { name: "up".into() },
        );
        book.apply(&claim).expect("claim");
        let g = log.event(&owner, coord.public_key(), &grant(Role::Coordinator));
        book.apply(&g).expect("grant");
        let before = book.clone();
        book.apply(&claim).expect("skipped");
        book.apply(&g).expect("skipped");
        assert_eq!(book, before);
    }
}
