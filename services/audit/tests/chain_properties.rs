//! Properties of the chain on the file store: whatever is appended verifies, and any change of
//! any single stored byte fails verification at the record holding that byte.

use std::sync::Arc;

use proptest::prelude::*;
use selfheal_audit::chain::checkpoint::CheckpointSigner;
use selfheal_audit::chain::{NewRecord, RecordKind};
use selfheal_audit::log::{AuditLog, LogSettings};
use selfheal_audit::store::FileStore;
use selfheal_audit::store::file::RECORDS_FILE;

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::StepStarted),
        Just(RecordKind::StepFinished),
        Just(RecordKind::StepFailed),
        Just(RecordKind::Compensation),
        Just(RecordKind::SagaState),
        Just(RecordKind::Note),
    ]
}

fn payload() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        (-1e12f64..1e12).prop_map(|n| serde_json::json!(n)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-zA-Z_]{1,8}", value, 0..4)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    (
        kind(),
        "[a-z0-9-]{0,10}",
        "[a-z0-9-]{0,10}",
        "\\PC{0,8}",
        any::<u64>(),
        payload(),
        prop::option::of("[a-z0-9/]{1,8}"),
    )
        .prop_map(
            |(kind, saga, incident, step, token, payload, key)| NewRecord {
                saga_id: saga,
                incident_id: incident,
                step,
                actor: "prop".into(),
                fencing_token: token,
                payload,
                idempotency_key: key,
                ..NewRecord::new(kind)
            },
        )
}

fn batches() -> impl Strategy<Value = Vec<Vec<NewRecord>>> {
    prop::collection::vec(prop::collection::vec(new_record(), 1..6), 1..6)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn append_all(
    dir: &std::path::Path,
    interval: u64,
    batches: Vec<Vec<NewRecord>>,
) -> AuditLog {
    let store = FileStore::open(dir).await.unwrap();
    let (log, _writer) = AuditLog::start(
        Arc::new(store),
        CheckpointSigner::generate().unwrap(),
        LogSettings {
            checkpoint_interval: interval,
        },
    )
    .await
    .unwrap();
    for batch in batches {
        log.append(batch).await.unwrap();
    }
    log
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_appends_verifies(batches in batches(), interval in 1u64..6) {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let log = append_all(dir.path(), interval, batches).await;
            let report = log.verify().await.unwrap();
            prop_assert!(report.is_ok(), "{:?}", report);
            prop_assert_eq!(report.head, log.head());
            prop_assert!(report.unsigned_tail < interval);
            Ok(())
        })?;
    }

    #[test]
    fn any_single_byte_change_fails_verification_at_that_record(
        batches in batches(),
        interval in 1u64..6,
        at in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let log = append_all(dir.path(), interval, batches).await;
            let path = dir.path().join(RECORDS_FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            let index = at.index(bytes.len());
            prop_assume!(bytes[index] != replacement);
            let record = bytes[..index].iter().filter(|b| **b == b'\n').count() as u64 + 1;
            bytes[index] = replacement;
            std::fs::write(&path, &bytes).unwrap();
            let report = log.verify().await.unwrap();
            let broken = report.broken.clone();
            prop_assert!(broken.is_some(), "byte {} of record {} changed yet verified", index, record);
            let broken = broken.unwrap();
            prop_assert_eq!(broken.sequence, record, "{:?}", broken);
            Ok(())
        })?;
    }
}
