//! Facts: subject, predicate, typed object, confidence, provenance, validity and tags.
//!
//! A fact's id is derived from its content *and its author*, so two agents asserting the same
//! triple make two facts (two assertions) instead of racing to create one object — the
//! Automerge "concurrent create" trap, where one of two maps made under one key is hidden.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::KnowledgeError;

/// A fact's object: a typed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// True or false.
    Bool(bool),
    /// A point in time.
    Time(DateTime<Utc>),
    /// A reference to an entity or another fact (by id or name).
    Ref(String),
}

impl Value {
    /// Reads a value typed on a command line: `true`/`false`, an integer, a float, an RFC 3339
    /// time, `@name` for a reference; anything else is text.
    pub fn parse_loose(text: &str) -> Value {
        if let Some(r) = text.strip_prefix('@') {
            return Value::Ref(r.to_string());
        }
        match text {
            "true" => return Value::Bool(true),
            "false" => return Value::Bool(false),
            _ => {}
        }
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = text.parse::<f64>()
            && f.is_finite()
        {
            return Value::Float(f);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Value::Time(t.with_timezone(&Utc));
        }
        Value::Text(text.to_string())
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Time(t) => f.write_str(&t.to_rfc3339()),
            Value::Ref(r) => write!(f, "@{r}"),
        }
    }
}

/// What an agent asserts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactDraft {
    /// What the fact is about, e.g. `crate:mathlib`.
    pub subject: String,
    /// The relation, e.g. `builds_with`.
    pub predicate: String,
    /// The value.
    pub object: Value,
    /// The author's confidence in 0..=1.
    pub confidence: f64,
    /// Free tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Start of validity.
    #[serde(default)]
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default)]
    pub valid_to: Option<DateTime<Utc>>,
    /// The event this fact was derived from, if any.
    #[serde(default)]
    pub source_event: Option<String>,
}

impl FactDraft {
    /// A fact with confidence 1 and nothing optional.
    pub fn new(subject: impl Into<String>, predicate: impl Into<String>, object: Value) -> Self {
        Self {
            subject: subject.into(),
            predicate: predicate.into(),
            object,
            confidence: 1.0,
            tags: BTreeSet::new(),
            valid_from: None,
            valid_to: None,
            source_event: None,
        }
    }

    /// Sets the confidence.
    pub fn confidence(mut self, confidence: f64) -> Self {
        self.confidence = confidence;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    /// Sets the validity interval.
    pub fn valid(mut self, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Self {
        self.valid_from = from;
        self.valid_to = to;
        self
    }

    /// Records the event the fact came from.
    pub fn from_event(mut self, event_id: impl Into<String>) -> Self {
        self.source_event = Some(event_id.into());
        self
    }
}

/// The immutable part of a fact, written once by its author (stored as one JSON string, one
/// Automerge operation, so a fact costs few operations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactCore {
    /// Subject.
    pub subject: String,
    /// Predicate.
    pub predicate: String,
    /// Object.
    pub object: Value,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<DateTime<Utc>>,
    /// The author's public key (must equal the change's actor).
    pub author: String,
    /// Source event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event: Option<String>,
    /// When the author asserted it.
    pub asserted_at: DateTime<Utc>,
}

/// Limits on text inside a fact.
const MAX_NAME_BYTES: usize = 1024;

impl FactCore {
    /// Builds and checks the core of `draft` by `author` at `now`; `max_bytes` bounds its JSON.
    pub fn from_draft(
        draft: &FactDraft,
        author: &str,
        now: DateTime<Utc>,
        max_bytes: usize,
    ) -> Result<(FactId, FactCore, String), KnowledgeError> {
        let invalid = |why: String| Err(KnowledgeError::InvalidFact(why));
        if draft.subject.trim().is_empty() || draft.predicate.trim().is_empty() {
            return invalid("subject and predicate must not be empty".into());
        }
        if draft.subject.len() > MAX_NAME_BYTES || draft.predicate.len() > MAX_NAME_BYTES {
            return invalid(format!(
                "subject and predicate are limited to {MAX_NAME_BYTES} bytes"
            ));
        }
        if !(0.0..=1.0).contains(&draft.confidence) {
            return invalid(format!("confidence {} is outside 0..=1", draft.confidence));
        }
        if let Value::Float(f) = draft.object
            && !f.is_finite()
        {
            return invalid("a float object must be finite".into());
        }
        if let (Some(a), Some(b)) = (draft.valid_from, draft.valid_to)
            && a > b
        {
            return invalid(format!("valid_from {a} is after valid_to {b}"));
        }
        let core = FactCore {
            subject: draft.subject.clone(),
            predicate: draft.predicate.clone(),
            object: draft.object.clone(),
            tags: draft.tags.clone(),
            valid_from: draft.valid_from,
            valid_to: draft.valid_to,
            author: author.to_string(),
            source_event: draft.source_event.clone(),
            asserted_at: now,
        };
        let json =
            serde_json::to_string(&core).map_err(|e| KnowledgeError::InvalidFact(e.to_string()))?;
        if json.len() > max_bytes {
            return Err(KnowledgeError::FactTooLarge {
                size: json.len(),
                limit: max_bytes,
            });
        }
        Ok((core.id(), core, json))
    }

