//! Artifacts in the JetStream Object Store, addressed by content hash.
//!
//! Source archives, compiled binaries and large results travel between agents only through
//! this store: an event carries an [`ArtifactRef`] (SHA-256, size, a human label), never a
//! path or the bytes. Objects are named `sha256-<hex>`, so storing the same bytes twice is one
//! object, and every read is checked against the hash it was asked for.

use async_nats::jetstream::object_store::{self, ObjectStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// The bucket all artifacts live in (content-addressed, so realms can share it).
pub const ARTIFACT_BUCKET: &str = murmur_subjects::roles::ARTIFACT_BUCKET;

/// A reference to stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
    /// What it is, for people (a file name).
    pub label: String,
}

impl ArtifactRef {
    /// The object's name in the bucket.
    pub fn object_name(&self) -> String {
        format!("sha256-{}", self.sha256)
    }
}

/// Why an artifact could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The bucket could not be opened or created.
    #[error("artifact bucket {ARTIFACT_BUCKET}: {0}")]
    Bucket(String),
    /// Writing failed.
    #[error("storing {label}: {reason}")]
    Put {
        /// The artifact's label.
        label: String,
        /// Why.
        reason: String,
    },
    /// No object with that hash.
    #[error("artifact {0} is not in the store")]
    Missing(String),
    /// Reading failed.
    #[error("reading artifact {sha256}: {reason}")]
    Get {
        /// The requested hash.
        sha256: String,
        /// Why.
        reason: String,
    },
    /// The bytes read do not match the reference.
    #[error("artifact {expected} is corrupt: read {size} bytes hashing to {actual}")]
    Corrupt {
        /// The requested hash.
        expected: String,
        /// Hash of what was read.
        actual: String,
        /// Bytes read.
        size: u64,
    },
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes` (a digest).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The artifact store.
#[derive(Clone)]
pub struct ArtifactStore {
    store: ObjectStore,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("bucket", &ARTIFACT_BUCKET)
            .finish()
    }
}

impl ArtifactStore {
    /// Opens the log's artifact bucket, creating it (file storage, the log's replicas) when
    /// missing.
    pub async fn open(log: &murmur_subjects::EventLog) -> Result<Self, ArtifactError> {
        let store = log
            .artifact_store()
            .await
            .map_err(|e| ArtifactError::Bucket(e.to_string()))?;
        Ok(Self { store })
    }

    /// Stores `bytes` (once per content) and returns its reference.
    pub async fn put(&self, label: &str, bytes: &[u8]) -> Result<ArtifactRef, ArtifactError> {
        let reference = ArtifactRef {
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
            label: label.to_string(),
        };
        let name = reference.object_name();
        if let Ok(info) = self.store.info(&name).await
            && !info.deleted
            && info.size as u64 == reference.size
        {
            return Ok(reference);
        }
        let mut reader = bytes;
        self.store
            .put(name.as_str(), &mut reader)
            .await
            .map_err(|e| ArtifactError::Put {
                label: label.to_string(),
                reason: e.to_string(),
            })?;
        Ok(reference)
    }

    /// Reads the bytes of `reference`, checked against its hash and size.
    pub async fn get(&self, reference: &ArtifactRef) -> Result<Vec<u8>, ArtifactError> {
        let get_err = |reason: String| ArtifactError::Get {
            sha256: reference.sha256.clone(),
            reason,
        };
        let mut object = match self.store.get(reference.object_name()).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Err(ArtifactError::Missing(reference.sha256.clone()));
            }
            Err(e) => return Err(get_err(e.to_string())),
        };
        let mut bytes = Vec::with_capacity(reference.size as usize);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| get_err(e.to_string()))?;
        let actual = sha256_hex(&bytes);
        if actual != reference.sha256 || bytes.len() as u64 != reference.size {
            return Err(ArtifactError::Corrupt {
                expected: reference.sha256.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}
