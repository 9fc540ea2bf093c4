//! The saga orchestrator: one saga per incident, holding a lock on the affected service,
//! calling the other services step by step, compensating on failure and journaling every step
//! to the audit service.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

mod config;
mod engine;
mod error;
mod grpc;
pub mod lock;
mod mesh;
pub mod saga;

pub use config::{
    BackoffConfig, CanaryConfig, Config, DEFAULT_GRPC_PORT, EscalationConfig, LockBackend,
    LockConfig, Peers, SagaConfig, StepDeadlines, VerifyConfig,
};
pub use engine::model::{state_from_name, state_name};
pub use error::Error;
pub use grpc::{state_from_proto, state_to_proto};

use std::sync::Arc;

use crate::lock::{EmbeddedLockStore, LockStore, RedisLockStore};

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
    let locks = lock_store(&config)?;
    let channel = |name: &'static str| {
        mesh.channel(name)
            .expect("every peer of Peers::named has a channel")
    };
    let channels = engine::EngineChannels {
        rca: channel("rca"),
        patcher: channel("patcher"),
        gate: channel("safety-gate"),
        deployer: channel("deployer"),
        audit: channel("audit"),
    };
    let engine = engine::Engine::start(&config, channels, locks, shutdown.child_token());
    host.registry()
        .register(Box::new(engine.halt_gauge()))
        .map_err(selfheal_service::ServeError::Metrics)?;
    host.readiness().set_serving().await;
    let service = OrchestratorServer::new(grpc::OrchestratorApi::new(mesh, engine.clone()));
    let automation = {
        let engine = engine.clone();
        axum::Router::new().route(
            "/automation",
            axum::routing::get(move || {
                let engine = engine.clone();
                async move { axum::Json(engine.automation()) }
            }),
        )
    };
    let served = host
        .serve(
            service,
            automation,
            listeners,
            shutdown,
            config.server.shutdown_grace,
        )
        .await;
    engine.shutdown().await;
    served?;
    Ok(())
}

/// The lock store the configuration names.
fn lock_store(config: &Config) -> Result<Arc<dyn LockStore>, Error> {
    Ok(match config.lock.backend {
        LockBackend::Embedded => Arc::new(EmbeddedLockStore::new()),
        LockBackend::Redis => {
            let store = RedisLockStore::connect(
                &config.lock.redis_url,
                &config.lock.key_prefix,
                config.lock.timeout,
            )
            .map_err(Error::LockStore)?;
            tracing::info!(url = %config.lock.redis_url, "leases in redis");
            Arc::new(store)
        }
    })
}
