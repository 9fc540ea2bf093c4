//! The lock-store conformance suite against a real Redis (`bash scripts/backends.sh start redis`),
//! and failing closed when Redis is gone.

use std::time::Duration;

use selfheal_orchestrator::lock::{LockError, LockStore, RedisLockStore, conformance};

fn redis_url() -> String {
    std::env::var("SELFHEAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("selfheal-test:{}:{nanos}:", std::process::id())
}

#[tokio::test]
async fn redis_store_passes_the_lock_store_conformance_suite() {
    let store =
        RedisLockStore::connect(&redis_url(), &unique_prefix(), Duration::from_secs(2)).unwrap();
    if let Err(error) = store.holder("probe").await {
        panic!("{error}\nhint: start the test servers with `bash scripts/backends.sh start redis`");
    }
    conformance::run_all(&store, "redis").await;
}

#[tokio::test]
async fn unreachable_redis_fails_closed_naming_the_server() {
    // Nothing listens on port 1 of loopback.
    let store =
        RedisLockStore::connect("redis://127.0.0.1:1", "x:", Duration::from_millis(300)).unwrap();
    let error = store
        .acquire("payment-service", "saga-1", Duration::from_secs(5))
        .await
        .unwrap_err();
    let LockError::Unavailable { address, .. } = &error else {
        panic!("expected unavailable, got {error}")
    };
    assert_eq!(address, "redis://127.0.0.1:1");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
}
