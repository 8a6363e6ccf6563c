//! `tool.memory`: recall from a knowledge space, by meaning and by words. This is how models
//! read memory: a step asks for the facts nearest a text and gets them ranked, with their
//! ids, so what an answer rests on can be traced to the fact and its author.
//!
//! Ranking is pure ([`rank`]): a fact's words score is the share of the query's words it
//! holds; with an [`Embedder`] (all-MiniLM-L6-v2 through candle on memory agents started
//! with `--embedding-model`), its meaning score is the cosine similarity of the two
//! sentence embeddings, and the score weighs meaning 0.8 and words 0.2. Without one, words
//! alone rank. Facts scoring nothing are left out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use murmur_knowledge::{FactView, KnowledgeReplica, Query, ReplicaConfig, Value};
use murmur_subjects::EventLog;
use serde::{Deserialize, Serialize};

use crate::worker::{Handler, TaskContext};

/// The capability of recall.
pub const MEMORY_CAPABILITY: &str = "tool.memory";

/// Matches returned unless a request asks for another number.
pub const DEFAULT_MATCHES: usize = 5;

/// Most matches a request may ask for.
pub const MAX_MATCHES: usize = 50;

/// Weight of the meaning score where there is one; words weigh the rest.
pub const MEANING_WEIGHT: f32 = 0.8;

/// Most embeddings a recall agent keeps between requests (texts seen before are not
/// embedded again); past it the cache starts over.
const EMBEDDING_CACHE: usize = 100_000;

fn assistant_space() -> String {
    crate::assistant::MEMORY_SPACE.into()
}

/// What a `tool.memory` task asks (its input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// What to recall: a question or a few words.
    pub query: String,
    /// The knowledge space (default: the assistant's).
    #[serde(default = "assistant_space")]
    pub space: String,
    /// Only facts with this predicate (e.g. `answered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// How many matches (default [`DEFAULT_MATCHES`], at most [`MAX_MATCHES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<usize>,
}

/// One recalled fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    /// The fact's id.
    pub fact: String,
    /// Its subject.
    pub subject: String,
    /// Its predicate.
    pub predicate: String,
    /// Its object, as text.
    pub object: String,
    /// Who asserted it.
    pub author: String,
    /// The score it was ranked by (0 to 1).
    pub score: f32,
    /// Cosine similarity of meaning, where an embedder ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<f32>,
    /// Share of the query's words it holds.
    pub words: f32,
}

/// What a recall gave back (the task's output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallOutcome {
    /// The space searched.
    pub space: String,
    /// `embedding` or `words`.
    pub method: String,
    /// The embedding model, where one ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// How many facts were searched.
    pub searched: usize,
    /// The best matches, best first.
    pub matches: Vec<Recalled>,
}

/// Sentence embeddings for recall (unit length: a dot product is the cosine).
pub trait Embedder: Send + Sync {
    /// One embedding per text, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
    /// The model's name.
    fn model(&self) -> String;
}

/// A fact as recall reads it: subject, predicate and object in words.
pub fn fact_text(fact: &FactView) -> String {
    let object = match &fact.core.object {
        Value::Text(text) => text.clone(),
        other => other.to_string(),
    };
    format!(
        "{} {} {}",
        fact.core.subject,
        fact.core.predicate.replace('_', " "),
        object
    )
}

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

/// The share of `query`'s words (two letters or more, any case) that `text` holds.
pub fn word_score(query: &str, text: &str) -> f32 {
    let asked = words(query);
    if asked.is_empty() {
        return 0.0;
    }
    let held = words(text);
    asked.intersection(&held).count() as f32 / asked.len() as f32
}

