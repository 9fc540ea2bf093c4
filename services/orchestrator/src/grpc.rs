//! The gRPC edge of the orchestrator: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::orchestrator_server::Orchestrator;
use selfheal_proto::v1::{
    AbortRequest, AbortResponse, ApproveRequest, ApproveResponse, GetMeshStatusRequest,
    GetMeshStatusResponse, GetSagaRequest, GetSagaResponse, ListSagasRequest, ListSagasResponse,
    PeerStatus, ReportIncidentRequest, ReportIncidentResponse, ServingStatus, WatchSagaRequest,
    WatchSagaResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::mesh::{Mesh, PeerHealth};

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `selfheal.v1.Orchestrator`.
#[derive(Debug)]
pub(crate) struct OrchestratorApi {
    mesh: Mesh,
}

impl OrchestratorApi {
    pub(crate) fn new(mesh: Mesh) -> Self {
        Self { mesh }
    }
}

const SAGA_ENGINE: &str = "the saga engine with its lock store and journal";

#[tonic::async_trait]
impl Orchestrator for OrchestratorApi {
    type WatchSagaStream = BoxStream<WatchSagaResponse>;

    async fn report_incident(
        &self,
        _request: Request<ReportIncidentRequest>,
    ) -> Result<Response<ReportIncidentResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "ReportIncident",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn get_saga(
        &self,
        _request: Request<GetSagaRequest>,
    ) -> Result<Response<GetSagaResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "GetSaga",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn list_sagas(
        &self,
        _request: Request<ListSagasRequest>,
    ) -> Result<Response<ListSagasResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "ListSagas",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn watch_saga(
        &self,
        _request: Request<WatchSagaRequest>,
    ) -> Result<Response<Self::WatchSagaStream>, Status> {
        Err(Error::NotBuilt {
            rpc: "WatchSaga",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn approve(
        &self,
        _request: Request<ApproveRequest>,
    ) -> Result<Response<ApproveResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Approve",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn abort(
        &self,
        _request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "Abort",
            missing: SAGA_ENGINE,
        }
        .into())
    }

    async fn get_mesh_status(
        &self,
        _request: Request<GetMeshStatusRequest>,
    ) -> Result<Response<GetMeshStatusResponse>, Status> {
        let peers = self
            .mesh
            .probe_all()
            .await
            .into_iter()
            .map(|(peer, health, latency)| {
                let (status, error) = match health {
                    PeerHealth::Serving => (ServingStatus::Serving, String::new()),
                    PeerHealth::NotServing => (ServingStatus::NotServing, String::new()),
                    PeerHealth::Unreachable(error) => (ServingStatus::Unreachable, error),
                };
                PeerStatus {
                    service: peer.name.to_owned(),
                    address: peer.address,
                    status: status.into(),
                    latency: prost_types::Duration::try_from(latency).ok(),
                    error,
                }
            })
            .collect();
        Ok(Response::new(GetMeshStatusResponse { peers }))
    }
}
