//! Cryptographic identity: every participant holds an nkey (Ed25519); events carry the
//! emitter's public key as `source` and its signature in the `murmursig` extension.
//!
//! Keys use the nkeys text encoding (`S...` seeds, `U...` public keys), so the same seed can
//! authenticate the NATS connection and sign events.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};

use crate::envelope::EventRecord;

/// Prefix of the signature scheme murmur writes.
pub const SIGNATURE_SCHEME: &str = "ed25519:";

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The seed text is not an nkey seed.
    #[error("invalid nkey seed: {0}")]
    InvalidSeed(String),
    /// `source` is not an nkey public key.
    #[error("source {source_key:?} is not an nkey public key: {reason}")]
    InvalidPublicKey {
        /// The claimed source.
        source_key: String,
        /// Why it was refused.
        reason: String,
    },
    /// The event carries no signature.
    #[error("event {id} from {source_key} is not signed")]
    Unsigned {
        /// Event id.
        id: String,
        /// Claimed source.
        source_key: String,
    },
    /// The signature is malformed or uses an unknown scheme.
    #[error("event {id} carries a malformed signature: {reason}")]
    MalformedSignature {
        /// Event id.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The signature does not verify against `source`.
    #[error("signature of event {id} does not verify against source {source_key}")]
    Forged {
        /// Event id.
        id: String,
        /// Claimed source.
        source_key: String,
    },
}

/// A participant's signing identity.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    public: String,
    seed: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        let mut raw = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        Self::from_raw(raw)
    }

    fn from_raw(raw: [u8; 32]) -> Self {
        let kp = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, raw)
            .expect("32 raw bytes always make a user key");
        let seed = kp.seed().expect("a key built from raw bytes has a seed");
        Self {
            signing: SigningKey::from_bytes(&raw),
            public: kp.public_key(),
            seed,
        }
    }

    /// Loads an identity from an nkey user seed (`SU...`).
    pub fn from_seed(seed: &str) -> Result<Self, IdentityError> {
        let (_prefix, raw) = nkeys::decode_seed(seed.trim())
            .map_err(|e| IdentityError::InvalidSeed(e.to_string()))?;
        Ok(Self::from_raw(raw))
    }

    /// The nkey seed, for saving the identity (keep it secret).
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The nkey public key (`U...`): the participant's id and its events' `source`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Signs `record` as published on `nats_subject`, setting its `murmursig` extension.
    pub fn sign(&self, record: &mut EventRecord, nats_subject: &str) {
        let sig = self.signing.sign(&record.signing_bytes(nats_subject));
        let mut text = String::with_capacity(SIGNATURE_SCHEME.len() + 86);
        text.push_str(SIGNATURE_SCHEME);
        URL_SAFE_NO_PAD.encode_string(sig.to_bytes(), &mut text);
        record.signature = Some(text);
    }
}

/// Verifies signatures, caching decoded public keys.
#[derive(Debug, Default)]
pub struct SignatureVerifier {
    keys: RwLock<HashMap<String, VerifyingKey>>,
}

impl SignatureVerifier {
    /// A verifier with an empty key cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&self, source: &str) -> Result<VerifyingKey, IdentityError> {
        if let Ok(keys) = self.keys.read()
            && let Some(k) = keys.get(source)
        {
            return Ok(*k);
        }
        let invalid = |reason: String| IdentityError::InvalidPublicKey {
            source_key: source.chars().take(80).collect(),
            reason,
        };
        let (_prefix, raw) = nkeys::from_public_key(source).map_err(|e| invalid(e.to_string()))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| invalid(e.to_string()))?;
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() > 100_000 {
                keys.clear();
            }
            keys.insert(source.to_string(), key);
        }
        Ok(key)
    }

    /// Checks that `record`, received on `nats_subject`, was signed by the key named in its
    /// `source`.
    pub fn verify(&self, record: &EventRecord, nats_subject: &str) -> Result<(), IdentityError> {
        let sig_text = record
            .signature
            .as_deref()
            .ok_or_else(|| IdentityError::Unsigned {
                id: record.id.clone(),
                source_key: record.source.clone(),
            })?;
        let malformed = |reason: &str| IdentityError::MalformedSignature {
            id: record.id.clone(),
            reason: reason.to_string(),
        };
        let encoded = sig_text
            .strip_prefix(SIGNATURE_SCHEME)
            .ok_or_else(|| malformed("unknown scheme (expected ed25519:)"))?;
        let mut raw = [0u8; 64];
        let n = URL_SAFE_NO_PAD
            .decode_slice(encoded, &mut raw)
            .map_err(|_| malformed("not base64url"))?;
        if n != 64 {
            return Err(malformed("not 64 bytes"));
        }
        let key = self.key(&record.source)?;
        key.verify(
            &record.signing_bytes(nats_subject),
            &Signature::from_bytes(&raw),
        )
        .map_err(|_| IdentityError::Forged {
            id: record.id.clone(),
            source_key: record.source.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(source: &str) -> EventRecord {
        EventRecord {
            id: "1".into(),
            source: source.into(),
            ty: "dev.murmur.agent.left".into(),
            subject: Some("a".into()),
            time: None,
            datacontenttype: None,
            dataschema: None,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            signature: None,
            extensions: vec![],
            data: Some(Bytes::from_static(b"{\"v\":1,\"reason\":\"x\"}")),
        }
    }

    #[test]
    fn seed_round_trips() {
        let id = Identity::generate();
        assert!(id.public_key().starts_with('U'));
        assert!(id.seed().starts_with("SU"));
        let again = Identity::from_seed(id.seed()).expect("seed loads");
        assert_eq!(again.public_key(), id.public_key());
        assert!(Identity::from_seed("nonsense").is_err());
    }

    #[test]
    fn signed_event_verifies_and_tampering_is_caught() {
        let alice = Identity::generate();
        let mallory = Identity::generate();
        let verifier = SignatureVerifier::new();
        let mut ev = record(alice.public_key());
        alice.sign(&mut ev, "subj");
        verifier.verify(&ev, "subj").expect("genuine");
        assert!(matches!(
            verifier.verify(&ev, "other.subj"),
            Err(IdentityError::Forged { .. })
        ));
        let mut tampered = ev.clone();
        tampered.data = Some(Bytes::from_static(b"{\"v\":1,\"reason\":\"y\"}"));
        assert!(matches!(
            verifier.verify(&tampered, "subj"),
            Err(IdentityError::Forged { .. })
        ));
        // Mallory signs with her key but claims Alice as source.
        let mut forged = record(alice.public_key());
        mallory.sign(&mut forged, "subj");
        assert!(matches!(
            verifier.verify(&forged, "subj"),
            Err(IdentityError::Forged { .. })
        ));
        let unsigned = record(alice.public_key());
        assert!(matches!(
            verifier.verify(&unsigned, "subj"),
            Err(IdentityError::Unsigned { .. })
        ));
        let mut bad_source = record("not-a-key");
        alice.sign(&mut bad_source, "subj");
        assert!(matches!(
            verifier.verify(&bad_source, "subj"),
            Err(IdentityError::InvalidPublicKey { .. })
        ));
    }
}
