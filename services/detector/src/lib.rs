//! The detector: turns metrics scraped from `/metrics` endpoints and Alertmanager webhooks into
//! incidents, with sliding windows, hysteresis and fingerprint deduplication.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
mod grpc;

pub use config::{Config, DEFAULT_GRPC_PORT};
pub use error::Error;

use selfheal_proto::v1::detector_server::DetectorServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "detector";

/// Serves the detector service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::DETECTOR)?;
    host.readiness().set_serving().await;
    let service = DetectorServer::new(grpc::DetectorApi);
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
