//! The detector's own Prometheus metrics, registered on the host's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters of scrapes, incidents and deliveries.
#[derive(Clone, Debug)]
pub struct DetectorMetrics {
    pub scrapes: IntCounterVec,
    pub scrape_errors: IntCounterVec,
    pub incidents_opened: IntCounterVec,
    pub incidents_resolved: IntCounterVec,
    pub open_incidents: IntGauge,
    pub reports_acknowledged: IntCounter,
    pub report_failures: IntCounter,
    pub webhook_alerts: IntCounterVec,
}

impl DetectorMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        // The registry already carries `service="detector"`; the watched service is `target`.
        let metrics = Self {
            scrapes: IntCounterVec::new(
                Opts::new("detector_scrapes_total", "Scrapes attempted, by target."),
                &["target"],
            )?,
            scrape_errors: IntCounterVec::new(
                Opts::new(
                    "detector_scrape_errors_total",
                    "Scrapes that failed, by target and reason.",
                ),
                &["target", "reason"],
            )?,
            incidents_opened: IntCounterVec::new(
                Opts::new("detector_incidents_opened_total", "Incidents opened."),
                &["signal", "source"],
            )?,
            incidents_resolved: IntCounterVec::new(
                Opts::new("detector_incidents_resolved_total", "Incidents resolved."),
                &["signal"],
            )?,
            open_incidents: IntGauge::new("detector_open_incidents", "Incidents open now.")?,
            reports_acknowledged: IntCounter::new(
                "detector_reports_acknowledged_total",
                "Incidents the orchestrator acknowledged.",
            )?,
            report_failures: IntCounter::new(
                "detector_report_failures_total",
                "ReportIncident calls that failed and will be retried.",
            )?,
            webhook_alerts: IntCounterVec::new(
                Opts::new(
                    "detector_webhook_alerts_total",
                    "Alertmanager alerts received, by outcome.",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(metrics.scrapes.clone()))?;
        registry.register(Box::new(metrics.scrape_errors.clone()))?;
        registry.register(Box::new(metrics.incidents_opened.clone()))?;
        registry.register(Box::new(metrics.incidents_resolved.clone()))?;
        registry.register(Box::new(metrics.open_incidents.clone()))?;
        registry.register(Box::new(metrics.reports_acknowledged.clone()))?;
        registry.register(Box::new(metrics.report_failures.clone()))?;
        registry.register(Box::new(metrics.webhook_alerts.clone()))?;
        Ok(metrics)
    }
}
