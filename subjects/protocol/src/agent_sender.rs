//! The Synadia Agent Protocol's `Agent-Sender` header: who sent a prompt, as an unsigned
//! claim or signed by the sender's user nkey. A user nkey is what a murmur identity is, so a
//! verified sender maps to a murmur participant directly.
//!
//! The header is canonical one-line JSON, fields in the order `v, account, user, name?,
//! sub?, ts?, nonce?, sig?`; `sig` is the Ed25519 signature (base64url, no padding) of
//!
//! ```text
//! AGENT-SENDER-V1\n{account}\n{user}\n{sub}\n{ts}\n{nonce}\n{sha256(payload) hex}\n
//! ```
//!
//! Parsing follows the SDKs' hardening rules (a malformed header is the protocol's 400, an
//! unknown `v` counts as no header); live verification checks the timestamp against a
//! 30-second window, `sub` against the subject the prompt arrived on, the nonce against
//! those seen in the window (a replay is refused), then the signature (the protocol's 401).
//! Pure: the caller passes the time.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Identity;

/// The header's name (matched case-sensitively).
pub const HEADER: &str = "Agent-Sender";
/// The format version this module reads and writes.
pub const VERSION: u64 = 1;
/// Longest header value read.
pub const MAX_VALUE_BYTES: usize = 2048;
/// How far a signed header's `ts` may be from now, and how long nonces are remembered.
pub const REPLAY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// The first line of the signed input.
const SIGNED_INPUT_TAG: &str = "AGENT-SENDER-V1";
/// Longest display name, in UTF-16 code units (as the TypeScript SDK counts).
const MAX_NAME_UNITS: usize = 64;

/// A parsed (or built) header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderHeader {
    /// The sender's account: an account nkey, or a configuration account's name (`$G`
    /// where the server runs without accounts).
    pub account: String,
    /// The sender's user nkey (`U…`).
    pub user: String,
    /// Display name.
    pub name: Option<String>,
    /// The subject signed.
    pub sub: Option<String>,
    /// When it was signed (`YYYY-MM-DDTHH:MM:SS[.fff]Z`).
    pub ts: Option<String>,
    /// Unique per signed message.
    pub nonce: Option<String>,
    /// The signature, base64url.
    pub sig: Option<String>,
}

/// Who sent a prompt, as the gateway established it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PromptSender {
    /// The sender's user nkey: a murmur identity when the sender is a murmur participant.
    pub user: String,
    /// Its account (signed, not attested by the server).
    pub account: String,
    /// Its display name, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the header was signed by `user` and verified; `false` for a claim.
    pub verified: bool,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// Not a header the protocol allows (the protocol's 400).
    #[error("malformed Agent-Sender header: {0}")]
    Malformed(String),
    /// A signed header that does not verify, is stale, or is a replay (the protocol's 401).
    #[error("sender rejected: {0}")]
    Rejected(String),
}

impl SenderError {
    /// The protocol's status code for it.
    pub fn code(&self) -> usize {
        match self {
            Self::Malformed(_) => 400,
            Self::Rejected(_) => 401,
        }
    }
}

fn malformed(reason: &str) -> SenderError {
    SenderError::Malformed(reason.to_string())
}

