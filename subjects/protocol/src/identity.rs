//! Cryptographic identity: every participant holds an nkey (Ed25519); events carry the
//! emitter's public key as `source` and its signature in the `murmursig` extension.
//!
//! Keys use the nkeys text encoding (`S...` seeds, `U...` public keys), so the same seed can
//! authenticate the NATS connection and sign events.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};

use crate::envelope::EventRecord;

/// Prefix of a single-event signature: `ed25519:<base64url signature>`.
pub const SIGNATURE_SCHEME: &str = "ed25519:";
/// Prefix of a batch signature: `ed25519-merkle:<base64url signature of the root>:<leaf
/// index>:<sibling hashes, base64url, '.'-separated, leaf to root>`.
///
/// One Ed25519 signature covers a Merkle tree (SHA-256, leaf = H(0x00 ‖ signing bytes),
/// node = H(0x01 ‖ left ‖ right), padding leaves = H(0x02), tree padded to a power of two)
/// over a batch of events; every event carries the root signature and its own path, so each
/// event verifies on its own, and a verifier that has already checked a root only hashes.
pub const BATCH_SIGNATURE_SCHEME: &str = "ed25519-merkle:";
/// Largest batch one root signature covers (a path of at most 8 hashes).
pub const MAX_SIGNATURE_BATCH: usize = 256;
const ROOT_DOMAIN: &[u8] = b"murmur-merkle-v1";

