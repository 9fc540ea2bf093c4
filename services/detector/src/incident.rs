//! Incidents and the book that keeps them: one open incident per fingerprint (service + signal),
//! opened by the scrape rules or by Alertmanager, resolved when every source that raised it has
//! released it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

/// What kind of signal an incident is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    ErrorRate,
    LatencyP99,
    MemoryGrowth,
    Restarts,
    TargetDown,
    Alert,
}

impl Signal {
    /// The name used in fingerprints, labels and series.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::ErrorRate => "error_rate",
            Signal::LatencyP99 => "latency_p99",
            Signal::MemoryGrowth => "memory_growth",
            Signal::Restarts => "restarts",
            Signal::TargetDown => "target_down",
            Signal::Alert => "alert",
        }
    }

    /// Reads a signal name as alert rules write it; anything unknown is a plain alert.
    pub fn from_label(label: &str) -> Self {
        match label.trim().to_ascii_lowercase().as_str() {
            "error_rate" | "errors" | "error-rate" => Signal::ErrorRate,
            "latency_p99" | "latency" | "latency-p99" => Signal::LatencyP99,
            "memory_growth" | "memory" | "memory_leak" => Signal::MemoryGrowth,
            "restarts" | "restart" | "crash_loop" => Signal::Restarts,
            "target_down" | "up" | "down" => Signal::TargetDown,
            _ => Signal::Alert,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn from_label(label: &str) -> Option<Self> {
        match label.trim().to_ascii_lowercase().as_str() {
            "info" | "informational" | "none" => Some(Severity::Info),
            "warning" | "warn" | "minor" => Some(Severity::Warning),
            "critical" | "page" | "error" | "major" | "high" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    Resolved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Scrape,
    Alertmanager,
}

/// `service/signal`: the identity that deduplicates incidents.
pub fn fingerprint(service: &str, signal: Signal) -> String {
    format!("{service}/{}", signal.as_str())
}

/// A failing service, as the detector saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: String,
    pub fingerprint: String,
    pub service: String,
    pub signal: Signal,
    pub severity: Severity,
    pub status: Status,
    pub source: Source,
    pub observed_value: f64,
    pub threshold: f64,
    pub baseline: f64,
    pub window: Duration,
    pub sample_count: u64,
    pub bad_sample_count: u64,
    pub first_bad_at: SystemTime,
    pub opened_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
}

/// What a source saw when it decided a signal is bad.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub service: String,
    pub signal: Signal,
    pub severity: Severity,
    pub observed_value: f64,
    pub threshold: f64,
    pub baseline: f64,
    pub window: Duration,
    pub sample_count: u64,
    pub bad_sample_count: u64,
    pub first_bad_at: SystemTime,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
}

/// How an incident changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Opened,
    Updated,
    Resolved,
}

/// An incident as it is after a change.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentEvent {
    pub kind: EventKind,
    pub incident: Incident,
}

/// Which sources still hold an open incident.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Holders {
    scrape: bool,
    alert: bool,
}

impl Holders {
    fn set(&mut self, source: Source, held: bool) {
        match source {
            Source::Scrape => self.scrape = held,
            Source::Alertmanager => self.alert = held,
        }
    }

    fn holds(self, source: Source) -> bool {
        match source {
            Source::Scrape => self.scrape,
            Source::Alertmanager => self.alert,
        }
    }

    fn any(self) -> bool {
        self.scrape || self.alert
    }
}

/// Filter for listing incidents.
#[derive(Clone, Debug, Default)]
pub struct IncidentQuery {
    pub service: Option<String>,
    pub status: Option<Status>,
    pub limit: Option<usize>,
}

/// Every incident the detector knows, with the open ones indexed by fingerprint.
#[derive(Debug)]
pub struct IncidentBook {
    incidents: HashMap<String, (Incident, Holders)>,
    open: HashMap<String, String>,
    /// Incident ids in opening order, for listing and for forgetting old resolved ones.
    order: VecDeque<String>,
    resolved_kept: usize,
}

impl IncidentBook {
    pub fn new(resolved_kept: usize) -> Self {
        Self {
            incidents: HashMap::new(),
            open: HashMap::new(),
            order: VecDeque::new(),
            resolved_kept,
        }
    }

    /// `source` says the signal is bad: opens an incident, or joins the open one of the same
    /// fingerprint. Returns the event to publish, if anything changed.
    pub fn raise(
        &mut self,
        source: Source,
        detection: Detection,
        now: SystemTime,
    ) -> Option<IncidentEvent> {
        let fingerprint = fingerprint(&detection.service, detection.signal);
        if let Some(id) = self.open.get(&fingerprint) {
            let (incident, holders) = self.incidents.get_mut(id)?;
            if holders.holds(source) {
                return None;
            }
            holders.set(source, true);
            for (key, value) in detection.labels {
                incident.labels.entry(key).or_insert(value);
            }
            if detection.first_bad_at < incident.first_bad_at {
                incident.first_bad_at = detection.first_bad_at;
            }
            if detection.severity as u8 > incident.severity as u8 {
                incident.severity = detection.severity;
            }
            return Some(IncidentEvent {
                kind: EventKind::Updated,
                incident: incident.clone(),
            });
        }
        let incident = Incident {
            id: uuid::Uuid::now_v7().to_string(),
            fingerprint: fingerprint.clone(),
            service: detection.service,
            signal: detection.signal,
            severity: detection.severity,
            status: Status::Open,
            source,
            observed_value: detection.observed_value,
            threshold: detection.threshold,
            baseline: detection.baseline,
            window: detection.window,
            sample_count: detection.sample_count,
            bad_sample_count: detection.bad_sample_count,
            first_bad_at: detection.first_bad_at.min(now),
            opened_at: now,
            resolved_at: None,
            labels: detection.labels,
            summary: detection.summary,
        };
        let mut holders = Holders::default();
        holders.set(source, true);
        self.open.insert(fingerprint, incident.id.clone());
        self.order.push_back(incident.id.clone());
        self.incidents
            .insert(incident.id.clone(), (incident.clone(), holders));
        self.forget_old_resolved();
        Some(IncidentEvent {
            kind: EventKind::Opened,
            incident,
        })
    }

