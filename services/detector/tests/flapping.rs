//! A flapping Alertmanager alert against the detector in-process: a resolved alert is held for
//! `webhook.resolve_hold` before its incident is released, so an alert that fires, resolves and
//! fires again is one incident that counts its flaps, and is reported once.

mod common;

use std::time::Duration;

use common::{FakeOrchestrator, TestDetector, alert_payload, eventually, fast_config};
use selfheal_proto::v1 as pb;

const DEADLINE: Duration = Duration::from_secs(20);

async fn post(detector: &TestDetector, status: &str, service: &str) {
    let response = reqwest::Client::new()
        .post(detector.webhook_url())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&alert_payload(status, service)).expect("a JSON body"))
        .send()
        .await
        .expect("the webhook answers");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn a_flapping_alert_is_one_incident_that_counts_its_flaps_and_is_reported_once() {
    let (orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(Duration::from_millis(100), &url);
    // Far longer than the test takes: no hold can pass between the posts below.
    config.webhook.resolve_hold = Duration::from_secs(300);
    let detector = TestDetector::start(config).await;

    for status in [
        "firing", "resolved", "firing", "resolved", "firing", "resolved",
    ] {
        post(&detector, status, "checkout").await;
    }
    let incidents = detector.incidents("checkout").await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let incident = &incidents[0];
    assert_eq!(
        incident.status,
        pb::IncidentStatus::Open as i32,
        "the last resolve is still within its hold"
    );
    assert_eq!(
        incident.labels.get("flaps").map(String::as_str),
        Some("2"),
        "{incident:#?}"
    );
    let reported = eventually("the incident to be reported", DEADLINE, || async {
        let reports = orchestrator.acknowledged();
        (!reports.is_empty()).then_some(reports)
    })
    .await;
    assert_eq!(reported.len(), 1, "{reported:#?}");
    assert_eq!(reported[0].id, incident.id);
    detector.stop().await;
}

#[tokio::test]
async fn a_resolved_alert_that_stays_resolved_releases_its_incident_after_the_hold() {
    let (_orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(Duration::from_millis(100), &url);
    config.webhook.resolve_hold = Duration::from_millis(300);
    let detector = TestDetector::start(config).await;

    post(&detector, "firing", "payment").await;
    post(&detector, "resolved", "payment").await;
    // Alertmanager repeats a resolved notification; a repeat does not extend the hold.
    post(&detector, "resolved", "payment").await;
    let first = eventually(
        "the incident to resolve after its hold",
        DEADLINE,
        || async {
            let incidents = detector.incidents("payment").await;
            incidents
                .into_iter()
                .find(|i| i.status == pb::IncidentStatus::Resolved as i32)
        },
    )
    .await;
    assert!(!first.labels.contains_key("flaps"), "{first:#?}");

    // Firing after the incident was released is a new incident.
    post(&detector, "firing", "payment").await;
    let incidents = detector.incidents("payment").await;
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    assert!(
        incidents
            .iter()
            .any(|i| i.id != first.id && i.status == pb::IncidentStatus::Open as i32)
    );
    detector.stop().await;
}
