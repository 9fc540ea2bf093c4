//! The gRPC edge of the safety-gate service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::safety_gate_server::SafetyGate;
use selfheal_proto::v1::{EvaluateRequest, EvaluateResponse};
use tonic::{Request, Response, Status};

use crate::error::Error;

/// Implements `selfheal.v1.SafetyGate`.
#[derive(Debug, Default)]
pub(crate) struct SafetyGateApi;

#[tonic::async_trait]
impl SafetyGate for SafetyGateApi {
    async fn evaluate(
        &self,
        _request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Evaluate",
            missing: "the sandboxed build, test and replay pipeline",
        }
        .into())
    }
}
