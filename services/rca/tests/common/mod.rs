//! Shared helpers of the analysis tests: rca started in-process, a test-local deployer that
//! serves generated logs over the real `Deployer` gRPC contract, and a TCP proxy that can be cut.

#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_server::{Deployer, DeployerServer};
use selfheal_proto::v1::rca_client::RcaClient;
use selfheal_service::testkit::{ServiceUnderTest, channel, wait_serving};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// rca running in the test's runtime.
pub struct Rca {
    pub service: ServiceUnderTest<selfheal_rca::Error>,
    pub client: RcaClient<Channel>,
}

impl Rca {
    pub async fn start(config: selfheal_rca::Config) -> Self {
        let service = ServiceUnderTest::start(move |listeners, shutdown| {
            selfheal_rca::run(config, listeners, shutdown)
        })
        .await;
        wait_serving(service.grpc_addr, selfheal_proto::service_names::RCA).await;
        let client = RcaClient::new(channel(service.grpc_addr).await.expect("connects"))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Self { service, client }
    }

    pub async fn analyze(
        &self,
        request: pb::AnalyzeRequest,
    ) -> Result<pb::AnalyzeResponse, Status> {
        let mut client = self.client.clone();
        client.analyze(request).await.map(Response::into_inner)
    }

    pub async fn stop(self) {
        self.service.stop().await.expect("rca stops cleanly");
    }
}

/// A config whose sources are all off (each a gap), on the embedded graph.
pub fn quiet_config() -> selfheal_rca::Config {
    let mut config = selfheal_rca::Config::default();
    config.sources.deployer = String::new();
    config.sources.detector = String::new();
    config
}

/// Produces the log lines of one `Logs` call, lazily.
pub type LogSource = Arc<dyn Fn(&str) -> Box<dyn Iterator<Item = String> + Send> + Send + Sync>;

/// A deployer that only answers `Logs` (from `logs`) and `Status` (from `status`).
#[derive(Clone)]
pub struct TestDeployer {
    pub logs: LogSource,
    pub status: Vec<pb::ServiceStatus>,
}

type Lines = Pin<Box<dyn Stream<Item = Result<pb::LogsResponse, Status>> + Send>>;
type Events = Pin<Box<dyn Stream<Item = Result<pb::DeployResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Deployer for TestDeployer {
    type DeployStream = Events;
    type LogsStream = Lines;

    async fn deploy(&self, _: Request<pb::DeployRequest>) -> Result<Response<Events>, Status> {
        Err(Status::unimplemented("test deployer"))
    }

    async fn rollback(
        &self,
        _: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        Err(Status::unimplemented("test deployer"))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            services: self.status.clone(),
        }))
    }

    async fn logs(&self, request: Request<pb::LogsRequest>) -> Result<Response<Lines>, Status> {
        let service = request.into_inner().service;
        let lines = (self.logs)(&service).map(|text| {
            Ok(pb::LogsResponse {
                version: "v1".into(),
                stream: "stderr".into(),
                at: None,
                text,
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(lines))))
    }

    async fn failing_requests(
        &self,
        _: Request<pb::FailingRequestsRequest>,
    ) -> Result<Response<pb::FailingRequestsResponse>, Status> {
        Err(Status::unimplemented("test deployer"))
    }

    async fn verify(
        &self,
        _: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        Err(Status::unimplemented("test deployer"))
    }
}

/// Serves `deployer` on an ephemeral loopback port until the token is cancelled.
pub async fn serve_deployer(deployer: TestDeployer) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(DeployerServer::new(deployer))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                until.cancelled_owned(),
            )
            .await
            .expect("test deployer serves");
    });
    (format!("http://{addr}"), stop)
}

pub fn ts(at: std::time::SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

pub fn incident(id: &str, service: &str, first_bad_at: std::time::SystemTime) -> pb::Incident {
    pb::Incident {
        id: id.into(),
        service: service.into(),
        signal: pb::SignalKind::ErrorRate.into(),
        first_bad_at: Some(ts(first_bad_at)),
        opened_at: Some(ts(first_bad_at + std::time::Duration::from_secs(2))),
        summary: format!("error rate of {service} above 5%"),
        ..Default::default()
    }
}
