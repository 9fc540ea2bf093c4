//! Helpers for tests that start a service in-process on `127.0.0.1:0` and check what every
//! selfheal service must offer. Compiled only with the `testkit` feature (dev-dependencies).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::Listeners;

/// How long helpers wait for a condition before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A service running in the test's runtime.
#[derive(Debug)]
pub struct ServiceUnderTest<E> {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shutdown: CancellationToken,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static + std::fmt::Debug> ServiceUnderTest<E> {
    /// Binds ephemeral ports and spawns `run` on them.
    pub async fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(Listeners, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let listeners = Listeners::ephemeral()
            .await
            .expect("loopback ports are available");
        let (grpc_addr, http_addr) = (listeners.grpc_addr(), listeners.http_addr());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(listeners, shutdown.clone()));
        Self {
            grpc_addr,
            http_addr,
            shutdown,
            handle,
        }
    }

    /// `http://addr` of the gRPC server.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Cancels the service and returns what `run` returned.
    pub async fn stop(self) -> Result<(), E> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("service stops within the deadline")
            .expect("service task does not panic")
    }

    /// Health SERVING, reflection listing `grpc_service_name`, `/metrics` that parses and
    /// counts the calls just made, and `/healthz` answering 200.
    pub async fn assert_standard_endpoints(&self, grpc_service_name: &str) {
        wait_serving(self.grpc_addr, grpc_service_name).await;
        let listed = reflection_services(self.grpc_addr).await;
        for expected in [
            grpc_service_name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                listed.iter().any(|name| name == expected),
                "reflection lists {expected}: {listed:?}"
            );
        }
        let scrape = scrape_metrics(self.http_addr).await;
        let health_checks = scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == "grpc_server_handled_total")
            .filter(|sample| sample.labels.get("grpc_service") == Some("grpc.health.v1.Health"))
            .count();
        assert!(
            health_checks > 0,
            "per-RPC counters include the health checks just made"
        );
        let healthz = reqwest::get(format!("http://{}/healthz", self.http_addr))
            .await
            .expect("healthz answers");
        assert_eq!(healthz.status(), 200);
    }
}

/// Polls gRPC health until `service` (and the server as a whole) reports SERVING.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    let started = Instant::now();
    loop {
        let status = health(addr, service).await;
        if status == Some(ServingStatus::Serving)
            && health(addr, "").await == Some(ServingStatus::Serving)
        {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{service} at {addr} not SERVING within {DEADLINE:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gRPC health status of `service` at `addr`, or `None` when unreachable.
pub async fn health(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::new(channel(addr).await.ok()?);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

/// A plain channel to `addr`.
pub async fn channel(
    addr: SocketAddr,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
}

/// The service names reflection v1 lists at `addr`.
pub async fn reflection_services(addr: SocketAddr) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel(addr).await.expect("reflection connects"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("reflection stream")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response: {other:?}"),
    }
}

/// Fetches `/metrics` and parses it as Prometheus text exposition.
pub async fn scrape_metrics(addr: SocketAddr) -> prometheus_parse::Scrape {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answers")
        .text()
        .await
        .expect("body");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse as prometheus text")
}
