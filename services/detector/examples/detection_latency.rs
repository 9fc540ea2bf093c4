//! Detection latency against the real payment-service: from the first failing request to the
//! incident being reported to (acknowledged by) the orchestrator, over repeated runs at a 500 ms
//! scrape interval. Prints the median and p90 next to the floor set by the scrape interval, the
//! window fill and the confirmation evaluations. Run by hand:
//!
//! ```text
//! cargo run -p selfheal-detector --example detection_latency [-- RUNS]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/payment.rs"]
mod payment;

use std::time::Duration;

use common::{FakeOrchestrator, TestDetector, eventually, fast_config, target, time_of};
use payment::{Load, Mix, PaymentService};
use selfheal_proto::v1 as pb;

const INTERVAL: Duration = Duration::from_millis(500);
const SERVICE: &str = "payment-service";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    eprintln!("building payment-service at the buggy commit…");
    let build = tokio::task::spawn_blocking(payment::build_bad)
        .await
        .expect("build task");
    let service = PaymentService::start(&build.binary).await;
    let load = Load::start(service.addr, Duration::from_millis(5));
    let (orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(INTERVAL, &url);
    config
        .scrape
        .targets
        .push(target(SERVICE, &service.addr.to_string()));
    let window = config.detection.window;
    let open_after = config.detection.error_rate.open_after;
    let detector = TestDetector::start(config).await;
    let error_rate_incidents = || async {
        detector
            .incidents(SERVICE)
            .await
            .into_iter()
            .filter(|i| i.signal == pb::SignalKind::ErrorRate as i32)
            .collect::<Vec<_>>()
    };

    let mut reported = Vec::new();
    let mut opened = Vec::new();
    for run in 1..=runs {
        load.set_mix(Mix::GoodOnly);
        // Start every run from a clean window: nothing open and the latest error rate at zero.
        eventually("a clean window", Duration::from_secs(60), || async {
            let open = error_rate_incidents()
                .await
                .iter()
                .any(|i| i.status == pb::IncidentStatus::Open as i32);
            let clean = detector
                .series(SERVICE, "error_rate")
                .await
                .last()
                .is_some_and(|(_, rate)| *rate == 0.0);
            (!open && clean).then_some(())
        })
        .await;
        let acknowledged_before = orchestrator.reports.lock().unwrap().len();
        // The clean-window check passes just after a scrape; a random phase makes the fault
        // start anywhere within the scrape interval, as a real one would.
        tokio::time::sleep(INTERVAL.mul_f64(fastrand::f64())).await;
        load.set_mix(Mix::Everyone);
        let (first_failing, first_failing_at) =
            eventually("a failing request", Duration::from_secs(10), || async {
                load.first_failing()
            })
            .await;
        let (acknowledged_at, incident) = eventually(
            "the incident to be reported",
            Duration::from_secs(60),
            || async {
                orchestrator
                    .reports
                    .lock()
                    .unwrap()
                    .get(acknowledged_before)
                    .cloned()
            },
        )
        .await;
        let to_report = acknowledged_at.duration_since(first_failing).as_secs_f64();
        let to_open = time_of(&incident.opened_at)
            .duration_since(first_failing_at)
            .unwrap_or_default()
            .as_secs_f64();
        eprintln!("run {run:2}: opened after {to_open:.3} s, reported after {to_report:.3} s");
        reported.push(to_report);
        opened.push(to_open);
    }

    reported.sort_by(f64::total_cmp);
    opened.sort_by(f64::total_cmp);
    // 15% of requests fail: the window crosses 5% once a third of it holds failing traffic.
    // The crossing is seen at the next scrape (0 to one interval later, by phase) and confirmed
    // `open_after - 1` intervals after that.
    let fill = window.as_secs_f64() * (0.05 / 0.15);
    let confirm = INTERVAL.as_secs_f64() * f64::from(open_after.saturating_sub(1));
    let floor = fill + confirm;
    println!(
        "detection latency over {runs} runs (scrape interval {INTERVAL:?}, window {window:?}, open after {open_after} evaluations)"
    );
    println!(
        "  first failing request -> incident reported: median {:.3} s, p90 {:.3} s, min {:.3} s, max {:.3} s",
        percentile(&reported, 0.5),
        percentile(&reported, 0.9),
        reported[0],
        reported[reported.len() - 1]
    );
    println!(
        "  first failing request -> incident opened:   median {:.3} s, p90 {:.3} s",
        percentile(&opened, 0.5),
        percentile(&opened, 0.9)
    );
    println!(
        "  floor: window fill {fill:.3} s + {confirm:.3} s confirmation = {floor:.3} s; the scrape phase adds 0 to {:.3} s (expected median {:.3} s, worst {:.3} s)",
        INTERVAL.as_secs_f64(),
        floor + INTERVAL.as_secs_f64() / 2.0,
        floor + INTERVAL.as_secs_f64()
    );

    detector.stop().await;
    load.stop().await;
    service.stop().await;
}
