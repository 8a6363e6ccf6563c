//! Typed, versioned event payloads.
//!
//! Every payload is a JSON object whose first member is `"v"`, the schema version it was
//! written with. Decoding reads that version first; an older version is upgraded by
//! [`Payload::upcast`], so events written years ago keep decoding on replay.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::roles::Role;
use crate::subject::{Domain, Plane};

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The bytes are not JSON, or do not fit the payload's schema.
    #[error("payload of {ty} v{version} does not match its schema: {source}")]
    Schema {
        /// The event type.
        ty: &'static str,
        /// The version found in the payload.
        version: u32,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The payload has no usable `"v"` member.
    #[error("payload of {ty} has no schema version (\"v\" member): {reason}")]
    MissingVersion {
        /// The event type.
        ty: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The payload was written with a version this build does not know.
    #[error("payload of {ty} has schema version {found}; this build reads 1..={current}")]
    UnsupportedVersion {
        /// The event type.
        ty: &'static str,
        /// Version found.
        found: u32,
        /// Newest version known.
        current: u32,
    },
    /// The event carries no data at all.
    #[error("event of type {ty} carries no data")]
    NoData {
        /// The event type.
        ty: &'static str,
    },
    /// Encoding failed (only for payloads serde cannot represent, e.g. non-string map keys).
    #[error("cannot encode payload of {ty}: {source}")]
    Encode {
        /// The event type.
        ty: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// A typed event payload, declared once with its CloudEvent type, subject parts and version.
pub trait Payload:
    Serialize + DeserializeOwned + Clone + schemars::JsonSchema + Send + Sync + 'static
{
    /// CloudEvent `type`, e.g. `dev.murmur.agent.joined`.
    const TYPE: &'static str;
    /// The domain token in the subject.
    const DOMAIN: Domain;
    /// The verb token in the subject.
    const VERB: &'static str;
    /// The plane that carries it.
    const PLANE: Plane;
    /// Current schema version (written by this build).
    const VERSION: u32;
    /// One-line description for `murmur subjects`.
    const DESCRIPTION: &'static str;
    /// The roles whose identities may emit it: the server lets them publish its subject
    /// (see [`crate::roles::permissions`]). The operator may emit anything; empty means
    /// only the operator.
    const EMITTED_BY: &'static [Role];
    /// Whether it is a decision that counts only from an identity holding one of
    /// [`Payload::EMITTED_BY`]'s roles at its position in the log (a coordinator's
    /// assignment, a tallier's decision): every fold checks it, so a replay on a server
    /// that enforces nothing reaches the same state.
    const ROLE_CHECKED: bool = false;
    /// Whether the aggregate (subject token 5) is the emitter's own key (an agent's
    /// manifest, heartbeats, departure): the server lets each identity publish only on its
    /// own, and the folds refuse one on another's.
    const OWN_AGGREGATE: bool = false;
    /// The roles that may subscribe to its subject on core NATS: for a live-plane event,
    /// the only way to receive it; for a history event, a wake-up as it is published (what
    /// they act on is still read from the log, which every role reads).
    const SUBSCRIBED_BY: &'static [Role] = &[];

    /// The one participant (public key) this event is addressed to, when it has one (an
    /// assignment's agent): the log writes it in the `Murmur-Recipient` header, so a reader
    /// following one participant's events passes over the others' without decoding them
    /// ([`crate::fold::Projection::recipient`]). A hint for skipping, never trusted: a fold
    /// still reads the addressee from the signed payload. Default: none.
    fn recipient(&self) -> Option<&str> {
        None
    }

    /// Decodes a payload written with an older schema `version` (`version < VERSION`).
    /// The default knows no older versions.
    fn upcast(version: u32, data: &[u8]) -> Result<Self, PayloadError> {
        let _ = data;
        Err(PayloadError::UnsupportedVersion {
            ty: Self::TYPE,
            found: version,
            current: Self::VERSION,
        })
    }
}

/// Serializes `payload` as `{"v":VERSION, ...fields}`.
pub fn encode<P: Payload>(payload: &P) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(P::VERSION.to_string().as_bytes());
    let body = serde_json::to_vec(payload).map_err(|source| PayloadError::Encode {
        ty: P::TYPE,
        source,
    })?;
    match body.as_slice() {
        b"{}" => out.push(b'}'),
        [b'{', rest @ ..] => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        _ => {
            return Err(PayloadError::Encode {
                ty: P::TYPE,
                source: <serde_json::Error as serde::ser::Error>::custom(
                    "payloads must serialize as JSON objects",
                ),
            });
        }
    }
    Ok(out)
}

/// Reads the schema version of a payload. Fast path for murmur's own encoding (`{"v":N,`),
/// falling back to a full parse for payloads written by other tools.
pub fn schema_version(ty: &'static str, data: &[u8]) -> Result<u32, PayloadError> {
    if let Some(rest) = data.strip_prefix(b"{\"v\":") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && digits < 10 && matches!(rest.get(digits), Some(b',') | Some(b'}')) {
            let text = std::str::from_utf8(&rest[..digits]).unwrap_or("0");
            if let Ok(v) = text.parse::<u32>() {
                return Ok(v);
            }
        }
    }
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        v: Option<serde_json::Value>,
    }
    let parsed: VersionOnly =
        serde_json::from_slice(data).map_err(|source| PayloadError::Schema {
            ty,
            version: 0,
            source,
        })?;
    match parsed.v {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| PayloadError::MissingVersion {
                ty,
                reason: format!("\"v\" is {n}, expected a positive integer"),
            }),
        Some(other) => Err(PayloadError::MissingVersion {
            ty,
            reason: format!("\"v\" is {other}, expected a positive integer"),
        }),
        None => Err(PayloadError::MissingVersion {
            ty,
            reason: "no \"v\" member".into(),
        }),
    }
}

/// Decodes a payload of any known version into the current type.
pub fn decode<P: Payload>(data: &[u8]) -> Result<P, PayloadError> {
    let version = schema_version(P::TYPE, data)?;
    if version == P::VERSION {
        serde_json::from_slice(data).map_err(|source| PayloadError::Schema {
            ty: P::TYPE,
            version,
            source,
        })
    } else if version < P::VERSION {
        P::upcast(version, data)
    } else {
        Err(PayloadError::UnsupportedVersion {
            ty: P::TYPE,
            found: version,
            current: P::VERSION,
        })
    }
}

/// JSON Schema (draft 2020-12) of the current version of `P`, with the `"v"` member added
/// as a required constant so other languages can validate murmur payloads.
pub fn json_schema<P: Payload>() -> serde_json::Value {
    let schema = schemars::schema_for!(P);
    let mut value = serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            serde_json::Value::String(format!("urn:murmur:schema:{}:{}", P::TYPE, P::VERSION)),
        );
        let props = obj
            .entry("properties")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("v".into(), serde_json::json!({ "const": P::VERSION }));
        }
        let required = obj
            .entry("required")
            .or_insert_with(|| serde_json::json!([]));
        if let Some(req) = required.as_array_mut() {
            req.insert(0, serde_json::Value::String("v".into()));
        }
    }
    value
}
