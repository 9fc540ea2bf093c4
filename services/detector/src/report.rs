//! Reporting opened incidents to the orchestrator until it acknowledges them.
//!
//! Incidents are delivered in the order they opened. A failed call (any error: the orchestrator
//! is down, answers UNIMPLEMENTED, or times out) leaves the incident at the head of the queue and
//! is retried after a jittered, doubling backoff; nothing is dropped while the detector runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detector::Detector;
use crate::incident::Incident;

/// Why a report was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("report not acknowledged: {0}")]
pub struct SinkError(pub String);

/// Where incidents are reported.
pub trait IncidentSink: Send + Sync + 'static {
    /// Resolves `Ok` once the receiver acknowledged the incident.
    fn report(&self, incident: Incident) -> BoxFuture<'static, Result<(), SinkError>>;
}

/// Retry timing.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Full jitter within the upper half: `[d/2, d]` so retries spread without collapsing to 0.
    fn jittered(delay: Duration) -> Duration {
        let half = delay / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Delivers the incident ids arriving on `queue` until `shutdown`.
pub async fn deliver(
    sink: Arc<dyn IncidentSink>,
    detector: Detector,
    mut queue: mpsc::UnboundedReceiver<String>,
    backoff: Backoff,
    shutdown: CancellationToken,
) {
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut delay = backoff.initial;
    loop {
        if pending.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                id = queue.recv() => match id {
                    Some(id) => pending.push_back(id),
                    None => break,
                },
            }
        }
        while let Ok(id) = queue.try_recv() {
            pending.push_back(id);
        }
        let Some(id) = pending.front() else { continue };
        let Some(incident) = detector.incident(id) else {
            pending.pop_front();
            continue;
        };
        let incident_id = incident.id.clone();
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            result = sink.report(incident) => result,
        };
        match result {
            Ok(()) => {
                tracing::info!(%incident_id, "incident acknowledged by the orchestrator");
                detector.metrics().reports_acknowledged.inc();
                pending.pop_front();
                delay = backoff.initial;
            }
            Err(error) => {
                detector.metrics().report_failures.inc();
                let wait = Backoff::jittered(delay);
                tracing::warn!(%incident_id, %error, retry_in = ?wait, queued = pending.len(), "incident not acknowledged; will retry");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(backoff.max);
            }
        }
    }
    if !pending.is_empty() {
        tracing::warn!(
            unreported = pending.len(),
            "shutting down with incidents the orchestrator has not acknowledged"
        );
    }
}
