//! The audit log: one writer task that orders the chain, and the reads and verification around
//! it.
//!
//! Every append goes through an mpsc channel into a single writer task, which assigns sequence
//! numbers, seals records onto the head, inserts signed checkpoints every `checkpoint_interval`
//! records, and writes whatever requests are waiting as one batch (group commit). With one
//! writer the chain cannot fork however many callers append at once. The writer stops on
//! [`AuditLog::shutdown`], writing a last checkpoint over whatever is unsigned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::chain::checkpoint::CheckpointSigner;
use crate::chain::verify::{BreakReason, ChainBreak, Verifier, VerifyReport};
use crate::chain::{ChainHead, EncodeError, NewRecord, Record, RecordKind, RecordTime};
use crate::store::{AuditStore, Durability, RecordFilter, StoreError};

/// Most records the writer puts in one batch when requests queue up.
const MAX_GROUP_RECORDS: usize = 8192;
/// Idempotency keys remembered in memory before the store is asked.
const RECENT_KEYS: usize = 100_000;
/// Page size for reads that return everything.
const READ_PAGE: usize = 10_000;

/// Settings of the writer and verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// A checkpoint is written after this many records.
    pub checkpoint_interval: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            checkpoint_interval: 100,
        }
    }
}

/// Errors of the audit log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error(transparent)]
    Encode(Arc<EncodeError>),
    #[error("the audit writer has stopped")]
    Stopped,
}

impl From<StoreError> for LogError {
    fn from(error: StoreError) -> Self {
        Self::Store(Arc::new(error))
    }
}

impl From<EncodeError> for LogError {
    fn from(error: EncodeError) -> Self {
        Self::Encode(Arc::new(error))
    }
}

/// Records as appended, one per requested record (an existing record for a repeated key).
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    pub records: Vec<Record>,
    pub durability: Durability,
}

type Reply = oneshot::Sender<Result<Appended, LogError>>;

enum Command {
    Append(Vec<NewRecord>, Reply),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    commands: mpsc::Sender<Command>,
    store: Arc<dyn AuditStore>,
    signer: CheckpointSigner,
    settings: LogSettings,
    written: Arc<Mutex<ChainHead>>,
    /// The highest sequence the writer has handed to the store (written or being written).
    ceiling: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Reads the head of `store` and starts the writer. The returned task ends after
    /// [`AuditLog::shutdown`]; its owner awaits it.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        signer: CheckpointSigner,
        settings: LogSettings,
    ) -> Result<(Self, JoinHandle<()>), LogError> {
        let head = store
            .head()
            .await?
            .map_or_else(ChainHead::genesis, |record| ChainHead::of(&record));
        let since_checkpoint =
            unsigned_tail(store.as_ref(), &head, settings.checkpoint_interval).await?;
        let written = Arc::new(Mutex::new(head.clone()));
        let ceiling = Arc::new(AtomicU64::new(head.sequence));
        let (commands, receiver) = mpsc::channel(1024);
        let mut writer = Writer {
            store: Arc::clone(&store),
            signer: signer.clone(),
            interval: settings.checkpoint_interval.max(1),
            head,
            since_checkpoint,
            recent: HashMap::new(),
            written: Arc::clone(&written),
            ceiling: Arc::clone(&ceiling),
        };
        if since_checkpoint > 0 && since_checkpoint >= writer.interval {
            writer.checkpoint().await;
        }
        let task = tokio::spawn(writer.run(receiver));
        Ok((
            Self {
                commands,
                store,
                signer,
                settings,
                written,
                ceiling,
            },
            task,
        ))
    }

    /// Appends `records` in order; returns them sealed (or the existing record for a repeated
    /// idempotency key) and where they are durable.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Appended, LogError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append(records, reply))
            .await
            .map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// Writes a final checkpoint and stops the writer.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// The head the writer last wrote.
    pub fn head(&self) -> ChainHead {
        lock(&self.written).clone()
    }

    /// The public key checkpoints are verified with, hex.
    pub fn public_key_hex(&self) -> String {
        self.signer.public_key_hex()
    }

    /// Records with `sequence >= from` (all, or those matching `filter`), at most `limit`.
    pub async fn query(
        &self,
        filter: Option<&RecordFilter>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LogError> {
        Ok(match filter {
            Some(filter) => self.store.read_filtered(filter, from, limit).await?,
            None => self.store.read_range(from, limit).await?,
        })
    }

    /// Every decision record of `incident_id`, in order.
    pub async fn decisions(&self, incident_id: &str) -> Result<Vec<Record>, LogError> {
        let filter = RecordFilter::Incident(incident_id.to_owned());
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let page = self.store.read_filtered(&filter, from, READ_PAGE).await?;
            let full = page.len() == READ_PAGE;
            if let Some(last) = page.last() {
                from = last.sequence + 1;
            }
            out.extend(page.into_iter().filter(|r| r.kind == RecordKind::Decision));
            if !full {
                return Ok(out);
            }
        }
    }

    /// Walks the stored chain and its checkpoints; the chain must also reach the head this
    /// writer last wrote.
    pub async fn verify(&self) -> Result<VerifyReport, LogError> {
        let mut verifier = Verifier::new(
            self.signer.verifying_key(),
            self.settings.checkpoint_interval,
        )
        .must_contain(self.head());
        let mut slots = self.store.scan().await?;
        while let Some(chunk) = slots.recv().await {
            let chunk = chunk?;
            // Hashing a chunk is CPU work: keep it off the async workers.
            verifier = tokio::task::spawn_blocking(move || {
                for slot in &chunk {
                    verifier.push(slot);
                }
                verifier
            })
            .await
            .map_err(|_| LogError::Stopped)?;
            if verifier.is_broken() {
                break;
            }
        }
        let mut report = verifier.finish();
        report.spooled = self.store.spooled();
        let ceiling = self.ceiling.load(Ordering::Acquire);
        if report.broken.is_none() && report.head.sequence > ceiling {
            let sequence = ceiling + 1;
            report.broken = Some(ChainBreak {
                sequence,
                reason: BreakReason::HashMismatch,
                detail: format!(
                    "the store holds records up to {} but this service wrote only up to {ceiling}: record {sequence} on was not written by it",
                    report.head.sequence
                ),
            });
        }
        Ok(report)
    }

    /// Records only in a local spool.
    pub fn spooled(&self) -> u64 {
        self.store.spooled()
    }
}

