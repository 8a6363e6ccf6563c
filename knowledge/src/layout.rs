//! Checks that a remote change keeps the document layout (pure): only its author's own keys,
//! no deletes, facts created with their content-derived id, nothing oversized.

use std::collections::HashMap;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Change, ObjType, ScalarValue};

use crate::document::{CONF, CORE, FIELD, RESOLUTION, STATUS};
use crate::error::KnowledgeError;
use crate::fact::{FactCore, FactId};
use crate::space::author_of;

/// Decodes change bytes.
pub fn decode_change(bytes: Vec<u8>) -> Result<Change, KnowledgeError> {
    Change::from_bytes(bytes).map_err(|e| KnowledgeError::CorruptChange(e.to_string()))
}

/// Checks `change`, published by the verified `emitter`, against the layout.
pub fn check_change(
    change: &Change,
    emitter: &str,
    max_fact_bytes: usize,
) -> Result<(), KnowledgeError> {
    let actor = change.actor_id();
    let author = author_of(actor).ok_or_else(|| KnowledgeError::ForgedChange {
        actor: actor.to_string(),
        emitter: emitter.to_string(),
    })?;
    if author != emitter {
        return Err(KnowledgeError::ForgedChange {
            actor: author,
            emitter: emitter.to_string(),
        });
    }
    let layout = |why: String| Err(KnowledgeError::Layout(why));
    let expanded = change.decode();
    let start = expanded.start_op.get();
    // Facts created in this change: op counter → fact id (the root key).
    let mut created: HashMap<u64, String> = HashMap::new();
    let mut cores: HashMap<u64, String> = HashMap::new();
    for (i, op) in expanded.operations.iter().enumerate() {
        let counter = start + i as u64;
        let Key::Map(key) = &op.key else {
            return layout("list operations are not part of the layout".into());
        };
        match (&op.obj, &op.action) {
            (_, OpType::Delete) => {
                return layout(format!("delete of {key:?}: retract or supersede instead"));
            }
            (ObjectId::Root, OpType::Make(ObjType::Map)) => {
                if FactId::parse(key).is_err() {
                    return layout(format!("root key {key:?} is not a fact id"));
                }
                created.insert(counter, key.to_string());
            }
            (ObjectId::Root, _) => {
                return layout(format!("root key {key:?} must hold a fact map"));
            }
            (ObjectId::Id(obj), OpType::Put(value)) => {
                let creator = author_of(&obj.1).unwrap_or_default();
                if let ScalarValue::Str(s) = value
                    && s.len() > max_fact_bytes
                {
                    return Err(KnowledgeError::FactTooLarge {
                        size: s.len(),
                        limit: max_fact_bytes,
                    });
                }
                if key.as_str() == CORE {
                    if creator != author || !created.contains_key(&obj.0) {
                        return layout(
                            "a fact's core is written once, with the fact, by its author".into(),
                        );
                    }
                    let ScalarValue::Str(s) = value else {
                        return layout("core must be text".into());
                    };
                    cores.insert(obj.0, s.to_string());
                } else if let Some(agent) = key.strip_prefix(CONF) {
                    if agent != author {
                        return layout(format!("{author} wrote another agent's confidence"));
                    }
                    match value {
                        ScalarValue::F64(c) if (0.0..=1.0).contains(c) => {}
                        _ => return layout("confidence must be a number in 0..=1".into()),
                    }
                } else if key.starts_with(FIELD)
                    || key.starts_with(RESOLUTION)
                    || key.as_str() == STATUS
                {
                    if !matches!(value, ScalarValue::Str(_)) {
                        return layout(format!("{key:?} must be text"));
                    }
                } else {
                    return layout(format!("unknown key {key:?}"));
                }
            }
            (ObjectId::Id(_), _) => {
                return layout(format!("only values may be put under {key:?}"));
            }
        }
    }
    for (counter, id) in created {
        let core = cores
            .get(&counter)
            .ok_or_else(|| KnowledgeError::Layout(format!("fact {id} created without its core")))?;
        let parsed: FactCore = serde_json::from_str(core)
            .map_err(|e| KnowledgeError::InvalidFact(format!("core of {id}: {e}")))?;
        if parsed.author != author {
            return layout(format!(
                "fact {id} names author {} but was made by {author}",
                parsed.author
            ));
        }
        if parsed.id().as_str() != id {
            return layout(format!(
                "fact id {id} is not derived from its content ({})",
                parsed.id()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::KnowledgeDoc;
    use crate::fact::{FactDraft, Value};
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT, ReadDoc};
    use murmur_protocol::Identity;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("t")
    }

    #[test]
    fn our_own_changes_pass() {
        let k = Identity::generate();
        let mut doc = KnowledgeDoc::new(k.public_key(), [1; 8], 4096);
        let id = doc
            .assert_fact(&FactDraft::new("s", "p", Value::Int(1)), now())
            .expect("a");
        doc.set_field(&id, "note", Value::Text("x".into()), now())
            .expect("f");
        doc.retract(&id, "r", now()).expect("r");
        let change = doc.commit(now()).expect("change");
        check_change(&change, k.public_key(), 4096).expect("valid");
    }

    #[test]
    fn forged_deleting_oversized_and_foreign_key_changes_are_refused() {
        let (k, other) = (Identity::generate(), Identity::generate());
        let mut doc = KnowledgeDoc::new(k.public_key(), [1; 8], 100_000);
        let id = doc
            .assert_fact(
                &FactDraft::new("s", "p", Value::Text("y".repeat(5000))),
                now(),
            )
            .expect("a");
        let change = doc.commit(now()).expect("change");
        assert!(matches!(
            check_change(&change, other.public_key(), 4096),
            Err(KnowledgeError::ForgedChange { .. })
        ));
        assert!(matches!(
            check_change(&change, k.public_key(), 4096),
            Err(KnowledgeError::FactTooLarge { .. })
        ));

        // Raw Automerge edits that break the layout.
        let actor = crate::space::actor_for(k.public_key(), [2; 8]);
        let mut raw = AutoCommit::new().with_actor(actor);
        raw.apply_changes(vec![change]).expect("apply");
        let obj = match raw.get(ROOT, id.as_str()).expect("get") {
            Some((_, obj)) => obj,
            None => unreachable!("fact present"),
        };
        raw.delete(&obj, "core").expect("delete");
        raw.commit();
        let deleting = raw.get_last_local_change().expect("c");
        assert!(matches!(
            check_change(&deleting, k.public_key(), 100_000),
            Err(KnowledgeError::Layout(_))
        ));
        raw.put(&obj, format!("conf:{}", other.public_key()), 0.5)
            .expect("put");
        raw.commit();
        let foreign = raw.get_last_local_change().expect("c");
        assert!(matches!(
            check_change(&foreign, k.public_key(), 100_000),
            Err(KnowledgeError::Layout(_))
        ));
        raw.put(ROOT, "not-a-fact", "x").expect("put");
        raw.commit();
        let stray = raw.get_last_local_change().expect("c");
        assert!(matches!(
            check_change(&stray, k.public_key(), 100_000),
            Err(KnowledgeError::Layout(_))
        ));
        assert!(matches!(
            decode_change(vec![1, 2, 3]),
            Err(KnowledgeError::CorruptChange(_))
        ));
    }
}
