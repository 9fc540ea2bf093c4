//! The safety gate: applies a candidate in an isolated worktree, checks static policy, builds it,
//! runs the target's tests and replays captured requests, all in a sandbox without network; then
//! scores risk from named factors and records a decision for every verdict.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.
//! Module map: [`config`] (settings), `diff` (reading untrusted unified diffs), `policy` (static
//! rules), `sandbox` (isolation of untrusted processes), `replay` (starting a build and replaying
//! requests in its namespace), `risk` (factors, score, outcome), `gate` (the pipeline and the
//! selection), `grpc` (the protobuf edge).

pub mod config;
mod diff;
mod error;
mod gate;
mod grpc;
mod model;
mod policy;
mod replay;
mod risk;
mod sandbox;

pub use config::{Config, DEFAULT_GRPC_PORT, GateConfig, SandboxMode};
pub use error::Error;

use std::sync::Arc;

use selfheal_proto::v1::safety_gate_server::SafetyGateServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "safety-gate";

/// Serves the safety-gate service on `listeners` until `shutdown` is cancelled.
///
/// Probes the sandbox first: with `gate.sandbox = "require"` and no working network sandbox it
/// returns [`Error::SandboxUnavailable`] before serving.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::SAFETY_GATE)?;
    let gate = Arc::new(gate::Gate::new(config.gate.clone()).await?);
    tracing::info!(
        network_isolated = gate.isolates_network(),
        work_dir = %config.gate.work_dir.display(),
        target_dir = %config.gate.build_target_dir().display(),
        "safety gate ready"
    );
    host.readiness().set_serving().await;
    let tracker = TaskTracker::new();
    let service = SafetyGateServer::new(grpc::SafetyGateApi::new(gate, tracker.clone()));
    let served = host
        .serve(
            service,
            axum::Router::new(),
            listeners,
            shutdown,
            config.server.shutdown_grace,
        )
        .await;
    // An evaluation in flight gets the grace period to finish and remove its worktree; its
    // sandboxed children are killed when the runtime drops them after that.
    tracker.close();
    if tokio::time::timeout(config.server.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("an evaluation was still running at shutdown");
    }
    served?;
    Ok(())
}
