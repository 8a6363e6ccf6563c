//! Knowledge queries over NATS request/reply: what a memory agent answers on
//! `murmur.v1.{realm}.rpc.space.{space}.query`. Replies are signed like sync replies, over
//! the request's nonce, the space and the body, so a reply cannot be replayed to another
//! request; the asker accepts one only from a key holding the replica role in the space
//! (or its owner), read from the log.

use std::time::Duration;

use murmur_subjects::identity::SignatureVerifier;
use murmur_subjects::{Plane, Subject, SubjectFilter, Token};
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
    /// A value fresh for each request, which the reply's signature covers.
    #[serde(default)]
    pub nonce: String,
}

/// What a query reply's signature covers: the request's nonce, the space, the body.
pub fn reply_signed_bytes(nonce: &str, space: &str, body: &[u8]) -> Vec<u8> {
    crate::sync::signed_bytes(nonce, space, body)
}

/// The access to `space` as of the log's end: its owner and grants, folded from the space's
/// events as every replica folds them. `None` when the space was never opened.
pub async fn space_access(
    log: &murmur_subjects::EventLog,
    space: &str,
) -> Result<Option<crate::access::SpaceAccess>, KnowledgeError> {
    let events = murmur_subjects::projection::read_aggregate(
        log,
        murmur_subjects::Domain::Space,
        &space_token(space)?,
    )
    .await?;
    let mut base = crate::KnowledgeBase::new(log.identity().public_key(), [0; 8]);
    for (sequence, event) in events {
        if let Ok(event) = event {
            // A refused space event is refused here as by every replica.
            let _ = base.apply_space_event(sequence, &event);
        }
    }
    Ok(base.space(space).cloned())
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
    Ok(murmur_subjects::roles::SPACE_QUERY.subject(realm, &space_token(space)?))
}

/// Every space's query subject in a realm.
pub fn query_filter(realm: &Token) -> SubjectFilter {
    rpc_filter(realm, &murmur_subjects::roles::SPACE_QUERY)
}

/// Every subject of a declared endpoint in a realm (what a server subscribes to).
pub(crate) fn rpc_filter(
    realm: &Token,
    endpoint: &murmur_subjects::roles::Endpoint,
) -> SubjectFilter {
    let f = SubjectFilter::plane(Plane::Rpc)
        .realm(realm.clone())
        .domain(endpoint.domain);
    match Token::new(endpoint.verb) {
        Ok(verb) => f.verb(verb),
        Err(_) => f,
    }
}

/// A header of a message (a reply, a repo frame), or empty.
pub fn header(message: &async_nats::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// Asks whichever memory agent serves `space` in `log`'s realm; returns the reply and the
/// key that signed it. The reply counts only when signed over this request's nonce by a key
/// that holds the replica role in the space (or owns it) as the log says now.
pub async fn query_remote(
    log: &murmur_subjects::EventLog,
    space: &str,
    request: &QueryRequest,
    timeout: Duration,
) -> Result<(QueryReply, String), KnowledgeError> {
    let subject = query_subject(log.realm(), space)?.to_string();
    let mut request = request.clone();
    request.nonce = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&request).map_err(|e| KnowledgeError::Request(e.to_string()))?;
    let client = log.client();
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
        .verify_detached(
            &signer,
            &reply_signed_bytes(&request.nonce, space, &reply.payload),
            &header(&reply, SIGNATURE_HEADER),
        )
        .map_err(|e| KnowledgeError::Request(format!("query reply refused: {e}")))?;
    let access = space_access(log, space).await?;
    let serves = access.is_some_and(|a| {
        a.owner == signer
            || a.holds(
                &signer,
                murmur_subjects::events::AccessRole::Replica,
                u64::MAX,
            )
    });
    if !serves {
        return Err(KnowledgeError::Request(format!(
            "query reply refused: {signer} does not hold the replica role in space {space}"
        )));
    }
    let parsed: QueryReply = serde_json::from_slice(&reply.payload)
        .map_err(|e| KnowledgeError::Request(format!("bad query reply: {e}")))?;
    if let Some(error) = &parsed.error {
        return Err(KnowledgeError::Request(error.clone()));
    }
    Ok((parsed, signer))
}
