//! The detector's core: the watched targets and their scrape loops, the incident book, the event
//! broadcast that `WatchIncidents` follows, and the queue of incidents to report.
//!
//! Every scrape loop is a task on the detector's [`TaskTracker`], stopped by its own token (when
//! the target is removed or replaced) or by the shutdown token.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DetectionConfig;
use crate::exposition;
use crate::incident::{
    Detection, EventKind, Incident, IncidentBook, IncidentEvent, IncidentQuery, Signal, Source,
};
use crate::metrics::DetectorMetrics;
use crate::monitor::{ServiceMonitor, Verdict};
use crate::scrape::MetricsSource;
use crate::target::{TargetHealth, TargetSpec, TargetView};

/// Events buffered per `WatchIncidents` subscriber before it counts as lagging.
const EVENT_BUFFER: usize = 1024;

/// Bodies up to this size are parsed on the scrape task itself; larger ones on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// The series `QuerySeries` knows.
pub const SERIES_NAMES: [&str; 5] = [
    "error_rate",
    "request_rate",
    "latency_p99",
    "memory_bytes",
    "up",
];

/// One named series of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(SystemTime, f64)>,
}

/// What `QuerySeries` asks for.
#[derive(Clone, Debug, Default)]
pub struct SeriesQuery {
    pub service: String,
    pub names: Vec<String>,
    pub start: Option<SystemTime>,
    pub end: Option<SystemTime>,
    pub step: Option<Duration>,
}

/// Settings of the scrape loops.
#[derive(Clone, Debug)]
pub struct ScrapeSettings {
    pub interval: Duration,
    pub detection: DetectionConfig,
}

struct Watched {
    spec: TargetSpec,
    health: TargetHealth,
    monitor: ServiceMonitor,
    cancel: CancellationToken,
    generation: u64,
}

struct Inner {
    settings: ScrapeSettings,
    source: Arc<dyn MetricsSource>,
    targets: Mutex<HashMap<String, Watched>>,
    incidents: Mutex<IncidentBook>,
    events: broadcast::Sender<IncidentEvent>,
    to_report: mpsc::UnboundedSender<String>,
    metrics: DetectorMetrics,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    generations: AtomicU64,
}

/// A handle to the detector; cheap to clone.
#[derive(Clone)]
pub struct Detector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").finish_non_exhaustive()
    }
}

