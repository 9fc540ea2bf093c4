//! `selfheal status`: the health of every service, as the orchestrator sees it.

use std::time::Duration;

use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_proto::v1::{GetMeshStatusRequest, PeerStatus, ServingStatus};
use serde::Serialize;

/// One row of the status table.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceHealth {
    pub service: String,
    pub address: String,
    pub status: &'static str,
    pub latency_ms: f64,
    pub error: String,
}

/// Errors from asking the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("invalid orchestrator address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "cannot reach the orchestrator at {address}: {message}\nhint: start the mesh with `selfheal up`, or pass --orchestrator"
    )]
    Unreachable { address: String, message: String },
}

/// Asks the orchestrator at `address` for the health of the mesh (itself included).
pub async fn mesh_status(
    address: &str,
    timeout: Duration,
) -> Result<Vec<ServiceHealth>, StatusError> {
    let channel = selfheal_telemetry::connect_lazy(address, timeout).map_err(|source| {
        StatusError::Address {
            address: address.to_owned(),
            source,
        }
    })?;
    let mut client = OrchestratorClient::new(channel);
    let mut request = tonic::Request::new(GetMeshStatusRequest {});
    request.set_timeout(timeout);
    let started = std::time::Instant::now();
    let response =
        client
            .get_mesh_status(request)
            .await
            .map_err(|status| StatusError::Unreachable {
                address: address.to_owned(),
                message: status.message().to_owned(),
            })?;
    let mut rows = vec![ServiceHealth {
        service: "orchestrator".to_owned(),
        address: address.to_owned(),
        status: "SERVING",
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        error: String::new(),
    }];
    rows.extend(response.into_inner().peers.into_iter().map(row));
    Ok(rows)
}

fn row(peer: PeerStatus) -> ServiceHealth {
    let status = match peer.status() {
        ServingStatus::Serving => "SERVING",
        ServingStatus::NotServing => "NOT_SERVING",
        ServingStatus::Unreachable => "UNREACHABLE",
        ServingStatus::Unspecified => "UNKNOWN",
    };
    let latency_ms = peer
        .latency
        .and_then(|latency| Duration::try_from(latency).ok())
        .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0);
    ServiceHealth {
        service: peer.service,
        address: peer.address,
        status,
        latency_ms,
        error: peer.error,
    }
}