fn leaf_hash(record: &EventRecord, nats_subject: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    record.write_signing_bytes(nats_subject, |part| h.update(part));
    h.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn pad_hash() -> [u8; 32] {
    Sha256::digest([2u8]).into()
}

fn root_message(root: &[u8; 32]) -> [u8; 48] {
    let mut m = [0u8; 48];
    m[..16].copy_from_slice(ROOT_DOMAIN);
    m[16..].copy_from_slice(root);
    m
}

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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

/// Checks that `key` is written as a participant's public key: an nkey user public key
/// (`U...`, 56 characters with a checksum), as every [`Identity::public_key`] is. For keys
/// typed by people (`--voter`, `--coordinator`), so a typo is refused where it is made, not
/// discovered later as decisions that never count.
///
/// Whether the 32 bytes are an Ed25519 point is not checked: that is a point decompression
/// (13 µs on the project's VM, against 0.35 µs for this check), and the consensus fold runs
/// this for every voter of every proposal in every voter. A key that is no point signs
/// nothing, so it never casts a vote that verifies.
pub fn check_public_key(key: &str) -> Result<(), IdentityError> {
    let invalid = |reason: String| IdentityError::InvalidPublicKey {
        source_key: key.chars().take(80).collect(),
        reason,
    };
    if !key.starts_with('U') {
        return Err(invalid("a participant's key starts with U".into()));
    }
    nkeys::from_public_key(key).map_err(|e| invalid(e.to_string()))?;
    Ok(())
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

    /// Signs a batch of records with one Ed25519 signature over a Merkle root; `subjects[i]`
    /// is the NATS subject of `records[i]`. Batches larger than [`MAX_SIGNATURE_BATCH`] are
    /// split; a batch of one gets a plain signature.
    pub fn sign_batch(&self, records: &mut [EventRecord], subjects: &[&str]) {
        assert_eq!(records.len(), subjects.len(), "one subject per record");
        for (records, subjects) in records
            .chunks_mut(MAX_SIGNATURE_BATCH)
            .zip(subjects.chunks(MAX_SIGNATURE_BATCH))
        {
            if records.len() == 1 {
                self.sign(&mut records[0], subjects[0]);
                continue;
            }
            let width = records.len().next_power_of_two();
            let mut level: Vec<[u8; 32]> = records
                .iter()
                .zip(subjects)
                .map(|(r, s)| leaf_hash(r, s))
                .collect();
            level.resize(width, pad_hash());
            let mut levels = vec![level];
            while levels.last().map_or(0, Vec::len) > 1 {
                let prev = levels.last().map(Vec::as_slice).unwrap_or_default();
                let next: Vec<[u8; 32]> = prev.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
                levels.push(next);
            }
            let root = levels
                .last()
                .and_then(|l| l.first())
                .copied()
                .unwrap_or_default();
            let sig = URL_SAFE_NO_PAD.encode(self.signing.sign(&root_message(&root)).to_bytes());
            for (i, record) in records.iter_mut().enumerate() {
                let mut text =
                    String::with_capacity(BATCH_SIGNATURE_SCHEME.len() + 90 + 44 * levels.len());
                text.push_str(BATCH_SIGNATURE_SCHEME);
                text.push_str(&sig);
                text.push(':');
                text.push_str(&i.to_string());
                text.push(':');
                let mut idx = i;
                for (depth, level) in levels[..levels.len() - 1].iter().enumerate() {
                    if depth > 0 {
                        text.push('.');
                    }
                    URL_SAFE_NO_PAD.encode_string(level[idx ^ 1], &mut text);
                    idx >>= 1;
                }
                record.signature = Some(text);
            }
        }
    }
}

/// Domain separation for detached signatures, so they can never be replayed as event
/// signatures (whose signed bytes start with a length prefix, never with this text).
const DETACHED_CONTEXT: &[u8] = b"murmur-detached-v1\n";

impl Identity {
    /// Signs `bytes` as they are: only for a protocol whose signed input starts with its
    /// own context tag (the Agent Protocol's `AGENT-SENDER-V1`), so that no such signature
    /// can pass for one of murmur's.
    pub(crate) fn sign_raw(&self, bytes: &[u8]) -> [u8; 64] {
        self.signing.sign(bytes).to_bytes()
    }

    /// Signs arbitrary bytes (e.g. an RPC reply that is not an event); verify with
    /// [`SignatureVerifier::verify_detached`].
    pub fn sign_detached(&self, bytes: &[u8]) -> String {
        let mut msg = Vec::with_capacity(DETACHED_CONTEXT.len() + bytes.len());
        msg.extend_from_slice(DETACHED_CONTEXT);
        msg.extend_from_slice(bytes);
        let mut text = String::from(SIGNATURE_SCHEME);
        URL_SAFE_NO_PAD.encode_string(self.signing.sign(&msg).to_bytes(), &mut text);
        text
    }
}

/// Most single-signature checks a verifier remembers; the set starts over when full.
const REMEMBERED_SIGNATURES: usize = 16_384;
/// Most batch root signatures a verifier remembers (each covers up to 256 events); the set
/// starts over when full.
const REMEMBERED_ROOTS: usize = 16_384;
/// Most batch trees whose last verified path a verifier keeps.
const REMEMBERED_TREES: usize = 32;
/// A batch root whose signature held: (public key, root, root signature).
type KnownRoot = ([u8; 32], [u8; 32], [u8; 64]);
/// Longest Merkle path accepted (a batch is at most [`MAX_SIGNATURE_BATCH`] events: 8).
const MAX_PATH: usize = 16;

/// The last path verified in one batch tree whose root signature held. The next event of
/// the same batch shares the top of its path: above the level where the two leaf indexes
/// meet, the same sibling texts lead to the same root, so only the levels below are hashed.
#[derive(Debug)]
struct LastPath {
    source: String,
    signature: String,
    index: usize,
    path: String,
    /// The nodes the climb passed, leaf first, root last.
    climbed: Vec<[u8; 32]>,
}

impl LastPath {
    /// The nodes from the leaf up to the level where `index` meets this path's leaf, when
    /// the path above that level is this one's text and the climb arrives at this one's
    /// node there; `None` otherwise (then the whole climb and the root signature tell).
    fn meet(&self, leaf: [u8; 32], index: usize, path: &str) -> Option<Vec<[u8; 32]>> {
        let depth = self.climbed.len() - 1;
        let meet = (usize::BITS - (index ^ self.index).leading_zeros()) as usize;
        if meet > depth || index >> depth != 0 {
            return None;
        }
        let mut mine = path.split('.').filter(|p| !p.is_empty());
        let mut known = self.path.split('.').filter(|p| !p.is_empty());
        let mut climbed = Vec::with_capacity(meet + 1);
        climbed.push(leaf);
        let mut node = leaf;
        for level in 0..meet {
            let (text, _) = (mine.next()?, known.next()?);
            let mut sibling = [0u8; 32];
            match URL_SAFE_NO_PAD.decode_slice(text, &mut sibling) {
                Ok(32) => {}
                _ => return None,
            }
            node = if (index >> level) & 1 == 0 {
                node_hash(&node, &sibling)
            } else {
                node_hash(&sibling, &node)
            };
            climbed.push(node);
        }
        let same_top = loop {
            match (mine.next(), known.next()) {
                (None, None) => break true,
                (Some(a), Some(b)) if a == b => {}
                _ => break false,
            }
        };
        (same_top && node == self.climbed[meet]).then_some(climbed)
    }

    /// Takes a verified climb from `index` (its first nodes, leaf first) as the last path.
    fn learn(&mut self, index: usize, path: &str, climbed: &[[u8; 32]]) {
        self.index = index;
        self.path.clear();
        self.path.push_str(path);
        self.climbed[..climbed.len()].copy_from_slice(climbed);
    }
}

/// Verifies signatures, caching decoded public keys, the Merkle roots whose signature held,
/// and the single signatures that held (each remembered as one hash of key, signature and
/// signed bytes: a changed byte is checked afresh).
///
/// Signatures are checked by ZIP-215's rules (cofactored, as `ed25519-zebra` implements
/// them), under which a batch verification accepts exactly the signatures that checks one
/// at a time accept: events that arrive together ([`SignatureVerifier::verify_many`]) and
/// the same events replayed one by one get the same verdicts. Every RFC 8032 signature
/// verifies under them.
#[derive(Debug, Default)]
pub struct SignatureVerifier {
    keys: RwLock<HashMap<String, VerificationKey>>,
    /// (public key, Merkle root, root signature) whose signature already verified: the
    /// signature too, so that a changed one is checked (and refused) as a fresh verifier
    /// would.
    roots: RwLock<HashSet<KnownRoot>>,
    /// SHA-256 of (public key ‖ signature ‖ signing bytes) of single signatures that held.
    singles: RwLock<HashSet<[u8; 32]>>,
    /// The last path verified in each of the latest batch trees whose root signature held.
    trees: std::sync::Mutex<Vec<LastPath>>,
    /// Ed25519 verifications run (cache hits are not counted).
    checks: std::sync::atomic::AtomicU64,
    /// Of those, the signatures checked in batch verifications.
    batched: std::sync::atomic::AtomicU64,
}

static SHARED_VERIFIER: std::sync::LazyLock<std::sync::Arc<SignatureVerifier>> =
    std::sync::LazyLock::new(Default::default);

impl SignatureVerifier {
    /// A verifier with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's verifier, which every [`crate::EventCodec`] uses. Several participants
    /// in one process (`murmur up`'s coordinator, tallier, auditor and monitor; agents hosted
    /// together) read the same events: each signature is checked once per process, not once
    /// per reader.
    pub fn shared() -> std::sync::Arc<Self> {
        SHARED_VERIFIER.clone()
    }

    /// How many Ed25519 verifications this verifier has run; an event it already verified
    /// costs none.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of [`SignatureVerifier::checks`] were signatures checked in batch
    /// verifications ([`SignatureVerifier::verify_many`]).
    pub fn batched(&self) -> u64 {
        self.batched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn check(
        &self,
        key: &VerificationKey,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), ed25519_zebra::Error> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        key.verify(&Signature::from_bytes(signature), message)
    }

    fn key(&self, source: &str) -> Result<VerificationKey, IdentityError> {
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
        let key = VerificationKey::try_from(raw).map_err(|e| invalid(e.to_string()))?;
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() > 100_000 {
                keys.clear();
            }
            keys.insert(source.to_string(), key);
        }
        Ok(key)
    }

    /// Checks a detached signature made by [`Identity::sign_detached`] with `signer`'s key.
    pub fn verify_detached(
        &self,
        signer: &str,
        bytes: &[u8],
        signature: &str,
    ) -> Result<(), IdentityError> {
        let malformed = |reason: &str| IdentityError::MalformedSignature {
            id: "detached".into(),
            reason: reason.to_string(),
        };
        let b64 = signature
            .strip_prefix(SIGNATURE_SCHEME)
            .ok_or_else(|| malformed("unknown signature scheme"))?;
        let raw = decode_signature(b64).ok_or_else(|| malformed("not 64 base64url bytes"))?;
        let key = self.key(signer)?;
        let mut msg = Vec::with_capacity(DETACHED_CONTEXT.len() + bytes.len());
        msg.extend_from_slice(DETACHED_CONTEXT);
        msg.extend_from_slice(bytes);
        self.check(&key, &msg, &raw)
            .map_err(|_| IdentityError::Forged {
                id: "detached".into(),
                source_key: signer.chars().take(80).collect(),
            })
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
        let forged = || IdentityError::Forged {
            id: record.id.clone(),
            source_key: record.source.clone(),
        };
        if let Some(rest) = sig_text.strip_prefix(BATCH_SIGNATURE_SCHEME) {
            let mut parts = rest.splitn(3, ':');
            let (Some(sig_b64), Some(index), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(malformed("batch signature needs signature:index:path"));
            };
            let index: usize = index.parse().map_err(|_| malformed("bad leaf index"))?;
            let leaf = leaf_hash(record, nats_subject);
            // The same source, root signature and top of the path as a verified event:
            // the same root, whose signature held.
            if let Ok(mut trees) = self.trees.lock()
                && let Some(tree) = trees
                    .iter_mut()
                    .rev()
                    .find(|t| t.signature == sig_b64 && t.source == record.source)
                && let Some(climbed) = tree.meet(leaf, index, path)
            {
                tree.learn(index, path, &climbed);
                return Ok(());
            }
            let raw = decode_signature(sig_b64)
                .ok_or_else(|| malformed("signature is not 64 base64url bytes"))?;
            let mut siblings = [[0u8; 32]; MAX_PATH];
            let mut depth = 0;
            for sibling in path.split('.').filter(|p| !p.is_empty()) {
                if depth == MAX_PATH {
                    return Err(malformed("path too long"));
                }
                match URL_SAFE_NO_PAD.decode_slice(sibling, &mut siblings[depth]) {
                    Ok(32) => {}
                    _ => return Err(malformed("path hash is not 32 base64url bytes")),
                }
                depth += 1;
            }
            if index >> depth != 0 {
                return Err(malformed("leaf index outside the tree"));
            }
            let key = self.key(&record.source)?;
            let mut climbed = Vec::with_capacity(depth + 1);
            let mut node = leaf;
            climbed.push(node);
            for (level, sibling) in siblings[..depth].iter().enumerate() {
                node = if (index >> level) & 1 == 0 {
                    node_hash(&node, sibling)
                } else {
                    node_hash(sibling, &node)
                };
                climbed.push(node);
            }
            let cache_key = (<[u8; 32]>::from(key), node, raw);
            if !self.roots.read().is_ok_and(|r| r.contains(&cache_key)) {
                self.check(&key, &root_message(&node), &raw)
                    .map_err(|_| forged())?;
                if let Ok(mut roots) = self.roots.write() {
                    if roots.len() >= REMEMBERED_ROOTS {
                        roots.clear();
                    }
                    roots.insert(cache_key);
                }
            }
            if let Ok(mut trees) = self.trees.lock() {
                trees.retain(|t| t.signature != sig_b64 || t.source != record.source);
                if trees.len() >= REMEMBERED_TREES {
                    trees.remove(0);
                }
                trees.push(LastPath {
                    source: record.source.clone(),
                    signature: sig_b64.to_string(),
                    index,
                    path: path.to_string(),
                    climbed,
                });
            }
            return Ok(());
        }
        match self.single(record, nats_subject, sig_text)? {
            None => Ok(()),
            Some(unchecked) => self.check_single(record, unchecked),
        }
    }

    /// The single signature `sig_text` of `record`, to be checked; `None` when it held
    /// before.
    fn single(
        &self,
        record: &EventRecord,
        nats_subject: &str,
        sig_text: &str,
    ) -> Result<Option<UncheckedSingle>, IdentityError> {
        let malformed = |reason: &str| IdentityError::MalformedSignature {
            id: record.id.clone(),
            reason: reason.to_string(),
        };
        let encoded = sig_text
            .strip_prefix(SIGNATURE_SCHEME)
            .ok_or_else(|| malformed("unknown scheme (expected ed25519: or ed25519-merkle:)"))?;
        let signature = decode_signature(encoded)
            .ok_or_else(|| malformed("signature is not 64 base64url bytes"))?;
        let key = self.key(&record.source)?;
        let signed = record.signing_bytes(nats_subject);
        let mut seen = Sha256::new();
        seen.update(<[u8; 32]>::from(key));
        seen.update(signature);
        seen.update(&signed);
        let seen: [u8; 32] = seen.finalize().into();
        if self.singles.read().is_ok_and(|s| s.contains(&seen)) {
            return Ok(None);
        }
        Ok(Some(UncheckedSingle {
            key,
            signature,
            signed,
            seen,
        }))
    }

    fn check_single(
        &self,
        record: &EventRecord,
        unchecked: UncheckedSingle,
    ) -> Result<(), IdentityError> {
        self.check(&unchecked.key, &unchecked.signed, &unchecked.signature)
            .map_err(|_| IdentityError::Forged {
                id: record.id.clone(),
                source_key: record.source.clone(),
            })?;
        self.remember_singles([unchecked.seen]);
        Ok(())
    }

    fn remember_singles(&self, seen: impl IntoIterator<Item = [u8; 32]>) {
        if let Ok(mut singles) = self.singles.write() {
            for seen in seen {
                if singles.len() >= REMEMBERED_SIGNATURES {
                    singles.clear();
                }
                singles.insert(seen);
            }
        }
    }

    /// [`SignatureVerifier::verify`] for events that arrived together (`events[i]`: a record
    /// and the subject it arrived on), with the single signatures not already remembered
    /// checked in one batch verification. On the project's VM that costs about a third of
    /// checking 64 signatures one by one, less when one key signed many of them. Verdicts
    /// are those of `verify`; when the batch fails, each of its signatures is checked alone
    /// to find the bad ones.
    pub fn verify_many(&self, events: &[(&EventRecord, &str)]) -> Vec<Result<(), IdentityError>> {
        let mut verdicts: Vec<Result<(), IdentityError>> = Vec::with_capacity(events.len());
        let mut unchecked = Vec::new();
        for (at, (record, nats_subject)) in events.iter().enumerate() {
            let verdict = match record.signature.as_deref() {
                Some(sig_text) if sig_text.starts_with(SIGNATURE_SCHEME) => {
                    match self.single(record, nats_subject, sig_text) {
                        Ok(Some(single)) => {
                            unchecked.push((at, single));
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                _ => self.verify(record, nats_subject),
            };
            verdicts.push(verdict);
        }
        if unchecked.len() < 2 {
            for (at, single) in unchecked {
                verdicts[at] = self.check_single(events[at].0, single);
            }
            return verdicts;
        }
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for (_, single) in &unchecked {
            batch.queue((
                VerificationKeyBytes::from(single.key),
                Signature::from_bytes(&single.signature),
                &single.signed[..],
            ));
        }
        for counter in [&self.checks, &self.batched] {
            counter.fetch_add(unchecked.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if batch.verify(rand_core::OsRng).is_ok() {
            self.remember_singles(unchecked.iter().map(|(_, single)| single.seen));
        } else {
            for (at, single) in unchecked {
                verdicts[at] = self.check_single(events[at].0, single);
            }
        }
        verdicts
    }
}

/// A single signature not checked yet: the key, the signature and the bytes it signs, and
/// what the verifier remembers once it held.
struct UncheckedSingle {
    key: VerificationKey,
    signature: [u8; 64],
    signed: Vec<u8>,
    seen: [u8; 32],
}

fn decode_signature(b64: &str) -> Option<[u8; 64]> {
    let mut raw = [0u8; 64];
    match URL_SAFE_NO_PAD.decode_slice(b64, &mut raw) {
        Ok(64) => Some(raw),
        _ => None,
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
    fn participant_keys_are_checked() {
        let id = Identity::generate();
        check_public_key(id.public_key()).expect("a generated key");
        for bad in ["UDEADBEEF", "", id.seed(), &id.public_key()[..55]] {
            assert!(
                matches!(
                    check_public_key(bad),
                    Err(IdentityError::InvalidPublicKey { .. })
                ),
                "{bad:?}"
            );
        }
        // A valid nkey of another kind (an account key) is not a participant's.
        let account = nkeys::KeyPair::new_account().public_key();
        assert!(check_public_key(&account).is_err());
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

    /// `n` records by `alice`, batch-signed, and the subject each was signed for.
    fn signed_batch(alice: &Identity, n: usize) -> (Vec<EventRecord>, Vec<String>) {
        let mut records: Vec<EventRecord> = (0..n)
            .map(|i| {
                let mut r = record(alice.public_key());
                r.id = i.to_string();
                r
            })
            .collect();
        let subjects: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let subject_refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
        alice.sign_batch(&mut records, &subject_refs);
        (records, subjects)
    }

    #[test]
    fn batch_signatures_verify_each_event_and_catch_tampering() {
        let alice = Identity::generate();
        let mallory = Identity::generate();
        for n in [2usize, 3, 8, 300] {
            let (records, subjects) = signed_batch(&alice, n);
            let verifier = SignatureVerifier::new();
            for (r, s) in records.iter().zip(&subjects) {
                verifier.verify(r, s).expect("batch member verifies");
                // A fresh verifier (no cached root) agrees.
                SignatureVerifier::new()
                    .verify(r, s)
                    .expect("verifies without cache");
            }
            // Tampering with one member fails even though its root is cached.
            let mut tampered = records[1].clone();
            tampered.data = Some(Bytes::from_static(b"{\"v\":1,\"reason\":\"z\"}"));
            assert!(matches!(
                verifier.verify(&tampered, &subjects[1]),
                Err(IdentityError::Forged { .. })
            ));
            // Another member's path does not fit.
            let mut swapped = records[0].clone();
            swapped.signature = records[1].signature.clone();
            assert!(verifier.verify(&swapped, &subjects[0]).is_err());
            // Mallory cannot reuse alice's batch signature under her own key or vice versa.
            let mut claimed = records[0].clone();
            claimed.source = mallory.public_key().to_string();
            assert!(
                SignatureVerifier::new()
                    .verify(&claimed, &subjects[0])
                    .is_err()
            );
        }
        let mut single = vec![record(alice.public_key())];
        alice.sign_batch(&mut single, &["s"]);
        assert!(
            single[0]
                .signature
                .as_deref()
                .is_some_and(|s| s.starts_with(SIGNATURE_SCHEME))
        );
    }

    #[test]
    fn a_signature_is_checked_once_and_a_changed_byte_again() {
        let alice = Identity::generate();
        let mut r = record(alice.public_key());
        alice.sign_batch(std::slice::from_mut(&mut r), &["s"]);
        let verifier = SignatureVerifier::new();
        verifier.verify(&r, "s").expect("signed by alice");
        verifier.verify(&r, "s").expect("still signed by alice");
        assert_eq!(verifier.checks(), 1, "the second read is remembered");
        let mut tampered = r.clone();
        tampered.data = Some(Bytes::from_static(b"{\"v\":1,\"reason\":\"z\"}"));
        assert!(matches!(
            verifier.verify(&tampered, "s"),
            Err(IdentityError::Forged { .. })
        ));
        // Another subject is other signed bytes: checked, and refused.
        assert!(verifier.verify(&r, "t").is_err());
        // Another source with the same signature: checked, and refused.
        let mut claimed = r.clone();
        claimed.source = Identity::generate().public_key().to_string();
        assert!(verifier.verify(&claimed, "s").is_err());
        assert_eq!(verifier.checks(), 4, "nothing refused was remembered");
        verifier.verify(&r, "s").expect("alice's again");
        assert_eq!(verifier.checks(), 4);
    }

    #[test]
    fn a_known_batch_tree_gives_the_same_answers_as_a_fresh_verifier() {
        let alice = Identity::generate();
        let (records, subjects) = signed_batch(&alice, 300);
        let verifier = SignatureVerifier::new();
        for (r, s) in records.iter().zip(&subjects) {
            verifier.verify(r, s).expect("batch member verifies");
        }
        assert_eq!(
            verifier.checks(),
            2,
            "one root signature per tree (256 + 44)"
        );
        // Every one-character change of a member's signature text (its root signature,
        // index and path, the top it shares with the path verified before it included) is
        // judged exactly as a verifier that knows nothing would judge it.
        let member = 37;
        let text = records[member].signature.clone().expect("signed");
        let mut differing = 0;
        for at in BATCH_SIGNATURE_SCHEME.len()..text.len() {
            let mut changed = text.clone().into_bytes();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let mut tampered = records[member].clone();
            tampered.signature = Some(String::from_utf8(changed).expect("ascii"));
            // Its neighbour first: the two paths share all but their lowest sibling.
            verifier
                .verify(&records[member - 1], &subjects[member - 1])
                .expect("the neighbour verifies");
            let warm = verifier.verify(&tampered, &subjects[member]).is_ok();
            let cold = SignatureVerifier::new()
                .verify(&tampered, &subjects[member])
                .is_ok();
            assert_eq!(warm, cold, "changed at {at}: {:?}", tampered.signature);
            differing += usize::from(!cold);
        }
        assert!(differing > 400, "most changes are refused: {differing}");
        // Another member's subject or data under a known tree: refused.
        assert!(
            verifier
                .verify(&records[member], &subjects[member + 1])
                .is_err()
        );
        let mut changed = records[member].clone();
        changed.data = Some(Bytes::from_static(b"{}"));
        assert!(verifier.verify(&changed, &subjects[member]).is_err());
    }

    /// Events that arrive together are checked in one batch and get the verdicts each would
    /// get alone, the bad ones included; the good ones are remembered.
    #[test]
    fn events_checked_together_get_the_verdicts_of_lone_checks() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let mut events: Vec<(EventRecord, String)> = Vec::new();
        for n in 0..40 {
            let signer = if n % 3 == 0 { &bob } else { &alice };
            let mut ev = record(signer.public_key());
            ev.id = format!("single-{n}");
            let subject = format!("subj.{n}");
            signer.sign(&mut ev, &subject);
            events.push((ev, subject));
        }
        let mut batch: Vec<EventRecord> = (0..5)
            .map(|n| {
                let mut ev = record(alice.public_key());
                ev.id = format!("batch-{n}");
                ev
            })
            .collect();
        let batch_subjects: Vec<String> = (0..5).map(|n| format!("batch.{n}")).collect();
        let refs: Vec<&str> = batch_subjects.iter().map(String::as_str).collect();
        alice.sign_batch(&mut batch, &refs);
        events.extend(batch.into_iter().zip(batch_subjects));
        // A changed payload, a signature moved to another event, a claimed source, none.
        events[4].0.data = Some(Bytes::from_static(b"{\"v\":1,\"reason\":\"y\"}"));
        events[7].0.signature = events[8].0.signature.clone();
        events[11].0.source = bob.public_key().to_string();
        events[20].0.signature = None;
        let together: Vec<(&EventRecord, &str)> =
            events.iter().map(|(e, s)| (e, s.as_str())).collect();

        let verifier = SignatureVerifier::new();
        let verdicts = verifier.verify_many(&together);
        for ((event, subject), verdict) in together.iter().zip(&verdicts) {
            let alone = SignatureVerifier::new().verify(event, subject);
            assert_eq!(verdict, &alone, "{}", event.id);
        }
        let refused: Vec<&str> = together
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| v.is_err())
            .map(|((e, _), _)| e.id.as_str())
            .collect();
        assert_eq!(refused, ["single-4", "single-7", "single-11", "single-20"]);
        assert_eq!(
            verifier.batched(),
            39,
            "the 39 signed singles, in one batch"
        );
        let checks = verifier.checks();
        for (event, subject) in &together {
            let _ = verifier.verify(event, subject);
        }
        assert_eq!(
            verifier.checks() - checks,
            3,
            "what held is remembered; the three forged are checked again"
        );
    }

    /// A signature whose R carries a point of order 8 holds under the cofactored equation
    /// and fails under the cofactorless one, which is where batch and lone checks can part.
    /// Under ZIP-215 both accept it, so a fold decides alike live (events together) and on
    /// replay (one at a time).
    #[test]
    fn a_signature_with_a_torsion_component_gets_one_verdict_together_and_alone() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_TABLE, EIGHT_TORSION};
        use curve25519_dalek::scalar::Scalar;
        use sha2::Sha512;

        let alice = Identity::generate();
        let public = alice.signing.verifying_key().to_bytes();
        let secret = alice.signing.to_scalar();
        let subject = "subj";
        let crafted = (0u8..)
            .find_map(|attempt| {
                let mut ev = record(alice.public_key());
                ev.id = format!("crafted-{attempt}");
                let signed = ev.signing_bytes(subject);
                let mut wide = [0u8; 64];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut wide);
                let r = Scalar::from_bytes_mod_order_wide(&wide);
                let big_r = (&r * ED25519_BASEPOINT_TABLE + EIGHT_TORSION[1]).compress();
                let mut h = Sha512::new();
                h.update(big_r.as_bytes());
                h.update(public);
                h.update(&signed);
                let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
                // k·T vanishes when k is a multiple of 8: then the signature is plain.
                if k.as_bytes()[0].is_multiple_of(8) {
                    return None;
                }
                let s = r + k * secret;
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(big_r.as_bytes());
                sig[32..].copy_from_slice(s.as_bytes());
                ev.signature = Some(format!("{SIGNATURE_SCHEME}{}", URL_SAFE_NO_PAD.encode(sig)));
                Some(ev)
            })
            .expect("one k in eight is a multiple of 8");
        let mut genuine = record(alice.public_key());
        genuine.id = "genuine".into();
        alice.sign(&mut genuine, subject);

        let alone = SignatureVerifier::new().verify(&crafted, subject);
        let together =
            SignatureVerifier::new().verify_many(&[(&genuine, subject), (&crafted, subject)]);
        assert_eq!(together, [Ok(()), alone.clone()]);
        assert_eq!(alone, Ok(()), "ZIP-215 accepts it");
        let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("a key");
        let raw = decode_signature(&crafted.signature.as_deref().expect("signed")[8..])
            .expect("64 bytes");
        assert!(
            ed25519_dalek::Verifier::verify(
                &dalek_key,
                &crafted.signing_bytes(subject),
                &ed25519_dalek::Signature::from_bytes(&raw),
            )
            .is_err(),
            "the cofactorless equation refuses it"
        );
    }
}