fn lock(head: &Mutex<ChainHead>) -> std::sync::MutexGuard<'_, ChainHead> {
    head.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many records follow the last checkpoint (looking back at most `interval` + 1 records).
async fn unsigned_tail(
    store: &dyn AuditStore,
    head: &ChainHead,
    interval: u64,
) -> Result<u64, StoreError> {
    if head.sequence == 0 {
        return Ok(0);
    }
    let from = head.sequence.saturating_sub(interval) + 1;
    let window = store
        .read_range(from, usize::try_from(interval + 1).unwrap_or(usize::MAX))
        .await?;
    let after_checkpoint = window
        .iter()
        .rev()
        .take_while(|record| record.kind != RecordKind::Checkpoint)
        .count();
    Ok(after_checkpoint as u64)
}

struct Writer {
    store: Arc<dyn AuditStore>,
    signer: CheckpointSigner,
    interval: u64,
    head: ChainHead,
    since_checkpoint: u64,
    recent: HashMap<String, Record>,
    written: Arc<Mutex<ChainHead>>,
    ceiling: Arc<AtomicU64>,
}

struct Job {
    records: Vec<NewRecord>,
    reply: Reply,
}

/// One answer of a job before the batch is stored: a record sealed in this batch (by its index
/// in the batch) or an existing record returned for a repeated idempotency key.
enum Answer {
    Sealed(usize),
    Existing(Box<Record>),
}

