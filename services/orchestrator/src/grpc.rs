//! The gRPC edge of the orchestrator: decode, call the engine, encode. Nothing else.

use std::time::SystemTime;

use futures::StreamExt;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::orchestrator_server::Orchestrator;
use selfheal_proto::v1::{
    AbortRequest, AbortResponse, ApproveRequest, ApproveResponse, GetMeshStatusRequest,
    GetMeshStatusResponse, GetSagaRequest, GetSagaResponse, ListSagasRequest, ListSagasResponse,
    PeerStatus, ReportIncidentRequest, ReportIncidentResponse, ServingStatus, WatchSagaRequest,
    WatchSagaResponse,
};
use tonic::{Request, Response, Status};

use crate::engine::{Engine, EventView, SagaView, StepStatus, StepView};
use crate::error::Error;
use crate::mesh::{Mesh, PeerHealth};
use crate::saga::SagaState;

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Most sagas one ListSagas returns.
const MAX_LIST: usize = 1_000;

/// Implements `selfheal.v1.Orchestrator`.
#[derive(Debug)]
pub(crate) struct OrchestratorApi {
    mesh: Mesh,
    engine: Engine,
}

impl OrchestratorApi {
    pub(crate) fn new(mesh: Mesh, engine: Engine) -> Self {
        Self { mesh, engine }
    }
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorApi {
    type WatchSagaStream = BoxStream<WatchSagaResponse>;

    async fn report_incident(
        &self,
        request: Request<ReportIncidentRequest>,
    ) -> Result<Response<ReportIncidentResponse>, Status> {
        let incident = request.into_inner().incident.ok_or(Error::MissingField {
            field: "incident".into(),
        })?;
        let reported = self.engine.report(incident).await?;
        Ok(Response::new(ReportIncidentResponse {
            saga_id: reported.saga_id,
            joined: reported.joined,
        }))
    }

    async fn get_saga(
        &self,
        request: Request<GetSagaRequest>,
    ) -> Result<Response<GetSagaResponse>, Status> {
        let saga = self.engine.get(&request.into_inner().id).await?;
        Ok(Response::new(GetSagaResponse {
            saga: Some(saga_to_proto(&saga)),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<ListSagasRequest>,
    ) -> Result<Response<ListSagasResponse>, Status> {
        let request = request.into_inner();
        let state = pb::SagaState::try_from(request.state).map_err(|_| Error::InvalidArgument {
            field: "state".into(),
            reason: format!("{} is not a SagaState", request.state),
        })?;
        let service = (!request.service.is_empty()).then_some(request.service.as_str());
        let limit = match request.limit as usize {
            0 => MAX_LIST,
            n => n.min(MAX_LIST),
        };
        let sagas = self
            .engine
            .list(service, state_from_proto(state), limit)
            .await?
            .iter()
            .map(saga_to_proto)
            .collect();
        Ok(Response::new(ListSagasResponse { sagas }))
    }

    async fn watch_saga(
        &self,
        request: Request<WatchSagaRequest>,
    ) -> Result<Response<Self::WatchSagaStream>, Status> {
        let events = self.engine.watch(&request.into_inner().id).await?;
        let stream = events.map(|event| {
            Ok(WatchSagaResponse {
                event: Some(event_to_proto(&event)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<ApproveResponse>, Status> {
        let request = request.into_inner();
        let state = self
            .engine
            .approve(&request.saga_id, &request.approver, &request.comment)
            .await?;
        Ok(Response::new(ApproveResponse {
            state: state_to_proto(state).into(),
        }))
    }

    async fn abort(
        &self,
        request: Request<AbortRequest>,
    ) -> Result<Response<AbortResponse>, Status> {
        let request = request.into_inner();
        let state = self
            .engine
            .abort(&request.saga_id, &request.actor, &request.reason)
            .await?;
        Ok(Response::new(AbortResponse {
            state: state_to_proto(state).into(),
        }))
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

/// The engine's state as the protobuf enum.
pub fn state_to_proto(state: SagaState) -> pb::SagaState {
    match state {
        SagaState::Detected => pb::SagaState::Detected,
        SagaState::Locked => pb::SagaState::Locked,
        SagaState::Analyzing => pb::SagaState::Analyzing,
        SagaState::Planning => pb::SagaState::Planning,
        SagaState::Patching => pb::SagaState::Patching,
        SagaState::Gating => pb::SagaState::Gating,
        SagaState::AwaitingApproval => pb::SagaState::AwaitingApproval,
        SagaState::Deploying => pb::SagaState::Deploying,
        SagaState::Verifying => pb::SagaState::Verifying,
        SagaState::Resolved => pb::SagaState::Resolved,
        SagaState::RolledBack => pb::SagaState::RolledBack,
        SagaState::Escalated => pb::SagaState::Escalated,
        SagaState::Aborted => pb::SagaState::Aborted,
    }
}

/// The protobuf enum as the engine's state; `None` for UNSPECIFIED.
pub fn state_from_proto(state: pb::SagaState) -> Option<SagaState> {
    Some(match state {
        pb::SagaState::Unspecified => return None,
        pb::SagaState::Detected => SagaState::Detected,
        pb::SagaState::Locked => SagaState::Locked,
        pb::SagaState::Analyzing => SagaState::Analyzing,
        pb::SagaState::Planning => SagaState::Planning,
        pb::SagaState::Patching => SagaState::Patching,
        pb::SagaState::Gating => SagaState::Gating,
        pb::SagaState::AwaitingApproval => SagaState::AwaitingApproval,
        pb::SagaState::Deploying => SagaState::Deploying,
        pb::SagaState::Verifying => SagaState::Verifying,
        pb::SagaState::Resolved => SagaState::Resolved,
        pb::SagaState::RolledBack => SagaState::RolledBack,
        pb::SagaState::Escalated => SagaState::Escalated,
        pb::SagaState::Aborted => SagaState::Aborted,
    })
}

fn step_status_to_proto(status: StepStatus) -> pb::StepStatus {
    match status {
        StepStatus::Running => pb::StepStatus::Running,
        StepStatus::Succeeded => pb::StepStatus::Succeeded,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Compensated => pb::StepStatus::Compensated,
    }
}

fn timestamp(at: SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(at))
}

fn step_to_proto(step: &StepView) -> pb::SagaStep {
    pb::SagaStep {
        name: step.name.clone(),
        status: step_status_to_proto(step.status).into(),
        attempt: step.attempt,
        started_at: timestamp(step.started_at),
        duration: step
            .duration
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
        summary: step.summary.clone(),
        error: step.error.clone(),
        fencing_token: step.fencing_token,
    }
}

fn saga_to_proto(saga: &SagaView) -> pb::Saga {
    pb::Saga {
        id: saga.id.clone(),
        service: saga.service.clone(),
        state: state_to_proto(saga.state).into(),
        incident_ids: saga.incident_ids.clone(),
        steps: saga.steps.iter().map(step_to_proto).collect(),
        decisions: saga.decisions.clone(),
        fencing_token: saga.fencing_token,
        started_at: timestamp(saga.started_at),
        finished_at: saga.finished_at.and_then(timestamp),
        outcome: saga.outcome.clone(),
    }
}

fn event_to_proto(event: &EventView) -> pb::SagaEvent {
    pb::SagaEvent {
        saga_id: event.saga_id.clone(),
        at: timestamp(event.at),
        state: state_to_proto(event.state).into(),
        step: event.step.clone(),
        step_status: event
            .step_status
            .map_or(pb::StepStatus::Unspecified, step_status_to_proto)
            .into(),
        message: event.message.clone(),
        decision: event.decision.clone(),
    }
}
