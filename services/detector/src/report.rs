//! Reporting opened incidents to the orchestrator until it acknowledges them.
//!
//! Incidents are delivered in the order they opened. A failed call (any error: the orchestrator
//! is down, answers UNIMPLEMENTED, or times out) leaves the incident at the head of the queue and
//! is retried after a jittered, doubling backoff; nothing is dropped while the detector runs.
//!
//! An incident still open `repeat_interval` after its last acknowledgement is reported again,
//! as Alertmanager repeats a firing alert: the orchestrator answers with the saga it already has,
//! or, when that saga ended escalated or rolled back and a person has since resumed automation,
//! starts a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detector::Detector;
use crate::incident::{Incident, Status};

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

/// Delivers the incident ids arriving on `queue` until `shutdown`, and reports again every
/// incident still open `repeat_interval` after its last acknowledgement (`0s`: never).
pub async fn deliver(
    sink: Arc<dyn IncidentSink>,
    detector: Detector,
    mut queue: mpsc::UnboundedReceiver<String>,
    backoff: Backoff,
    repeat_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut acknowledged: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut delay = backoff.initial;
    loop {
        if pending.is_empty() {
            let next_repeat = acknowledged
                .values()
                .min()
                .filter(|_| !repeat_interval.is_zero())
                // An interval past the clock's range (`1000y`) means never.
                .and_then(|at| at.checked_add(repeat_interval));
            tokio::select! {
                () = shutdown.cancelled() => break,
                id = queue.recv() => match id {
                    Some(id) => pending.push_back(id),
                    None => break,
                },
                () = sleep_until_some(next_repeat) => {
                    let now = tokio::time::Instant::now();
                    acknowledged.retain(|id, at| {
                        let open = detector
                            .incident(id)
                            .is_some_and(|incident| incident.status == Status::Open);
                        if open && at.checked_add(repeat_interval).is_some_and(|due| due <= now) {
                            tracing::info!(incident_id = %id, "incident still open; reporting it again");
                            pending.push_back(id.clone());
                        }
                        open
                    });
                    continue;
                }
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
                acknowledged.insert(incident_id, tokio::time::Instant::now());
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

    fn detector_without_targets(
        shutdown: &CancellationToken,
    ) -> (Detector, mpsc::UnboundedReceiver<String>) {
        let metrics = DetectorMetrics::register(&prometheus::Registry::new()).unwrap();
        Detector::new(
            ScrapeSettings {
                interval: Duration::from_secs(1),
                detection: crate::config::DetectionConfig::default(),
            },
            Arc::new(NoSource),
            metrics,
            TaskTracker::new(),
            shutdown.clone(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_growing_backoff_until_acknowledged_in_opening_order() {
        let shutdown = CancellationToken::new();
        let (detector, queue) = detector_without_targets(&shutdown);
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
            Duration::ZERO,
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

    #[tokio::test(start_paused = true)]
    async fn an_incident_still_open_is_reported_again_each_repeat_interval_until_it_resolves() {
        let shutdown = CancellationToken::new();
        let (detector, queue) = detector_without_targets(&shutdown);
        let sink = Arc::new(FlakySink::default());
        detector.raise(Source::Scrape, detection("a"));
        let repeat = Duration::from_secs(10);
        let task = tokio::spawn(deliver(
            Arc::new(sink.clone()),
            detector.clone(),
            queue,
            Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_millis(800),
            },
            repeat,
            shutdown.clone(),
        ));
        let reports = || sink.acknowledged.lock().unwrap().len();
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(60), async {
            while reports() < 3 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("reported, then reported again twice");
        let calls = sink.calls.lock().unwrap().clone();
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps.iter()
                .all(|gap| *gap >= repeat && *gap < repeat + Duration::from_secs(1)),
            "one report per repeat interval: {gaps:?}"
        );
        assert!(started.elapsed() >= repeat * 2);

        detector.release(Source::Scrape, "a", Signal::ErrorRate);
        let after_release = reports();
        tokio::time::sleep(repeat * 3).await;
        assert_eq!(
            reports(),
            after_release,
            "a resolved incident is not reported again"
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
