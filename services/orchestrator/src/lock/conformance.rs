//! The behaviour every [`LockStore`] must have. Run against the embedded store in unit tests and
//! against a real Redis in `tests/lock_redis.rs`. Waits poll with deadlines, so the suite works
//! on real and on paused time.

use std::time::Duration;

use super::{FencingToken, LockStore};

/// Runs every check with service names under `namespace` (so runs never collide).
pub async fn run_all<S: LockStore>(store: &S, namespace: &str) {
    one_holder_at_a_time(store, &format!("{namespace}-exclusive")).await;
    tokens_increase_with_every_grant(store, &format!("{namespace}-tokens")).await;
    renew_extends_only_the_holders_lease(store, &format!("{namespace}-renew")).await;
    release_is_compare_and_delete(store, &format!("{namespace}-release")).await;
    expiry_hands_the_lock_on_with_a_higher_token(store, &format!("{namespace}-expiry")).await;
    a_lapsed_lease_cannot_be_renewed_back(store, &format!("{namespace}-lapsed")).await;
    services_are_independent(store, &format!("{namespace}-independent")).await;
    rejects_nonsense(store).await;
}

const TTL: Duration = Duration::from_secs(30);

async fn one_holder_at_a_time<S: LockStore>(store: &S, service: &str) {
    let lease = store
        .acquire(service, "a", TTL)
        .await
        .unwrap()
        .expect("free lock is granted");
    assert!(
        store.acquire(service, "b", TTL).await.unwrap().is_none(),
        "held lock is refused"
    );
    assert_eq!(store.holder(service).await.unwrap().as_deref(), Some("a"));
    assert!(store.release(&lease).await.unwrap());
    assert_eq!(store.holder(service).await.unwrap(), None);
}

async fn tokens_increase_with_every_grant<S: LockStore>(store: &S, service: &str) {
    let mut last = FencingToken(0);
    for round in 0..5 {
        let lease = store
            .acquire(service, &format!("owner-{round}"), TTL)
            .await
            .unwrap()
            .expect("granted");
        assert!(lease.token > last, "token {} after {}", lease.token, last);
        last = lease.token;
        // A refused attempt issues no token.
        assert!(
            store
                .acquire(service, "other", TTL)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.release(&lease).await.unwrap());
    }
}

async fn renew_extends_only_the_holders_lease<S: LockStore>(store: &S, service: &str) {
    let short = Duration::from_millis(400);
    let lease = store
        .acquire(service, "a", short)
        .await
        .unwrap()
        .expect("granted");
    let mut impostor = lease.clone();
    impostor.owner = "b".into();
    assert!(
        !store.renew(&impostor).await.unwrap(),
        "a non-holder cannot renew"
    );
    // Renew repeatedly past several TTLs: the lease must never lapse.
    for _ in 0..6 {
        tokio::time::sleep(short / 4).await;
        assert!(store.renew(&lease).await.unwrap(), "holder renews");
        assert_eq!(store.holder(service).await.unwrap().as_deref(), Some("a"));
    }
    assert!(store.release(&lease).await.unwrap());
}

async fn release_is_compare_and_delete<S: LockStore>(store: &S, service: &str) {
    let lease = store
        .acquire(service, "a", TTL)
        .await
        .unwrap()
        .expect("granted");
    let mut impostor = lease.clone();
    impostor.owner = "b".into();
    assert!(
        !store.release(&impostor).await.unwrap(),
        "a non-holder cannot release"
    );
    assert_eq!(store.holder(service).await.unwrap().as_deref(), Some("a"));
    assert!(store.release(&lease).await.unwrap());
    assert!(
        !store.release(&lease).await.unwrap(),
        "a second release finds nothing"
    );
}

async fn expiry_hands_the_lock_on_with_a_higher_token<S: LockStore>(store: &S, service: &str) {
    let stale = store
        .acquire(service, "crashed", Duration::from_millis(200))
        .await
        .unwrap()
        .expect("granted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        if let Some(lease) = store.acquire(service, "successor", TTL).await.unwrap() {
            break lease;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(fresh.token > stale.token, "successor's token is higher");
    assert!(
        !store.renew(&stale).await.unwrap(),
        "the stale holder learns it lost the lease"
    );
    assert!(
        !store.release(&stale).await.unwrap(),
        "the stale holder cannot release the successor's lease"
    );
    assert_eq!(
        store.holder(service).await.unwrap().as_deref(),
        Some("successor")
    );
    assert!(store.release(&fresh).await.unwrap());
}

/// Renewal only extends a live lease: once it lapsed, even with no successor, renewing fails
/// and the service is free.
async fn a_lapsed_lease_cannot_be_renewed_back<S: LockStore>(store: &S, service: &str) {
    let lease = store
        .acquire(service, "a", Duration::from_millis(150))
        .await
        .unwrap()
        .expect("granted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.holder(service).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "lease never lapsed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !store.renew(&lease).await.unwrap(),
        "a lapsed lease is not renewed back"
    );
    assert_eq!(store.holder(service).await.unwrap(), None);
    let next = store
        .acquire(service, "b", TTL)
        .await
        .unwrap()
        .expect("free again");
    assert!(next.token > lease.token);
    assert!(store.release(&next).await.unwrap());
}

async fn services_are_independent<S: LockStore>(store: &S, service: &str) {
    let first = store
        .acquire(&format!("{service}-1"), "a", TTL)
        .await
        .unwrap()
        .expect("granted");
    let second = store
        .acquire(&format!("{service}-2"), "a", TTL)
        .await
        .unwrap()
        .expect("granted");
    assert!(store.release(&first).await.unwrap());
    assert!(store.release(&second).await.unwrap());
}

async fn rejects_nonsense<S: LockStore>(store: &S) {
    assert!(store.acquire("", "a", TTL).await.is_err(), "empty service");
    assert!(
        store.acquire("svc\n", "a", TTL).await.is_err(),
        "control characters"
    );
    assert!(store.acquire("svc", "", TTL).await.is_err(), "empty owner");
    assert!(
        store.acquire("svc", "a", Duration::ZERO).await.is_err(),
        "zero ttl"
    );
}
