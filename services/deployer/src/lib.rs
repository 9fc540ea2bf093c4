//! The deployer: builds versions of target services, runs them behind its weighted HTTP router, and
//! moves traffic in canary steps with analysis, automatic rollback and fencing-token checks.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.
//! Module map: [`config`] (settings), `manifest` (the target's `selfheal.toml`), `builder`
//! (git worktree + build), `process` (supervised children and their logs), `router` (weighted
//! HTTP proxy and its counters), `analysis` (canary statistics), `memory` (resident memory of
//! version processes, from `/proc`), `fencing` (durable token high-water marks), `state` (what a
//! restart restores), `deployer` (rollouts), `grpc` (the protobuf edge).

mod analysis;
mod builder;
pub mod config;
mod deployer;
mod error;
mod fencing;
mod grpc;
mod manifest;
mod memory;
mod model;
mod process;
mod rollout_log;
mod router;
mod state;

pub use config::{Config, DEFAULT_GRPC_PORT};
pub use error::Error;

use selfheal_proto::v1::deployer_server::DeployerServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "deployer";

/// Serves the deployer service on `listeners` until `shutdown` is cancelled, then stops every
/// version it runs.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::DEPLOYER)?;
    let grace = config.server.shutdown_grace;
    let deployer = deployer::Deployer::start(config, host.registry()).await?;
    host.readiness().set_serving().await;
    let service = DeployerServer::new(grpc::DeployerApi::new(std::sync::Arc::clone(&deployer)));
    let served = host
        .serve(service, axum::Router::new(), listeners, shutdown, grace)
        .await;
    deployer.shutdown().await;
    served?;
    Ok(())
}
