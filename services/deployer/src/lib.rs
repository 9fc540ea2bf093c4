//! The deployer: builds versions of target services, runs them behind its weighted HTTP router, and
//! moves traffic in canary steps with analysis, automatic rollback and fencing-token checks.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
mod grpc;

pub use config::{Config, DEFAULT_GRPC_PORT};
pub use error::Error;

use selfheal_proto::v1::deployer_server::DeployerServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "deployer";

/// Serves the deployer service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::DEPLOYER)?;
    host.readiness().set_serving().await;
    let service = DeployerServer::new(grpc::DeployerApi);
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
