//! The chain in Elasticsearch (or OpenSearch 2), over its REST API with `reqwest`, using only
//! APIs both have: index creation with explicit mappings, `_bulk` with `create` actions,
//! `_mget`, `_search` with `sort`/`search_after`, and `_refresh`.
//!
//! One document per record: `_id` is the sequence number and the `_source` is the record's
//! canonical encoding. Writes are create-only, so a stored record is never overwritten: a 409 for
//! a record whose stored hash equals ours counts as written (an idempotent replay), any other 409
//! is a [`StoreError::Conflict`]. Reads that must see earlier writes refresh the index first,
//! and a store's first read always does, since another writer may have just written.
//! Every request has a timeout, and every error names the server URL.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AuditStore, Durability, RecordFilter, SCAN_CHUNK, SlotStream, StoreError};
use crate::chain::Record;
use crate::chain::verify::Slot;

/// Where the Elasticsearch store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElasticsearchConfig {
    /// Base URL, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// Index holding the chain.
    pub index: String,
    /// Timeout of every request.
    pub timeout: Duration,
}

/// Largest page a search returns (the default `index.max_result_window`).
const MAX_PAGE: usize = 10_000;

/// The Elasticsearch store.
#[derive(Clone)]
pub struct ElasticsearchStore {
    client: reqwest::Client,
    base: String,
    index: String,
    index_ready: Arc<AtomicBool>,
    /// Whether writes may have happened since the last refresh. A new store starts dirty: an
    /// earlier writer (this service before a restart, say) may have written within the index's
    /// refresh interval, and the head read at start-up must see those records.
    dirty: Arc<AtomicBool>,
}