/// The dot product of two unit vectors: their cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ranks `facts` for `query`: `meanings[i]` is fact i's cosine similarity where an embedder
/// ranked. Best first, ties by fact id; facts scoring nothing are left out; at most `most`.
pub fn rank(
    query: &str,
    facts: &[FactView],
    meanings: Option<&[f32]>,
    most: usize,
) -> Vec<Recalled> {
    let mut ranked: Vec<Recalled> = facts
        .iter()
        .enumerate()
        .map(|(i, fact)| {
            let words = word_score(query, &fact_text(fact));
            let meaning = meanings.and_then(|m| m.get(i).copied());
            let score = match meaning {
                Some(m) => MEANING_WEIGHT * m.max(0.0) + (1.0 - MEANING_WEIGHT) * words,
                None => words,
            };
            Recalled {
                fact: fact.id.to_string(),
                subject: fact.core.subject.clone(),
                predicate: fact.core.predicate.clone(),
                object: match &fact.core.object {
                    Value::Text(text) => text.clone(),
                    other => other.to_string(),
                },
                author: fact.core.author.clone(),
                score,
                meaning,
                words,
            }
        })
        .filter(|r| r.score > 0.0)
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.fact.cmp(&b.fact))
    });
    ranked.truncate(most);
    ranked
}

