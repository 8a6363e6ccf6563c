//! One knowledge document: facts in an Automerge map, laid out so concurrent edits by
//! different agents never hide each other.
//!
//! Layout (root map, one entry per fact):
//!
//! ```text
//! <fact id> : Map                  created once, by the fact's author
//!   "core"          : Str(JSON)    FactCore; written once by the author
//!   "conf:<agent>"  : F64          each agent's own confidence; only that agent writes it
//!   "f:<field>"     : Str(JSON)    shared fields ({value, at}); concurrent sets are conflicts
//!   "status"        : Str(JSON)    retraction / supersession (never a delete)
//!   "res:<field>"   : Str(JSON)    the last resolution of a field's conflict, with candidates
//! ```
//!
//! Nothing is ever deleted: retraction and supersession are statuses, and history stays in
//! the document. Concurrent values of one key are all returned (`Disputed`), with their
//! authors read from the operations' actor ids — never hidden behind Automerge's winner,
//! which is picked by operation counter and actor, not by time or merit.

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue,
    Value as AmValue,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::KnowledgeError;
use crate::fact::{FactCore, FactDraft, FactId, Value};
use crate::space::{actor_for, author_of};

/// A shared field's value with the time its writer set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The value.
    pub value: Value,
    /// When it was set (the writer's clock; advisory, used by the most-recent policy).
    pub at: DateTime<Utc>,
}

/// A value and who wrote it (the verified author behind the operation's actor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attributed<T> {
    /// The value.
    pub value: T,
    /// The author's public key.
    pub author: String,
}

/// Every value a key holds: Automerge's winner and the concurrent ones it would hide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disputed<T> {
    /// The value reads return.
    pub winner: Attributed<T>,
    /// Values written concurrently with the winner (empty when undisputed).
    pub others: Vec<Attributed<T>>,
}

impl<T> Disputed<T> {
    /// Whether concurrent writers disagree.
    pub fn in_conflict(&self) -> bool {
        !self.others.is_empty()
    }

    /// The winner and then the others.
    pub fn all(&self) -> impl Iterator<Item = &Attributed<T>> {
        std::iter::once(&self.winner).chain(&self.others)
    }
}

/// A fact's lifecycle state besides active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactState {
    /// Withdrawn by a writer.
    Retracted,
    /// Replaced by another fact.
    Superseded,
}

/// A retraction or supersession.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Which.
    pub state: FactState,
    /// The replacing fact, for supersession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<FactId>,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// How a conflict is resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum ResolutionPolicy {
    /// The value whose author is most confident in the fact.
    HighestConfidence,
    /// The value set last (by its `at`; ties by author).
    MostRecent,
    /// A value chosen by a person or agent.
    Manual {
        /// The chosen value.
        value: Value,
    },
}

/// A recorded resolution of one field's conflict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolutionRecord {
    /// The field.
    pub field: String,
    /// The policy applied.
    pub policy: ResolutionPolicy,
    /// The value written.
    pub chosen: Value,
    /// The values that were in conflict, with their authors.
    pub candidates: Vec<Attributed<Stamped>>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A fact as read from a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactView {
    /// Its id.
    pub id: FactId,
    /// The immutable part.
    pub core: FactCore,
    /// Each agent's confidence.
    pub confidences: BTreeMap<String, f64>,
    /// Shared fields.
    pub fields: BTreeMap<String, Disputed<Stamped>>,
    /// Retraction / supersession, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Disputed<StatusRecord>>,
    /// The last resolution per field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolutions: BTreeMap<String, Disputed<ResolutionRecord>>,
}

impl FactView {
    /// The mean of the agents' confidences (the author's alone until others weigh in).
    pub fn confidence(&self) -> f64 {
        if self.confidences.is_empty() {
            return 0.0;
        }
        self.confidences.values().sum::<f64>() / self.confidences.len() as f64
    }

    /// Neither retracted nor superseded.
    pub fn is_active(&self) -> bool {
        self.status.is_none()
    }

