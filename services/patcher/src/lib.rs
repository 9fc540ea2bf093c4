//! The patcher: candidate fixes as unified diffs — fix templates per fault class, mutations,
//! partial and full reverts of the culprit commit, and an optional LLM provider.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod diff;
mod error;
mod git;
mod grpc;
pub mod strategy;

pub use config::{Config, DEFAULT_GRPC_PORT, LlmConfig};
pub use error::Error;

use selfheal_proto::v1::patcher_server::PatcherServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "patcher";

/// Serves the patcher service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::PATCHER)?;
    let mut patcher = strategy::Patcher::new(config.git_timeout);
    if config.llm.enabled {
        tracing::info!(base_url = %config.llm.base_url, model = %config.llm.model, "llm provider enabled");
        patcher = patcher.with_llm(strategy::LlmProvider::new(config.llm.clone())?);
    }
    host.readiness().set_serving().await;
    let grace = config.server.shutdown_grace;
    let service = PatcherServer::new(grpc::PatcherApi::new(patcher, config.max_candidates));
    host.serve(service, axum::Router::new(), listeners, shutdown, grace)
        .await?;
    Ok(())
}