/// Locks a mutex; a poisoned lock still holds consistent data because no code panics while
/// holding one, so the guard is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Detector {
    /// Creates the detector. The receiver yields the ids of opened incidents to report.
    pub fn new(
        settings: ScrapeSettings,
        source: Arc<dyn MetricsSource>,
        metrics: DetectorMetrics,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (to_report, reports) = mpsc::unbounded_channel();
        let resolved_kept = settings.detection.resolved_kept;
        let inner = Inner {
            settings,
            source,
            targets: Mutex::new(HashMap::new()),
            incidents: Mutex::new(IncidentBook::new(resolved_kept)),
            events,
            to_report,
            metrics,
            tasks,
            shutdown,
            generations: AtomicU64::new(0),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            reports,
        )
    }

    /// Starts watching `spec`, replacing any target of the same service.
    pub fn add_target(&self, spec: TargetSpec) -> TargetView {
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = self.inner.shutdown.child_token();
        let monitor = ServiceMonitor::new(
            spec.service.clone(),
            spec.labels.clone(),
            &self.inner.settings.detection,
        );
        let watched = Watched {
            spec: spec.clone(),
            health: TargetHealth::default(),
            monitor,
            cancel: cancel.clone(),
            generation,
        };
        if let Some(previous) = lock(&self.inner.targets).insert(spec.service.clone(), watched) {
            previous.cancel.cancel();
        }
        tracing::info!(service = %spec.service, url = spec.url(), "watching target");
        let detector = self.clone();
        let target = spec.clone();
        self.inner
            .tasks
            .spawn(async move { detector.scrape_loop(target, generation, cancel).await });
        TargetView {
            spec,
            health: TargetHealth::default(),
        }
    }

    /// Stops watching `service`; open incidents stay as they are.
    pub fn remove_target(&self, service: &str) -> bool {
        match lock(&self.inner.targets).remove(service) {
            Some(watched) => {
                watched.cancel.cancel();
                tracing::info!(%service, "stopped watching target");
                true
            }
            None => false,
        }
    }

    /// Every watched target with its last scrape outcome, by service name.
    pub fn targets(&self) -> Vec<TargetView> {
        let mut views: Vec<TargetView> = lock(&self.inner.targets)
            .values()
            .map(|w| TargetView {
                spec: w.spec.clone(),
                health: w.health.clone(),
            })
            .collect();
        views.sort_by(|a, b| a.spec.service.cmp(&b.spec.service));
        views
    }

    async fn scrape_loop(self, target: TargetSpec, generation: u64, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.inner.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let at = SystemTime::now();
            let result = tokio::select! {
                () = cancel.cancelled() => break,
                result = self.inner.source.fetch(&target) => result,
            };
            let service = target.service.as_str();
            self.inner
                .metrics
                .scrapes
                .with_label_values(&[service])
                .inc();
            let outcome = match result {
                Ok(body) if body.len() <= INLINE_PARSE_BYTES => Ok(exposition::parse(&body)),
                // Large bodies take milliseconds to parse: keep them off the async workers.
                Ok(body) => tokio::task::spawn_blocking(move || exposition::parse(&body))
                    .await
                    .map_err(|error| format!("parsing the scrape body failed: {error}")),
                Err(error) => {
                    self.inner
                        .metrics
                        .scrape_errors
                        .with_label_values(&[service, error.reason()])
                        .inc();
                    tracing::debug!(%service, %error, "scrape failed");
                    Err(error.to_string())
                }
            };
            self.apply_scrape(service, generation, at, outcome);
        }
    }

    /// Feeds one scrape result to the service's monitor and acts on its verdicts.
    pub(crate) fn apply_scrape(
        &self,
        service: &str,
        generation: u64,
        at: SystemTime,
        outcome: Result<exposition::Exposition, String>,
    ) {
        let verdicts = {
            let mut targets = lock(&self.inner.targets);
            let Some(watched) = targets.get_mut(service) else {
                return;
            };
            if watched.generation != generation {
                return;
            }
            watched.health.last_scrape_at = Some(at);
            match outcome {
                Ok(exposition) => {
                    watched.health.up = true;
                    watched.health.last_error = None;
                    watched.monitor.observe(at, &exposition)
                }
                Err(error) => {
                    watched.health.up = false;
                    watched.health.last_error = Some(error);
                    watched.monitor.observe_failure(at)
                }
            }
        };
        for verdict in verdicts {
            match verdict {
                Verdict::Raise(detection) => self.raise(Source::Scrape, detection),
                Verdict::Release(signal) => self.release(Source::Scrape, service, signal),
            }
        }
    }

    /// `source` says a signal is bad.
    pub fn raise(&self, source: Source, detection: Detection) {
        let now = SystemTime::now();
        let mut book = lock(&self.inner.incidents);
        let Some(event) = book.raise(source, detection, now) else {
            return;
        };
        if event.kind == EventKind::Opened {
            let incident = &event.incident;
            tracing::warn!(
                incident_id = %incident.id,
                service = %incident.service,
                signal = incident.signal.as_str(),
                observed = incident.observed_value,
                threshold = incident.threshold,
                "incident opened"
            );
            self.inner
                .metrics
                .incidents_opened
                .with_label_values(&[incident.signal.as_str(), source_label(source)])
                .inc();
            self.inner.metrics.open_incidents.inc();
            // The receiver lives as long as the reporter; after shutdown nothing is delivered.
            let _ = self.inner.to_report.send(incident.id.clone());
        }
        // No subscriber is not an error.
        let _ = self.inner.events.send(event);
    }

    /// `source` says a signal is healthy again.
    pub fn release(&self, source: Source, service: &str, signal: Signal) {
        let now = SystemTime::now();
        let mut book = lock(&self.inner.incidents);
        let event = book.release(source, service, signal, now);
        self.publish_release(event, service, signal);
    }

    /// `source` says a signal is healthy again, but the incident stays open for `hold` first:
    /// when the source says it is bad again within the hold, the incident counts a flap and
    /// stays the one open incident. A zero hold releases at once.
    pub fn release_after(&self, source: Source, service: &str, signal: Signal, hold: Duration) {
        if hold.is_zero() {
            self.release(source, service, signal);
            return;
        }
        let Some(token) = lock(&self.inner.incidents).hold_release(source, service, signal) else {
            return;
        };
        tracing::debug!(%service, signal = signal.as_str(), ?hold, "release held");
        let detector = self.clone();
        let service = service.to_owned();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(hold) => {
                    let now = SystemTime::now();
                    let mut book = lock(&detector.inner.incidents);
                    let event = book.release_held(source, &service, signal, token, now);
                    detector.publish_release(event, &service, signal);
                }
            }
        });
    }

    /// Logs, counts and broadcasts a resolution; called with the incident book locked, so that
    /// [`Detector::subscribe`] never misses or doubles it.
    fn publish_release(&self, event: Option<IncidentEvent>, service: &str, signal: Signal) {
        let Some(event) = event else {
            return;
        };
        tracing::info!(incident_id = %event.incident.id, %service, signal = signal.as_str(), "incident resolved");
        self.inner
            .metrics
            .incidents_resolved
            .with_label_values(&[signal.as_str()])
            .inc();
        self.inner.metrics.open_incidents.dec();
        let _ = self.inner.events.send(event);
    }

    pub fn incident(&self, id: &str) -> Option<Incident> {
        lock(&self.inner.incidents).get(id)
    }

    pub fn incidents(&self, query: &IncidentQuery) -> Vec<Incident> {
        lock(&self.inner.incidents).list(query)
    }

    /// The open incidents and a receiver of every later event, taken atomically so that no
    /// event is lost or doubled between the two.
    pub fn subscribe(&self) -> (Vec<Incident>, broadcast::Receiver<IncidentEvent>) {
        let book = lock(&self.inner.incidents);
        let receiver = self.inner.events.subscribe();
        (book.open(), receiver)
    }

    pub fn metrics(&self) -> &DetectorMetrics {
        &self.inner.metrics
    }

    /// The evaluated series of a watched service; `None` when the service is not watched.
    pub fn series(&self, query: &SeriesQuery) -> Option<Vec<SeriesData>> {
        let targets = lock(&self.inner.targets);
        let watched = targets.get(&query.service)?;
        let wanted = |name: &str| query.names.is_empty() || query.names.iter().any(|n| n == name);
        let mut series: Vec<SeriesData> = SERIES_NAMES
            .iter()
            .filter(|name| wanted(name))
            .map(|name| SeriesData {
                name: (*name).to_owned(),
                labels: watched.spec.labels.clone(),
                points: Vec::new(),
            })
            .collect();
        let mut last_kept: Option<SystemTime> = None;
        for point in watched.monitor.window().points() {
            let Some(at) = point.at else { continue };
            if query.start.is_some_and(|start| at < start) || query.end.is_some_and(|end| at > end)
            {
                continue;
            }
            if let (Some(step), Some(last)) = (query.step, last_kept)
                && at.duration_since(last).unwrap_or_default() < step
            {
                continue;
            }
            last_kept = Some(at);
            for s in &mut series {
                let value = match s.name.as_str() {
                    "error_rate" => point.error_rate,
                    "request_rate" => Some(point.request_rate),
                    "latency_p99" => point.latency_p99,
                    "memory_bytes" => point.memory_bytes,
                    "up" => Some(1.0 - point.down),
                    _ => None,
                };
                if let Some(value) = value {
                    s.points.push((at, value));
                }
            }
        }
        Some(series)
    }
}

fn source_label(source: Source) -> &'static str {
    match source {
        Source::Scrape => "scrape",
        Source::Alertmanager => "alertmanager",
    }
}
