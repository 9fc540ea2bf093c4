//! The gRPC edge of the deployer service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::deployer_server::Deployer;
use selfheal_proto::v1::{
    DeployRequest, DeployResponse, FailingRequestsRequest, FailingRequestsResponse, LogsRequest,
    LogsResponse, RollbackRequest, RollbackResponse, StatusRequest, StatusResponse, VerifyRequest,
    VerifyResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `selfheal.v1.Deployer`.
#[derive(Debug, Default)]
pub(crate) struct DeployerApi;

#[tonic::async_trait]
impl Deployer for DeployerApi {
    type DeployStream = BoxStream<DeployResponse>;

    async fn deploy(
        &self,
        _request: Request<DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        Err(Error::NotBuilt {
            rpc: "Deploy",
            missing: "the local process backend and canary rollouts",
        }
        .into())
    }

    async fn rollback(
        &self,
        _request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Rollback",
            missing: "the local process backend",
        }
        .into())
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Status",
            missing: "the local process backend",
        }
        .into())
    }

    type LogsStream = BoxStream<LogsResponse>;

    async fn logs(
        &self,
        _request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(Error::NotBuilt {
            rpc: "Logs",
            missing: "process log capture",
        }
        .into())
    }

    async fn failing_requests(
        &self,
        _request: Request<FailingRequestsRequest>,
    ) -> Result<Response<FailingRequestsResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "FailingRequests",
            missing: "the router's request sampler",
        }
        .into())
    }

    async fn verify(
        &self,
        _request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Verify",
            missing: "the router's per-upstream counters",
        }
        .into())
    }
}
