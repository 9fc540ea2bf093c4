//! Helpers shared by the audit tests: record builders and access to the real Elasticsearch.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use selfheal_audit::chain::{NewRecord, RecordKind};
use selfheal_audit::store::{ElasticsearchConfig, ElasticsearchStore};

/// The Elasticsearch/OpenSearch URL for tests.
pub fn elasticsearch_url() -> String {
    std::env::var("SELFHEAL_TEST_ELASTICSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned())
}

/// Fails (never skips) when the server is unreachable, saying how to start it.
pub async fn require_elasticsearch() -> String {
    let url = elasticsearch_url();
    let client = reqwest::Client::new();
    let reachable = client
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(
        reachable,
        "Elasticsearch/OpenSearch is not reachable at {url}: run `bash scripts/backends.sh start opensearch` (or set SELFHEAL_TEST_ELASTICSEARCH_URL)"
    );
    url
}

/// An index name no other test uses.
pub fn unique_index(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "selfheal-audit-test-{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on a fresh index of the test server.
pub async fn elasticsearch_store(prefix: &str) -> ElasticsearchStore {
    let url = require_elasticsearch().await;
    ElasticsearchStore::new(&ElasticsearchConfig {
        url,
        index: unique_index(prefix),
        timeout: Duration::from_secs(10),
    })
    .expect("client builds")
}

/// Deletes a test index (best effort).
pub async fn delete_index(store: &ElasticsearchStore) {
    let _ = reqwest::Client::new()
        .delete(format!("{}/{}", store.url(), store.index()))
        .send()
        .await;
}

/// A step record of `saga` in `incident` with payload `{"n": n}`.
pub fn step(saga: &str, incident: &str, n: u64) -> NewRecord {
    NewRecord {
        saga_id: saga.to_owned(),
        incident_id: incident.to_owned(),
        step: "patch".to_owned(),
        actor: "orchestrator".to_owned(),
        fencing_token: 7,
        payload: serde_json::json!({ "n": n, "note": "step output", "ratio": 0.152 }),
        ..NewRecord::new(RecordKind::StepFinished)
    }
}

/// Raw document access for tamper tests.
pub struct RawIndex {
    pub url: String,
    pub index: String,
    client: reqwest::Client,
}

impl RawIndex {
    pub fn of(store: &ElasticsearchStore) -> Self {
        Self {
            url: store.url().to_owned(),
            index: store.index().to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, id: u64) -> String {
        let response: serde_json::Value = self
            .client
            .get(format!("{}/{}/_doc/{id}", self.url, self.index))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::to_string(&response["_source"]).unwrap()
    }

    /// Overwrites document `id` with `source` (an attacker with write access to the index).
    pub async fn put(&self, id: u64, source: &str) {
        let response = self
            .client
            .put(format!(
                "{}/{}/_doc/{id}?refresh=true",
                self.url, self.index
            ))
            .header("content-type", "application/json")
            .body(source.to_owned())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    pub async fn delete(&self, id: u64) {
        let response = self
            .client
            .delete(format!(
                "{}/{}/_doc/{id}?refresh=true",
                self.url, self.index
            ))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    pub async fn count(&self) -> u64 {
        let _ = self
            .client
            .post(format!("{}/{}/_refresh", self.url, self.index))
            .send()
            .await;
        let response: serde_json::Value = self
            .client
            .get(format!("{}/{}/_count", self.url, self.index))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["count"].as_u64().unwrap()
    }
}
