//! The detector watching a real payment-service process built at the buggy commit, with real
//! traffic: the error rate crossing 5% opens exactly one incident with the right first-bad time,
//! and switching traffic to customers the bug spares resolves it.

mod common;
#[path = "common/payment.rs"]
mod payment;

use std::time::Duration;

use common::{FakeOrchestrator, TestDetector, eventually, fast_config, target, time_of};
use payment::{Load, Mix, PaymentService};
use selfheal_proto::v1 as pb;

const INTERVAL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_past_five_percent_opens_one_incident_and_recovery_resolves_it() {
    let build = tokio::task::spawn_blocking(payment::build_bad)
        .await
        .expect("build task");
    let service = PaymentService::start(&build.binary).await;
    let load = Load::start(service.addr, Duration::from_millis(5));
    let (orchestrator, url, _stop) = FakeOrchestrator::start(1).await;
    let mut config = fast_config(INTERVAL, &url);
    config
        .scrape
        .targets
        .push(target("payment-service", &service.addr.to_string()));
    let detector = TestDetector::start(config).await;

    // A healthy baseline first: several full windows with no incident.
    eventually(
        "a healthy baseline of 8 evaluations",
        Duration::from_secs(30),
        || async {
            let rates = detector.series("payment-service", "error_rate").await;
            (rates.len() >= 8).then_some(rates)
        },
    )
    .await;
    assert!(detector.incidents("payment-service").await.is_empty());

    load.set_mix(Mix::Everyone);
    let incident = detector
        .open_incident(
            "payment-service",
            pb::SignalKind::ErrorRate,
            Duration::from_secs(30),
        )
        .await;
    let (_, first_failing_at) = load.first_failing().expect("failing traffic was sent");
    let first_bad_at = time_of(&incident.first_bad_at);
    let opened_at = time_of(&incident.opened_at);
    assert!(
        first_bad_at > first_failing_at,
        "first_bad_at {first_bad_at:?} is an evaluation after the first failing request {first_failing_at:?}"
    );
    assert!(
        first_bad_at < opened_at,
        "first crossing precedes confirmation"
    );
    let crossing = detector
        .series("payment-service", "error_rate")
        .await
        .into_iter()
        .find(|(at, rate)| *at > first_failing_at && *rate > 0.05)
        .expect("the series shows the crossing");
    assert_eq!(
        first_bad_at, crossing.0,
        "first_bad_at is the first evaluation above 5%"
    );
    assert!(
        incident.observed_value > 0.05 && incident.observed_value < 0.5,
        "{incident:?}"
    );
    assert_eq!(incident.threshold, 0.05);
    assert!(
        incident.sample_count >= 20 && incident.bad_sample_count > 0,
        "{incident:?}"
    );

    load.set_mix(Mix::GoodOnly);
    // Slow panics (backtraces) may also raise a latency incident; the error-rate fingerprint
    // must have exactly one.
    let resolved = eventually(
        "the error-rate incident to resolve",
        Duration::from_secs(30),
        || async {
            let incidents: Vec<pb::Incident> = detector
                .incidents("payment-service")
                .await
                .into_iter()
                .filter(|i| i.signal == pb::SignalKind::ErrorRate as i32)
                .collect();
            incidents
                .iter()
                .all(|i| i.status == pb::IncidentStatus::Resolved as i32)
                .then_some(incidents)
        },
    )
    .await;
    assert_eq!(resolved.len(), 1, "exactly one incident: {resolved:#?}");
    assert_eq!(resolved[0].id, incident.id);
    assert!(time_of(&resolved[0].resolved_at) > opened_at);
    let others: Vec<(i32, String)> = detector
        .incidents("payment-service")
        .await
        .into_iter()
        .filter(|i| i.signal != pb::SignalKind::ErrorRate as i32)
        .map(|i| (i.signal, i.summary))
        .collect();
    assert!(
        others
            .iter()
            .all(|(signal, _)| *signal == pb::SignalKind::LatencyP99 as i32),
        "only a latency incident may accompany the errors: {others:#?}"
    );

    let acknowledged = eventually(
        "the report to be acknowledged",
        Duration::from_secs(10),
        || async {
            let acknowledged = orchestrator.acknowledged();
            (!acknowledged.is_empty()).then_some(acknowledged)
        },
    )
    .await;
    assert_eq!(acknowledged[0].id, incident.id);
    assert!(load.server_errors.load(std::sync::atomic::Ordering::SeqCst) > 0);

    detector.stop().await;
    load.stop().await;
    service.stop().await;
}
