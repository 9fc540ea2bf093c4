//! The highest fencing token seen per service, kept durably so a restarted deployer still rejects
//! a lock holder that lost its lease. One small JSON file, replaced atomically on every raise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use crate::error::Error;
use crate::model::FencingToken;

/// Durable per-service high-water marks of fencing tokens.
#[derive(Debug)]
pub(crate) struct FencingStore {
    path: PathBuf,
    highest: Mutex<BTreeMap<String, u64>>,
}

impl FencingStore {
    /// Opens (or starts) the store at `path`.
    pub(crate) async fn open(path: PathBuf) -> Result<Self, Error> {
        let highest = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Io {
                context: format!("fencing-token file {} is corrupt", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
        };
        Ok(Self {
            path,
            highest: Mutex::new(highest),
        })
    }

    /// Admits `token` for `service` when it is at least the highest seen, recording it durably
    /// before returning; rejects a lower one and changes nothing.
    pub(crate) async fn admit(&self, service: &str, token: FencingToken) -> Result<(), Error> {
        let mut highest = self.highest.lock().await;
        let current = highest.get(service).copied().unwrap_or(0);
        if token.0 < current {
            return Err(Error::StaleFencingToken {
                service: service.to_owned(),
                token: token.0,
                highest: current,
            });
        }
        if token.0 > current {
            let mut next = highest.clone();
            next.insert(service.to_owned(), token.0);
            write_atomically(&self.path, &next).await?;
            *highest = next;
        }
        Ok(())
    }

    /// The highest token seen for `service` (0 when none).
    pub(crate) async fn highest(&self, service: &str) -> u64 {
        self.highest.lock().await.get(service).copied().unwrap_or(0)
    }
}

async fn write_atomically(path: &Path, tokens: &BTreeMap<String, u64>) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(tokens).map_err(|e| Error::Io {
        context: "cannot encode fencing tokens".into(),
        source: std::io::Error::other(e),
    })?;
    let tmp = path.with_extension("json.tmp");
    let context = || format!("cannot write {}", path.display());
    {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(Error::io(context()))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &bytes)
            .await
            .map_err(Error::io(context()))?;
        file.sync_all().await.map_err(Error::io(context()))?;
    }
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(Error::io(context()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_lower_tokens_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fencing.json");
        let store = FencingStore::open(path.clone()).await.unwrap();
        store.admit("pay", FencingToken(5)).await.unwrap();
        store.admit("pay", FencingToken(5)).await.unwrap();
        store.admit("other", FencingToken(1)).await.unwrap();
        let err = store.admit("pay", FencingToken(4)).await.unwrap_err();
        assert!(
            matches!(err, Error::StaleFencingToken { highest: 5, .. }),
            "{err}"
        );
        drop(store);

        let reopened = FencingStore::open(path).await.unwrap();
        assert_eq!(reopened.highest("pay").await, 5);
        assert!(reopened.admit("pay", FencingToken(3)).await.is_err());
        reopened.admit("pay", FencingToken(6)).await.unwrap();
        assert_eq!(reopened.highest("pay").await, 6);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fencing.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = FencingStore::open(path).await.unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
