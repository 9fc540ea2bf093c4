//! One conformance suite, run against every store: the JSON-lines file, Elasticsearch, and
//! Elasticsearch behind the spool. The Elasticsearch runs use the real test server (see
//! `common::require_elasticsearch`), each on its own index.

mod common;

use std::sync::Arc;

use selfheal_audit::chain::checkpoint::CheckpointSigner;
use selfheal_audit::chain::verify::Verifier;
use selfheal_audit::chain::{ChainHead, Record, RecordTime};
use selfheal_audit::store::{
    AuditStore, Durability, ElasticsearchStore, FileStore, RecordFilter, SpoolingStore, StoreError,
};

/// A store under test and what to clean up after it.
struct Fixture {
    store: Arc<dyn AuditStore>,
    index: Option<ElasticsearchStore>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).await.unwrap();
        Self {
            store: Arc::new(store),
            index: None,
            _dir: dir,
        }
    }

    async fn elasticsearch() -> Self {
        let store = common::elasticsearch_store("conformance").await;
        Self {
            store: Arc::new(store.clone()),
            index: Some(store),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn spooling() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let primary = common::elasticsearch_store("conformance-spool").await;
        let store = SpoolingStore::open(primary.clone(), dir.path())
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            index: Some(primary),
            _dir: dir,
        }
    }

    async fn cleanup(self) {
        if let Some(index) = &self.index {
            common::delete_index(index).await;
        }
    }
}

fn seal(head: &mut ChainHead, from: u64, count: u64) -> Vec<Record> {
    (from..from + count)
        .map(|n| {
            let saga = if n % 2 == 0 { "saga-even" } else { "saga-odd" };
            let incident = if n % 3 == 0 { "inc-three" } else { "inc-other" };
            let mut new = common::step(saga, incident, n);
            new.idempotency_key = Some(format!("key-{n}"));
            head.seal(new, RecordTime::now()).unwrap()
        })
        .collect()
}

async fn append_all(store: &dyn AuditStore, count: u64) -> Vec<Record> {
    let mut head = ChainHead::genesis();
    let mut all = Vec::new();
    let mut next = 1;
    // Uneven batches, to cross batch boundaries.
    for size in [1, 7, count.saturating_sub(8)] {
        if size == 0 {
            continue;
        }
        let batch = seal(&mut head, next, size);
        next += size;
        assert_eq!(store.append(&batch).await.unwrap(), Durability::Stored);
        all.extend(batch);
    }
    all
}

mod suite {
    use super::*;

    pub(crate) async fn an_empty_store_has_no_head_and_no_records(store: &dyn AuditStore) {
        assert_eq!(store.head().await.unwrap(), None);
        assert!(store.read_range(1, 10).await.unwrap().is_empty());
        let mut slots = store.scan().await.unwrap();
        while let Some(chunk) = slots.recv().await {
            assert!(chunk.unwrap().is_empty());
        }
    }

    pub(crate) async fn reads_back_appended_batches_in_sequence_order(store: &dyn AuditStore) {
        let all = append_all(store, 40).await;
        assert_eq!(store.read_range(1, 100).await.unwrap(), all);
        assert_eq!(store.read_range(10, 5).await.unwrap(), all[9..14].to_vec());
        assert_eq!(store.read_range(0, 3).await.unwrap(), all[..3].to_vec());
        assert!(store.read_range(41, 10).await.unwrap().is_empty());
        assert_eq!(store.head().await.unwrap().as_ref(), all.last());
    }

    pub(crate) async fn filters_by_saga_and_incident_in_order(store: &dyn AuditStore) {
        let all = append_all(store, 30).await;
        let saga = RecordFilter::Saga("saga-even".into());
        let expected: Vec<Record> = all
            .iter()
            .filter(|r| r.saga_id == "saga-even")
            .cloned()
            .collect();
        assert_eq!(store.read_filtered(&saga, 0, 100).await.unwrap(), expected);
        let from_ten: Vec<Record> = expected
            .iter()
            .filter(|r| r.sequence >= 10)
            .take(3)
            .cloned()
            .collect();
        assert_eq!(store.read_filtered(&saga, 10, 3).await.unwrap(), from_ten);
        let incident = RecordFilter::Incident("inc-three".into());
        let threes: Vec<u64> = store
            .read_filtered(&incident, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.sequence)
            .collect();
        assert_eq!(threes, (3..=30).step_by(3).collect::<Vec<u64>>());
        let none = RecordFilter::Saga("no-such-saga".into());
        assert!(store.read_filtered(&none, 0, 10).await.unwrap().is_empty());
    }

    pub(crate) async fn finds_records_by_idempotency_key(store: &dyn AuditStore) {
        let all = append_all(store, 12).await;
        let found = store
            .find_by_idempotency_keys(&["key-3".into(), "key-11".into(), "key-99".into()])
            .await
            .unwrap();
        let mut sequences: Vec<u64> = found.iter().map(|r| r.sequence).collect();
        sequences.sort_unstable();
        assert_eq!(sequences, vec![3, 11]);
        assert!(found.contains(&all[2]));
    }