impl std::fmt::Debug for ElasticsearchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticsearchStore")
            .field("url", &self.base)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct BulkResponse {
    errors: bool,
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct MgetResponse {
    docs: Vec<MgetDoc>,
}

#[derive(Deserialize)]
struct MgetDoc {
    #[serde(default)]
    found: bool,
    #[serde(rename = "_source")]
    source: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: SearchHits,
}

#[derive(Deserialize)]
struct SearchHits {
    hits: Vec<SearchHit>,
}

#[derive(Deserialize)]
struct SearchHit {
    #[serde(rename = "_source")]
    source: Box<RawValue>,
    #[serde(default)]
    sort: Vec<Value>,
}

impl ElasticsearchStore {
    /// A store for `config`; no request is made until first use.
    pub fn new(config: &ElasticsearchConfig) -> Result<Self, StoreError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|source| StoreError::Unreachable {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            client,
            base,
            index: config.index.clone(),
            index_ready: Arc::new(AtomicBool::new(false)),
            dirty: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The index name.
    pub fn index(&self) -> &str {
        &self.index
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, StoreError> {
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| self.unreachable(source))?;
        if !status.is_success() {
            return Err(StoreError::Http {
                url: self.base.clone(),
                status: status.as_u16(),
                body: truncate(&String::from_utf8_lossy(&body), 500),
            });
        }
        Ok(body.to_vec())
    }

    fn unreachable(&self, source: reqwest::Error) -> StoreError {
        StoreError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    fn bad_response(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::BadResponse {
            url: self.base.clone(),
            detail: detail.to_string(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(body).map_err(|error| self.bad_response(error))
    }

    /// Creates the index with its mappings unless it exists. Only the fields queries use are
    /// indexed (`dynamic: false`); payload and decision stay in `_source` only, so records with
    /// differently-typed payloads never clash.
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        if self.index_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let keyword = json!({ "type": "keyword" });
        let body = json!({
            "settings": { "number_of_shards": 1, "number_of_replicas": 0 },
            "mappings": {
                "dynamic": false,
                "properties": {
                    "sequence": { "type": "long" },
                    "time": { "type": "keyword" },
                    "kind": keyword,
                    "saga_id": keyword,
                    "incident_id": keyword,
                    "step": keyword,
                    "actor": keyword,
                    "idempotency_key": keyword,
                    "hash": keyword,
                    "prev_hash": keyword,
                    "payload": { "type": "object", "enabled": false },
                    "decision": { "type": "object", "enabled": false },
                }
            }
        });
        let url = format!("{}/{}", self.base, self.index);
        match self.send(self.client.put(url).json(&body)).await {
            Ok(_) => {}
            Err(StoreError::Http {
                status: 400, body, ..
            }) if body.contains("resource_already_exists_exception") => {}
            Err(error) => return Err(error),
        }
        self.index_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes earlier writes visible to searches, when there were any.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let url = format!("{}/{}/_refresh", self.base, self.index);
        if let Err(error) = self.send(self.client.post(url)).await {
            self.dirty.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(())
    }

    /// The raw `_source` of documents with ids in `ids`, one slot per id.
    pub async fn get_raw(&self, ids: Range<u64>) -> Result<Vec<Slot>, StoreError> {
        let list: Vec<String> = ids.clone().map(|id| id.to_string()).collect();
        let url = format!("{}/{}/_mget", self.base, self.index);
        let body = self
            .send(self.client.post(url).json(&json!({ "ids": list })))
            .await?;
        let response: MgetResponse = self.parse(&body)?;
        if response.docs.len() != list.len() {
            return Err(self.bad_response("_mget returned a different number of documents"));
        }
        Ok(ids
            .zip(response.docs)
            .map(|(position, doc)| Slot {
                position,
                raw: doc
                    .found
                    .then_some(doc.source)
                    .flatten()
                    .map(|raw| raw.get().to_owned()),
            })
            .collect())
    }

    async fn search(
        &self,
        query: Value,
        limit: usize,
        descending: bool,
    ) -> Result<Vec<Record>, StoreError> {
        self.ensure_index().await?;
        self.refresh().await?;
        let url = format!("{}/{}/_search", self.base, self.index);
        let order = if descending { "desc" } else { "asc" };
        let mut out = Vec::new();
        let mut after: Option<Value> = None;
        while out.len() < limit {
            let size = (limit - out.len()).min(MAX_PAGE);
            let mut body = json!({
                "query": query,
                "sort": [{ "sequence": order }],
                "size": size,
                "track_total_hits": false,
            });
            if let Some(after) = &after {
                body["search_after"] = after.clone();
            }
            let response: SearchResponse =
                self.parse(&self.send(self.client.post(&url).json(&body)).await?)?;
            let count = response.hits.hits.len();
            for hit in response.hits.hits {
                after = Some(Value::Array(hit.sort));
                let record =
                    Record::from_json(hit.source.get()).map_err(|error| StoreError::Corrupt {
                        location: format!("{} index {}", self.base, self.index),
                        detail: error.to_string(),
                    })?;
                out.push(record);
            }
            if count < size {
                break;
            }
        }
        Ok(out)
    }

    async fn check_conflicts(&self, conflicts: Vec<&Record>) -> Result<(), StoreError> {
        for record in conflicts {
            let slot = self
                .get_raw(record.sequence..record.sequence + 1)
                .await?
                .pop();
            let existing = slot
                .and_then(|slot| slot.raw)
                .and_then(|raw| Record::from_json(&raw).ok())
                .map(|r| r.hash)
                .unwrap_or_default();
            if existing != record.hash {
                return Err(StoreError::Conflict {
                    location: format!("{} index {}", self.base, self.index),
                    sequence: record.sequence,
                    existing,
                    ours: record.hash.clone(),
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl AuditStore for ElasticsearchStore {
    async fn append(&self, records: &[Record]) -> Result<Durability, StoreError> {
        if records.is_empty() {
            return Ok(Durability::Stored);
        }
        self.ensure_index().await?;
        let mut body = String::with_capacity(records.len() * 600);
        for record in records {
            body.push_str(&format!(
                "{{\"create\":{{\"_index\":{},\"_id\":\"{}\"}}}}\n",
                Value::String(self.index.clone()),
                record.sequence
            ));
            body.push_str(&record.to_canonical_json()?);
            body.push('\n');
        }
        let url = format!("{}/_bulk", self.base);
        self.dirty.store(true, Ordering::Release);
        let response: BulkResponse = self.parse(
            &self
                .send(
                    self.client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                        .body(body),
                )
                .await?,
        )?;
        if !response.errors {
            return Ok(Durability::Stored);
        }
        if response.items.len() != records.len() {
            return Err(self.bad_response("_bulk returned a different number of items"));
        }
        let mut conflicts = Vec::new();
        for (record, item) in records.iter().zip(&response.items) {
            let status = item["create"]["status"].as_u64().unwrap_or(0);
            match status {
                200..=299 => {}
                409 => conflicts.push(record),
                _ => {
                    return Err(StoreError::Http {
                        url: self.base.clone(),
                        status: u16::try_from(status).unwrap_or(500),
                        body: truncate(&item["create"]["error"].to_string(), 500),
                    });
                }
            }
        }
        self.check_conflicts(conflicts).await?;
        Ok(Durability::Stored)
    }

    async fn read_range(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.search(
            json!({ "range": { "sequence": { "gte": from } } }),
            limit,
            false,
        )
        .await
    }

    async fn read_filtered(
        &self,
        filter: &RecordFilter,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let term = match filter {
            RecordFilter::Saga(id) => json!({ "term": { "saga_id": id } }),
            RecordFilter::Incident(id) => json!({ "term": { "incident_id": id } }),
        };
        let query = json!({ "bool": { "filter": [
            term,
            { "range": { "sequence": { "gte": from } } }
        ] } });
        self.search(query, limit, false).await
    }

    async fn find_by_idempotency_keys(&self, keys: &[String]) -> Result<Vec<Record>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.search(
            json!({ "terms": { "idempotency_key": keys } }),
            keys.len(),
            false,
        )
        .await
    }

    async fn head(&self) -> Result<Option<Record>, StoreError> {
        Ok(self
            .search(json!({ "match_all": {} }), 1, true)
            .await?
            .pop())
    }

    async fn scan(&self) -> Result<SlotStream, StoreError> {
        scan_with_overlay(self.clone(), Default::default()).await
    }
}

/// Scans documents by id from 1 up to the highest stored (or overlaid) sequence; `overlay`
/// fills ids the index does not hold (records still in the spool).
pub(crate) async fn scan_with_overlay(
    store: ElasticsearchStore,
    overlay: std::collections::BTreeMap<u64, String>,
) -> Result<SlotStream, StoreError> {
    let stored_last = store.head().await?.map_or(0, |record| record.sequence);
    let last = stored_last.max(overlay.keys().next_back().copied().unwrap_or(0));
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut from = 1;
        while from <= last {
            let to = (from + SCAN_CHUNK as u64).min(last + 1);
            let chunk = store.get_raw(from..to).await.map(|mut slots| {
                for slot in &mut slots {
                    if slot.raw.is_none() {
                        slot.raw = overlay.get(&slot.position).cloned();
                    }
                }
                slots
            });
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
            from = to;
        }
    });
    Ok(rx)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