    /// The names of keys whose values are in conflict (`status` included).
    pub fn conflicting_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .fields
            .iter()
            .filter(|(_, d)| d.in_conflict())
            .map(|(k, _)| k.clone())
            .collect();
        if self.status.as_ref().is_some_and(Disputed::in_conflict) {
            out.push("status".into());
        }
        out
    }
}

pub(crate) const CORE: &str = "core";
pub(crate) const CONF: &str = "conf:";
pub(crate) const FIELD: &str = "f:";
pub(crate) const STATUS: &str = "status";
pub(crate) const RESOLUTION: &str = "res:";
/// Local operations after which a document commits on its own, so one change (and the
/// event carrying it) stays far below the event size limit.
pub const AUTO_COMMIT_OPS: usize = 1_500;

/// One knowledge document.
#[derive(Debug)]
pub struct KnowledgeDoc {
    doc: AutoCommit,
    author: String,
    max_fact_bytes: usize,
    pending_bytes: usize,
}

impl Clone for KnowledgeDoc {
    fn clone(&self) -> Self {
        let mut doc = self.doc.clone();
        doc.set_actor(self.doc.get_actor().clone());
        Self {
            doc,
            author: self.author.clone(),
            max_fact_bytes: self.max_fact_bytes,
            pending_bytes: self.pending_bytes,
        }
    }
}

/// Checks a shared field's name.
fn check_field(name: &str) -> Result<(), KnowledgeError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KnowledgeError::InvalidFact(format!(
            "field name {name:?} must be 1-128 characters of [a-z0-9_.-]"
        )))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, KnowledgeError> {
    serde_json::to_string(value).map_err(|e| KnowledgeError::InvalidFact(e.to_string()))
}

impl KnowledgeDoc {
    /// An empty document written by `author` (its public key) in writing session `session`.
    pub fn new(author: &str, session: [u8; 8], max_fact_bytes: usize) -> Self {
        Self {
            doc: AutoCommit::new().with_actor(actor_for(author, session)),
            author: author.to_string(),
            max_fact_bytes,
            pending_bytes: 0,
        }
    }

    /// Loads a saved document (a snapshot) for `author`'s session `session`.
    pub fn load(
        bytes: &[u8],
        author: &str,
        session: [u8; 8],
        max_fact_bytes: usize,
    ) -> Result<Self, KnowledgeError> {
        let doc = AutoCommit::load(bytes)?.with_actor(actor_for(author, session));
        Ok(Self {
            doc,
            author: author.to_string(),
            max_fact_bytes,
            pending_bytes: 0,
        })
    }

    /// The author this replica writes as.
    pub fn author(&self) -> &str {
        &self.author
    }

    /// This session's actor id.
    pub fn actor(&self) -> &ActorId {
        self.doc.get_actor()
    }

    fn stamp(&mut self, value: &impl Serialize) -> Result<String, KnowledgeError> {
        let json = to_json(value)?;
        if json.len() > self.max_fact_bytes {
            return Err(KnowledgeError::FactTooLarge {
                size: json.len(),
                limit: self.max_fact_bytes,
            });
        }
        self.pending_bytes += json.len();
        Ok(json)
    }

    fn fact_object(&self, id: &FactId) -> Result<ObjId, KnowledgeError> {
        match self.doc.get(ROOT, id.as_str())? {
            Some((AmValue::Object(ObjType::Map), obj)) => Ok(obj),
            _ => Err(KnowledgeError::UnknownFact(id.clone())),
        }
    }

    /// Asserts a fact; idempotent for the same author and content. Not committed yet.
    pub fn assert_fact(
        &mut self,
        draft: &FactDraft,
        now: DateTime<Utc>,
    ) -> Result<FactId, KnowledgeError> {
        let (id, _core, json) =
            FactCore::from_draft(draft, &self.author, now, self.max_fact_bytes)?;
        if let Ok(obj) = self.fact_object(&id) {
            self.doc
                .put(&obj, format!("{CONF}{}", self.author), draft.confidence)?;
            return Ok(id);
        }
        self.pending_bytes += json.len();
        let obj = self.doc.put_object(ROOT, id.as_str(), ObjType::Map)?;
        self.doc.put(&obj, CORE, json)?;
        self.doc
            .put(&obj, format!("{CONF}{}", self.author), draft.confidence)?;
        Ok(id)
    }

