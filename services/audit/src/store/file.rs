//! The embedded store: one JSON-lines file, one canonical record per line, appended and
//! `fsync`ed per batch.
//!
//! On open the file is read once to rebuild small in-memory indexes (line offsets, sequence,
//! saga, incident and idempotency key per line) and to recover from a torn write: a last line
//! without its newline is completed when it holds a whole record, and cut off otherwise. Reads
//! use the offsets; [`AuditStore::scan`] streams the file afresh so that verification judges
//! the bytes on disk, not the indexes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{AuditStore, Durability, RecordFilter, SCAN_CHUNK, SlotStream, StoreError};
use crate::chain::Record;
use crate::chain::verify::Slot;

/// The file name of the chain inside the store directory.
pub const RECORDS_FILE: &str = "records.jsonl";

/// The JSON-lines store.
#[derive(Clone)]
pub struct FileStore {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What the store knows about one line.
struct LineIndex {
    offset: u64,
    /// The sequence the line holds, or `None` when it cannot be read.
    sequence: Option<u64>,
    hash: String,
}

struct FileState {
    file: File,
    /// One entry per line, in file order; `len` is the end of the last line.
    lines: Vec<LineIndex>,
    len: u64,
    by_key: HashMap<String, usize>,
    by_saga: HashMap<String, Vec<usize>>,
    by_incident: HashMap<String, Vec<usize>>,
}

impl FileStore {
    /// Opens (creating when absent) the store in directory `dir`.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir))
            .await
            .map_err(|_| StoreError::TaskFailed)?
    }

    /// The path of the records file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_blocking(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(RECORDS_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut state = FileState {
            file,
            lines: Vec::new(),
            len: 0,
            by_key: HashMap::new(),
            by_saga: HashMap::new(),
            by_incident: HashMap::new(),
        };
        let mut reader = BufReader::new(state.file.try_clone().map_err(io)?);
        let mut buffer = Vec::new();
        let mut offset = 0u64;
        loop {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer).map_err(io)?;
            if read == 0 {
                break;
            }
            let complete = buffer.last() == Some(&b'\n');
            let text = String::from_utf8_lossy(if complete {
                &buffer[..buffer.len() - 1]
            } else {
                &buffer[..]
            });
            let record = Record::from_json(&text).ok();
            if !complete {
                if record.is_some() {
                    // The write lost only its newline: complete it.
                    state.file.write_all(b"\n").map_err(io)?;
                    state.file.sync_data().map_err(io)?;
                    tracing::warn!(path = %path.display(), offset, "completed the last line of the audit file");
                } else {
                    state.file.set_len(offset).map_err(io)?;
                    state.file.sync_data().map_err(io)?;
                    tracing::warn!(path = %path.display(), offset, bytes = read, "cut a torn last line off the audit file");
                    break;
                }
            }
            state.index_line(offset, record.as_ref());
            offset += read as u64 + u64::from(!complete);
        }
        state.len = offset;
        Ok(Self {
            path,
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FileState> {
        // A panic while holding the lock leaves indexes at worst stale; reads re-check lines.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&FileStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| StoreError::TaskFailed)?
    }

    fn io_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn append_blocking(&self, records: &[Record]) -> Result<Durability, StoreError> {
        let mut state = self.lock();
        let last = state.last_sequence();
        let mut text = String::with_capacity(records.len() * 512);
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            if record.sequence <= last {
                let existing = state.position_of(record.sequence).map(|p| &state.lines[p]);
                match existing {
                    Some(line) if line.hash == record.hash => continue,
                    other => {
                        return Err(StoreError::Conflict {
                            location: self.path.display().to_string(),
                            sequence: record.sequence,
                            existing: other.map(|l| l.hash.clone()).unwrap_or_default(),
                            ours: record.hash.clone(),
                        });
                    }
                }
            }
            let start = text.len();
            text.push_str(&record.to_canonical_json()?);
            text.push('\n');
            fresh.push((start, record));
        }
        if fresh.is_empty() {
            return Ok(Durability::Stored);
        }
        let before = state.len;
        let written = state
            .file
            .write_all(text.as_bytes())
            .and_then(|()| state.file.sync_data());
        if let Err(source) = written {
            // Leave no partial batch behind for the next append to build on.
            let _ = state.file.set_len(before);
            return Err(self.io_error(source));
        }
        for (start, record) in fresh {
            state.index_line(before + start as u64, Some(record));
        }
        state.len = before + text.len() as u64;
        Ok(Durability::Stored)
    }

    fn read_lines(
        &self,
        state: &FileState,
        positions: &[usize],
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::with_capacity(positions.len());
        // Read contiguous runs of lines with one read each.
        let mut index = 0;
        while index < positions.len() {
            let first = positions[index];
            let mut last = first;
            while index + 1 < positions.len() && positions[index + 1] == last + 1 {
                index += 1;
                last += 1;
            }
            index += 1;
            let start = state.lines[first].offset;
            let end = state.end_of(last);
            let mut buffer = vec![0u8; (end - start) as usize];
            state
                .file
                .read_exact_at(&mut buffer, start)
                .map_err(|e| self.io_error(e))?;
            for line in buffer.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let text = String::from_utf8_lossy(line);
                let record = Record::from_json(&text).map_err(|error| StoreError::Corrupt {
                    location: self.path.display().to_string(),
                    detail: error.to_string(),
                })?;
                out.push(record);
            }
        }
        Ok(out)
    }
}

