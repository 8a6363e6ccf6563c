//! The registry of declared event types: CloudEvent `type` → subject pattern → payload type →
//! JSON Schema. `murmur subjects` prints it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

use crate::events;
use crate::payload::{self, Payload, PayloadError};
use crate::roles::Role;
use crate::subject::{Domain, Plane, Subject, SubjectFilter, Token};

/// One declared event type.
#[derive(Clone, Copy)]
pub struct EventType {
    /// CloudEvent `type`.
    pub ty: &'static str,
    /// Subject domain token.
    pub domain: Domain,
    /// Subject verb token.
    pub verb: &'static str,
    /// Plane that carries it.
    pub plane: Plane,
    /// Current schema version.
    pub version: u32,
    /// One-line description.
    pub description: &'static str,
    /// The roles that may emit it ([`Payload::EMITTED_BY`]).
    pub emitted_by: &'static [Role],
    /// Whether the folds count it only from a holder of one of those roles
    /// ([`Payload::ROLE_CHECKED`]).
    pub role_checked: bool,
    /// Whether its aggregate is the emitter's key ([`Payload::OWN_AGGREGATE`]).
    pub own_aggregate: bool,
    /// The roles that may subscribe to its subject on core NATS
    /// ([`Payload::SUBSCRIBED_BY`]).
    pub subscribed_by: &'static [Role],
    schema: fn() -> serde_json::Value,
    decode: fn(&[u8]) -> Result<DecodedPayload, PayloadError>,
}

/// A payload decoded as its declared type (the current version), kept with the event so a
/// fold reading it does not decode it again.
pub(crate) type DecodedPayload = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl std::fmt::Debug for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventType")
            .field("ty", &self.ty)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl EventType {
    /// The descriptor of payload `P`.
    pub fn of<P: Payload>() -> Self {
        Self {
            ty: P::TYPE,
            domain: P::DOMAIN,
            verb: P::VERB,
            plane: P::PLANE,
            version: P::VERSION,
            description: P::DESCRIPTION,
            emitted_by: P::EMITTED_BY,
            role_checked: P::ROLE_CHECKED,
            own_aggregate: P::OWN_AGGREGATE,
            subscribed_by: P::SUBSCRIBED_BY,
            schema: payload::json_schema::<P>,
            decode: |data| {
                payload::decode::<P>(data).map(|p| std::sync::Arc::new(p) as DecodedPayload)
            },
        }
    }

    /// The JSON Schema of the current version.
    pub fn json_schema(&self) -> serde_json::Value {
        (self.schema)()
    }

    /// Checks that `data` decodes as this type (any supported version).
    pub fn validate(&self, data: &[u8]) -> Result<(), PayloadError> {
        (self.decode)(data).map(|_| ())
    }

    /// Decodes `data` as this type (any supported version), type-erased.
    pub(crate) fn decode(&self, data: &[u8]) -> Result<DecodedPayload, PayloadError> {
        (self.decode)(data)
    }

    /// The subject pattern, e.g. `murmur.v1.{realm}.evt.task.{id}.submitted`.
    pub fn pattern(&self) -> String {
        format!(
            "murmur.v1.{{realm}}.{}.{}.{{id}}.{}",
            self.plane.as_str(),
            self.domain.as_str(),
            self.verb
        )
    }

    /// The concrete subject for one aggregate in one realm.
    pub fn subject(&self, realm: &Token, aggregate: &Token) -> Subject {
        Subject::new(
            realm.clone(),
            self.plane,
            self.domain,
            aggregate.clone(),
            // Declared verbs are compile-time constants checked by the catalog test.
            Token::new(self.verb).unwrap_or_else(|_| Token::new("invalid").expect("literal")),
        )
    }

    /// A filter matching every event of this type in `realm` (or every realm).
    pub fn filter(&self, realm: Option<&Token>) -> SubjectFilter {
        let mut f = SubjectFilter::plane(self.plane).domain(self.domain);
        if let Some(r) = realm {
            f = f.realm(r.clone());
        }
        match Token::new(self.verb) {
            Ok(verb) => f.verb(verb),
            Err(_) => f,
        }
    }
}

/// Serializable view of an [`EventType`] for `murmur subjects --json`.
#[derive(Debug, Serialize)]
pub struct EventTypeView {
    /// CloudEvent type.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Subject pattern.
    pub subject: String,
    /// Plane.
    pub plane: Plane,
    /// Schema version.
    pub version: u32,
    /// Description.
    pub description: &'static str,
    /// JSON Schema.
    pub schema: serde_json::Value,
}

/// All declared event types, looked up by CloudEvent `type`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_type: BTreeMap<&'static str, EventType>,
}

