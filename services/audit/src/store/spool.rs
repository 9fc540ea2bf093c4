//! Elasticsearch with a durable local spool for when it cannot be reached.
//!
//! A batch that Elasticsearch does not take because it is unreachable (connection refused,
//! timeout, 5xx, 429) is appended to a JSON-lines spool file and `fsync`ed; once anything is
//! spooled, later batches go to the spool too so that order is kept. A replay task, owned by
//! whoever calls [`SpoolingStore::start_replay`] and stopped by its cancellation token, sends the
//! spool to Elasticsearch in order with jittered exponential backoff and removes what was
//! accepted. Replay is idempotent: documents are create-only and a 409 for a record with the
//! same hash counts as written, so a crash between the bulk and the spool rewrite duplicates
//! nothing.
//!
//! While records are spooled, reads merge them in, and verification walks them in place of the
//! documents Elasticsearch does not yet hold.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::elasticsearch::scan_with_overlay;
use super::{AuditStore, Durability, ElasticsearchStore, RecordFilter, SlotStream, StoreError};
use crate::chain::Record;

/// The spool's file name inside the spool directory.
pub const SPOOL_FILE: &str = "spool.jsonl";

/// How many spooled records one replay request sends.
const REPLAY_CHUNK: usize = 1000;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Elasticsearch, falling back to a local spool.
#[derive(Clone)]
pub struct SpoolingStore {
    primary: ElasticsearchStore,
    spool: Arc<Mutex<Spool>>,
    spooled: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for SpoolingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolingStore")
            .field("primary", &self.primary)
            .field("spooled", &self.spooled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Spool {
    path: PathBuf,
    file: Arc<File>,
    records: VecDeque<Record>,
}

impl SpoolingStore {
    /// Wraps `primary` with a spool kept in directory `dir`, loading what a previous run left
    /// there (it will be replayed once [`Self::start_replay`] runs).
    pub async fn open(
        primary: ElasticsearchStore,
        dir: impl Into<PathBuf>,
    ) -> Result<Self, StoreError> {
        let path = dir.into().join(SPOOL_FILE);
        let spool = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Spool::open(path))
                .await
                .map_err(|_| StoreError::TaskFailed)??
        };
        if !spool.records.is_empty() {
            tracing::info!(path = %spool.path.display(), records = spool.records.len(), "found spooled audit records to replay");
        }
        let spooled = Arc::new(AtomicU64::new(spool.records.len() as u64));
        Ok(Self {
            primary,
            spool: Arc::new(Mutex::new(spool)),
            spooled,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The Elasticsearch store behind the spool.
    pub fn primary(&self) -> &ElasticsearchStore {
        &self.primary
    }

    /// Starts replaying the spool to Elasticsearch until `shutdown` is cancelled. The caller
    /// owns the task and awaits it on shutdown.
    pub fn start_replay(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move { store.replay(shutdown).await })
    }

    async fn replay(&self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_START;
        loop {
            let chunk: Vec<Record> = {
                let spool = self.spool.lock().await;
                spool.records.iter().take(REPLAY_CHUNK).cloned().collect()
            };
            if chunk.is_empty() {
                tokio::select! {
                    () = self.wake.notified() => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            match self.primary.append(&chunk).await {
                Ok(_) => {
                    backoff = BACKOFF_START;
                    let mut spool = self.spool.lock().await;
                    match spool.drain_front(chunk.len()).await {
                        Ok(()) => {
                            self.spooled
                                .store(spool.records.len() as u64, Ordering::Release);
                            tracing::info!(
                                replayed = chunk.len(),
                                remaining = spool.records.len(),
                                url = self.primary.url(),
                                "replayed spooled audit records"
                            );
                        }
                        Err(error) => {
                            // The records are in Elasticsearch; replaying them again is harmless.
                            tracing::error!(%error, "cannot shorten the audit spool");
                        }
                    }
                    continue;
                }
                Err(error) if error.is_unreachable() => {
                    tracing::debug!(%error, ?backoff, "elasticsearch still unreachable; replay waits");
                }
                Err(error) => {
                    tracing::error!(%error, "spooled audit records cannot be replayed");
                }
            }
            let jittered = backoff.mul_f64(0.5 + jitter() * 0.5);
            tokio::select! {
                () = tokio::time::sleep(jittered) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn spool_overlay(spool: &Spool) -> Result<BTreeMap<u64, String>, StoreError> {
        spool
            .records
            .iter()
            .map(|record| Ok((record.sequence, record.to_canonical_json()?)))
            .collect()
    }

    fn with_spooled(
        &self,
        spool: &Spool,
        mut stored: Vec<Record>,
        wanted: impl Fn(&Record) -> bool,
        limit: usize,
    ) -> Vec<Record> {
        if spool.records.is_empty() {
            return stored;
        }
        stored.extend(spool.records.iter().filter(|r| wanted(r)).cloned());
        stored.sort_by_key(|record| record.sequence);
        stored.dedup_by_key(|record| record.sequence);
        stored.truncate(limit);
        stored
    }
}

/// A number in 0..1 that differs between calls, for backoff jitter.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

impl Spool {
    fn open(path: PathBuf) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut records = VecDeque::new();
        let mut reader = BufReader::new(file.try_clone().map_err(io)?);
        let mut buffer = Vec::new();
        let mut offset = 0u64;
        loop {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer).map_err(io)?;
            if read == 0 {
                break;
            }
            if buffer.last() != Some(&b'\n') {
                // A torn write: the batch it belonged to was never acknowledged.
                file.set_len(offset).map_err(io)?;
                file.sync_data().map_err(io)?;
                tracing::warn!(path = %path.display(), offset, "cut a torn last line off the audit spool");
                break;
            }
            let text = String::from_utf8_lossy(&buffer[..buffer.len() - 1]);
            let record = Record::from_json(&text).map_err(|error| StoreError::Corrupt {
                location: path.display().to_string(),
                detail: error.to_string(),
            })?;
            records.push_back(record);
            offset += read as u64;
        }
        Ok(Self {
            path,
            file: Arc::new(file),
            records,
        })
    }

    async fn push(&mut self, records: &[Record]) -> Result<(), StoreError> {
        let mut text = String::with_capacity(records.len() * 512);
        for record in records {
            text.push_str(&record.to_canonical_json()?);
            text.push('\n');
        }
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut handle: &File = &file;
            handle
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|source| StoreError::Io { path, source })
        })
        .await
        .map_err(|_| StoreError::TaskFailed)??;
        self.records.extend(records.iter().cloned());
        Ok(())
    }

    /// Removes the first `count` records: rewrites the remainder to a new file, syncs it, and
    /// renames it over the spool, so a crash leaves either the old or the new spool.
    async fn drain_front(&mut self, count: usize) -> Result<(), StoreError> {
        let remaining: Vec<Record> = self.records.iter().skip(count).cloned().collect();
        let mut text = String::new();
        for record in &remaining {
            text.push_str(&record.to_canonical_json()?);
            text.push('\n');
        }
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || rewrite(&path, text.as_bytes()))
            .await
            .map_err(|_| StoreError::TaskFailed)??;
        self.file = Arc::new(file);
        self.records.drain(..count.min(self.records.len()));
        Ok(())
    }
}

fn rewrite(path: &Path, content: &[u8]) -> Result<File, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("jsonl.tmp");
    {
        let mut file = File::create(&temporary).map_err(io)?;
        file.write_all(content).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io)
}

