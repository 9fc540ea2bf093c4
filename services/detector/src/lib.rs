//! The detector: turns metrics scraped from `/metrics` endpoints and Alertmanager webhooks into
//! incidents, with sliding windows, hysteresis and fingerprint deduplication, and reports them to
//! the orchestrator until acknowledged.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.
//! Domain modules are plain Rust (no protobuf, no tonic); `grpc.rs` is the only edge that
//! converts. Modules are public so that benchmarks can drive the evaluation path directly.

mod config;
pub mod detector;
mod error;
pub mod exposition;
mod grpc;
pub mod hysteresis;
pub mod incident;
pub mod metrics;
pub mod monitor;
pub mod report;
pub mod scrape;
pub mod target;
pub mod webhook;
pub mod window;

pub use config::{
    Config, DEFAULT_GRPC_PORT, DetectionConfig, OrchestratorConfig, RuleConfig, ScrapeConfig,
    TargetConfig, ThresholdMode, WebhookConfig,
};
pub use error::Error;

use std::sync::Arc;

use selfheal_proto::v1::detector_server::DetectorServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::detector::{Detector, ScrapeSettings};
use crate::report::Backoff;
use crate::scrape::HttpSource;
use crate::target::TargetSpec;

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "detector";

/// Serves the detector service on `listeners` until `shutdown` is cancelled, then stops every
/// scrape loop and the reporter before returning.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::DETECTOR)?;
    let metrics = metrics::DetectorMetrics::register(host.registry())?;
    let source = HttpSource::new(config.scrape.timeout, config.scrape.max_body_bytes)?;
    let sink = grpc::OrchestratorSink::connect_lazy(
        &config.orchestrator.url,
        config.orchestrator.connect_timeout,
        config.orchestrator.call_timeout,
    )?;

    let tasks = TaskTracker::new();
    let work = shutdown.child_token();
    let (detector, reports) = Detector::new(
        ScrapeSettings {
            interval: config.scrape.interval,
            detection: config.detection.clone(),
        },
        Arc::new(source),
        metrics,
        tasks.clone(),
        work.clone(),
    );
    for target in &config.scrape.targets {
        let spec = TargetSpec::new(
            target.service.clone(),
            target.address.clone(),
            target.labels.clone(),
        )
        .map_err(Error::InvalidTarget)?;
        detector.add_target(spec);
    }
    tasks.spawn(report::deliver(
        Arc::new(sink),
        detector.clone(),
        reports,
        Backoff {
            initial: config.orchestrator.initial_backoff,
            max: config.orchestrator.max_backoff,
        },
        config.orchestrator.repeat_interval,
        work.clone(),
    ));

    host.readiness().set_serving().await;
    let routes = webhook::router(
        detector.clone(),
        config.webhook.max_body_bytes,
        webhook::Settings {
            window: config.detection.window,
            resolve_hold: config.webhook.resolve_hold,
        },
    );
    let served = host
        .serve(
            DetectorServer::new(grpc::DetectorApi::new(detector)),
            routes,
            listeners,
            shutdown,
            config.server.shutdown_grace,
        )
        .await;
    work.cancel();
    tasks.close();
    tasks.wait().await;
    served?;
    Ok(())
}
