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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::detector::ScrapeSettings;
    use crate::incident::{Detection, Severity, Signal, Source};
    use crate::metrics::DetectorMetrics;
    use crate::scrape::{MetricsSource, ScrapeError};
    use crate::target::TargetSpec;

    struct NoSource;

    impl MetricsSource for NoSource {
        fn fetch<'a>(&'a self, _: &'a TargetSpec) -> BoxFuture<'a, Result<String, ScrapeError>> {
            Box::pin(async { Err(ScrapeError::Request("unused".into())) })
        }
    }

    #[derive(Default)]
    struct FlakySink {
        refusals_left: AtomicUsize,
        calls: Mutex<Vec<(tokio::time::Instant, String)>>,
        acknowledged: Mutex<Vec<String>>,
    }

    impl IncidentSink for Arc<FlakySink> {
        fn report(&self, incident: Incident) -> BoxFuture<'static, Result<(), SinkError>> {
            let sink = self.clone();
            Box::pin(async move {
                sink.calls
                    .lock()
                    .unwrap()
                    .push((tokio::time::Instant::now(), incident.id.clone()));
                let refused = sink
                    .refusals_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused {
                    return Err(SinkError("UNIMPLEMENTED".into()));
                }
                sink.acknowledged.lock().unwrap().push(incident.id);
                Ok(())
            })
        }
    }

    fn detection(service: &str) -> Detection {
        Detection {
            service: service.into(),
            signal: Signal::ErrorRate,
            severity: Severity::Critical,
            observed_value: 0.2,
            threshold: 0.05,
            baseline: 0.0,
            window: Duration::from_secs(2),
            sample_count: 100,
            bad_sample_count: 20,
            first_bad_at: SystemTime::now(),
            labels: BTreeMap::new(),
            summary: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_growing_backoff_until_acknowledged_in_opening_order() {
        let shutdown = CancellationToken::new();
        let metrics = DetectorMetrics::register(&prometheus::Registry::new()).unwrap();
        let (detector, queue) = Detector::new(
            ScrapeSettings {
                interval: Duration::from_secs(1),
                detection: crate::config::DetectionConfig::default(),
            },
            Arc::new(NoSource),
            metrics,
            TaskTracker::new(),
            shutdown.clone(),
        );
        let sink = Arc::new(FlakySink {
            refusals_left: AtomicUsize::new(4),
            ..FlakySink::default()
        });
        detector.raise(Source::Scrape, detection("a"));
        detector.raise(Source::Scrape, detection("b"));
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(800),
        };
        let task = tokio::spawn(deliver(
            Arc::new(sink.clone()),
            detector.clone(),
            queue,
            backoff,
            shutdown.clone(),
        ));
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(60), async {
            while sink.acknowledged.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both acknowledged");
        let ids: Vec<String> = ["a", "b"]
            .iter()
            .map(|s| {
                detector.incidents(&crate::incident::IncidentQuery {
                    service: Some((*s).into()),
                    ..Default::default()
                })[0]
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(*sink.acknowledged.lock().unwrap(), ids, "opening order");
        let calls = sink.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 6, "four refusals, then two acknowledgements");
        assert!(
            calls[..5].iter().all(|(_, id)| *id == ids[0]),
            "head of line retried first"
        );
        // Waits are jittered within [d/2, d] of 200, 400, 800, 800 ms.
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
        for (gap, nominal) in gaps.iter().zip([200u64, 400, 800, 800]) {
            assert!(
                *gap >= Duration::from_millis(nominal / 2)
                    && *gap <= Duration::from_millis(nominal + 10),
                "{gaps:?}"
            );
        }
        assert!(started.elapsed() >= Duration::from_millis(1100));
        shutdown.cancel();
        task.await.unwrap();
    }
}