    pub(crate) async fn re_appending_the_same_records_changes_nothing(store: &dyn AuditStore) {
        let all = append_all(store, 10).await;
        store.append(&all[5..]).await.unwrap();
        assert_eq!(store.read_range(1, 100).await.unwrap(), all);
    }

    pub(crate) async fn a_different_record_at_a_stored_sequence_is_a_conflict(
        store: &dyn AuditStore,
    ) {
        let all = append_all(store, 10).await;
        let mut forged = all[4].clone();
        forged.actor = "someone else".into();
        forged.hash = forged.compute_hash().unwrap();
        let error = store.append(&[forged]).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Conflict { sequence: 5, .. }),
            "{error}"
        );
        assert_eq!(store.read_range(5, 1).await.unwrap(), vec![all[4].clone()]);
    }

    pub(crate) async fn scan_yields_every_record_canonically_so_the_chain_verifies(
        store: &dyn AuditStore,
    ) {
        let all = append_all(store, 2500).await;
        let signer = CheckpointSigner::generate().unwrap();
        let mut verifier =
            Verifier::new(signer.verifying_key(), 10_000).must_contain(ChainHead::of(&all[2499]));
        let mut slots = store.scan().await.unwrap();
        let mut positions = Vec::new();
        while let Some(chunk) = slots.recv().await {
            for slot in chunk.unwrap() {
                positions.push(slot.position);
                verifier.push(&slot);
            }
        }
        assert_eq!(positions, (1..=2500).collect::<Vec<u64>>());
        let report = verifier.finish();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.records_checked, 2500);
    }
}

macro_rules! conformance {
    ($store:ident, $($case:ident),+ $(,)?) => {
        mod $store {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let fixture = Fixture::$store().await;
                    suite::$case(fixture.store.as_ref()).await;
                    fixture.cleanup().await;
                }
            )+
        }
    };
}

macro_rules! conformance_all {
    ($($store:ident),+) => {
        $(
            conformance!(
                $store,
                an_empty_store_has_no_head_and_no_records,
                reads_back_appended_batches_in_sequence_order,
                filters_by_saga_and_incident_in_order,
                finds_records_by_idempotency_key,
                re_appending_the_same_records_changes_nothing,
                a_different_record_at_a_stored_sequence_is_a_conflict,
                scan_yields_every_record_canonically_so_the_chain_verifies,
            );
        )+
    };
}

conformance_all!(file, elasticsearch, spooling);

mod file_recovery {
    use std::io::Write;

    use super::*;
    use selfheal_audit::store::file::RECORDS_FILE;

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let all = {
            let store = FileStore::open(dir.path()).await.unwrap();
            append_all(&store, 10).await
        };
        let path = dir.path().join(RECORDS_FILE);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"sequence":11,"time":"20"#).unwrap();
        drop(file);
        let store = FileStore::open(dir.path()).await.unwrap();
        assert_eq!(store.head().await.unwrap().as_ref(), all.last());
        let mut head = ChainHead::of(&all[9]);
        store.append(&seal(&mut head, 11, 2)).await.unwrap();
        assert_eq!(store.read_range(1, 100).await.unwrap().len(), 12);
    }

    #[tokio::test]
    async fn a_last_line_missing_only_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let all = {
            let store = FileStore::open(dir.path()).await.unwrap();
            append_all(&store, 10).await
        };
        let path = dir.path().join(RECORDS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end_matches('\n')).unwrap();
        let store = FileStore::open(dir.path()).await.unwrap();
        assert_eq!(store.read_range(1, 100).await.unwrap(), all);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }
}

mod elasticsearch_visibility {
    use std::time::Duration;

    use super::*;
    use selfheal_audit::store::ElasticsearchConfig;

    /// A restarted audit service reads the head with a new store. With the index's periodic
    /// refresh off, records the earlier store wrote are invisible to search until someone
    /// refreshes; the new store must, or it would continue the chain from a stale head.
    #[tokio::test]
    async fn a_new_store_sees_the_head_an_earlier_store_just_wrote() {
        let first = common::elasticsearch_store("visibility").await;
        let mut head = ChainHead::genesis();
        first.append(&seal(&mut head, 1, 3)).await.unwrap();
        first.refresh().await.unwrap();
        let settings = reqwest::Client::new()
            .put(format!("{}/{}/_settings", first.url(), first.index()))
            .json(&serde_json::json!({ "index": { "refresh_interval": "-1" } }))
            .send()
            .await
            .unwrap();
        assert!(settings.status().is_success(), "{settings:?}");
        let later = seal(&mut head, 4, 5);
        first.append(&later).await.unwrap();

        let second = ElasticsearchStore::new(&ElasticsearchConfig {
            url: first.url().to_owned(),
            index: first.index().to_owned(),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        assert_eq!(second.head().await.unwrap().as_ref(), later.last());
        assert_eq!(second.read_range(1, 100).await.unwrap().len(), 8);
        common::delete_index(&first).await;
    }
}
