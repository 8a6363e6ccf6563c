//! What the assistant remembers: the knowledge space, its predicates, and the cache's
//! view of a question.

/// How many earlier answers a `recall` step reads.
pub const RECALLED: usize = 3;

/// The knowledge space the assistant remembers its requests in: an `answered` fact per
/// normalized question (the answer, tagged with its request) and an `episode` fact per
/// request (question, plan, tool result, answer). Written by the orchestrator only.
pub const MEMORY_SPACE: &str = "assistant";

/// Predicate of a question's answer in [`MEMORY_SPACE`].
pub const ANSWERED: &str = "answered";

/// Predicate of a request's whole story in [`MEMORY_SPACE`].
pub const EPISODE: &str = "episode";

/// Predicate recording that a request was answered from the cache (the object names the
/// request whose answer it reused).
pub const CACHE_HIT: &str = "cache_hit";

/// A question as the cache compares it: lower case, one space between words, no
/// punctuation at either end.
pub fn normalize_question(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_string()
}

/// The subject of a question's facts in [`MEMORY_SPACE`].
pub fn question_subject(question: &str) -> String {
    format!("question:{}", normalize_question(question))
}

/// The subject of a request's facts in [`MEMORY_SPACE`].
pub fn request_subject(request: &str) -> String {
    format!("request:{request}")
}

/// The query for a cached answer to `question` given at `now - ttl` or later.
pub fn cache_query(
    question: &str,
    now: chrono::DateTime<chrono::Utc>,
    ttl: std::time::Duration,
) -> murmur_knowledge::Query {
    murmur_knowledge::Query {
        subject: Some(question_subject(question)),
        predicate: Some(ANSWERED.into()),
        asserted_after: Some(
            now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        ),
        ..Default::default()
    }
}

/// The newest of the cached answers `facts` (what [`cache_query`] found): its text and the
/// request that produced it (its tag).
pub fn newest_answer(facts: &[murmur_knowledge::FactView]) -> Option<(String, String)> {
    let newest = facts.iter().max_by_key(|f| f.core.asserted_at)?;
    let murmur_knowledge::Value::Text(text) = &newest.core.object else {
        return None;
    };
    let request = newest.core.tags.iter().find(|t| t.starts_with("ask-"))?;
    Some((text.clone(), request.clone()))
}
