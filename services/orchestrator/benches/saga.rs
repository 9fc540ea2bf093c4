//! Saga overhead and lock latency, printed as medians and p99.
//!
//! - saga overhead: ReportIncident → the saga's event stream ends RESOLVED, with fake peers
//!   (in-process tonic servers) answering at once, so what is left is the orchestrator's own work:
//!   lease, ~30 journal appends, transitions, and the gRPC hops;
//!   - embedded: embedded lock store + the audit service on its file store;
//!   - real backends: Redis lock + the audit service on Elasticsearch/OpenSearch;
//! - lock acquire + release against the real Redis.
//!
//! `cargo bench -p selfheal-orchestrator --bench saga` (Redis from `SELFHEAL_TEST_REDIS_URL`,
//! default redis://127.0.0.1:6379; Elasticsearch from `SELFHEAL_TEST_ELASTICSEARCH_URL`, default
//! http://127.0.0.1:9200; a backend that does not answer is skipped with a note).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use selfheal_orchestrator::lock::{LockStore, RedisLockStore};
use selfheal_orchestrator::{Config, LockBackend};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_service::testkit::{ServiceUnderTest, wait_serving};

const WARMUP: usize = 20;
const SAGAS: usize = 200;
const LOCK_ROUNDS: usize = 5_000;

fn print(name: &str, histogram: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<48} n={:<5} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        histogram.len(),
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
    );
}

/// Runs `SAGAS` sagas one after the other and records each one's duration in microseconds.
async fn saga_overhead(name: &str, config: Config) {
    let orchestrator = common::start_orchestrator(config).await;
    let mut client = OrchestratorClient::new(common::channel(&orchestrator.grpc_url()).await);
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for n in 0..WARMUP + SAGAS {
        let incident = common::incident(&format!("bench-{n}"), &format!("svc-{}", n % 8));
        let started = Instant::now();
        let reported = common::report(&mut client, incident).await;
        let mut events = client
            .watch_saga(pb::WatchSagaRequest {
                id: reported.saga_id.clone(),
            })
            .await
            .expect("watch")
            .into_inner();
        let mut last = None;
        while let Some(event) = events.next().await {
            last = event.expect("event").event;
        }
        let elapsed = started.elapsed();
        let state = last.map(|e| e.state()).unwrap_or_default();
        assert_eq!(
            state,
            pb::SagaState::Resolved,
            "saga {} ended {state:?}",
            reported.saga_id
        );
        if n >= WARMUP {
            histogram
                .record(elapsed.as_micros() as u64)
                .expect("in range");
        }
    }
    print(name, &histogram);
    orchestrator.stop().await.expect("stops");
}

async fn redis_reachable(url: &str) -> bool {
    let Ok(store) = RedisLockStore::connect(url, "selfheal-bench:", Duration::from_secs(1)) else {
        return false;
    };
    store.holder("probe").await.is_ok()
}

async fn elasticsearch_reachable(url: &str) -> bool {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn lock_latency(url: &str) {
    let prefix = common::unique_prefix();
    let store = RedisLockStore::connect(url, &prefix, Duration::from_secs(2)).expect("connect");
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for n in 0..LOCK_ROUNDS + 200 {
        let started = Instant::now();
        let lease = store
            .acquire("bench-service", "bench-owner", Duration::from_secs(10))
            .await
            .expect("acquire")
            .expect("free");
        assert!(store.release(&lease).await.expect("release"));
        if n >= 200 {
            histogram
                .record(started.elapsed().as_micros() as u64)
                .expect("in range");
        }
    }
    print("lock acquire+release (redis, loopback)", &histogram);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (_fakes, fakes_url) = common::Fakes::start(common::Behaviour::default()).await;
        let redis = common::redis_url();
        let elasticsearch = std::env::var("SELFHEAL_TEST_ELASTICSEARCH_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned());

        // Embedded: embedded lock, audit on its file store.
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = common::start_audit(dir.path()).await;
        let config = common::config(&fakes_url, &audit.grpc_url());
        saga_overhead("saga overhead, embedded lock + audit file store", config).await;
        audit.stop().await.expect("audit stops");

        if !redis_reachable(&redis).await {
            println!("redis at {redis} does not answer: real-backend figures skipped");
            return;
        }
        lock_latency(&redis).await;

        let with_redis = |audit_url: &str| {
            let mut config = common::config(&fakes_url, audit_url);
            config.lock.backend = LockBackend::Redis;
            config.lock.redis_url = redis.clone();
            config.lock.key_prefix = common::unique_prefix();
            config
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = common::start_audit(dir.path()).await;
        saga_overhead(
            "saga overhead, redis lock + audit file store",
            with_redis(&audit.grpc_url()),
        )
        .await;
        audit.stop().await.expect("audit stops");

        if !elasticsearch_reachable(&elasticsearch).await {
            println!("elasticsearch at {elasticsearch} does not answer: its figure is skipped");
            return;
        }
        let spool = tempfile::tempdir().expect("tempdir");
        let mut audit_config = selfheal_audit::Config::with_file_store(spool.path());
        audit_config.store = selfheal_audit::StoreKind::Elasticsearch;
        audit_config.elasticsearch.url = elasticsearch.clone();
        audit_config.elasticsearch.index = format!(
            "selfheal-bench-{}",
            common::unique_prefix()
                .replace([':', '-'], "")
                .to_lowercase()
        );
        audit_config.elasticsearch.spool_dir = spool.path().to_path_buf();
        let audit = ServiceUnderTest::start(|l, s| selfheal_audit::run(audit_config, l, s)).await;
        wait_serving(audit.grpc_addr, selfheal_proto::service_names::AUDIT).await;
        saga_overhead(
            "saga overhead, redis lock + audit on elasticsearch",
            with_redis(&audit.grpc_url()),
        )
        .await;
        audit.stop().await.expect("audit stops");
    });
}