/// Reads a header value: `None` when its `v` is a version this module does not know.
pub fn parse(value: &str) -> Result<Option<SenderHeader>, SenderError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(malformed("the value exceeds 2048 bytes"));
    }
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|_| malformed("not valid JSON"))?;
    let object = parsed
        .as_object()
        .ok_or_else(|| malformed("not a JSON object"))?;
    match object.get("v") {
        Some(serde_json::Value::Number(v)) if v.as_f64() == Some(VERSION as f64) => {}
        Some(serde_json::Value::Number(_)) => return Ok(None),
        _ => return Err(malformed("`v` must be a JSON number")),
    }
    let text = |name: &str| -> Result<Option<String>, SenderError> {
        match object.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SenderError::Malformed(format!("`{name}` must be a string"))),
        }
    };
    let (Some(account), Some(user)) = (text("account")?, text("user")?) else {
        return Err(malformed("`account` and `user` must be strings"));
    };
    check_account(&account)?;
    check_user(&user)?;
    let name = text("name")?;
    if name.as_deref().is_some_and(|n| !is_display_name(n)) {
        return Err(malformed("`name` is not a valid display name"));
    }
    let sub = text("sub")?;
    if sub.as_deref().is_some_and(|s| !is_subject(s)) {
        return Err(malformed("`sub` is not a NATS subject"));
    }
    let ts = text("ts")?;
    if ts.as_deref().is_some_and(|t| parse_ts(t).is_none()) {
        return Err(malformed("`ts` is not an RFC 3339 UTC timestamp"));
    }
    let nonce = text("nonce")?;
    if nonce.as_deref().is_some_and(|n| !is_nonce(n)) {
        return Err(malformed("`nonce` must match [A-Za-z0-9_-]{1,64}"));
    }
    let sig = text("sig")?;
    if let Some(sig) = &sig {
        let bytes = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("`sig` is not base64url"))?;
        if bytes.len() != 64 {
            return Err(malformed("`sig` must decode to 64 bytes"));
        }
        if sub.is_none() || ts.is_none() || nonce.is_none() {
            return Err(malformed("`sig` requires `sub`, `ts` and `nonce`"));
        }
    }
    Ok(Some(SenderHeader {
        account,
        user,
        name,
        sub,
        ts,
        nonce,
        sig,
    }))
}

/// The header's canonical text (fields in the protocol's order, absent ones left out).
pub fn serialize(header: &SenderHeader) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        v: u64,
        account: &'a str,
        user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nonce: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sig: Option<&'a str>,
    }
    serde_json::to_string(&Canonical {
        v: VERSION,
        account: &header.account,
        user: &header.user,
        name: header.name.as_deref(),
        sub: header.sub.as_deref(),
        ts: header.ts.as_deref(),
        nonce: header.nonce.as_deref(),
        sig: header.sig.as_deref(),
    })
    .unwrap_or_default()
}