impl Catalog {
    /// The catalog of every event type murmur itself declares.
    pub fn standard() -> &'static Catalog {
        static STANDARD: OnceLock<Catalog> = OnceLock::new();
        STANDARD.get_or_init(|| {
            Catalog::default()
                .with::<events::AgentJoined>()
                .with::<events::AgentLeft>()
                .with::<events::AgentHeartbeat>()
                .with::<events::AgentLoadChanged>()
                .with::<events::ProposalOpened>()
                .with::<events::VoteCast>()
                .with::<events::ProposalDecided>()
                .with::<events::ProposalDeadlinePassed>()
                .with::<events::ProposalWithdrawn>()
                .with::<events::SpaceOpened>()
                .with::<events::SpaceAccessGranted>()
                .with::<events::SpaceAccessRevoked>()
                .with::<events::SpaceSnapshotted>()
                .with::<events::KnowledgeChanged>()
                .with::<events::KnowledgeRelayed>()
                .with::<events::AgentOffline>()
                .with::<events::AgentResumed>()
                .with::<events::TaskSubmitted>()
                .with::<events::TaskAssigned>()
                .with::<events::TaskStarted>()
                .with::<events::TaskProgress>()
                .with::<events::TaskLeaseExpired>()
                .with::<events::TaskCancelled>()
                .with::<events::TaskQuestionAsked>()
                .with::<events::TaskQuestionAnswered>()
                .with::<events::TaskDeadLettered>()
                .with::<events::TaskCompleted>()
                .with::<events::TaskFailed>()
                .with::<events::DeadLettered>()
                .with::<events::Redriven>()
                .with::<events::RealmClaimed>()
                .with::<events::RoleGranted>()
                .with::<events::RoleRevoked>()
        })
    }

    /// Adds payload type `P`.
    pub fn with<P: Payload>(mut self) -> Self {
        self.by_type.insert(P::TYPE, EventType::of::<P>());
        self
    }

    /// Looks up a type.
    pub fn get(&self, ty: &str) -> Option<&EventType> {
        self.by_type.get(ty)
    }

    /// All types, sorted by CloudEvent type.
    pub fn iter(&self) -> impl Iterator<Item = &EventType> {
        self.by_type.values()
    }

    /// The declared event types a subject filter can carry: those whose plane, domain and
    /// verb the filter admits. Empty means the filter names no declared subject.
    pub fn declared_by(&self, filter: &crate::subject::SubjectFilter) -> Vec<&EventType> {
        self.iter()
            .filter(|t| filter.admits(t.plane, t.domain, t.verb))
            .collect()
    }

    /// The declared tree as indented text, grouped by plane and domain.
    pub fn tree_text(&self) -> String {
        let mut grouped: BTreeMap<(Plane, Domain), Vec<&EventType>> = BTreeMap::new();
        for t in self.iter() {
            grouped.entry((t.plane, t.domain)).or_default().push(t);
        }
        let mut out = String::from("murmur.v1.{realm}\n");
        let mut last_plane = None;
        for ((plane, domain), types) in grouped {
            if last_plane != Some(plane) {
                out.push_str(&format!("  .{plane}\n"));
                last_plane = Some(plane);
            }
            out.push_str(&format!("    .{domain}.{{id}}\n"));
            for t in types {
                out.push_str(&format!(
                    "      .{:<16} {} v{} — {}\n",
                    t.verb, t.ty, t.version, t.description
                ));
            }
        }
        out
    }

    /// Serializable views, sorted by type.
    pub fn views(&self) -> Vec<EventTypeView> {
        self.iter()
            .map(|t| EventTypeView {
                ty: t.ty,
                subject: t.pattern(),
                plane: t.plane,
                version: t.version,
                description: t.description,
                schema: t.json_schema(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_type_is_consistent() {
        let catalog = Catalog::standard();
        assert!(catalog.iter().count() >= 8);
        for t in catalog.iter() {
            Token::new(t.verb).expect("verb is a valid token");
            let expected_prefix = format!("dev.murmur.{}.", t.domain);
            assert!(
                t.ty.starts_with(&expected_prefix),
                "{} vs {}",
                t.ty,
                expected_prefix
            );
            assert!(t.ty.ends_with(t.verb), "{}", t.ty);
            let schema = t.json_schema();
            assert_eq!(schema["properties"]["v"]["const"], t.version);
        }
    }

    #[test]
    fn tree_lists_every_type() {
        let text = Catalog::standard().tree_text();
        for t in Catalog::standard().iter() {
            assert!(text.contains(t.ty), "{text}");
        }
        assert!(text.starts_with("murmur.v1.{realm}"));
    }

    #[test]
    fn subjects_come_from_the_declaration() {
        let t = Catalog::standard()
            .get("dev.murmur.task.submitted")
            .expect("declared");
        let realm = Token::new("acme").expect("token");
        let id = Token::new("t1").expect("token");
        assert_eq!(
            t.subject(&realm, &id).as_str(),
            "murmur.v1.acme.evt.task.t1.submitted"
        );
        assert_eq!(
            t.filter(Some(&realm)).to_string(),
            "murmur.v1.acme.evt.task.*.submitted"
        );
    }
}
