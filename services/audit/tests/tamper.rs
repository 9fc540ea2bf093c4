//! Tampering with a stored chain, directly in its store, and what Verify reports: a changed
//! record, a changed record with its hash recomputed, a deleted record, two swapped records,
//! and a consistent rewrite of the whole chain under another key.

mod common;

use std::sync::Arc;

use selfheal_audit::chain::checkpoint::CheckpointSigner;
use selfheal_audit::chain::verify::{BreakReason, VerifyReport};
use selfheal_audit::chain::{ChainHead, NewRecord, Record, RecordKind};
use selfheal_audit::log::{AuditLog, LogSettings};
use selfheal_audit::store::file::RECORDS_FILE;
use selfheal_audit::store::{AuditStore, ElasticsearchStore, FileStore};

/// 25 steps with a checkpoint after every 10: records 1–10, checkpoint 11, 12–21,
/// checkpoint 22, 23–27.
const STEPS: u64 = 25;
const INTERVAL: u64 = 10;

async fn write_chain(store: Arc<dyn AuditStore>) -> (AuditLog, Vec<Record>) {
    let signer = CheckpointSigner::generate().unwrap();
    let (log, _writer) = AuditLog::start(
        store.clone(),
        signer,
        LogSettings {
            checkpoint_interval: INTERVAL,
        },
    )
    .await
    .unwrap();
    for n in 1..=STEPS {
        log.append(vec![common::step("saga-t", "inc-t", n)])
            .await
            .unwrap();
    }
    let all = store.read_range(1, 100).await.unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!(all[10].kind, RecordKind::Checkpoint);
    let report = log.verify().await.unwrap();
    assert!(report.is_ok(), "untouched chain verifies: {report:?}");
    (log, all)
}

fn broken_at(report: &VerifyReport) -> (u64, BreakReason) {
    let broken = report
        .broken
        .as_ref()
        .unwrap_or_else(|| panic!("verification should fail: {report:?}"));
    (broken.sequence, broken.reason)
}

fn altered(record: &Record, recompute_hash: bool) -> Record {
    let mut record = record.clone();
    record.payload["n"] = serde_json::json!(999);
    if recompute_hash {
        record.hash = record.compute_hash().unwrap();
    }
    record
}

/// A well-formed record chained onto `last`, as someone with write access could add it.
fn appended_after(last: &Record) -> Record {
    let mut head = ChainHead::of(last);
    head.seal(common::step("saga-t", "inc-t", 1000), last.time)
        .unwrap()
}

/// The same chain content re-sealed and re-signed with another key.
fn forged(all: &[Record]) -> Vec<Record> {
    let forger = CheckpointSigner::generate().unwrap();
    let mut head = ChainHead::genesis();
    all.iter()
        .map(|record| {
            let new = if record.kind == RecordKind::Checkpoint {
                forger.checkpoint(&head, INTERVAL)
            } else {
                NewRecord {
                    kind: record.kind,
                    saga_id: record.saga_id.clone(),
                    incident_id: record.incident_id.clone(),
                    step: record.step.clone(),
                    actor: record.actor.clone(),
                    fencing_token: record.fencing_token,
                    payload: record.payload.clone(),
                    decision: record.decision.clone(),
                    idempotency_key: record.idempotency_key.clone(),
                }
            };
            head.seal(new, record.time).unwrap()
        })
        .collect()
}

mod elasticsearch {
    use super::*;
    use common::RawIndex;

    async fn chain() -> (ElasticsearchStore, AuditLog, Vec<Record>, RawIndex) {
        let store = common::elasticsearch_store("tamper").await;
        let (log, all) = write_chain(Arc::new(store.clone())).await;
        let raw = RawIndex::of(&store);
        (store, log, all, raw)
    }