/// A group of jobs sealed onto a tentative head, not yet stored.
struct SealedGroup {
    sealed: Vec<Record>,
    answers: Vec<Vec<Answer>>,
    head: ChainHead,
    since_checkpoint: u64,
    fresh: HashMap<String, Record>,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.recv().await {
            let (first, reply) = match command {
                Command::Append(records, reply) => (records, reply),
                Command::Shutdown(done) => {
                    self.finish(done).await;
                    return;
                }
            };
            let mut total = first.len();
            let mut jobs = vec![Job {
                records: first,
                reply,
            }];
            let mut stop = None;
            while total < MAX_GROUP_RECORDS {
                match commands.try_recv() {
                    Ok(Command::Append(records, reply)) => {
                        total += records.len();
                        jobs.push(Job { records, reply });
                    }
                    Ok(Command::Shutdown(done)) => {
                        stop = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs).await;
            if let Some(done) = stop {
                self.finish(done).await;
                return;
            }
        }
        self.checkpoint().await;
    }

    async fn finish(&mut self, done: oneshot::Sender<()>) {
        self.checkpoint().await;
        let _ = done.send(());
    }

    /// Writes a checkpoint over the head when records are unsigned.
    async fn checkpoint(&mut self) {
        if self.since_checkpoint == 0 {
            return;
        }
        let mut head = self.head.clone();
        let new = self
            .signer
            .checkpoint(&head, self.interval.max(self.since_checkpoint));
        let result = match head.seal(new, RecordTime::now()) {
            Ok(record) => {
                self.ceiling.fetch_max(record.sequence, Ordering::AcqRel);
                self.store.append(&[record]).await.map_err(LogError::from)
            }
            Err(error) => Err(error.into()),
        };
        match result {
            Ok(_) => {
                self.head = head;
                self.since_checkpoint = 0;
                *lock(&self.written) = self.head.clone();
                tracing::info!(sequence = self.head.sequence, "wrote an audit checkpoint");
            }
            Err(error) => tracing::error!(%error, "cannot write an audit checkpoint"),
        }
    }

    async fn commit(&mut self, mut jobs: Vec<Job>) {
        let known = match self.known_keys(&jobs).await {
            Ok(known) => known,
            Err(error) => return fail_all(jobs, &error),
        };
        let group = match self.seal(&mut jobs, &known) {
            Ok(group) => group,
            Err(error) => return fail_all(jobs, &error),
        };
        let SealedGroup {
            sealed,
            answers,
            head,
            since_checkpoint: since,
            fresh,
        } = group;
        let durability = if sealed.is_empty() {
            if self.store.spooled() > 0 {
                Durability::Spooled
            } else {
                Durability::Stored
            }
        } else {
            self.ceiling.fetch_max(head.sequence, Ordering::AcqRel);
            match self.store.append(&sealed).await {
                Ok(durability) => durability,
                Err(error) => {
                    let error = LogError::from(error);
                    tracing::error!(%error, records = sealed.len(), "audit append failed");
                    self.resync().await;
                    return fail_all(jobs, &error);
                }
            }
        };
        self.head = head;
        self.since_checkpoint = since;
        *lock(&self.written) = self.head.clone();
        if self.recent.len() + fresh.len() > RECENT_KEYS {
            self.recent.clear();
        }
        self.recent.extend(fresh);
        // Move each sealed record into its answer rather than cloning it.
        let mut sealed: Vec<Option<Record>> = sealed.into_iter().map(Some).collect();
        for (job, answers) in jobs.into_iter().zip(answers) {
            let records = answers
                .into_iter()
                .filter_map(|answer| match answer {
                    Answer::Sealed(index) => sealed.get_mut(index).and_then(Option::take),
                    Answer::Existing(record) => Some(*record),
                })
                .collect();
            let _ = job.reply.send(Ok(Appended {
                records,
                durability,
            }));
        }
    }

    /// Existing records for the idempotency keys in `jobs` that are not remembered already.
    async fn known_keys(&self, jobs: &[Job]) -> Result<HashMap<String, Record>, LogError> {
        let missing: Vec<String> = jobs
            .iter()
            .flat_map(|job| &job.records)
            .filter_map(|record| record.idempotency_key.clone())
            .filter(|key| !self.recent.contains_key(key))
            .collect();
        if missing.is_empty() {
            return Ok(HashMap::new());
        }
        let found = self.store.find_by_idempotency_keys(&missing).await?;
        Ok(found
            .into_iter()
            .filter_map(|record| Some((record.idempotency_key.clone()?, record)))
            .collect())
    }

    /// Seals the records of `jobs` (taking them out of the jobs) onto a copy of the head.
    fn seal(
        &self,
        jobs: &mut [Job],
        known: &HashMap<String, Record>,
    ) -> Result<SealedGroup, LogError> {
        let time = RecordTime::now();
        let mut head = self.head.clone();
        let mut since = self.since_checkpoint;
        let mut sealed = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        let mut fresh: HashMap<String, Record> = HashMap::new();
        for job in jobs {
            let mut out = Vec::with_capacity(job.records.len());
            for new in std::mem::take(&mut job.records) {
                if let Some(key) = &new.idempotency_key {
                    let existing = fresh
                        .get(key)
                        .or_else(|| self.recent.get(key))
                        .or_else(|| known.get(key));
                    if let Some(existing) = existing {
                        out.push(Answer::Existing(Box::new(existing.clone())));
                        continue;
                    }
                }
                let record = head.seal(new, time)?;
                if let Some(key) = &record.idempotency_key {
                    fresh.insert(key.clone(), record.clone());
                }
                out.push(Answer::Sealed(sealed.len()));
                sealed.push(record);
                since += 1;
                if since >= self.interval {
                    let checkpoint = self.signer.checkpoint(&head, since);
                    sealed.push(head.seal(checkpoint, time)?);
                    since = 0;
                }
            }
            answers.push(out);
        }
        Ok(SealedGroup {
            sealed,
            answers,
            head,
            since_checkpoint: since,
            fresh,
        })
    }

    /// After a failed append, takes the head from the store again (it may hold part of it).
    async fn resync(&mut self) {
        match self.store.head().await {
            Ok(Some(record)) if record.sequence >= self.head.sequence => {
                if record.sequence != self.head.sequence {
                    tracing::warn!(
                        stored = record.sequence,
                        written = self.head.sequence,
                        "audit store holds more than acknowledged; continuing from its head"
                    );
                }
                self.head = ChainHead::of(&record);
                self.ceiling.fetch_max(record.sequence, Ordering::AcqRel);
                if let Ok(since) =
                    unsigned_tail(self.store.as_ref(), &self.head, self.interval).await
                {
                    self.since_checkpoint = since;
                }
                *lock(&self.written) = self.head.clone();
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot re-read the audit head"),
        }
    }
}

fn fail_all(jobs: Vec<Job>, error: &LogError) {
    for job in jobs {
        let _ = job.reply.send(Err(error.clone()));
    }
}
