//! Knowledge queries over NATS request/reply: what a memory agent answers on
//! `murmur.v1.{realm}.rpc.space.{space}.query`. Replies are signed like sync replies.

use std::time::Duration;

use murmur_subjects::identity::SignatureVerifier;
use murmur_subjects::{Domain, Plane, Subject, SubjectFilter, Token};
use serde::{Deserialize, Serialize};

use crate::document::FactView;
use crate::error::KnowledgeError;
use crate::query::Query;
use crate::space::space_token;
use crate::sync::{SIGNATURE_HEADER, SIGNER_HEADER};

/// A query request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The conditions.
    #[serde(default)]
    pub query: Query,
    /// Read the space as of this history sequence instead of now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<u64>,
}

/// A query reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryReply {
    /// Matching facts, sorted by id.
    #[serde(default)]
    pub facts: Vec<FactView>,
    /// The history position the answer reflects.
    #[serde(default)]
    pub position: u64,
    /// Why the query failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The query subject of one space.
pub fn query_subject(realm: &Token, space: &str) -> Result<Subject, KnowledgeError> {
    Ok(Subject::new(
        realm.clone(),
        Plane::Rpc,
        Domain::Space,
        space_token(space)?,
        Token::new("query").map_err(|e| KnowledgeError::Request(e.to_string()))?,
    ))
}

/// Every space's query subject in a realm.
pub fn query_filter(realm: &Token) -> SubjectFilter {
    rpc_filter(realm, Domain::Space, "query")
}

/// Every `rpc` subject of `domain` with `verb` in a realm (what a server subscribes to).
pub(crate) fn rpc_filter(realm: &Token, domain: Domain, verb: &str) -> SubjectFilter {
    let f = SubjectFilter::plane(Plane::Rpc)
        .realm(realm.clone())
        .domain(domain);
    match Token::new(verb) {
        Ok(verb) => f.verb(verb),
        Err(_) => f,
    }
}

/// A header of a reply, or empty.
pub(crate) fn header(message: &async_nats::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// Asks whichever memory agent serves `space`; returns the reply and the key that signed it.
pub async fn query_remote(
    client: &async_nats::Client,
    realm: &Token,
    space: &str,
    request: &QueryRequest,
    timeout: Duration,
) -> Result<(QueryReply, String), KnowledgeError> {
    let subject = query_subject(realm, space)?.to_string();
    let body = serde_json::to_vec(request).map_err(|e| KnowledgeError::Request(e.to_string()))?;
    let reply = tokio::time::timeout(timeout, client.request(subject.clone(), body.into()))
        .await
        .map_err(|_| {
            KnowledgeError::Request(format!(
                "no memory agent answered on {subject} within {timeout:?}"
            ))
        })?
        .map_err(|e| KnowledgeError::Request(format!("{subject}: {e}")))?;
    let signer = header(&reply, SIGNER_HEADER);
    SignatureVerifier::new()
        .verify_detached(&signer, &reply.payload, &header(&reply, SIGNATURE_HEADER))
        .map_err(|e| KnowledgeError::Request(format!("query reply refused: {e}")))?;
    let parsed: QueryReply = serde_json::from_slice(&reply.payload)
        .map_err(|e| KnowledgeError::Request(format!("bad query reply: {e}")))?;
    if let Some(error) = &parsed.error {
        return Err(KnowledgeError::Request(error.clone()));
    }
    Ok((parsed, signer))
}
