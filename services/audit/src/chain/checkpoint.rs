//! Signed checkpoints: an Ed25519 signature over (sequence, head hash, interval) written into
//! the chain as a record of kind `CHECKPOINT`.
//!
//! A hash chain alone proves only internal consistency: whoever can write the store can rewrite
//! every record and recompute every hash. A checkpoint signed with a key the store does not hold
//! turns such a rewrite into a detectable forgery. The signed message is
//!
//! ```text
//! selfheal-audit checkpoint v1
//! sequence=<covered sequence>
//! hash=<covered hash>
//! interval=<records per checkpoint>
//! ```
//!
//! and the checkpoint's payload is `{"covers_sequence", "covers_hash", "interval",
//! "public_key", "signature"}` (hex). Verification uses the configured key, never the
//! `public_key` written in the payload, which is there for people reading the record.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{ChainHead, NewRecord, Record, RecordKind};

/// Actor written on checkpoint records.
pub const CHECKPOINT_ACTOR: &str = "audit";

/// Problems with the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key must be 64 hex digits (a 32-byte Ed25519 seed)")]
    Malformed,
    #[error("signing key file {} cannot be read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key file {} cannot be written: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness for a new signing key: {0}")]
    Random(String),
}

/// The key that signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// From a hex-encoded 32-byte seed (surrounding whitespace ignored).
    pub fn from_hex(seed: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(seed.trim()).map_err(|_| KeyError::Malformed)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| KeyError::Random(error.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads the seed from `path`; when the file does not exist, generates a key and writes it
    /// there (owner-only permissions). The flag says whether a key was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KeyError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_hex(&text)?, false)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::generate()?;
                signer.write_seed(path)?;
                Ok((signer, true))
            }
            Err(source) => Err(KeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write_seed(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let write_error = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write_error)?;
        file.write_all(format!("{}\n", hex::encode(self.key.to_bytes())).as_bytes())
            .map_err(write_error)?;
        file.sync_all().map_err(write_error)
    }

    /// The public half, which verification needs.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// A checkpoint record (not yet sealed) over `head`.
    pub fn checkpoint(&self, head: &ChainHead, interval: u64) -> NewRecord {
        let signature = self
            .key
            .sign(&signed_message(head.sequence, &head.hash, interval));
        let payload = CheckpointPayload {
            covers_sequence: head.sequence,
            covers_hash: head.hash.clone(),
            interval,
            public_key: self.public_key_hex(),
            signature: hex::encode(signature.to_bytes()),
        };
        NewRecord {
            actor: CHECKPOINT_ACTOR.to_owned(),
            payload: serde_json::to_value(payload).unwrap_or_default(),
            ..NewRecord::new(RecordKind::Checkpoint)
        }
    }
}

/// What a checkpoint record's payload holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPayload {
    pub covers_sequence: u64,
    pub covers_hash: String,
    /// At most this many non-checkpoint records precede this checkpoint since the previous one.
    pub interval: u64,
    pub public_key: String,
    pub signature: String,
}

/// Why a checkpoint does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint payload is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint covers sequence {covers} but follows sequence {previous}")]
    WrongSequence { covers: u64, previous: u64 },
    #[error("checkpoint covers hash {covers} but the previous record's hash is {previous}")]
    WrongHash { covers: String, previous: String },
    #[error("checkpoint signature does not verify with the configured public key {0}")]
    BadSignature(String),
}

/// Checks a checkpoint `record` against `key`; returns its payload when it holds.
pub fn verify_checkpoint(
    record: &Record,
    key: &VerifyingKey,
) -> Result<CheckpointPayload, CheckpointError> {
    let payload: CheckpointPayload = serde_json::from_value(record.payload.clone())
        .map_err(|error| CheckpointError::Malformed(error.to_string()))?;
    let previous = record.sequence.saturating_sub(1);
    if payload.covers_sequence != previous {
        return Err(CheckpointError::WrongSequence {
            covers: payload.covers_sequence,
            previous,
        });
    }
    if payload.covers_hash != record.prev_hash {
        return Err(CheckpointError::WrongHash {
            covers: payload.covers_hash,
            previous: record.prev_hash.clone(),
        });
    }
    let bad = || CheckpointError::BadSignature(hex::encode(key.as_bytes()));
    let bytes: [u8; 64] = hex::decode(&payload.signature)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    let signature = Signature::from_bytes(&bytes);
    key.verify(
        &signed_message(
            payload.covers_sequence,
            &payload.covers_hash,
            payload.interval,
        ),
        &signature,
    )
    .map_err(|_| bad())?;
    Ok(payload)
}

fn signed_message(sequence: u64, hash: &str, interval: u64) -> Vec<u8> {
    format!("selfheal-audit checkpoint v1\nsequence={sequence}\nhash={hash}\ninterval={interval}\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::RecordTime;

    #[test]
    fn a_checkpoint_verifies_with_its_key_and_not_with_another() {
        let signer = CheckpointSigner::generate().unwrap();
        let other = CheckpointSigner::generate().unwrap();
        let mut head = ChainHead::genesis();
        head.seal(NewRecord::new(RecordKind::Note), RecordTime::now())
            .unwrap();
        let checkpoint = head
            .seal(signer.checkpoint(&head.clone(), 100), RecordTime::now())
            .unwrap();
        assert!(verify_checkpoint(&checkpoint, &signer.verifying_key()).is_ok());
        assert!(matches!(
            verify_checkpoint(&checkpoint, &other.verifying_key()),
            Err(CheckpointError::BadSignature(_))
        ));
    }

    #[test]
    fn a_generated_key_is_persisted_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let (first, generated) = CheckpointSigner::load_or_generate(&path).unwrap();
        assert!(generated);
        let (second, generated) = CheckpointSigner::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(first.public_key_hex(), second.public_key_hex());
    }

    #[test]
    fn malformed_seeds_are_rejected() {
        assert!(matches!(
            CheckpointSigner::from_hex("abcd"),
            Err(KeyError::Malformed)
        ));
        assert!(CheckpointSigner::from_hex(&"11".repeat(32)).is_ok());
    }
}