/// The bytes a sender signs (never sent).
pub fn signed_input(
    account: &str,
    user: &str,
    subject: &str,
    ts: &str,
    nonce: &str,
    payload: &[u8],
) -> Vec<u8> {
    let digest: String = Sha256::digest(payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{SIGNED_INPUT_TAG}\n{account}\n{user}\n{subject}\n{ts}\n{nonce}\n{digest}\n")
        .into_bytes()
}

/// A header signed by `identity` for a publish of `payload` to `subject`.
pub fn sign(
    identity: &Identity,
    account: &str,
    name: Option<&str>,
    subject: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    nonce: &str,
) -> SenderHeader {
    let ts = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let user = identity.public_key().to_string();
    let input = signed_input(account, &user, subject, &ts, nonce, payload);
    SenderHeader {
        account: account.to_string(),
        user,
        name: name.map(str::to_string),
        sub: Some(subject.to_string()),
        ts: Some(ts),
        nonce: Some(nonce.to_string()),
        sig: Some(URL_SAFE_NO_PAD.encode(identity.sign_raw(&input))),
    }
}

/// The nonces of signed headers accepted within the replay window, per user.
#[derive(Debug, Default)]
pub struct NonceWindow {
    seen: HashMap<(String, String), DateTime<Utc>>,
}

impl NonceWindow {
    /// Records `(user, nonce)`; `false` when it was already seen within the window.
    fn record(&mut self, user: &str, nonce: &str, now: DateTime<Utc>) -> bool {
        self.seen.retain(|_, at| now - *at <= REPLAY_WINDOW * 2);
        self.seen
            .insert((user.to_string(), nonce.to_string()), now)
            .is_none()
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Verifies `header` as it arrived on `subject` with `payload` at `now` (live mode): a
/// claim is returned unverified; a signed header must be fresh, name the arrival subject,
/// carry an unseen nonce and verify.
pub fn verify(
    header: &SenderHeader,
    subject: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    nonces: &mut NonceWindow,
) -> Result<PromptSender, SenderError> {
    let sender = |verified| PromptSender {
        user: header.user.clone(),
        account: header.account.clone(),
        name: header.name.clone(),
        verified,
    };
    let (Some(sig), Some(sub), Some(ts), Some(nonce)) =
        (&header.sig, &header.sub, &header.ts, &header.nonce)
    else {
        return Ok(sender(false));
    };
    let rejected = |why: String| SenderError::Rejected(why);
    let signed_at = parse_ts(ts).ok_or_else(|| rejected(format!("ts {ts} is not a time")))?;
    if (now - signed_at).abs() > REPLAY_WINDOW {
        return Err(rejected(format!(
            "ts {ts} is {} s from now (window 30 s)",
            (now - signed_at).num_seconds().abs()
        )));
    }
    if sub != subject {
        return Err(rejected(format!(
            "sub {sub:?} is not the arrival subject {subject:?}"
        )));
    }
    let input = signed_input(&header.account, &header.user, sub, ts, nonce, payload);
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| rejected("sig is not base64url".into()))?;
    let key = nkeys::KeyPair::from_public_key(&header.user)
        .map_err(|e| rejected(format!("user is not a public key: {e}")))?;
    key.verify(&input, &signature)
        .map_err(|_| rejected(format!("signature does not verify for {}", header.user)))?;
    // Recorded only once the rest passed, so a forgery cannot burn a real nonce.
    if !nonces.record(&header.user, nonce, now) {
        return Err(rejected(format!("nonce already seen for {}", header.user)));
    }
    Ok(sender(true))
}

fn check_user(user: &str) -> Result<(), SenderError> {
    let shaped = user.len() == 56
        && user.starts_with('U')
        && user
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if !shaped || nkeys::KeyPair::from_public_key(user).is_err() {
        return Err(malformed("`user` is not a user public nkey"));
    }
    Ok(())
}

fn check_account(account: &str) -> Result<(), SenderError> {
    if account.len() == 56 && account.starts_with('A') {
        return nkeys::KeyPair::from_public_key(account)
            .map(|_| ())
            .map_err(|_| malformed("`account` is not an account public nkey"));
    }
    let named = !account.is_empty()
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if named || account == "$G" {
        Ok(())
    } else {
        Err(malformed(
            "`account` is neither an account nkey nor a subject-safe name",
        ))
    }
}

fn is_display_name(name: &str) -> bool {
    name.encode_utf16().count() <= MAX_NAME_UNITS
        && !name.chars().any(|c| {
            let c = u32::from(c);
            c <= 0x1f || (0x7f..=0x9f).contains(&c) || c == 0x2028 || c == 0x2029
        })
}

fn is_subject(subject: &str) -> bool {
    subject.split('.').all(|token| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\u{7f}')
    })
}

fn is_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, and nothing else.
fn parse_ts(ts: &str) -> Option<DateTime<Utc>> {
    let bytes = ts.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let shape = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && bytes[bytes.len() - 1] == b'Z'
        && match &bytes[19..bytes.len() - 1] {
            [] => true,
            [b'.', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
    if !shape {
        return None;
    }
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by the protocol's Python SDK (`synadia-ai-agents` 0.8.1,
    /// `sign_sender_header`) with the user seed of 32 bytes of 7.
    const FROM_PYTHON: &str = r#"{"v":1,"account":"$G","user":"UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF","name":"caller","sub":"agents.prompt.shouter.acme.default","ts":"2026-12-04T07:00:00Z","nonce":"abcDEF123_-","sig":"G7xy4nFLAKxcS5XOLDN8Z799NVG-TXreLjBpGMrGfHD2govh6Nz4UTue30sH4AugiAoLInmyd_eqt4wsYjrBAQ"}"#;
    const SUBJECT: &str = "agents.prompt.shouter.acme.default";

    fn at(ts: &str) -> DateTime<Utc> {
        parse_ts(ts).expect("a time")
    }

    fn seven() -> Identity {
        let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, [7; 32]).expect("a key");
        Identity::from_seed(&pair.seed().expect("seed")).expect("the seed loads")
    }

    #[test]
    fn a_header_signed_by_the_python_sdk_verifies_once_and_is_written_back_byte_for_byte() {
        let header = parse(FROM_PYTHON).expect("parses").expect("version 1");
        assert_eq!(serialize(&header), FROM_PYTHON);
        let mut nonces = NonceWindow::default();
        let now = at("2026-12-04T07:00:10Z");
        let sender =
            verify(&header, SUBJECT, b"hello protocol", now, &mut nonces).expect("verifies");
        assert_eq!(
            sender,
            PromptSender {
                user: seven().public_key().to_string(),
                account: "$G".into(),
                name: Some("caller".into()),
                verified: true,
            }
        );
        // The same header again is a replay.
        let replay = verify(&header, SUBJECT, b"hello protocol", now, &mut nonces);
        assert!(matches!(replay, Err(SenderError::Rejected(r)) if r.contains("nonce")));
    }

    #[test]
    fn murmur_signs_what_the_sdk_signs() {
        let header = sign(
            &seven(),
            "$G",
            Some("caller"),
            SUBJECT,
            b"hello protocol",
            at("2026-12-04T07:00:00Z"),
            "abcDEF123_-",
        );
        assert_eq!(serialize(&header), FROM_PYTHON);
    }

    #[test]
    fn a_changed_payload_subject_stale_time_or_foreign_key_is_rejected() {
        let header = parse(FROM_PYTHON).expect("parses").expect("version 1");
        let now = at("2026-12-04T07:00:00Z");
        let check = |header: &SenderHeader, subject: &str, payload: &[u8], now| {
            verify(header, subject, payload, now, &mut NonceWindow::default())
        };
        let rejected = |r: Result<PromptSender, SenderError>| {
            assert!(matches!(r, Err(SenderError::Rejected(_))), "{r:?}")
        };
        rejected(check(&header, SUBJECT, b"hello protocol!", now));
        rejected(check(
            &header,
            "agents.prompt.other.acme.default",
            b"hello protocol",
            now,
        ));
        rejected(check(
            &header,
            SUBJECT,
            b"hello protocol",
            at("2026-12-04T07:00:31Z"),
        ));
        let other = Identity::generate();
        let forged = SenderHeader {
            user: other.public_key().to_string(),
            ..header.clone()
        };
        rejected(check(&forged, SUBJECT, b"hello protocol", now));
        // Unsigned, it is a claim.
        let claim = SenderHeader {
            sub: None,
            ts: None,
            nonce: None,
            sig: None,
            ..forged
        };
        let claimed = check(&claim, SUBJECT, b"anything", now).expect("a claim");
        assert!(!claimed.verified);
    }

    #[test]
    fn malformed_headers_are_refused_and_unknown_versions_ignored() {
        assert_eq!(parse(r#"{"v":2,"whatever":true}"#), Ok(None));
        let user = seven().public_key().to_string();
        for bad in [
            "not json".to_string(),
            "[1]".into(),
            r#"{"v":"1","account":"$G","user":"U"}"#.into(),
            r#"{"v":true,"account":"$G","user":"U"}"#.into(),
            format!(r#"{{"v":1,"account":"$G","user":"{}"}}"#, &user[..55]),
            format!(r#"{{"v":1,"account":"a.b","user":"{user}"}}"#),
            format!(r#"{{"v":1,"account":"$G","user":"{user}","name":"a\u0007b"}}"#),
            format!(r#"{{"v":1,"account":"$G","user":"{user}","sub":"a..b"}}"#),
            format!(r#"{{"v":1,"account":"$G","user":"{user}","ts":"2026-12-04 07:00:00Z"}}"#),
            format!(r#"{{"v":1,"account":"$G","user":"{user}","nonce":"a b"}}"#),
            format!(r#"{{"v":1,"account":"$G","user":"{user}","sig":"AAAA"}}"#),
            format!(
                r#"{{"v":1,"account":"$G","user":"{user}","name":"{}"}}"#,
                "x".repeat(2100)
            ),
        ] {
            assert!(
                matches!(parse(&bad), Err(SenderError::Malformed(_))),
                "{bad} was accepted"
            );
        }
    }
}
