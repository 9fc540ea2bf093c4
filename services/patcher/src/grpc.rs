//! The gRPC edge of the patcher service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::patcher_server::Patcher;
use selfheal_proto::v1::{GenerateCandidatesRequest, GenerateCandidatesResponse};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// Implements `selfheal.v1.Patcher`.
#[derive(Debug, Default)]
pub(crate) struct PatcherApi;

#[tonic::async_trait]
impl Patcher for PatcherApi {
    async fn generate_candidates(
        &self,
        _request: Request<GenerateCandidatesRequest>,
    ) -> Result<Response<GenerateCandidatesResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "GenerateCandidates",
            missing: "the patch strategies",
        }
        .into())
    }
}
