//! Root-cause analysis: collects evidence for an incident, ranks causes over the dependency graph,
//! and localises the faulty line and the commit that introduced it.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod error;
pub mod graph;
mod grpc;
pub mod localize;

pub use config::{Config, DEFAULT_GRPC_PORT, LocalizeConfig};
pub use error::Error;

use selfheal_proto::v1::rca_server::RcaServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "rca";

/// Serves the rca service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::RCA)?;
    host.readiness().set_serving().await;
    let localizer = localize::Localizer::new(config.localize.settings());
    let service = RcaServer::new(grpc::RcaApi::new(localizer));
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
