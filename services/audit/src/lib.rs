//! The audit service: the append-only, hash-chained record of every saga step and decision, with
//! verification, tamper detection, and decision reports.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
mod grpc;

pub use config::{Config, DEFAULT_GRPC_PORT};
pub use error::Error;

use selfheal_proto::v1::audit_server::AuditServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "audit";

/// Serves the audit service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::AUDIT)?;
    host.readiness().set_serving().await;
    let service = AuditServer::new(grpc::AuditApi);
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