    /// Sets this author's confidence in a fact.
    pub fn set_confidence(&mut self, id: &FactId, confidence: f64) -> Result<(), KnowledgeError> {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(KnowledgeError::InvalidFact(format!(
                "confidence {confidence} is outside 0..=1"
            )));
        }
        let obj = self.fact_object(id)?;
        self.doc
            .put(&obj, format!("{CONF}{}", self.author), confidence)?;
        Ok(())
    }

    /// Sets a shared field of a fact.
    pub fn set_field(
        &mut self,
        id: &FactId,
        field: &str,
        value: Value,
        now: DateTime<Utc>,
    ) -> Result<(), KnowledgeError> {
        check_field(field)?;
        let json = self.stamp(&Stamped { value, at: now })?;
        let obj = self.fact_object(id)?;
        self.doc.put(&obj, format!("{FIELD}{field}"), json)?;
        Ok(())
    }

    /// Retracts a fact (kept, marked retracted).
    pub fn retract(
        &mut self,
        id: &FactId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), KnowledgeError> {
        self.set_status(
            id,
            StatusRecord {
                state: FactState::Retracted,
                superseded_by: None,
                reason: reason.to_string(),
                at: now,
            },
        )
    }

    /// Marks `old` as superseded by `new` (which may live in another document of the space;
    /// the caller checks it exists).
    pub fn supersede(
        &mut self,
        old: &FactId,
        new: &FactId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), KnowledgeError> {
        self.set_status(
            old,
            StatusRecord {
                state: FactState::Superseded,
                superseded_by: Some(new.clone()),
                reason: reason.to_string(),
                at: now,
            },
        )
    }

    fn set_status(&mut self, id: &FactId, status: StatusRecord) -> Result<(), KnowledgeError> {
        let json = self.stamp(&status)?;
        let obj = self.fact_object(id)?;
        self.doc.put(&obj, STATUS, json)?;
        Ok(())
    }

    /// Resolves a field's conflict by `policy`: writes the chosen value (which supersedes
    /// every concurrent one) and records the resolution with the candidates.
    pub fn resolve(
        &mut self,
        id: &FactId,
        field: &str,
        policy: ResolutionPolicy,
        now: DateTime<Utc>,
    ) -> Result<ResolutionRecord, KnowledgeError> {
        let view = self
            .fact(id)?
            .ok_or_else(|| KnowledgeError::UnknownFact(id.clone()))?;
        let disputed = view
            .fields
            .get(field)
            .filter(|d| d.in_conflict())
            .ok_or_else(|| KnowledgeError::NotInConflict {
                fact: id.clone(),
                field: field.to_string(),
            })?;
        let candidates: Vec<Attributed<Stamped>> = disputed.all().cloned().collect();
        let chosen = choose(&candidates, &policy, &view.confidences);
        let record = ResolutionRecord {
            field: field.to_string(),
            policy,
            chosen: chosen.clone(),
            candidates,
            at: now,
        };
        let json = self.stamp(&record)?;
        self.set_field(id, field, chosen, now)?;
        let obj = self.fact_object(id)?;
        self.doc.put(&obj, format!("{RESOLUTION}{field}"), json)?;
        Ok(record)
    }

    /// Local operations not committed yet.
    pub fn pending_ops(&self) -> usize {
        self.doc.pending_ops()
    }

    /// Bytes of text written by pending local operations.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Commits pending local operations into one change and returns it.
    pub fn commit(&mut self, now: DateTime<Utc>) -> Option<Change> {
        self.pending_bytes = 0;
        self.doc
            .commit_with(CommitOptions::default().with_time(now.timestamp()))?;
        self.doc.get_last_local_change()
    }

    /// Applies a batch of remote changes in one call (one call per message is slow on large
    /// documents; see the crate docs).
    pub fn apply_changes(&mut self, changes: Vec<Change>) -> Result<(), KnowledgeError> {
        self.doc.apply_changes(changes)?;
        Ok(())
    }

    /// Changes the document needs but does not have (a change arrived before its parents).
    pub fn missing_dependencies(&mut self) -> Vec<ChangeHash> {
        self.doc.get_missing_deps(&[])
    }

    /// Whether the document holds the change with this hash.
    pub fn has_change(&self, hash: &ChangeHash) -> bool {
        ReadDoc::get_change_by_hash(&self.doc, hash).is_some()
    }

    /// The current heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The current heads as sorted hex strings.
    pub fn heads_hex(&mut self) -> Vec<String> {
        let mut heads: Vec<String> = self.heads().iter().map(ToString::to_string).collect();
        heads.sort();
        heads
    }

    /// The compacted document.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Every change since `heads` (all when empty).
    pub fn changes_since(&mut self, heads: &[ChangeHash]) -> Vec<Change> {
        self.doc.get_changes(heads)
    }

    /// The underlying Automerge document, for the sync protocol.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// One fact, now.
    pub fn fact(&self, id: &FactId) -> Result<Option<FactView>, KnowledgeError> {
        self.fact_at(id, None)
    }

    /// One fact as of `heads` (now when `None`).
    pub fn fact_at(
        &self,
        id: &FactId,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Option<FactView>, KnowledgeError> {
        let found = match heads {
            Some(h) => self.doc.get_at(ROOT, id.as_str(), h)?,
            None => self.doc.get(ROOT, id.as_str())?,
        };
        match found {
            Some((AmValue::Object(ObjType::Map), obj)) => self.read_fact(id.clone(), &obj, heads),
            _ => Ok(None),
        }
    }

    /// Every fact (sorted by id) as of `heads` (now when `None`).
    pub fn facts_at(&self, heads: Option<&[ChangeHash]>) -> Result<Vec<FactView>, KnowledgeError> {
        let keys: Vec<String> = match heads {
            Some(h) => self.doc.keys_at(ROOT, h).collect(),
            None => self.doc.keys(ROOT).collect(),
        };
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Ok(id) = FactId::parse(&key) else {
                continue;
            };
            if let Some(view) = self.fact_at(&id, heads)? {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// How many facts the document holds.
    pub fn len(&self) -> usize {
        self.doc.length(ROOT)
    }

    /// Whether the document holds no facts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn all_values(
        &self,
        obj: &ObjId,
        key: &str,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Vec<(String, ObjId, AmValue<'_>)>, KnowledgeError> {
        let all = match heads {
            Some(h) => self.doc.get_all_at(obj, key, h)?,
            None => self.doc.get_all(obj, key)?,
        };
        Ok(all
            .into_iter()
            .map(|(v, id)| (author_of_op(&id), id, v))
            .collect())
    }

    fn disputed<T: serde::de::DeserializeOwned>(
        &self,
        obj: &ObjId,
        key: &str,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Option<Disputed<T>>, KnowledgeError> {
        let winner = match heads {
            Some(h) => self.doc.get_at(obj, key, h)?,
            None => self.doc.get(obj, key)?,
        };
        let Some((_, winner_id)) = winner else {
            return Ok(None);
        };
        let mut win = None;
        let mut others = Vec::new();
        for (author, id, value) in self.all_values(obj, key, heads)? {
            let Some(parsed) = value
                .as_str()
                .and_then(|s| serde_json::from_str::<T>(s).ok())
            else {
                continue;
            };
            let attributed = Attributed {
                value: parsed,
                author,
            };
            if id == winner_id {
                win = Some(attributed);
            } else {
                others.push(attributed);
            }
        }
        Ok(win.map(|winner| Disputed { winner, others }))
    }

    fn read_fact(
        &self,
        id: FactId,
        obj: &ObjId,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Option<FactView>, KnowledgeError> {
        let core = match heads {
            Some(h) => self.doc.get_at(obj, CORE, h)?,
            None => self.doc.get(obj, CORE)?,
        };
        let Some(core) = core
            .and_then(|(v, _)| v.as_str().map(str::to_string))
            .and_then(|s| serde_json::from_str::<FactCore>(&s).ok())
        else {
            return Ok(None);
        };
        let keys: Vec<String> = match heads {
            Some(h) => self.doc.keys_at(obj, h).collect(),
            None => self.doc.keys(obj).collect(),
        };
        let mut view = FactView {
            id,
            core,
            confidences: BTreeMap::new(),
            fields: BTreeMap::new(),
            status: None,
            resolutions: BTreeMap::new(),
        };
        for key in keys {
            if let Some(agent) = key.strip_prefix(CONF) {
                // Only the agent itself writes its key; take the value it wrote.
                for (author, _, value) in self.all_values(obj, &key, heads)? {
                    if author == agent
                        && let AmValue::Scalar(s) = &value
                        && let ScalarValue::F64(c) = s.as_ref()
                    {
                        view.confidences.insert(agent.to_string(), *c);
                    }
                }
            } else if let Some(field) = key.strip_prefix(FIELD) {
                if let Some(d) = self.disputed::<Stamped>(obj, &key, heads)? {
                    view.fields.insert(field.to_string(), d);
                }
            } else if let Some(field) = key.strip_prefix(RESOLUTION) {
                if let Some(d) = self.disputed::<ResolutionRecord>(obj, &key, heads)? {
                    view.resolutions.insert(field.to_string(), d);
                }
            } else if key == STATUS {
                view.status = self.disputed::<StatusRecord>(obj, &key, heads)?;
            }
        }
        Ok(Some(view))
    }
}

fn author_of_op(id: &ObjId) -> String {
    match id {
        ObjId::Id(_, actor, _) => author_of(actor).unwrap_or_else(|| format!("actor:{actor}")),
        ObjId::Root => "root".into(),
    }
}

/// The value a policy picks among conflicting candidates (pure).
pub fn choose(
    candidates: &[Attributed<Stamped>],
    policy: &ResolutionPolicy,
    confidences: &BTreeMap<String, f64>,
) -> Value {
    let by_recency = |a: &&Attributed<Stamped>, b: &&Attributed<Stamped>| {
        a.value
            .at
            .cmp(&b.value.at)
            .then_with(|| a.author.cmp(&b.author))
    };
    let picked = match policy {
        ResolutionPolicy::Manual { value } => return value.clone(),
        ResolutionPolicy::MostRecent => candidates.iter().max_by(by_recency),
        ResolutionPolicy::HighestConfidence => candidates.iter().max_by(|a, b| {
            let ca = confidences.get(&a.author).copied().unwrap_or(0.0);
            let cb = confidences.get(&b.author).copied().unwrap_or(0.0);
            ca.total_cmp(&cb).then_with(|| by_recency(a, b))
        }),
    };
    picked
        .map(|c| c.value.value.clone())
        .unwrap_or(Value::Text(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_protocol::Identity;

    fn t(h: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + i64::from(h) * 3600, 0).expect("time")
    }

    fn sync(a: &mut KnowledgeDoc, b: &mut KnowledgeDoc) {
        let from_a = a.changes_since(&[]);
        let from_b = b.changes_since(&[]);
        b.apply_changes(from_a).expect("apply");
        a.apply_changes(from_b).expect("apply");
    }

    #[test]
    fn concurrent_edits_merge_and_conflicts_show_both_authors() {
        let (ka, kb) = (Identity::generate(), Identity::generate());
        let mut a = KnowledgeDoc::new(ka.public_key(), [1; 8], 4096);
        let mut b = KnowledgeDoc::new(kb.public_key(), [2; 8], 4096);
        let id = a
            .assert_fact(
                &FactDraft::new("crate:app", "status", Value::Text("green".into())).confidence(0.6),
                t(0),
            )
            .expect("assert");
        a.commit(t(0));
        sync(&mut a, &mut b);
        // Concurrent: both set the same field, and B asserts its own fact.
        a.set_field(&id, "owner", Value::Text("alice".into()), t(1))
            .expect("set");
        b.set_field(&id, "owner", Value::Text("bob".into()), t(2))
            .expect("set");
        b.set_confidence(&id, 0.9).expect("conf");
        let own = b
            .assert_fact(
                &FactDraft::new("crate:app", "status", Value::Text("green".into())),
                t(2),
            )
            .expect("assert");
        a.commit(t(1));
        b.commit(t(2));
        sync(&mut a, &mut b);
        assert_eq!(a.heads_hex(), b.heads_hex());
        let view = a.fact(&id).expect("read").expect("present");
        let owner = &view.fields["owner"];
        assert!(owner.in_conflict());
        let mut authors: Vec<&str> = owner.all().map(|v| v.author.as_str()).collect();
        authors.sort();
        let mut expected = vec![ka.public_key(), kb.public_key()];
        expected.sort();
        assert_eq!(authors, expected);
        assert_eq!(
            view.confidences.len(),
            2,
            "each agent's confidence kept: {:?}",
            view.confidences
        );
        assert_ne!(
            own, id,
            "the same statement by another author is another fact"
        );
        assert_eq!(a.facts_at(None).expect("facts").len(), 2);
        assert_eq!(view.conflicting_fields(), vec!["owner".to_string()]);

        // Resolution by highest confidence picks B's value (0.9 > 0.6) and is recorded.
        let record = a
            .resolve(&id, "owner", ResolutionPolicy::HighestConfidence, t(3))
            .expect("resolve");
        assert_eq!(record.chosen, Value::Text("bob".into()));
        assert_eq!(record.candidates.len(), 2);
        a.commit(t(3));
        sync(&mut a, &mut b);
        let after = b.fact(&id).expect("read").expect("present");
        assert!(!after.fields["owner"].in_conflict());
        assert_eq!(
            after.fields["owner"].winner.value.value,
            Value::Text("bob".into())
        );
        assert_eq!(after.resolutions["owner"].winner.author, ka.public_key());
        assert!(matches!(
            b.resolve(&id, "owner", ResolutionPolicy::MostRecent, t(4)),
            Err(KnowledgeError::NotInConflict { .. })
        ));
    }

    #[test]
    fn retraction_keeps_history_and_as_of_reads_the_past() {
        let k = Identity::generate();
        let mut a = KnowledgeDoc::new(k.public_key(), [1; 8], 4096);
        let old = a
            .assert_fact(&FactDraft::new("svc", "port", Value::Int(80)), t(0))
            .expect("a");
        a.commit(t(0));
        let before = a.heads();
        let new = a
            .assert_fact(&FactDraft::new("svc", "port", Value::Int(8080)), t(1))
            .expect("a");
        a.supersede(&old, &new, "moved", t(1)).expect("supersede");
        a.commit(t(1));
        let now = a.fact(&old).expect("r").expect("still there");
        let status = now.status.expect("status");
        assert_eq!(status.winner.value.state, FactState::Superseded);
        assert_eq!(status.winner.value.superseded_by.as_ref(), Some(&new));
        let then = a.facts_at(Some(&before)).expect("past");
        assert_eq!(then.len(), 1);
        assert!(then[0].is_active());
        a.retract(&new, "wrong", t(2)).expect("retract");
        a.commit(t(2));
        assert_eq!(a.len(), 2, "nothing is deleted");
        assert!(matches!(
            a.retract(&FactId::parse(&"0".repeat(32)).expect("id"), "x", t(3)),
            Err(KnowledgeError::UnknownFact(_))
        ));
    }

    #[test]
    fn policies_choose_deterministically() {
        let c = |v: i64, h: u32, who: &str| Attributed {
            value: Stamped {
                value: Value::Int(v),
                at: t(h),
            },
            author: who.to_string(),
        };
        let cands = vec![c(1, 5, "A"), c(2, 3, "B")];
        let conf: BTreeMap<String, f64> = [("A".to_string(), 0.2), ("B".to_string(), 0.8)].into();
        assert_eq!(
            choose(&cands, &ResolutionPolicy::MostRecent, &conf),
            Value::Int(1)
        );
        assert_eq!(
            choose(&cands, &ResolutionPolicy::HighestConfidence, &conf),
            Value::Int(2)
        );
        assert_eq!(
            choose(
                &cands,
                &ResolutionPolicy::Manual {
                    value: Value::Int(9)
                },
                &conf
            ),
            Value::Int(9)
        );
    }
}
