//! The dead-letter queue: a message refused with its reason, and a dead letter redriven.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;
use crate::roles::Role;
use crate::subject::{Domain, Plane};

/// Why a message was dead-lettered. The token doubles as the subject's domain-local
/// aggregate-free part: dead letters are filed under `murmur.v1.{realm}.dlq.sys.{reason}.dead_lettered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Body is not valid JSON / not a CloudEvent structure.
    Malformed,
    /// A required CloudEvent attribute is missing or empty.
    MissingAttribute,
    /// `specversion` is not `1.0`.
    WrongSpecVersion,
    /// The `type` is not in the catalog.
    UnknownType,
    /// The payload does not match its schema.
    SchemaViolation,
    /// The NATS subject is invalid or does not match the event.
    BadSubject,
    /// The message exceeds murmur's event size limit.
    Oversized,
    /// The signature is missing or does not verify against `source`.
    BadSignature,
    /// A handler refused the event (e.g. not allowed for this sender).
    Refused,
    /// A decision from an identity that did not hold the role it needs at its position in
    /// the log.
    Unauthorized,
}

impl DeadLetterReason {
    /// All reasons.
    pub const ALL: [DeadLetterReason; 10] = [
        DeadLetterReason::Malformed,
        DeadLetterReason::MissingAttribute,
        DeadLetterReason::WrongSpecVersion,
        DeadLetterReason::UnknownType,
        DeadLetterReason::SchemaViolation,
        DeadLetterReason::BadSubject,
        DeadLetterReason::Oversized,
        DeadLetterReason::BadSignature,
        DeadLetterReason::Refused,
        DeadLetterReason::Unauthorized,
    ];

    /// The subject token for this reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::MissingAttribute => "missing_attribute",
            DeadLetterReason::WrongSpecVersion => "wrong_specversion",
            DeadLetterReason::UnknownType => "unknown_type",
            DeadLetterReason::SchemaViolation => "schema_violation",
            DeadLetterReason::BadSubject => "bad_subject",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::BadSignature => "bad_signature",
            DeadLetterReason::Refused => "refused",
            DeadLetterReason::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `dev.murmur.sys.dead_lettered`: a message could not be accepted. Keeps the original
/// bytes (or, when over the size limit, its size, SHA-256 and a prefix) so an operator can
/// inspect and redrive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLettered {
    /// Machine-readable reason.
    pub reason: DeadLetterReason,
    /// Human-readable detail (the typed error's message).
    pub detail: String,
    /// NATS subject the message arrived on.
    pub original_subject: String,
    /// Its headers, in order.
    pub original_headers: Vec<(String, String)>,
    /// Its body size in bytes.
    pub original_size: usize,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// The whole body, base64, when it is within the size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The first bytes of the body, base64, when the whole body was too large to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_base64: Option<String>,
    /// Stream sequence of the original, when it came from a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// Which component dead-lettered it.
    pub detected_by: String,
}

impl Payload for DeadLettered {
    const TYPE: &'static str = "dev.murmur.sys.dead_lettered";
    const DOMAIN: Domain = Domain::Sys;
    const VERB: &'static str = "dead_lettered";
    const PLANE: Plane = Plane::Dlq;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str =
        "a message could not be accepted; keeps the reason and original bytes";
    const EMITTED_BY: &'static [Role] = &[Role::Auditor, Role::Memory];
}

/// `dev.murmur.sys.redriven`: an operator re-published a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Redriven {
    /// Stream sequence of the dead letter in the dead-letter stream.
    pub dead_letter_sequence: u64,
    /// Subject the original was re-published to.
    pub subject: String,
}

impl Payload for Redriven {
    const TYPE: &'static str = "dev.murmur.sys.redriven";
    const DOMAIN: Domain = Domain::Sys;
    const VERB: &'static str = "redriven";
    const PLANE: Plane = Plane::Dlq;
    const VERSION: u32 = 1;
    const DESCRIPTION: &'static str = "an operator re-published a dead letter";
    const EMITTED_BY: &'static [Role] = &[];
}
