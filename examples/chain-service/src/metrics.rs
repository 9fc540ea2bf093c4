//! Prometheus metrics for the service, rendered in the text exposition format on `GET /metrics`.
//!
//! - `http_requests_total{route,method,status}`: a counter of answered requests;
//! - `http_request_duration_seconds{route}`: a histogram of handler latency;
//! - `process_resident_memory_bytes`: a gauge read from `/proc/self/statm` at scrape time;
//! - `process_start_time_seconds`: a gauge of when the metrics were created (Unix seconds), so a
//!   restart shows as a new value.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::AppState;

/// The route label used for requests that matched no route, so unknown paths cannot blow up the
/// label cardinality.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Page size assumed when converting `/proc/self/statm` pages to bytes.
const PAGE_SIZE_BYTES: u64 = 4096;

/// The service's metric registry and the collectors registered in it.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    resident_memory: IntGauge,
}

impl Metrics {
    /// Creates the collectors and registers them in a fresh registry.
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered."),
            &["route", "method", "status"],
        )
        .expect("static counter definition is valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time spent answering HTTP requests.",
            ),
            &["route"],
        )
        .expect("static histogram definition is valid");
        let resident_memory = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .expect("static gauge definition is valid");
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
        )
        .expect("static gauge definition is valid");
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        );

        let registry = Registry::new();
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(resident_memory.clone()),
            Box::new(start_time.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique within the registry");
        }
        Metrics {
            registry,
            requests,
            duration,
            resident_memory,
        }
    }

    /// Records one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Resident set size of this process, from the second field of `/proc/self/statm` (Linux only).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE_BYTES)
}

/// Middleware that counts every request and times it, labelled by its matched route.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .observe(&route, &method, response.status().as_u16(), seconds);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_observed_requests() {
        let metrics = Metrics::new();
        metrics.observe("/work", "POST", 502, 0.003);
        let text = metrics.render();
        assert!(
            text.contains(r#"http_requests_total{method="POST",route="/work",status="502"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"http_request_duration_seconds_count{route="/work"} 1"#));
        assert!(text.contains("process_start_time_seconds 1"), "{text}");
    }

    #[test]
    fn reads_resident_memory() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().unwrap() > 0);
        }
    }
}
