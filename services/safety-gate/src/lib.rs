//! The safety gate: applies a candidate in an isolated worktree, builds it, runs the target's tests,
//! replays captured failing requests, checks static policy, and scores risk with reasons.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
mod grpc;

pub use config::{Config, DEFAULT_GRPC_PORT};
pub use error::Error;

use selfheal_proto::v1::safety_gate_server::SafetyGateServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "safety-gate";

/// Serves the safety-gate service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::SAFETY_GATE)?;
    host.readiness().set_serving().await;
    let service = SafetyGateServer::new(grpc::SafetyGateApi);
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