    /// The content-derived id: SHA-256 over author, subject, predicate, object and validity
    /// (not the time or tags, so re-asserting the same statement is idempotent).
    pub fn id(&self) -> FactId {
        let identity = serde_json::json!([
            self.author,
            self.subject,
            self.predicate,
            self.object,
            self.valid_from,
            self.valid_to
        ]);
        let digest = Sha256::digest(identity.to_string().as_bytes());
        FactId(hex(&digest[..16]))
    }

    /// Whether the fact is valid at `t` (no interval means always).
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.valid_from.is_none_or(|from| from <= t) && self.valid_to.is_none_or(|to| t <= to)
    }
}

/// A fact's id: 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FactId(pub(crate) String);

impl FactId {
    /// Checks and wraps an id.
    pub fn parse(text: &str) -> Result<Self, KnowledgeError> {
        if text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(FactId(text.to_string()))
        } else {
            Err(KnowledgeError::InvalidFactId(
                text.chars().take(80).collect(),
            ))
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FactId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn ids_depend_on_author_and_content_not_time() {
        let d = FactDraft::new("crate:a", "depends_on", Value::Ref("crate:b".into()));
        let (a1, ..) = FactCore::from_draft(&d, "UA", now(), 4096).expect("ok");
        let (a2, ..) =
            FactCore::from_draft(&d, "UA", now() + chrono::Duration::hours(1), 4096).expect("ok");
        let (b, ..) = FactCore::from_draft(&d, "UB", now(), 4096).expect("ok");
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert!(FactId::parse(a1.as_str()).is_ok());
    }

    #[test]
    fn bad_facts_are_refused_with_reasons() {
        let big = FactDraft::new("s", "p", Value::Text("x".repeat(5000)));
        assert!(matches!(
            FactCore::from_draft(&big, "UA", now(), 4096),
            Err(KnowledgeError::FactTooLarge { limit: 4096, .. })
        ));
        let conf = FactDraft::new("s", "p", Value::Int(1)).confidence(1.5);
        assert!(matches!(
            FactCore::from_draft(&conf, "UA", now(), 4096),
            Err(KnowledgeError::InvalidFact(_))
        ));
        let empty = FactDraft::new(" ", "p", Value::Int(1));
        assert!(FactCore::from_draft(&empty, "UA", now(), 4096).is_err());
        let backwards = FactDraft::new("s", "p", Value::Int(1))
            .valid(Some(now()), Some(now() - chrono::Duration::days(1)));
        assert!(FactCore::from_draft(&backwards, "UA", now(), 4096).is_err());
    }

    #[test]
    fn loose_values() {
        assert_eq!(Value::parse_loose("42"), Value::Int(42));
        assert_eq!(Value::parse_loose("4.5"), Value::Float(4.5));
        assert_eq!(Value::parse_loose("true"), Value::Bool(true));
        assert_eq!(Value::parse_loose("@crate:b"), Value::Ref("crate:b".into()));
        assert_eq!(Value::parse_loose("hello"), Value::Text("hello".into()));
        assert!(matches!(
            Value::parse_loose("2026-01-01T00:00:00Z"),
            Value::Time(_)
        ));
    }
}
