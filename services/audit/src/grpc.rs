//! The gRPC edge of the audit service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::audit_server::Audit;
use selfheal_proto::v1::{
    AppendRequest, AppendResponse, ListDecisionsRequest, ListDecisionsResponse, QueryRequest,
    QueryResponse, VerifyChainRequest, VerifyChainResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// Implements `selfheal.v1.Audit`.
#[derive(Debug, Default)]
pub(crate) struct AuditApi;

#[tonic::async_trait]
impl Audit for AuditApi {
    async fn append(
        &self,
        _request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Append",
            missing: "the hash chain and its stores",
        }
        .into())
    }

    async fn query(
        &self,
        _request: Request<QueryRequest>,
    ) -> Result<Response<QueryResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Query",
            missing: "the hash chain and its stores",
        }
        .into())
    }

    async fn verify(
        &self,
        _request: Request<VerifyChainRequest>,
    ) -> Result<Response<VerifyChainResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Verify",
            missing: "the hash chain and its stores",
        }
        .into())
    }

    async fn list_decisions(
        &self,
        _request: Request<ListDecisionsRequest>,
    ) -> Result<Response<ListDecisionsResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "ListDecisions",
            missing: "the hash chain and its stores",
        }
        .into())
    }
}
