//! The gRPC edge of the rca service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::rca_server::Rca;
use selfheal_proto::v1::{
    AnalyzeRequest, AnalyzeResponse, LocalizeRequest, LocalizeResponse, RecordDeploymentRequest,
    RecordDeploymentResponse, RecordFixRequest, RecordFixResponse, RecordTopologyRequest,
    RecordTopologyResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// Implements `selfheal.v1.Rca`.
#[derive(Debug, Default)]
pub(crate) struct RcaApi;

#[tonic::async_trait]
impl Rca for RcaApi {
    async fn analyze(
        &self,
        _request: Request<AnalyzeRequest>,
    ) -> Result<Response<AnalyzeResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Analyze",
            missing: "cause ranking needs the evidence collector and graph store",
        }
        .into())
    }

    async fn localize(
        &self,
        _request: Request<LocalizeRequest>,
    ) -> Result<Response<LocalizeResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Localize",
            missing: "localisation needs the stack-trace parsers and git blame",
        }
        .into())
    }

    async fn record_topology(
        &self,
        _request: Request<RecordTopologyRequest>,
    ) -> Result<Response<RecordTopologyResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "RecordTopology",
            missing: "the dependency graph store",
        }
        .into())
    }

    async fn record_deployment(
        &self,
        _request: Request<RecordDeploymentRequest>,
    ) -> Result<Response<RecordDeploymentResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "RecordDeployment",
            missing: "the dependency graph store",
        }
        .into())
    }

    async fn record_fix(
        &self,
        _request: Request<RecordFixRequest>,
    ) -> Result<Response<RecordFixResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "RecordFix",
            missing: "the dependency graph store",
        }
        .into())
    }
}
