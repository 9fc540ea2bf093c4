//! Graceful shutdown and peer probing of the orchestrator, in-process on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use selfheal_orchestrator::{Config, Peers};
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_proto::v1::{GetMeshStatusRequest, ServingStatus};
use selfheal_service::testkit::{DEADLINE, ServiceUnderTest, channel, wait_serving};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A TCP peer that accepts connections and never answers: every call to it hangs until its
/// deadline. `accepted` fires on each connection.
async fn silent_peer() -> (String, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(Notify::new());
    let notify = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            notify.notify_one();
        }
    });
    (url, accepted)
}

/// Every peer at `url`, except the audit service, which gets its own silent peer: the saga engine
/// reads its journal at start-up, and that connection must not count as the probe under test.
async fn config_with_peers(url: &str, call_timeout: Duration, grace: Duration) -> Config {
    let (audit, _) = silent_peer().await;
    let mut config = Config::default();
    config.server.shutdown_grace = grace;
    config.peers = Peers {
        detector: url.to_owned(),
        rca: url.to_owned(),
        patcher: url.to_owned(),
        safety_gate: url.to_owned(),
        deployer: url.to_owned(),
        audit,
        call_timeout,
        connect_timeout: call_timeout,
    };
    config
}

#[tokio::test]
async fn finishes_in_flight_calls_before_returning_from_shutdown() {
    let (url, accepted) = silent_peer().await;
    let config =
        config_with_peers(&url, Duration::from_millis(1500), Duration::from_secs(15)).await;
    let service = ServiceUnderTest::start(|l, s| selfheal_orchestrator::run(config, l, s)).await;
    wait_serving(
        service.grpc_addr,
        selfheal_proto::service_names::ORCHESTRATOR,
    )
    .await;

    let mut client = OrchestratorClient::new(channel(service.grpc_addr).await.unwrap());
    let call = tokio::spawn(async move { client.get_mesh_status(GetMeshStatusRequest {}).await });
    // The call is in flight once the orchestrator has connected to the silent peers.
    tokio::time::timeout(DEADLINE, accepted.notified())
        .await
        .expect("orchestrator probes its peers");

    service.shutdown.cancel();
    let response = tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap()
        .unwrap()
        .expect("in-flight call completes");
    let peers = response.into_inner().peers;
    assert_eq!(peers.len(), 6);
    assert!(
        peers
            .iter()
            .all(|peer| peer.status() == ServingStatus::Unreachable),
        "{peers:?}"
    );
    service
        .stop()
        .await
        .expect("run returns Ok after the call finished");
}

#[tokio::test]
async fn returns_within_the_grace_period_when_a_call_outlives_it() {
    let (url, accepted) = silent_peer().await;
    let config = config_with_peers(&url, Duration::from_secs(60), Duration::from_millis(300)).await;
    let service = ServiceUnderTest::start(|l, s| selfheal_orchestrator::run(config, l, s)).await;
    wait_serving(
        service.grpc_addr,
        selfheal_proto::service_names::ORCHESTRATOR,
    )
    .await;
    let mut client = OrchestratorClient::new(channel(service.grpc_addr).await.unwrap());
    let _call = tokio::spawn(async move { client.get_mesh_status(GetMeshStatusRequest {}).await });
    tokio::time::timeout(DEADLINE, accepted.notified())
        .await
        .expect("orchestrator probes its peers");

    // The in-flight call would take 60 s; run must give up after the 300 ms grace period.
    let stopped = tokio::time::timeout(Duration::from_secs(30), service.stop()).await;
    assert!(
        stopped.is_ok(),
        "run returned long before the 60 s call could finish"
    );
}

#[tokio::test]
async fn reports_unreachable_peers_without_failing() {
    let (url, _accepted) = silent_peer().await;
    let config = config_with_peers(&url, Duration::from_millis(200), Duration::from_secs(5)).await;
    let service = ServiceUnderTest::start(|l, s| selfheal_orchestrator::run(config, l, s)).await;
    wait_serving(
        service.grpc_addr,
        selfheal_proto::service_names::ORCHESTRATOR,
    )
    .await;
    let mut client = OrchestratorClient::new(channel(service.grpc_addr).await.unwrap());
    let peers = client
        .get_mesh_status(GetMeshStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert!(
        peers
            .iter()
            .all(|peer| peer.status() == ServingStatus::Unreachable && !peer.error.is_empty())
    );
    service.stop().await.unwrap();
}
