//! Kleppmann's fencing across the real pieces: leases from the orchestrator's Redis lock store,
//! tokens checked by the real deployer. A holder whose lease expired cannot act any more, even if
//! it does not know yet that it lost the lease.

use std::time::{Duration, Instant};

use selfheal_orchestrator::lock::{LockStore, RedisLockStore};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_service::testkit::ServiceUnderTest;

const SERVICE: &str = "payment-service";

fn redis_url() -> String {
    std::env::var("SELFHEAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn deploy(
    client: &mut DeployerClient<tonic::transport::Channel>,
    repo: &std::path::Path,
    commit: &str,
    token: u64,
    key: &str,
) -> Result<pb::RolloutEvent, tonic::Status> {
    let mut stream = client
        .deploy(pb::DeployRequest {
            service: SERVICE.into(),
            source: Some(pb::SourceRef {
                repository: repo.display().to_string(),
                commit: commit.to_owned(),
            }),
            strategy: pb::RolloutStrategy::Direct.into(),
            fencing_token: token,
            idempotency_key: key.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(response) = stream.message().await? {
        last = response.event;
    }
    Ok(last.expect("the deployer sends rollout events"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_expired_is_refused_by_the_deployer() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = selfheal_scenario::build(
        &selfheal_scenario::examples_dir().join(SERVICE),
        &dir.path().join("repo"),
    )
    .unwrap();
    let mut config = selfheal_deployer::Config {
        data_dir: dir.path().join("deployer"),
        ..Default::default()
    };
    config.build.target_dir = Some(selfheal_scenario::example_target_dir());
    config.processes.health_timeout = Duration::from_secs(30);
    config.processes.drain_timeout = Duration::from_millis(200);
    let deployer = ServiceUnderTest::start(|listeners, shutdown| {
        selfheal_deployer::run(config, listeners, shutdown)
    })
    .await;
    selfheal_service::testkit::wait_serving(
        deployer.grpc_addr,
        selfheal_proto::service_names::DEPLOYER,
    )
    .await;
    let mut client = DeployerClient::connect(deployer.grpc_url()).await.unwrap();

    // A unique prefix keeps this test's keys apart from every other user of the shared server.
    let prefix = format!(
        "selfheal-test-{}-{}:",
        std::process::id(),
        fastrand::u64(..)
    );
    let locks = RedisLockStore::connect(&redis_url(), &prefix, Duration::from_secs(2)).unwrap();
    let ttl = Duration::from_millis(300);

    let first = locks
        .acquire(SERVICE, "saga-a", ttl)
        .await
        .expect("hint: start the test servers with `bash scripts/backends.sh start redis`")
        .expect("nobody holds the lease yet");
    let event = deploy(
        &mut client,
        &scenario.repo,
        &scenario.good_commit,
        first.token.0,
        "a-1",
    )
    .await
    .unwrap();
    assert_eq!(
        event.kind,
        pb::RolloutEventKind::Promoted as i32,
        "{event:?}"
    );

    // Saga A stalls (a GC pause, a partition) and its lease runs out in Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    while locks.holder(SERVICE).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = locks
        .acquire(SERVICE, "saga-b", Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the expired lease is free again");
    assert!(second.token > first.token, "{second:?} after {first:?}");
    let event = deploy(
        &mut client,
        &scenario.repo,
        &scenario.bad_commit,
        second.token.0,
        "b-1",
    )
    .await
    .unwrap();
    assert_eq!(
        event.kind,
        pb::RolloutEventKind::Promoted as i32,
        "{event:?}"
    );

    // A wakes up and still believes it holds the lock: every mutating call is refused.
    let stale = client
        .rollback(pb::RollbackRequest {
            service: SERVICE.into(),
            fencing_token: first.token.0,
            reason: "saga A resumes after its pause".into(),
            idempotency_key: "a-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale}");
    let stale = deploy(
        &mut client,
        &scenario.repo,
        &scenario.good_commit,
        first.token.0,
        "a-3",
    )
    .await
    .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale}");
    // Nothing A tried took effect: B's version still serves.
    let status = client
        .status(pb::StatusRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.services[0].stable.as_ref().unwrap().commit,
        scenario.bad_commit
    );
    // And the store agrees: A can neither renew nor release what it lost.
    assert!(!locks.renew(&first).await.unwrap());
    assert!(!locks.release(&first).await.unwrap());
    assert!(locks.release(&second).await.unwrap());
    deployer.stop().await.unwrap();
}
