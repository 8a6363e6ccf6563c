//! Queries over facts (pure): by subject, predicate, object, tag, author, confidence and time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::document::FactView;
use crate::fact::Value;

/// A conjunction of conditions; an empty query matches every active fact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Exact subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Exact predicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// Exact object value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// Carries this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Asserted by this author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Mean confidence at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
    /// Asserted at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asserted_after: Option<DateTime<Utc>>,
    /// Asserted at or before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asserted_before: Option<DateTime<Utc>>,
    /// Valid at this time (by the facts' validity intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_at: Option<DateTime<Utc>>,
    /// Include retracted and superseded facts.
    #[serde(default)]
    pub include_inactive: bool,
    /// Only facts with conflicting field values.
    #[serde(default)]
    pub conflicts_only: bool,
    /// Most results (0: no limit).
    #[serde(default)]
    pub limit: usize,
}

impl Query {
    /// Whether `fact` satisfies every condition.
    pub fn matches(&self, fact: &FactView) -> bool {
        let core = &fact.core;
        self.subject.as_ref().is_none_or(|s| *s == core.subject)
            && self.predicate.as_ref().is_none_or(|p| *p == core.predicate)
            && self.object.as_ref().is_none_or(|o| *o == core.object)
            && self.tag.as_ref().is_none_or(|t| core.tags.contains(t))
            && self.author.as_ref().is_none_or(|a| *a == core.author)
            && self.min_confidence.is_none_or(|c| fact.confidence() >= c)
            && self.asserted_after.is_none_or(|t| core.asserted_at >= t)
            && self.asserted_before.is_none_or(|t| core.asserted_at <= t)
            && self.valid_at.is_none_or(|t| core.valid_at(t))
            && (self.include_inactive || fact.is_active())
            && (!self.conflicts_only || !fact.conflicting_fields().is_empty())
    }

    /// The matching facts, in the given order, cut at `limit`.
    pub fn run<'a>(&self, facts: impl IntoIterator<Item = &'a FactView>) -> Vec<&'a FactView> {
        let it = facts.into_iter().filter(|f| self.matches(f));
        if self.limit == 0 {
            it.collect()
        } else {
            it.take(self.limit).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::KnowledgeDoc;
    use crate::fact::FactDraft;

    #[test]
    fn conditions_combine() {
        let now = DateTime::from_timestamp(1_790_000_000, 0).expect("t");
        let key = murmur_protocol::Identity::generate();
        let mut doc = KnowledgeDoc::new(key.public_key(), [0; 8], 4096);
        let a = doc
            .assert_fact(
                &FactDraft::new("svc:api", "port", Value::Int(80))
                    .tag("net")
                    .confidence(0.9),
                now,
            )
            .expect("a");
        doc.assert_fact(
            &FactDraft::new("svc:api", "owner", Value::Text("ops".into())).confidence(0.4),
            now,
        )
        .expect("b");
        doc.assert_fact(
            &FactDraft::new("svc:db", "port", Value::Int(5432))
                .valid(Some(now), Some(now + chrono::Duration::days(1))),
            now,
        )
        .expect("c");
        doc.retract(&a, "closed", now).expect("r");
        let facts = doc.facts_at(None).expect("facts");
        let q = |q: Query| q.run(&facts).len();
        assert_eq!(
            q(Query::default()),
            2,
            "retracted facts are hidden by default"
        );
        assert_eq!(
            q(Query {
                include_inactive: true,
                ..Default::default()
            }),
            3
        );
        assert_eq!(
            q(Query {
                subject: Some("svc:api".into()),
                include_inactive: true,
                ..Default::default()
            }),
            2
        );
        assert_eq!(
            q(Query {
                predicate: Some("port".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            q(Query {
                object: Some(Value::Int(5432)),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            q(Query {
                tag: Some("net".into()),
                include_inactive: true,
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            q(Query {
                min_confidence: Some(0.5),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            q(Query {
                valid_at: Some(now + chrono::Duration::days(2)),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            q(Query {
                author: Some("nobody".into()),
                ..Default::default()
            }),
            0
        );
        assert_eq!(
            q(Query {
                author: Some(key.public_key().into()),
                ..Default::default()
            }),
            2
        );
        assert_eq!(
            q(Query {
                limit: 1,
                ..Default::default()
            }),
            1
        );
    }
}
