//! The audit service: the append-only, hash-chained record of every saga step and decision, with
//! verification, tamper detection, and decision reports.
//!
//! - [`chain`]: records, their canonical encoding and hashes, signed checkpoints, verification.
//! - [`store`]: where the chain is kept ([`store::AuditStore`]): a JSON-lines file or
//!   Elasticsearch with a local spool.
//! - [`log`]: the single writer that orders the chain, and reads and verification around it.
//! - [`report`]: decision and verification reports for people.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

pub mod chain;
mod config;
mod error;
mod grpc;
pub mod log;
mod metrics;
pub mod report;
pub mod store;

pub use config::{
    Config, DEFAULT_GRPC_PORT, DEFAULT_PAYLOAD_LIMIT, ElasticsearchStoreConfig, FileStoreConfig,
    SIGNING_KEY_FILE, StoreKind,
};
pub use error::Error;
pub use grpc::{
    record_from_proto, record_to_proto, verify_report_from_proto, verify_report_to_proto,
};
pub use report::{render_decision_report, render_verify_report};

use std::sync::Arc;
use std::time::Duration;

use selfheal_proto::v1::audit_server::AuditServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

use crate::chain::checkpoint::CheckpointSigner;
use crate::log::{AuditLog, LogError, LogSettings};
use crate::store::{AuditStore, ElasticsearchConfig, ElasticsearchStore, FileStore, SpoolingStore};

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "audit";

/// Serves the audit service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::AUDIT)?;
    let metrics = metrics::AuditMetrics::register(host.registry())
        .map_err(|error| Error::Serve(selfheal_service::ServeError::Metrics(error)))?;
    let signer = load_signer(&config)?;
    // Replay outlives the gRPC server so that appends during the grace period still drain.
    let replay_shutdown = CancellationToken::new();
    let (store, replay): (Arc<dyn AuditStore>, _) = match config.store {
        StoreKind::File => {
            let store = FileStore::open(&config.file.path).await?;
            tracing::info!(path = %store.path().display(), "audit chain in a local file");
            (Arc::new(store), None)
        }
        StoreKind::Elasticsearch => {
            let es = &config.elasticsearch;
            let primary = ElasticsearchStore::new(&ElasticsearchConfig {
                url: es.url.clone(),
                index: es.index.clone(),
                timeout: es.timeout,
            })?;
            if let Err(error) = primary.ensure_index().await {
                tracing::warn!(%error, "cannot prepare the audit index yet; records will spool");
            }
            let store = SpoolingStore::open(primary, &es.spool_dir).await?;
            tracing::info!(url = %es.url, index = %es.index, spool = %es.spool_dir.display(), "audit chain in elasticsearch");
            let replay = store.start_replay(replay_shutdown.clone());
            (Arc::new(store), Some(replay))
        }
    };
    let settings = LogSettings {
        checkpoint_interval: config.checkpoint_interval,
    };
    let started = start_log(store, signer, settings, &shutdown).await;
    let (log, writer) = match started {
        Ok(Some(started)) => started,
        other => {
            replay_shutdown.cancel();
            if let Some(replay) = replay {
                let _ = replay.await;
            }
            return other.map(|_| ());
        }
    };
    host.readiness().set_serving().await;
    let service = AuditServer::new(grpc::AuditApi::new(
        log.clone(),
        config.payload_limit,
        metrics,
    ))
    .max_decoding_message_size(8 * 1024 * 1024);
    let served = host
        .serve(
            service,
            axum::Router::new(),
            listeners,
            shutdown,
            config.server.shutdown_grace,
        )
        .await;
    log.shutdown().await;
    let _ = writer.await;
    replay_shutdown.cancel();
    if let Some(replay) = replay {
        let _ = replay.await;
    }
    served?;
    Ok(())
}

/// Starts the writer, waiting (with backoff) while the store is unreachable; `None` when
/// shutdown came first.
async fn start_log(
    store: Arc<dyn AuditStore>,
    signer: CheckpointSigner,
    settings: LogSettings,
    shutdown: &CancellationToken,
) -> Result<Option<(AuditLog, tokio::task::JoinHandle<()>)>, Error> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match AuditLog::start(Arc::clone(&store), signer.clone(), settings.clone()).await {
            Ok(started) => return Ok(Some(started)),
            Err(LogError::Store(error)) if error.is_unreachable() => {
                tracing::warn!(%error, ?backoff, "audit store unreachable at start; waiting for it");
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn load_signer(config: &Config) -> Result<CheckpointSigner, Error> {
    let signer = match &config.signing_key {
        Some(seed) => CheckpointSigner::from_hex(seed)?,
        None => {
            let path = config.signing_key_path();
            let (signer, generated) = CheckpointSigner::load_or_generate(&path)?;
            if generated {
                tracing::info!(path = %path.display(), public_key = %signer.public_key_hex(), "generated a new checkpoint signing key; keep it safe, verification needs it");
            }
            signer
        }
    };
    tracing::info!(public_key = %signer.public_key_hex(), "checkpoints are signed with this key");
    Ok(signer)
}