impl FileState {
    fn index_line(&mut self, offset: u64, record: Option<&Record>) {
        let position = self.lines.len();
        self.lines.push(LineIndex {
            offset,
            sequence: record.map(|r| r.sequence),
            hash: record.map(|r| r.hash.clone()).unwrap_or_default(),
        });
        let Some(record) = record else { return };
        if let Some(key) = &record.idempotency_key {
            self.by_key.entry(key.clone()).or_insert(position);
        }
        if !record.saga_id.is_empty() {
            self.by_saga
                .entry(record.saga_id.clone())
                .or_default()
                .push(position);
        }
        if !record.incident_id.is_empty() {
            self.by_incident
                .entry(record.incident_id.clone())
                .or_default()
                .push(position);
        }
    }

    fn last_sequence(&self) -> u64 {
        self.lines
            .iter()
            .rev()
            .find_map(|line| line.sequence)
            .unwrap_or(0)
    }

    fn end_of(&self, position: usize) -> u64 {
        self.lines
            .get(position + 1)
            .map_or(self.len, |next| next.offset)
    }

    /// The first line whose sequence is `>= from` (lines are in sequence order when intact).
    fn first_at_or_after(&self, from: u64) -> usize {
        self.lines
            .partition_point(|line| line.sequence.is_some_and(|s| s < from))
    }

    fn position_of(&self, sequence: u64) -> Option<usize> {
        let position = self.first_at_or_after(sequence);
        (self.lines.get(position)?.sequence == Some(sequence)).then_some(position)
    }
}

#[async_trait]
impl AuditStore for FileStore {
    async fn append(&self, records: &[Record]) -> Result<Durability, StoreError> {
        let records = records.to_vec();
        self.blocking(move |store| store.append_blocking(&records))
            .await
    }

    async fn read_range(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.blocking(move |store| {
            let state = store.lock();
            let start = state.first_at_or_after(from);
            let end = (start + limit).min(state.lines.len());
            let positions: Vec<usize> = (start..end).collect();
            store.read_lines(&state, &positions)
        })
        .await
    }

    async fn read_filtered(
        &self,
        filter: &RecordFilter,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let filter = filter.clone();
        self.blocking(move |store| {
            let state = store.lock();
            let index = match &filter {
                RecordFilter::Saga(id) => state.by_saga.get(id),
                RecordFilter::Incident(id) => state.by_incident.get(id),
            };
            let positions: Vec<usize> = index
                .into_iter()
                .flatten()
                .copied()
                .filter(|p| state.lines[*p].sequence.is_some_and(|s| s >= from))
                .take(limit)
                .collect();
            store.read_lines(&state, &positions)
        })
        .await
    }

    async fn find_by_idempotency_keys(&self, keys: &[String]) -> Result<Vec<Record>, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |store| {
            let state = store.lock();
            let mut positions: Vec<usize> = keys
                .iter()
                .filter_map(|key| state.by_key.get(key).copied())
                .collect();
            positions.sort_unstable();
            positions.dedup();
            store.read_lines(&state, &positions)
        })
        .await
    }

    async fn head(&self) -> Result<Option<Record>, StoreError> {
        self.blocking(|store| {
            let state = store.lock();
            match state.lines.len() {
                0 => Ok(None),
                n => Ok(store.read_lines(&state, &[n - 1])?.pop()),
            }
        })
        .await
    }

    async fn scan(&self) -> Result<SlotStream, StoreError> {
        let (tx, rx) = mpsc::channel(4);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let result = scan_file(&path, &tx);
            if let Err(error) = result {
                let _ = tx.blocking_send(Err(error));
            }
        });
        Ok(rx)
    }
}

/// Streams the file at `path` as slots; a last line without newline is a slot too.
fn scan_file(
    path: &Path,
    tx: &mpsc::Sender<Result<Vec<Slot>, StoreError>>,
) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let mut buffer = Vec::new();
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    let mut position = 0u64;
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer).map_err(io)? == 0 {
            break;
        }
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        }
        position += 1;
        chunk.push(Slot {
            position,
            raw: Some(String::from_utf8_lossy(&buffer).into_owned()),
        });
        if chunk.len() == SCAN_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK));
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}
