//! What the deployer must remember across a crash, one JSON file per service in
//! `<data_dir>/services/`, each replaced atomically: where its router listens, the source of its
//! stable and previous versions, the rollout in flight, and the outcome of every finished rollout
//! and every rollback by idempotency key. A restarted deployer reads them to put the stable back
//! behind the same public address, to close the rollout the crash interrupted as rolled back, and
//! to answer a repeated Deploy or Rollback with what happened the first time.
//!
//! The records are written before the change they describe is reported to anyone: a rollout is
//! recorded in flight before its task starts, a promotion or rollback with its outcome before its
//! event is published. Processes started for the data directory carry its owner id in their
//! environment (`SELFHEAL_DEPLOYER_OWNER`), so the ones a crash orphaned can be found and stopped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Finished rollouts remembered per service for idempotent replays; older ones are forgotten.
const MAX_OUTCOMES: usize = 256;

/// A version's source: enough to build it again (a kept build makes that instant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub(crate) version: String,
    pub(crate) repository: PathBuf,
    pub(crate) commit: String,
    pub(crate) patch: Option<String>,
    pub(crate) started_at: Option<SystemTime>,
}

/// A rollout that was accepted and has not finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RolloutRecord {
    pub(crate) version: String,
    pub(crate) idempotency_key: Option<String>,
}

/// How a finished rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeKind {
    Promoted,
    RolledBack,
}

/// The last event of a finished rollout, kept under its idempotency key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutcomeRecord {
    pub(crate) idempotency_key: String,
    pub(crate) version: String,
    pub(crate) kind: OutcomeKind,
    pub(crate) canary_weight: u32,
    pub(crate) message: String,
    pub(crate) reasoning: String,
    pub(crate) at: SystemTime,
}

/// The answer to a Rollback, kept under its idempotency key so that a retry after a deployer
/// restart is answered the same way instead of rolling back once more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RollbackRecord {
    pub(crate) idempotency_key: String,
    pub(crate) stable_version: String,
    pub(crate) rolled_back: bool,
    pub(crate) at: SystemTime,
}

/// Everything remembered about one service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    pub(crate) service: String,
    /// Where its router listened, bound again after a restart.
    pub(crate) public_address: String,
    pub(crate) stable: Option<VersionRecord>,
    pub(crate) previous: Option<VersionRecord>,
    pub(crate) rollout: Option<RolloutRecord>,
    /// Oldest first, at most [`MAX_OUTCOMES`].
    pub(crate) outcomes: VecDeque<OutcomeRecord>,
    /// Answered rollbacks, oldest first, at most [`MAX_OUTCOMES`] (absent in older records).
    #[serde(default)]
    pub(crate) rollbacks: VecDeque<RollbackRecord>,
}

impl ServiceRecord {
    /// Remembers the answer to a rollback under its key.
    pub(crate) fn answered_rollback(&mut self, answer: RollbackRecord) {
        self.rollbacks
            .retain(|r| r.idempotency_key != answer.idempotency_key);
        self.rollbacks.push_back(answer);
        while self.rollbacks.len() > MAX_OUTCOMES {
            self.rollbacks.pop_front();
        }
    }

    /// Remembers a finished rollout under its key and clears the rollout in flight.
    pub(crate) fn finish(&mut self, outcome: Option<OutcomeRecord>) {
        self.rollout = None;
        if let Some(outcome) = outcome {
            self.outcomes
                .retain(|o| o.idempotency_key != outcome.idempotency_key);
            self.outcomes.push_back(outcome);
            while self.outcomes.len() > MAX_OUTCOMES {
                self.outcomes.pop_front();
            }
        }
    }
}

/// The directory of service records.
#[derive(Debug)]
pub(crate) struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// The store under `data_dir`, created if missing.
    pub(crate) async fn open(data_dir: &Path) -> Result<Self, Error> {
        let dir = data_dir.join("services");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::io(format!("cannot create {}", dir.display())))?;
        Ok(Self { dir })
    }

    /// Every record kept; a record that cannot be read is reported in the second list and left
    /// where it is.
    pub(crate) async fn load_all(&self) -> Result<(Vec<ServiceRecord>, Vec<String>), Error> {
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(Error::io(format!("cannot list {}", self.dir.display())))?;
        let (mut records, mut unreadable) = (Vec::new(), Vec::new());
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(Error::io(format!("cannot list {}", self.dir.display())))?
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = tokio::fs::read(&path)
                .await
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<ServiceRecord>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(record) => records.push(record),
                Err(error) => unreadable.push(format!("{}: {error}", path.display())),
            }
        }
        records.sort_by(|a, b| a.service.cmp(&b.service));
        Ok((records, unreadable))
    }

    /// Replaces the record of `record.service`, durably.
    pub(crate) async fn write(&self, record: &ServiceRecord) -> Result<(), Error> {
        let path = self.dir.join(file_name(&record.service));
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::Io {
            context: format!("cannot encode the record of {}", record.service),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&path, &bytes).await
    }
}

