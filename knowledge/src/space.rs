//! Space and document names, and how authors map to Automerge actors.
//!
//! A space `team-a` with 4 shards has the documents `team-a-0` … `team-a-3`; a fact lives in
//! the document its id selects, so every replica puts it in the same place. Document names
//! are subject tokens (`murmur.v1.R.evt.knowledge.team-a-0.changed`).

use automerge::ActorId;
use murmur_protocol::Token;

use crate::error::KnowledgeError;
use crate::fact::FactId;

/// Longest space name: a document token (`{space}-{shard}`) must stay within 63 characters.
pub const MAX_SPACE_NAME: usize = 56;
/// Most documents one space may be split into.
pub const MAX_SHARDS: u16 = 256;
/// Length of an nkey public key, which starts every actor id.
const AUTHOR_LEN: usize = 56;

/// Checks a space name and returns it as a subject token.
pub fn space_token(name: &str) -> Result<Token, KnowledgeError> {
    if name.len() > MAX_SPACE_NAME {
        return Err(KnowledgeError::InvalidSpace(
            name.chars().take(80).collect(),
            format!("longer than {MAX_SPACE_NAME} characters"),
        ));
    }
    Token::new(name).map_err(|e| KnowledgeError::InvalidSpace(name.to_string(), e.to_string()))
}

/// The document of `space` numbered `shard`.
pub fn document_token(space: &Token, shard: u16) -> Token {
    // A valid space name plus `-digits` is always a valid token within the length limit.
    Token::new(format!("{}-{shard}", space.as_str())).unwrap_or_else(|_| space.clone())
}

/// Splits a document token into its space and shard (`team-a-3` → `team-a`, 3).
pub fn parse_document(document: &str) -> Option<(&str, u16)> {
    let (space, shard) = document.rsplit_once('-')?;
    if space.is_empty() || shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((space, shard.parse().ok()?))
}

/// The shard a fact lives in.
pub fn shard_of(fact: &FactId, shards: u16) -> u16 {
    let prefix = u32::from_str_radix(&fact.as_str()[..8], 16).unwrap_or(0);
    (prefix % u32::from(shards.max(1))) as u16
}

/// The actor id of one writing session: the author's public key followed by a session nonce,
/// so one agent key used by two processes never reuses an actor (which Automerge forbids).
pub fn actor_for(author: &str, session: [u8; 8]) -> ActorId {
    let mut bytes = author.as_bytes().to_vec();
    bytes.extend_from_slice(&session);
    ActorId::from(bytes)
}

/// The author (public key) an actor id names, if it is one of ours.
pub fn author_of(actor: &ActorId) -> Option<String> {
    let bytes = actor.to_bytes();
    if bytes.len() < AUTHOR_LEN {
        return None;
    }
    let key = std::str::from_utf8(&bytes[..AUTHOR_LEN]).ok()?;
    key.bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        .then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_are_unambiguous() {
        let space = space_token("team-a-1").expect("valid");
        let doc = document_token(&space, 12);
        assert_eq!(doc.as_str(), "team-a-1-12");
        assert_eq!(parse_document(doc.as_str()), Some(("team-a-1", 12)));
        assert_eq!(parse_document("nodigits-x"), None);
        assert!(space_token(&"a".repeat(57)).is_err());
        assert!(space_token("Bad.Name").is_err());
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let id = FactId::parse("ffffffff000000000000000000000000").expect("id");
        assert_eq!(shard_of(&id, 1), 0);
        assert_eq!(shard_of(&id, 4), (0xffff_ffffu32 % 4) as u16);
        assert!(shard_of(&id, 7) < 7);
    }

    #[test]
    fn actors_name_their_author() {
        let key = murmur_protocol::Identity::generate();
        let actor = actor_for(key.public_key(), [7; 8]);
        assert_eq!(author_of(&actor).as_deref(), Some(key.public_key()));
        assert_eq!(author_of(&ActorId::from(vec![1u8, 2, 3])), None);
    }
}