#[async_trait]
impl AuditStore for SpoolingStore {
    async fn append(&self, records: &[Record]) -> Result<Durability, StoreError> {
        let mut spool = self.spool.lock().await;
        if spool.records.is_empty() {
            match self.primary.append(records).await {
                Ok(durability) => return Ok(durability),
                Err(error) if error.is_unreachable() => {
                    tracing::warn!(%error, records = records.len(), "elasticsearch unavailable; spooling audit records");
                }
                Err(error) => return Err(error),
            }
        }
        spool.push(records).await?;
        self.spooled
            .store(spool.records.len() as u64, Ordering::Release);
        self.wake.notify_one();
        Ok(Durability::Spooled)
    }

    async fn read_range(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let stored = self.primary.read_range(from, limit).await?;
        let spool = self.spool.lock().await;
        Ok(self.with_spooled(&spool, stored, |r| r.sequence >= from, limit))
    }

    async fn read_filtered(
        &self,
        filter: &RecordFilter,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let stored = self.primary.read_filtered(filter, from, limit).await?;
        let spool = self.spool.lock().await;
        Ok(self.with_spooled(
            &spool,
            stored,
            |r| r.sequence >= from && filter.matches(r),
            limit,
        ))
    }

    async fn find_by_idempotency_keys(&self, keys: &[String]) -> Result<Vec<Record>, StoreError> {
        let spooled: Vec<Record> = {
            let spool = self.spool.lock().await;
            spool
                .records
                .iter()
                .filter(|r| r.idempotency_key.as_ref().is_some_and(|k| keys.contains(k)))
                .cloned()
                .collect()
        };
        // While Elasticsearch is away, keys are checked against the spool (and the writer's
        // memory of this run); a key first written before the outage may then append twice.
        let mut found = match self.primary.find_by_idempotency_keys(keys).await {
            Ok(found) => found,
            Err(error) if error.is_unreachable() => {
                tracing::warn!(%error, "idempotency keys checked against the spool only");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        found.extend(spooled);
        found.sort_by_key(|record| record.sequence);
        found.dedup_by_key(|record| record.sequence);
        Ok(found)
    }

    async fn head(&self) -> Result<Option<Record>, StoreError> {
        {
            let spool = self.spool.lock().await;
            if let Some(last) = spool.records.back() {
                return Ok(Some(last.clone()));
            }
        }
        self.primary.head().await
    }

    async fn scan(&self) -> Result<SlotStream, StoreError> {
        let overlay = {
            let spool = self.spool.lock().await;
            Self::spool_overlay(&spool)?
        };
        scan_with_overlay(self.primary.clone(), overlay).await
    }

    fn spooled(&self) -> u64 {
        self.spooled.load(Ordering::Acquire)
    }
}
