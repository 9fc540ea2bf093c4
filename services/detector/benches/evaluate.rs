//! Parse-and-evaluate throughput: one `/metrics` body of a payment-like service (many routes and
//! status codes, a latency histogram, memory) parsed and fed to a `ServiceMonitor`.
//!
//! Run with `cargo bench -p selfheal-detector --bench evaluate`; throughput is reported in
//! samples per second (one sample = one line of exposition text with a value).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use selfheal_detector::DetectionConfig;
use selfheal_detector::exposition;
use selfheal_detector::monitor::ServiceMonitor;

const ROUTES: usize = 20;
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// The body of scrape number `step`: counters grow with `step`, 15% of /pay answers fail.
fn body(step: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP http_requests_total HTTP requests answered.\n# TYPE http_requests_total counter\n",
    );
    for route in 0..ROUTES {
        for (method, status, share) in [
            ("GET", "200", 80),
            ("POST", "200", 85),
            ("POST", "500", 15),
            ("POST", "400", 2),
        ] {
            out.push_str(&format!(
                "http_requests_total{{method=\"{method}\",route=\"/r{route}\",status=\"{status}\"}} {}\n",
                step * share
            ));
        }
    }
    out.push_str("# HELP http_request_duration_seconds Latency.\n# TYPE http_request_duration_seconds histogram\n");
    for route in 0..ROUTES {
        for (i, le) in BUCKETS.iter().enumerate() {
            let count = step * 100 * (i as u64 + 1) / BUCKETS.len() as u64;
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{route=\"/r{route}\",le=\"{le}\"}} {count}\n"
            ));
        }
        out.push_str(&format!(
            "http_request_duration_seconds_sum{{route=\"/r{route}\"}} {}\nhttp_request_duration_seconds_count{{route=\"/r{route}\"}} {}\n",
            step as f64 * 0.3,
            step * 100
        ));
    }
    out.push_str("# TYPE process_resident_memory_bytes gauge\n");
    out.push_str(&format!(
        "process_resident_memory_bytes {}\n",
        12_000_000 + step * 10
    ));
    out
}

fn samples_in(text: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count() as u64
}

fn bench(c: &mut Criterion) {
    let bodies: Vec<String> = (1..=512).map(body).collect();
    let samples = samples_in(&bodies[0]);
    let config = DetectionConfig {
        window: Duration::from_secs(30),
        ..DetectionConfig::default()
    };

    let mut group = c.benchmark_group("exposition");
    group.throughput(Throughput::Elements(samples));
    group.bench_function("parse", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % bodies.len();
            black_box(exposition::parse(&bodies[i]))
        })
    });
    group.bench_function("parse_and_evaluate", |b| {
        let mut monitor = ServiceMonitor::new("payment-service", BTreeMap::new(), &config);
        let start = SystemTime::now();
        let mut step = 0u64;
        b.iter(|| {
            step += 1;
            let body = &bodies[(step as usize) % bodies.len()];
            let at = start + Duration::from_millis(500 * step);
            black_box(monitor.observe(at, &exposition::parse(body)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
