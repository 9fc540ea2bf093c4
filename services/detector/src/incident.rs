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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// How often a source said the signal was healthy and then bad again within its resolve
    /// hold: each such flap kept this incident open instead of opening a new one.
    pub flaps: u32,
}

impl Incident {
    /// Keeps the `flaps` label in step with the count, so every reader of the labels sees it.
    fn flaps_label(&mut self) {
        self.labels
            .insert(FLAPS_LABEL.to_owned(), self.flaps.to_string());
    }
}

/// The label that carries [`Incident::flaps`] once the incident has flapped.
pub const FLAPS_LABEL: &str = "flaps";

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
    /// Releases waiting out their hold, by fingerprint and source, with the hold's token.
    held: HashMap<(String, Source), u64>,
    next_hold: u64,
}

impl IncidentBook {
    pub fn new(resolved_kept: usize) -> Self {
        Self {
            incidents: HashMap::new(),
            open: HashMap::new(),
            order: VecDeque::new(),
            resolved_kept,
            held: HashMap::new(),
            next_hold: 0,
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
                // Bad again while its release waits out the hold: a flap of this incident.
                self.held.remove(&(fingerprint, source))?;
                incident.flaps += 1;
                incident.flaps_label();
                return Some(IncidentEvent {
                    kind: EventKind::Updated,
                    incident: incident.clone(),
                });
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
            flaps: 0,
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
        self.held.remove(&(fingerprint.clone(), source));
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

    /// `source` says the signal is healthy, but its release waits a hold so that a flapping
    /// source keeps one incident. Returns the token for [`IncidentBook::release_held`] when a
    /// hold starts; `None` when the source holds no open incident of the fingerprint or a hold
    /// already runs (a repeated "healthy" does not extend it).
    pub fn hold_release(&mut self, source: Source, service: &str, signal: Signal) -> Option<u64> {
        let fingerprint = fingerprint(service, signal);
        let id = self.open.get(&fingerprint)?;
        let (_, holders) = self.incidents.get(id)?;
        if !holders.holds(source) {
            return None;
        }
        let key = (fingerprint, source);
        if self.held.contains_key(&key) {
            return None;
        }
        self.next_hold += 1;
        self.held.insert(key, self.next_hold);
        Some(self.next_hold)
    }

    /// The hold `token` has passed: releases for `source` unless the signal went bad again
    /// since (which ended the hold) or a newer hold runs.
    pub fn release_held(
        &mut self,
        source: Source,
        service: &str,
        signal: Signal,
        token: u64,
        now: SystemTime,
    ) -> Option<IncidentEvent> {
        let key = (fingerprint(service, signal), source);
        if self.held.get(&key) != Some(&token) {
            return None;
        }
        self.release(source, service, signal, now)
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
    fn a_held_release_is_cancelled_by_a_flap_and_lands_only_with_its_own_token() {
        let mut book = IncidentBook::new(10);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let alert = Source::Alertmanager;
        let opened = book
            .raise(alert, detection("pay", Signal::Alert, t), t)
            .unwrap();
        let first = book.hold_release(alert, "pay", Signal::Alert).unwrap();
        assert_eq!(
            book.hold_release(alert, "pay", Signal::Alert),
            None,
            "a repeated resolve does not start a second hold"
        );
        assert_eq!(book.open().len(), 1, "held, not released");
        let flapped = book
            .raise(alert, detection("pay", Signal::Alert, t), t)
            .unwrap();
        assert_eq!(flapped.kind, EventKind::Updated);
        assert_eq!(flapped.incident.id, opened.incident.id);
        assert_eq!(flapped.incident.flaps, 1);
        assert_eq!(flapped.incident.labels.get(FLAPS_LABEL).unwrap(), "1");
        assert!(
            book.release_held(alert, "pay", Signal::Alert, first, t)
                .is_none(),
            "the flap ended the first hold"
        );
        let second = book.hold_release(alert, "pay", Signal::Alert).unwrap();
        assert!(
            book.release_held(alert, "pay", Signal::Alert, first, t)
                .is_none()
        );
        let resolved = book
            .release_held(alert, "pay", Signal::Alert, second, t)
            .unwrap();
        assert_eq!(resolved.kind, EventKind::Resolved);
        assert_eq!(resolved.incident.flaps, 1);
        assert_eq!(book.list(&IncidentQuery::default()).len(), 1);
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