    /// `source` says the signal is healthy again; resolves the incident once no source holds it.
    pub fn release(
        &mut self,
        source: Source,
        service: &str,
        signal: Signal,
        now: SystemTime,
    ) -> Option<IncidentEvent> {
        let fingerprint = fingerprint(service, signal);
        let id = self.open.get(&fingerprint)?.clone();
        let (incident, holders) = self.incidents.get_mut(&id)?;
        if !holders.holds(source) {
            return None;
        }
        holders.set(source, false);
        if holders.any() {
            return None;
        }
        incident.status = Status::Resolved;
        incident.resolved_at = Some(now);
        let event = IncidentEvent {
            kind: EventKind::Resolved,
            incident: incident.clone(),
        };
        self.open.remove(&fingerprint);
        Some(event)
    }

    pub fn get(&self, id: &str) -> Option<Incident> {
        self.incidents.get(id).map(|(incident, _)| incident.clone())
    }

    /// Open incidents, oldest first.
    pub fn open(&self) -> Vec<Incident> {
        self.list(&IncidentQuery {
            status: Some(Status::Open),
            ..IncidentQuery::default()
        })
    }

    /// Incidents matching `query`, newest first.
    pub fn list(&self, query: &IncidentQuery) -> Vec<Incident> {
        let mut out: Vec<Incident> = self
            .order
            .iter()
            .rev()
            .filter_map(|id| self.incidents.get(id))
            .map(|(incident, _)| incident)
            .filter(|i| query.service.as_ref().is_none_or(|s| *s == i.service))
            .filter(|i| query.status.is_none_or(|s| s == i.status))
            .take(query.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        if query.status == Some(Status::Open) && query.limit.is_none() {
            out.reverse();
        }
        out
    }

    fn forget_old_resolved(&mut self) {
        let resolved = self.order.len() - self.open.len();
        if resolved <= self.resolved_kept {
            return;
        }
        let mut excess = resolved - self.resolved_kept;
        let incidents = &mut self.incidents;
        self.order.retain(|id| {
            if excess == 0 {
                return true;
            }
            match incidents.get(id) {
                Some((incident, _)) if incident.status == Status::Resolved => {
                    incidents.remove(id);
                    excess -= 1;
                    false
                }
                _ => true,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(service: &str, signal: Signal, first_bad_at: SystemTime) -> Detection {
        Detection {
            service: service.into(),
            signal,
            severity: Severity::Critical,
            observed_value: 0.15,
            threshold: 0.05,
            baseline: 0.0,
            window: Duration::from_secs(2),
            sample_count: 100,
            bad_sample_count: 15,
            first_bad_at,
            labels: BTreeMap::new(),
            summary: "errors".into(),
        }
    }

    #[test]
    fn scrape_and_alert_of_one_fingerprint_make_one_incident_resolved_when_both_release() {
        let mut book = IncidentBook::new(10);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let opened = book
            .raise(Source::Scrape, detection("pay", Signal::ErrorRate, t0), t0)
            .unwrap();
        assert_eq!(opened.kind, EventKind::Opened);
        let joined = book
            .raise(
                Source::Alertmanager,
                detection("pay", Signal::ErrorRate, t0 - Duration::from_secs(5)),
                t0,
            )
            .unwrap();
        assert_eq!(joined.kind, EventKind::Updated);
        assert_eq!(joined.incident.id, opened.incident.id);
        assert_eq!(joined.incident.first_bad_at, t0 - Duration::from_secs(5));
        assert!(
            book.raise(
                Source::Alertmanager,
                detection("pay", Signal::ErrorRate, t0),
                t0
            )
            .is_none(),
            "a repeated alert changes nothing"
        );
        assert!(
            book.release(Source::Scrape, "pay", Signal::ErrorRate, t0)
                .is_none()
        );
        let resolved = book
            .release(Source::Alertmanager, "pay", Signal::ErrorRate, t0)
            .unwrap();
        assert_eq!(resolved.kind, EventKind::Resolved);
        assert_eq!(book.open().len(), 0);
        let reopened = book
            .raise(Source::Scrape, detection("pay", Signal::ErrorRate, t0), t0)
            .unwrap();
        assert_ne!(reopened.incident.id, opened.incident.id);
    }

    #[test]
    fn forgets_the_oldest_resolved_incidents_beyond_the_limit() {
        let mut book = IncidentBook::new(2);
        let t = SystemTime::UNIX_EPOCH;
        for _ in 0..5 {
            book.raise(Source::Scrape, detection("pay", Signal::ErrorRate, t), t);
            book.release(Source::Scrape, "pay", Signal::ErrorRate, t);
        }
        book.raise(Source::Scrape, detection("pay", Signal::ErrorRate, t), t);
        assert_eq!(book.list(&IncidentQuery::default()).len(), 3);
        assert_eq!(book.open().len(), 1);
    }
}
