//! The saga orchestrator: one saga per incident, holding a lock on the affected service,
//! calling the other services step by step, compensating on failure and journaling every step
//! to the audit service.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
mod grpc;
pub mod lock;
mod mesh;
pub mod saga;

pub use config::{Config, DEFAULT_GRPC_PORT, Peers};
pub use error::Error;

use selfheal_proto::v1::orchestrator_server::OrchestratorServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "orchestrator";

/// Serves the orchestrator on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::ORCHESTRATOR)?;
    let mesh = mesh::Mesh::connect(&config.peers)?;
    host.readiness().set_serving().await;
    let service = OrchestratorServer::new(grpc::OrchestratorApi::new(mesh));
    host.serve(
        service,
        axum::Router::new(),
        listeners,
        shutdown,
        config.server.shutdown_grace,
    )
    .await?;
    Ok(())
}
