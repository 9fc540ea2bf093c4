//! Audit chain throughput: appends per second to the file store and to Elasticsearch (bulk),
//! and verification records per second. Prints the median of several runs.
//!
//! `cargo bench -p selfheal-audit --bench chain` (Elasticsearch from
//! `SELFHEAL_TEST_ELASTICSEARCH_URL`, default http://127.0.0.1:9200; skipped when unreachable).

use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_audit::chain::checkpoint::CheckpointSigner;
use selfheal_audit::chain::{ChainHead, NewRecord, RecordKind, RecordTime};
use selfheal_audit::log::{AuditLog, LogSettings};
use selfheal_audit::store::{
    AuditStore, ElasticsearchConfig, ElasticsearchStore, FileStore, SpoolingStore,
};

const BATCH: usize = 1000;

fn record(n: usize) -> NewRecord {
    NewRecord {
        saga_id: format!("saga-{}", n % 97),
        incident_id: format!("inc-{}", n % 13),
        step: "canary_deploy".into(),
        actor: "orchestrator".into(),
        fencing_token: 42,
        payload: serde_json::json!({
            "attempt": 1,
            "duration_ms": 12.5,
            "inputs_digest": "4f1c0e9a7d2b",
            "outcome": "ok",
            "n": n,
        }),
        ..NewRecord::new(RecordKind::StepFinished)
    }
}

async fn append(log: &AuditLog, records: usize) -> Duration {
    let started = Instant::now();
    let mut n = 0;
    while n < records {
        let batch: Vec<NewRecord> = (n..n + BATCH).map(record).collect();
        n += BATCH;
        log.append(batch).await.expect("append");
    }
    started.elapsed()
}

/// `clients` appenders at once, each sending batches of `BATCH`; the writer groups what waits.
async fn append_concurrently(log: &AuditLog, records: usize, clients: usize) -> Duration {
    let started = Instant::now();
    let per_client = records / clients;
    let mut tasks = Vec::new();
    for client in 0..clients {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let base = client * per_client;
            let mut n = 0;
            while n < per_client {
                let batch: Vec<NewRecord> = (base + n..base + n + BATCH).map(record).collect();
                n += BATCH;
                log.append(batch).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender");
    }
    started.elapsed()
}

async fn start(store: Arc<dyn AuditStore>) -> AuditLog {
    let (log, _writer) = AuditLog::start(
        store,
        CheckpointSigner::generate().expect("key"),
        LogSettings::default(),
    )
    .await
    .expect("log starts");
    log
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(name: &str, rates: Vec<f64>) {
    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "{name:<40} median {:>10.0} records/s   runs: {}",
        median(rates),
        shown.join(", ")
    );
}

/// CPU only: sealing (canonical encoding + SHA-256) and encoding for storage, no I/O.
fn seal_only(runs: usize, records: usize) {
    let mut seals = Vec::new();
    let mut encodes = Vec::new();
    for _ in 0..runs {
        let news: Vec<NewRecord> = (0..records).map(record).collect();
        let started = Instant::now();
        let mut head = ChainHead::genesis();
        let time = RecordTime::now();
        let sealed: Vec<_> = news
            .into_iter()
            .map(|new| head.seal(new, time).expect("seal"))
            .collect();
        seals.push(records as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let bytes: usize = sealed
            .iter()
            .map(|r| r.to_canonical_json().expect("encode").len())
            .sum();
        encodes.push(records as f64 / started.elapsed().as_secs_f64());
        assert!(bytes > 0);
    }
    report("seal (hash) only, no I/O", seals);
    report("encode for storage only, no I/O", encodes);
}

async fn file_store(runs: usize, records: usize) {
    let mut appends = Vec::new();
    let mut verifies = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).await.expect("store");
        let log = start(Arc::new(store)).await;
        let took = append(&log, records).await;
        appends.push(records as f64 / took.as_secs_f64());
        let started = Instant::now();
        let verified = log.verify().await.expect("verify");
        assert!(verified.is_ok());
        verifies.push(verified.records_checked as f64 / started.elapsed().as_secs_f64());
    }
    report(
        &format!("file store append ({records} in batches of {BATCH})"),
        appends,
    );
    report("file store verify", verifies);
    let mut concurrent = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).await.expect("store");
        let log = start(Arc::new(store)).await;
        let took = append_concurrently(&log, records, 4).await;
        concurrent.push(records as f64 / took.as_secs_f64());
        assert!(log.verify().await.expect("verify").is_ok());
    }
    report("file store append, 4 concurrent clients", concurrent);
    let mut store_only = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).await.expect("store");
        let mut head = ChainHead::genesis();
        let time = RecordTime::now();
        let batches: Vec<Vec<_>> = (0..records / BATCH)
            .map(|b| {
                (b * BATCH..(b + 1) * BATCH)
                    .map(|n| head.seal(record(n), time).expect("seal"))
                    .collect()
            })
            .collect();
        let started = Instant::now();
        for batch in &batches {
            store.append(batch).await.expect("append");
        }
        store_only.push(records as f64 / started.elapsed().as_secs_f64());
    }
    report("file store only, pre-sealed batches", store_only);
}

async fn elasticsearch(runs: usize, records: usize) {
    let url = std::env::var("SELFHEAL_TEST_ELASTICSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".into());
    if reqwest::get(&url).await.is_err() {
        println!("elasticsearch at {url} unreachable: skipped");
        return;
    }
    let mut appends = Vec::new();
    let mut verifies = Vec::new();
    for run in 0..runs {
        let primary = ElasticsearchStore::new(&ElasticsearchConfig {
            url: url.clone(),
            index: format!("selfheal-audit-bench-{}-{run}", std::process::id()),
            timeout: Duration::from_secs(30),
        })
        .expect("client");
        let spool = tempfile::tempdir().expect("tempdir");
        let store = SpoolingStore::open(primary.clone(), spool.path())
            .await
            .expect("store");
        primary.ensure_index().await.expect("index");
        let log = start(Arc::new(store)).await;
        let took = append(&log, records).await;
        assert_eq!(log.spooled(), 0, "nothing spooled during the bench");
        appends.push(records as f64 / took.as_secs_f64());
        let started = Instant::now();
        let verified = log.verify().await.expect("verify");
        assert!(verified.is_ok(), "{verified:?}");
        verifies.push(verified.records_checked as f64 / started.elapsed().as_secs_f64());
        let _ = reqwest::Client::new()
            .delete(format!("{url}/{}", primary.index()))
            .send()
            .await;
    }
    report(
        &format!("elasticsearch append ({records} in _bulk of {BATCH})"),
        appends,
    );
    report("elasticsearch verify", verifies);
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    seal_only(5, 200_000);
    runtime.block_on(async {
        file_store(5, 200_000).await;
        elasticsearch(3, 50_000).await;
    });
}
