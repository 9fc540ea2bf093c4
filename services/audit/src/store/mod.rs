//! Where the chain is kept: one small trait, [`AuditStore`], and its implementations — the
//! JSON-lines file (the embedded default) and Elasticsearch with a local spool.
//!
//! Stores keep records exactly as the writer sealed them, in canonical encoding; they never
//! assign sequence numbers or hashes and never overwrite a record. Ordering is the writer's job
//! ([`crate::log`]).

pub mod elasticsearch;
pub mod file;
pub mod spool;

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::chain::Record;
use crate::chain::verify::Slot;

pub use elasticsearch::{ElasticsearchConfig, ElasticsearchStore};
pub use file::FileStore;
pub use spool::SpoolingStore;

/// Where an appended batch ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// In the primary store.
    Stored,
    /// In the local spool, to be replayed to the primary store.
    Spooled,
}

/// Which records a filtered read returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordFilter {
    Saga(String),
    Incident(String),
}

impl RecordFilter {
    /// Whether `record` matches.
    pub fn matches(&self, record: &Record) -> bool {
        match self {
            Self::Saga(id) => &record.saga_id == id,
            Self::Incident(id) => &record.incident_id == id,
        }
    }
}

/// Slots in storage order, in chunks, ending when the sender is dropped.
pub type SlotStream = mpsc::Receiver<Result<Vec<Slot>, StoreError>>;

/// Errors of the stores; each names the file or server it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("audit file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("elasticsearch at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("elasticsearch at {url} answered {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("elasticsearch at {url} sent an unexpected response: {detail}")]
    BadResponse { url: String, detail: String },
    #[error(
        "sequence {sequence} already exists in {location} with hash {existing}, not {ours}: the chain was written by someone else"
    )]
    Conflict {
        location: String,
        sequence: u64,
        existing: String,
        ours: String,
    },
    #[error("stored record in {location} cannot be read: {detail}")]
    Corrupt { location: String, detail: String },
    #[error(transparent)]
    Encode(#[from] crate::chain::EncodeError),
    #[error("the store's background work stopped unexpectedly")]
    TaskFailed,
}

impl StoreError {
    /// Whether the store could not be reached at all (as opposed to refusing the request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
            || matches!(self, Self::Http { status, .. } if *status >= 500 || *status == 429)
    }
}

/// The chain's storage. Implementations pass the conformance suite in
/// `tests/store_conformance.rs`.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `records`, which continue the stored chain in sequence. A record whose sequence
    /// is already stored with the same hash counts as written; with another hash it is a
    /// [`StoreError::Conflict`]. Durable when this returns.
    async fn append(&self, records: &[Record]) -> Result<Durability, StoreError>;

    /// Records with `sequence >= from`, in sequence order, at most `limit`.
    async fn read_range(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError>;

    /// Records matching `filter` with `sequence >= from`, in sequence order, at most `limit`.
    async fn read_filtered(
        &self,
        filter: &RecordFilter,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// The stored records carrying any of `keys`.
    async fn find_by_idempotency_keys(&self, keys: &[String]) -> Result<Vec<Record>, StoreError>;

    /// The last record, if any.
    async fn head(&self) -> Result<Option<Record>, StoreError>;

    /// Every storage slot in storage order, raw, for verification.
    async fn scan(&self) -> Result<SlotStream, StoreError>;

    /// How many records are only in a local spool (0 for stores without one).
    fn spooled(&self) -> u64 {
        0
    }
}

/// How many slots a scan sends at a time.
pub(crate) const SCAN_CHUNK: usize = 1024;