    #[tokio::test]
    async fn a_changed_document_is_a_hash_mismatch_at_that_record() {
        let (store, log, all, raw) = chain().await;
        raw.put(5, &altered(&all[4], false).to_canonical_json().unwrap())
            .await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (5, BreakReason::HashMismatch));
        assert_eq!(report.records_checked, 4);
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_changed_document_with_a_recomputed_hash_breaks_the_next_link() {
        let (store, log, all, raw) = chain().await;
        raw.put(5, &altered(&all[4], true).to_canonical_json().unwrap())
            .await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (6, BreakReason::PrevHashMismatch));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_document_reformatted_without_changing_values_is_caught() {
        let (store, log, _all, raw) = chain().await;
        // The same values with keys in another order: not the canonical bytes that were hashed.
        let reformatted = raw.get(8).await.replacen('{', "{\"sequence\":8,", 1);
        let reformatted = reformatted.replacen(",\"sequence\":8", "", 1);
        raw.put(8, &reformatted).await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (8, BreakReason::HashMismatch));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_deleted_document_is_a_gap() {
        let (store, log, _all, raw) = chain().await;
        raw.delete(5).await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (5, BreakReason::Gap));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_deleted_last_document_is_a_gap_at_the_tail() {
        let (store, log, _all, raw) = chain().await;
        raw.delete(27).await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (27, BreakReason::Gap));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_well_formed_document_added_after_the_head_is_caught() {
        let (store, log, all, raw) = chain().await;
        let extra = appended_after(&all[26]);
        raw.put(28, &extra.to_canonical_json().unwrap()).await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (28, BreakReason::HashMismatch));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn two_swapped_documents_are_a_reorder() {
        let (store, log, all, raw) = chain().await;
        raw.put(5, &all[5].to_canonical_json().unwrap()).await;
        raw.put(6, &all[4].to_canonical_json().unwrap()).await;
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (5, BreakReason::Reorder));
        common::delete_index(&store).await;
    }

    #[tokio::test]
    async fn a_consistent_rewrite_under_another_key_fails_the_first_checkpoint() {
        let (store, log, all, raw) = chain().await;
        for record in forged(&all) {
            raw.put(record.sequence, &record.to_canonical_json().unwrap())
                .await;
        }
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (11, BreakReason::BadSignature));
        assert_eq!(
            report.records_checked, 10,
            "the forged links themselves hold"
        );
        common::delete_index(&store).await;
    }
}

mod file {
    use super::*;

    async fn chain() -> (tempfile::TempDir, AuditLog, Vec<Record>) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).await.unwrap();
        let (log, all) = write_chain(Arc::new(store)).await;
        (dir, log, all)
    }

    fn rewrite(dir: &tempfile::TempDir, lines: Vec<String>) {
        let text: String = lines.into_iter().map(|line| line + "\n").collect();
        std::fs::write(dir.path().join(RECORDS_FILE), text).unwrap();
    }

    fn lines(all: &[Record]) -> Vec<String> {
        all.iter().map(|r| r.to_canonical_json().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_changed_line_is_a_hash_mismatch_at_that_record() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content[4] = altered(&all[4], false).to_canonical_json().unwrap();
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (5, BreakReason::HashMismatch)
        );
    }

    #[tokio::test]
    async fn a_changed_line_with_a_recomputed_hash_breaks_the_next_link() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content[4] = altered(&all[4], true).to_canonical_json().unwrap();
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (6, BreakReason::PrevHashMismatch)
        );
    }

    #[tokio::test]
    async fn a_deleted_line_is_a_gap() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content.remove(4);
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (5, BreakReason::Gap)
        );
    }

    #[tokio::test]
    async fn a_truncated_tail_is_a_gap() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content.truncate(20);
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (21, BreakReason::Gap)
        );
    }

    #[tokio::test]
    async fn a_well_formed_line_added_after_the_head_is_caught() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content.push(appended_after(&all[26]).to_canonical_json().unwrap());
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (28, BreakReason::HashMismatch)
        );
    }

    #[tokio::test]
    async fn two_swapped_lines_are_a_reorder() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content.swap(4, 5);
        rewrite(&dir, content);
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (5, BreakReason::Reorder)
        );
    }

    #[tokio::test]
    async fn a_duplicated_line_is_a_reorder() {
        let (dir, log, all) = chain().await;
        let mut content = lines(&all);
        content.insert(5, content[4].clone());
        rewrite(&dir, content);
        let report = log.verify().await.unwrap();
        assert_eq!(broken_at(&report), (6, BreakReason::Reorder));
    }

    #[tokio::test]
    async fn a_consistent_rewrite_under_another_key_fails_the_first_checkpoint() {
        let (dir, log, all) = chain().await;
        rewrite(&dir, lines(&forged(&all)));
        assert_eq!(
            broken_at(&log.verify().await.unwrap()),
            (11, BreakReason::BadSignature)
        );
    }
}
