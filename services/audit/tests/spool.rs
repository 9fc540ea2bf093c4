//! Elasticsearch stopped and restarted while records keep coming: they spool durably, replay in
//! order when it returns, and none is lost or duplicated. Stops and restarts the real test
//! server with `scripts/backends.sh` (and always leaves it running).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_audit::chain::checkpoint::CheckpointSigner;
use selfheal_audit::log::{AuditLog, LogSettings};
use selfheal_audit::store::{AuditStore, Durability, SpoolingStore};
use tokio_util::sync::CancellationToken;

fn backends_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/backends.sh")
}

fn opensearch(action: &str) {
    let status = Command::new("bash")
        .arg(backends_script())
        .args([action, "opensearch"])
        .status()
        .expect("backends.sh runs");
    assert!(status.success(), "backends.sh {action} opensearch failed");
}

/// Starts OpenSearch again if the test ends (or panics) while it is stopped.
struct KeepRunning {
    stopped: bool,
}

impl Drop for KeepRunning {
    fn drop(&mut self) {
        if self.stopped {
            opensearch("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spool_while_elasticsearch_is_down_and_replay_in_order_without_loss() {
    let primary = common::elasticsearch_store("spool").await;
    let spool_dir = tempfile::tempdir().unwrap();
    let store = SpoolingStore::open(primary.clone(), spool_dir.path())
        .await
        .unwrap();
    let replay_stop = CancellationToken::new();
    let replay = store.start_replay(replay_stop.clone());
    let (log, writer) = AuditLog::start(
        Arc::new(store.clone()),
        CheckpointSigner::generate().unwrap(),
        LogSettings {
            checkpoint_interval: 50,
        },
    )
    .await
    .unwrap();

    let mut n = 0u64;
    let mut batch = |log: AuditLog| {
        let records: Vec<_> = (0..10)
            .map(|_| {
                n += 1;
                common::step("saga-spool", "inc-spool", n)
            })
            .collect();
        async move { log.append(records).await.unwrap() }
    };
    for _ in 0..10 {
        assert_eq!(batch(log.clone()).await.durability, Durability::Stored);
    }

    let mut guard = KeepRunning { stopped: true };
    tokio::task::spawn_blocking(|| opensearch("stop"))
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(batch(log.clone()).await.durability, Durability::Spooled);
    }
    assert!(store.spooled() >= 100, "spooled {}", store.spooled());
    let during = log.verify().await;
    assert!(
        during.is_err(),
        "verification says the store is away: {during:?}"
    );
    let query = store.read_range(1, 10).await;
    assert!(query.is_err_and(|e| e.to_string().contains("unreachable")));

    // Restart mid-stream: keep appending while the server comes back.
    let starting = tokio::task::spawn_blocking(|| opensearch("start"));
    let mut spooled_batches = 0;
    while !starting.is_finished() {
        let appended = batch(log.clone()).await;
        if appended.durability == Durability::Spooled {
            spooled_batches += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    starting.await.unwrap();
    guard.stopped = false;
    assert!(spooled_batches > 0);
    for _ in 0..5 {
        batch(log.clone()).await;
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    while store.spooled() > 0 {
        assert!(
            Instant::now() < deadline,
            "spool drains: {} left",
            store.spooled()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log.shutdown().await;
    writer.await.unwrap();
    replay_stop.cancel();
    replay.await.unwrap();

    let head = log.head();
    let raw = common::RawIndex::of(&primary);
    assert_eq!(
        raw.count().await,
        head.sequence,
        "every record once, none lost"
    );
    let stored = primary.read_range(1, 100_000).await.unwrap();
    let sequences: Vec<u64> = stored.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (1..=head.sequence).collect::<Vec<u64>>());
    let steps: Vec<u64> = stored
        .iter()
        .filter_map(|r| r.payload.get("n").and_then(serde_json::Value::as_u64))
        .collect();
    assert_eq!(
        steps,
        (1..=n).collect::<Vec<u64>>(),
        "steps in append order"
    );
    let report = log.verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.spooled, 0);
    common::delete_index(&primary).await;
}