/// A file name for a service name that is never a path: hex of its bytes after a readable
/// prefix.
fn file_name(service: &str) -> String {
    let readable: String = service
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    format!("{readable}-{}.json", &hex::encode(service.as_bytes()))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let context = || format!("cannot write {}", path.display());
    {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(Error::io(context()))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes)
            .await
            .map_err(Error::io(context()))?;
        file.sync_all().await.map_err(Error::io(context()))?;
    }
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(Error::io(context()))
}

/// The id marking processes started for `data_dir`, made on first use and kept in it.
pub(crate) async fn owner_id(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir.join("owner");
    match tokio::fs::read_to_string(&path).await {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    write_atomically(&path, id.as_bytes()).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str) -> VersionRecord {
        VersionRecord {
            version: name.into(),
            repository: "/repo".into(),
            commit: "0123456789abcdef".into(),
            patch: Some("--- a\n+++ b\n".into()),
            started_at: Some(SystemTime::UNIX_EPOCH),
        }
    }

    fn outcome(key: &str) -> OutcomeRecord {
        OutcomeRecord {
            idempotency_key: key.into(),
            version: "r3-x".into(),
            kind: OutcomeKind::RolledBack,
            canary_weight: 0,
            message: "rolled back".into(),
            reasoning: "why".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_a_bad_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).await.unwrap();
        let record = ServiceRecord {
            service: "../payment service".into(),
            public_address: "127.0.0.1:4000".into(),
            stable: Some(version("r2-a")),
            previous: Some(version("r1-b")),
            rollout: Some(RolloutRecord {
                version: "r3-c".into(),
                idempotency_key: Some("saga:deploy".into()),
            }),
            outcomes: VecDeque::from([outcome("k1")]),
            rollbacks: VecDeque::from([RollbackRecord {
                idempotency_key: "saga:rollback".into(),
                stable_version: "r1-b".into(),
                rolled_back: true,
                at: SystemTime::UNIX_EPOCH,
            }]),
        };
        store.write(&record).await.unwrap();
        std::fs::write(dir.path().join("services/broken.json"), "{").unwrap();
        drop(store);

        let store = StateStore::open(dir.path()).await.unwrap();
        let (records, unreadable) = store.load_all().await.unwrap();
        assert_eq!(records, [record]);
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        assert!(unreadable[0].contains("broken.json"), "{unreadable:?}");
        let files: Vec<String> = std::fs::read_dir(dir.path().join("services"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files
                .iter()
                .all(|f| !f.contains('/') && !f.starts_with('.')),
            "{files:?}"
        );
    }

    #[test]
    fn finishing_keeps_one_outcome_per_key_and_a_bounded_history() {
        let mut record = ServiceRecord {
            rollout: Some(RolloutRecord {
                version: "r1".into(),
                idempotency_key: None,
            }),
            ..ServiceRecord::default()
        };
        record.finish(Some(outcome("same")));
        record.finish(Some(outcome("same")));
        assert_eq!(record.outcomes.len(), 1);
        assert!(record.rollout.is_none());
        for i in 0..MAX_OUTCOMES + 10 {
            record.finish(Some(outcome(&format!("k{i}"))));
        }
        assert_eq!(record.outcomes.len(), MAX_OUTCOMES);
        assert_eq!(
            record.outcomes.back().unwrap().idempotency_key,
            format!("k{}", MAX_OUTCOMES + 9)
        );
    }

    #[test]
    fn a_record_written_before_rollbacks_were_kept_still_reads() {
        let old = r#"{"service":"s","public_address":"127.0.0.1:1","stable":null,"previous":null,"rollout":null,"outcomes":[]}"#;
        let record: ServiceRecord = serde_json::from_str(old).unwrap();
        assert!(record.rollbacks.is_empty());
        let mut record = record;
        for i in 0..MAX_OUTCOMES + 3 {
            let answer = RollbackRecord {
                idempotency_key: format!("k{}", i % (MAX_OUTCOMES + 1)),
                stable_version: "v".into(),
                rolled_back: true,
                at: SystemTime::UNIX_EPOCH,
            };
            record.answered_rollback(answer);
        }
        assert_eq!(record.rollbacks.len(), MAX_OUTCOMES);
    }

    #[tokio::test]
    async fn the_owner_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = owner_id(dir.path()).await.unwrap();
        assert_eq!(owner_id(dir.path()).await.unwrap(), first);
        assert_eq!(first.len(), 36);
    }
}