/// A recall agent's state: a replica per space asked about, and the embeddings of texts
/// seen.
struct Recall {
    log: EventLog,
    embedder: Option<Arc<dyn Embedder>>,
    replicas: tokio::sync::Mutex<HashMap<String, KnowledgeReplica>>,
    embeddings: std::sync::Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl Recall {
    async fn facts(&self, request: &RecallRequest) -> Result<Vec<FactView>, String> {
        let mut replicas = self.replicas.lock().await;
        if !replicas.contains_key(&request.space) {
            let replica =
                KnowledgeReplica::open(self.log.clone(), ReplicaConfig::space(&request.space))
                    .await
                    .map_err(|e| format!("opening space {}: {e}", request.space))?;
            replicas.insert(request.space.clone(), replica);
        }
        let replica = replicas
            .get_mut(&request.space)
            .ok_or("the replica was just opened")?;
        replica
            .refresh()
            .await
            .map_err(|e| format!("reading space {}: {e}", request.space))?;
        if replica.base().space(&request.space).is_none() {
            return Err(format!(
                "there is no knowledge space {:?} (`murmur kb spaces` lists them)",
                request.space
            ));
        }
        let query = Query {
            predicate: request.predicate.clone(),
            ..Default::default()
        };
        replica
            .query(&request.space, &query, None)
            .map_err(|e| format!("querying space {}: {e}", request.space))
    }

    /// Cosine similarities of `query` with each fact, embedding only texts not seen before.
    fn meanings(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        facts: &[FactView],
    ) -> Result<Vec<f32>, String> {
        let texts: Vec<String> = facts.iter().map(fact_text).collect();
        let missing: Vec<String> = {
            let cache = self
                .embeddings
                .lock()
                .map_err(|_| "embedding cache poisoned")?;
            let mut missing: Vec<String> = std::iter::once(query.to_string())
                .chain(texts.iter().cloned())
                .filter(|t| !cache.contains_key(t))
                .collect();
            missing.sort();
            missing.dedup();
            missing
        };
        let mut fresh = HashMap::new();
        for chunk in missing.chunks(32) {
            for (text, vector) in chunk.iter().zip(embedder.embed(chunk)?) {
                fresh.insert(text.clone(), Arc::new(vector));
            }
        }
        let mut cache = self
            .embeddings
            .lock()
            .map_err(|_| "embedding cache poisoned")?;
        if cache.len() + fresh.len() > EMBEDDING_CACHE {
            cache.clear();
        }
        cache.extend(fresh);
        let vector = |text: &String| cache.get(text).cloned().ok_or("an embedding went missing");
        let asked = vector(&query.to_string())?;
        texts
            .iter()
            .map(|t| Ok(cosine(&asked, &vector(t)?)))
            .collect()
    }
}

/// The worker handler of `tool.memory`: each attempt reads the space as of now (the agent's
/// replica, refreshed from the log) and ranks its active facts for the query.
pub fn recall_handler(log: EventLog, embedder: Option<Arc<dyn Embedder>>) -> Handler {
    let recall = Arc::new(Recall {
        log,
        embedder,
        replicas: Default::default(),
        embeddings: Default::default(),
    });
    crate::worker::handler(move |ctx: TaskContext| {
        let recall = recall.clone();
        async move {
            if ctx.capability != MEMORY_CAPABILITY {
                return Err(format!(
                    "this memory agent runs {MEMORY_CAPABILITY} tasks, not {} (knowledge queries go over request/reply: `murmur kb query`)",
                    ctx.capability
                ));
            }
            let request: RecallRequest = serde_json::from_value(ctx.input).map_err(|e| {
                format!(
                    "a tool.memory task takes {{\"query\": TEXT, \"space\": NAME, \"predicate\": NAME, \"matches\": N}}: {e}"
                )
            })?;
            if request.query.trim().is_empty() {
                return Err("the recall query is empty".into());
            }
            let most = request
                .matches
                .unwrap_or(DEFAULT_MATCHES)
                .clamp(1, MAX_MATCHES);
            let facts = recall.facts(&request).await?;
            let (meanings, model) = match recall.embedder.clone() {
                Some(embedder) => {
                    let (recall, query, facts) =
                        (recall.clone(), request.query.clone(), facts.clone());
                    let model = embedder.model();
                    let meanings = tokio::task::spawn_blocking(move || {
                        recall.meanings(embedder.as_ref(), &query, &facts)
                    })
                    .await
                    .map_err(|e| format!("the embedding thread failed: {e}"))??;
                    (Some(meanings), Some(model))
                }
                None => (None, None),
            };
            let outcome = RecallOutcome {
                space: request.space.clone(),
                method: if model.is_some() {
                    "embedding"
                } else {
                    "words"
                }
                .into(),
                model,
                searched: facts.len(),
                matches: rank(&request.query, &facts, meanings.as_deref(), most),
            };
            serde_json::to_value(outcome).map_err(|e| e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use murmur_knowledge::FactDraft;
    use murmur_knowledge::KnowledgeDoc;

    fn facts(drafts: &[(&str, &str, &str)]) -> Vec<FactView> {
        let key = murmur_subjects::Identity::generate();
        let mut doc = KnowledgeDoc::new(key.public_key(), [0; 8], 4096);
        let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        let ids: Vec<_> = drafts
            .iter()
            .map(|(s, p, o)| {
                doc.assert_fact(&FactDraft::new(*s, *p, Value::Text(o.to_string())), now)
                    .expect("fact")
            })
            .collect();
        ids.iter()
            .map(|id| doc.fact(id).expect("read").expect("fact"))
            .collect()
    }

    #[test]
    fn words_rank_the_facts_holding_the_query_s_words() {
        let facts = facts(&[
            (
                "question:capital of france",
                "answered",
                "Paris is the capital of France.",
            ),
            (
                "question:lines in src/lib.rs",
                "answered",
                "src/lib.rs has 12 lines.",
            ),
            ("question:weather", "answered", "It rains."),
        ]);
        let ranked = rank("How many lines has src/lib.rs?", &facts, None, 5);
        assert_eq!(ranked.len(), 1, "{ranked:?}");
        assert_eq!(ranked[0].object, "src/lib.rs has 12 lines.");
        assert!(ranked[0].meaning.is_none());
        // "how", "many", "lines", "has", "src", "lib", "rs": five of seven held.
        assert!((ranked[0].words - 5.0 / 7.0).abs() < 1e-6, "{ranked:?}");
        assert!(rank("", &facts, None, 5).is_empty());
        assert!(rank("tomorrow?", &facts, None, 5).is_empty());
    }

    #[test]
    fn meaning_outweighs_words_and_ties_go_by_id() {
        let facts = facts(&[
            ("a", "note", "the cat sat on the mat"),
            ("b", "note", "stock prices fell"),
            ("c", "note", "stock prices fell"),
        ]);
        // The first fact shares no word with the query but means the most.
        let ranked = rank("a kitten resting", &facts, Some(&[0.9, 0.1, 0.1]), 2);
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].subject, "a");
        assert!((ranked[0].score - 0.72).abs() < 1e-6);
        let first_tied = facts[1].id.clone().min(facts[2].id.clone());
        assert_eq!(ranked[1].fact, first_tied.to_string());
        let all = rank("a kitten resting", &facts, Some(&[0.9, 0.1, 0.1]), 50);
        assert_eq!(all.len(), 3);
        assert!(all[1].fact < all[2].fact, "ties by id: {all:?}");
        assert_eq!(word_score("Stock PRICES", "stock prices fell"), 1.0);
        assert_eq!(cosine(&[0.6, 0.8], &[0.6, 0.8]), 1.0);
    }
}
