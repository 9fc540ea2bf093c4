//! Reads one Prometheus text exposition body into the few series the detector judges.
//!
//! Parsing is delegated to `prometheus-parse`; this module only picks the request counter, the
//! latency histogram, resident memory and process start time, and drops values that cannot be
//! used (NaN, ±Inf, negative counters). It never fails: garbage yields an empty [`Exposition`].

use prometheus_parse::{Scrape, Value};

/// Counter of answered HTTP requests, labelled with the status code.
pub const REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram of request latency in seconds.
pub const REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Gauge of resident memory.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Gauge of the process start time (Unix seconds); a change means a restart.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// One series of the request counter.
#[derive(Clone, Debug, PartialEq)]
pub struct CounterSample {
    /// The series' labels, rendered in a stable order: the key across scrapes.
    pub series: String,
    pub value: f64,
    /// The series counts 5xx answers.
    pub server_error: bool,
}

/// One series of the latency histogram: cumulative counts by upper bound, sorted by bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSample {
    pub series: String,
    pub buckets: Vec<(f64, f64)>,
}

/// What one scrape says about a service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub requests: Vec<CounterSample>,
    pub latency: Vec<HistogramSample>,
    pub resident_memory_bytes: Option<f64>,
    pub process_start_time_seconds: Option<f64>,
    /// Samples the body held, of any metric.
    pub sample_count: usize,
    /// Samples of the series above that were dropped as unusable.
    pub rejected_samples: usize,
}

/// Parses `body`; never fails.
pub fn parse(body: &str) -> Exposition {
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = Scrape::parse(lines) else {
        return Exposition::default();
    };
    let mut out = Exposition {
        sample_count: scrape.samples.len(),
        ..Exposition::default()
    };
    for sample in scrape.samples {
        match (sample.metric.as_str(), sample.value) {
            (REQUESTS_TOTAL, Value::Counter(value) | Value::Untyped(value)) => {
                if !(value.is_finite() && value >= 0.0) {
                    out.rejected_samples += 1;
                    continue;
                }
                let status = sample
                    .labels
                    .get("status")
                    .or_else(|| sample.labels.get("code"))
                    .unwrap_or("");
                out.requests.push(CounterSample {
                    series: sample.labels.to_string(),
                    value,
                    server_error: status.len() == 3 && status.starts_with('5'),
                });
            }
            (REQUEST_DURATION, Value::Histogram(counts)) => {
                let mut buckets: Vec<(f64, f64)> = Vec::with_capacity(counts.len());
                for count in counts {
                    if count.less_than.is_nan() || !(count.count.is_finite() && count.count >= 0.0)
                    {
                        out.rejected_samples += 1;
                        continue;
                    }
                    buckets.push((count.less_than, count.count));
                }
                if buckets.is_empty() {
                    continue;
                }
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                buckets.dedup_by(|a, b| a.0 == b.0);
                out.latency.push(HistogramSample {
                    series: sample.labels.to_string(),
                    buckets,
                });
            }
            (RESIDENT_MEMORY, Value::Gauge(value) | Value::Untyped(value)) => {
                if value.is_finite() && value >= 0.0 {
                    out.resident_memory_bytes = Some(value);
                } else {
                    out.rejected_samples += 1;
                }
            }
            (PROCESS_START_TIME, Value::Gauge(value) | Value::Untyped(value)) => {
                if value.is_finite() && value > 0.0 {
                    out.process_start_time_seconds = Some(value);
                } else {
                    out.rejected_samples += 1;
                }
            }
            _ => {}
        }
    }
    // Stable order keeps evaluation deterministic whatever order the body used.
    out.requests.sort_by(|a, b| a.series.cmp(&b.series));
    out.latency.sort_by(|a, b| a.series.cmp(&b.series));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYMENT: &str = r#"# HELP http_requests_total HTTP requests answered.
# TYPE http_requests_total counter
http_requests_total{method="POST",route="/pay",status="200"} 85
http_requests_total{method="POST",route="/pay",status="500"} 15
http_requests_total{method="GET",route="/healthz",status="200"} 3
# HELP http_request_duration_seconds Time spent answering HTTP requests.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{route="/pay",le="0.005"} 90
http_request_duration_seconds_bucket{route="/pay",le="0.01"} 99
http_request_duration_seconds_bucket{route="/pay",le="+Inf"} 100
http_request_duration_seconds_sum{route="/pay"} 0.4
http_request_duration_seconds_count{route="/pay"} 100
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2e7
"#;

    #[test]
    fn reads_requests_histogram_and_memory() {
        let exposition = parse(PAYMENT);
        assert_eq!(exposition.requests.len(), 3);
        let errors: f64 = exposition
            .requests
            .iter()
            .filter(|s| s.server_error)
            .map(|s| s.value)
            .sum();
        assert_eq!(errors, 15.0);
        assert_eq!(exposition.latency.len(), 1);
        assert_eq!(
            exposition.latency[0].buckets,
            vec![(0.005, 90.0), (0.01, 99.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(exposition.resident_memory_bytes, Some(1.2e7));
        assert_eq!(exposition.rejected_samples, 0);
    }

    #[test]
    fn garbage_yields_nothing_and_does_not_panic() {
        for body in [
            "",
            "\u{0}\u{1}\u{2}",
            "{{{{ }}}} ===",
            "http_requests_total{status=\"500\"",
            "# TYPE x weird\nx{a=\"b\"} 1\n",
            "http_requests_total not-a-number",
        ] {
            let exposition = parse(body);
            assert!(exposition.requests.is_empty(), "{body:?}");
        }
    }

    #[test]
    fn drops_nan_infinite_and_negative_values() {
        let body = "# TYPE http_requests_total counter\n\
            http_requests_total{status=\"200\"} NaN\n\
            http_requests_total{status=\"500\"} +Inf\n\
            http_requests_total{status=\"201\"} -3\n\
            http_requests_total{status=\"202\"} 4\n\
            process_resident_memory_bytes -Inf\n";
        let exposition = parse(body);
        assert_eq!(exposition.requests.len(), 1);
        assert_eq!(exposition.requests[0].value, 4.0);
        assert_eq!(exposition.resident_memory_bytes, None);
        assert_eq!(exposition.rejected_samples, 4);
    }

    #[test]
    fn unknown_types_are_read_as_untyped() {
        let body =
            "# TYPE http_requests_total gaugehistogram\nhttp_requests_total{code=\"503\"} 2\n";
        let exposition = parse(body);
        assert_eq!(exposition.requests.len(), 1);
        assert!(exposition.requests[0].server_error);
    }
}
