//! The detector against a scripted `/metrics` server whose bodies are hand-written per scrape:
//! flapping, counter resets, bad input, the webhook, reporting, and the gRPC surface.

mod common;

use std::time::Duration;

use common::{
    ExpositionServer, FakeOrchestrator, TestDetector, alert_payload, eventually, fast_config,
    requests_body, target, time_of,
};
use selfheal_proto::v1 as pb;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(20);

/// `ok` and `failed` totals after `n` scrapes where scrape `i` fails `failed_at(i)` of 100.
fn totals(n: u64, failed_at: impl Fn(u64) -> u64) -> (u64, u64) {
    (0..=n).fold((0, 0), |(ok, failed), i| {
        let bad = failed_at(i);
        (ok + 100 - bad, failed + bad)
    })
}

#[tokio::test]
async fn a_flapping_error_rate_makes_one_incident() {
    let server = ExpositionServer::start().await;
    // Healthy, then six blocks of three bad scrapes (20% fail) and two good ones, then healthy.
    let flapping = |i: u64| {
        if (5..35).contains(&i) && (i - 5) % 5 < 3 {
            20
        } else {
            0
        }
    };
    let address = server.script("flap", move |n| {
        let (ok, failed) = totals(n, flapping);
        requests_body(ok, failed)
    });
    let (_orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(INTERVAL, &url);
    config.detection.window = INTERVAL * 2;
    config.detection.error_rate.open_after = 2;
    config.detection.error_rate.close_after = 4;
    config.scrape.targets.push(target("flappy", &address));
    let detector = TestDetector::start(config).await;

    let resolved = eventually("the flapping incident to resolve", DEADLINE, || async {
        let incidents = detector.incidents("flappy").await;
        (server.scrapes("flap") > 45
            && incidents
                .iter()
                .all(|i| i.status == pb::IncidentStatus::Resolved as i32)
            && !incidents.is_empty())
        .then_some(incidents)
    })
    .await;
    assert_eq!(
        resolved.len(),
        1,
        "one incident for the whole flapping: {resolved:#?}"
    );
    let incident = &resolved[0];
    assert_eq!(incident.signal, pb::SignalKind::ErrorRate as i32);
    assert_eq!(incident.fingerprint, "flappy/error_rate");
    let first_bad_at = time_of(&incident.first_bad_at);
    assert!(first_bad_at < time_of(&incident.opened_at));
    let first_crossing = detector
        .series("flappy", "error_rate")
        .await
        .into_iter()
        .find(|(_, rate)| *rate > 0.05)
        .expect("the series shows the crossing");
    assert_eq!(
        first_bad_at, first_crossing.0,
        "first_bad_at is the first crossing"
    );

    detector.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_counter_reset_gives_no_negative_rate_and_no_incident() {
    let server = ExpositionServer::start().await;
    let address = server.script("reset", |n| {
        if n < 10 {
            requests_body(1000 + 100 * n, 5)
        } else {
            // The process restarted: every counter starts again from zero.
            requests_body(100 * (n - 9), 0)
        }
    });
    let (_orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(INTERVAL, &url);
    config.scrape.targets.push(target("resetting", &address));
    let detector = TestDetector::start(config).await;

    eventually("25 scrapes", DEADLINE, || async {
        (server.scrapes("reset") >= 25).then_some(())
    })
    .await;
    let incidents = detector.incidents("resetting").await;
    assert!(
        incidents.is_empty(),
        "no incident from a reset: {incidents:#?}"
    );
    let rates = detector.series("resetting", "request_rate").await;
    assert!(rates.len() >= 20, "{rates:?}");
    assert!(rates.iter().all(|(_, r)| *r >= 0.0), "{rates:?}");
    let errors = detector.series("resetting", "error_rate").await;
    assert!(
        errors.iter().all(|(_, r)| (0.0..=0.05).contains(r)),
        "{errors:?}"
    );

    detector.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn bad_input_never_stops_the_detector_and_spares_other_targets() {
    let server = ExpositionServer::start().await;
    let garbage = server.script("garbage", |n| {
        format!("\u{0}\u{7f}{{{{ ]]] {n}\nhttp_requests_total{{status=\"500\" 12\n#TYPE\n=== ===\n")
    });
    let nan = server.script("nan", |n| {
        format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{status=\"200\"}} NaN\n\
             http_requests_total{{status=\"500\"}} +Inf\n\
             http_requests_total{{status=\"503\"}} -Inf\n\
             process_resident_memory_bytes NaN\n\
             http_requests_total{{status=\"201\"}} {}\n",
            n * 100
        )
    });
    let unknown = server.script("unknown", |n| {
        format!(
            "# TYPE http_requests_total weird\nhttp_requests_total{{status=\"200\"}} {}\n\
             # TYPE odd_thing stateset\nodd_thing{{odd_thing=\"a\"}} 1\n",
            n * 100
        )
    });
    let pay = server.script("pay", |n| {
        let (ok, failed) = totals(n, |i| if i >= 5 { 15 } else { 0 });
        requests_body(ok, failed)
    });
    let (_orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(Duration::from_millis(200), &url);
    config.scrape.max_body_bytes = 64 * 1024;
    config.detection.target_down.open_after = 2;
    for (service, address) in [
        ("garbage", garbage),
        ("nan", nan),
        ("unknown", unknown),
        ("pay", pay),
        ("huge", format!("http://{}/huge", server.addr)),
        ("hang", format!("http://{}/hang", server.addr)),
    ] {
        config.scrape.targets.push(target(service, &address));
    }
    let detector = TestDetector::start(config).await;

    let incident = detector
        .open_incident("pay", pb::SignalKind::ErrorRate, DEADLINE)
        .await;
    assert!(incident.observed_value > 0.05);
    for service in ["huge", "hang"] {
        detector
            .open_incident(service, pb::SignalKind::TargetDown, DEADLINE)
            .await;
    }
    let targets = detector.targets().await;
    let by_name = |name: &str| {
        targets
            .iter()
            .find(|t| t.service == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .clone()
    };
    assert!(!by_name("hang").up);
    assert!(
        by_name("hang").last_error.contains("timed out"),
        "{:?}",
        by_name("hang")
    );
    assert!(!by_name("huge").up);
    assert!(
        by_name("huge").last_error.contains("limit"),
        "{:?}",
        by_name("huge")
    );
    for name in ["garbage", "nan", "unknown", "pay"] {
        assert!(by_name(name).up, "{:?}", by_name(name));
        assert!(by_name(name).last_scrape_at.is_some());
    }
    for name in ["garbage", "nan", "unknown"] {
        assert!(
            detector.incidents(name).await.is_empty(),
            "{name} made an incident"
        );
    }
    let rates = detector.series("nan", "request_rate").await;
    assert!(
        rates.iter().all(|(_, r)| r.is_finite() && *r >= 0.0),
        "{rates:?}"
    );

    let metrics = selfheal_service::testkit::scrape_metrics(detector.service.http_addr).await;
    let errors: f64 = metrics
        .samples
        .iter()
        .filter(|s| s.metric == "detector_scrape_errors_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(errors >= 4.0, "scrape errors are counted: {errors}");
    selfheal_service::testkit::wait_serving(
        detector.service.grpc_addr,
        selfheal_proto::service_names::DETECTOR,
    )
    .await;

    detector.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_webhook_rejects_bad_bodies_and_dedups_alerts_with_scraped_incidents() {
    let server = ExpositionServer::start().await;
    let pay = server.script("pay", |n| {
        let (ok, failed) = totals(n, |i| if i >= 3 { 30 } else { 0 });
        requests_body(ok, failed)
    });
    let (_orchestrator, url, _stop) = FakeOrchestrator::start(0).await;
    let mut config = fast_config(INTERVAL, &url);
    config.webhook.max_body_bytes = 4096;
    config.scrape.targets.push(target("pay", &pay));
    let detector = TestDetector::start(config).await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(detector.webhook_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let response = post(b"{\"version\": \"4\", \"alerts\": [".to_vec())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("malformed alertmanager webhook"), "{text}");
    let response = post(
        br#"{"version":"4","status":"firing","alerts":[{"status":"burning","labels":{}}]}"#
            .to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("burning"));
    let response = post(vec![b' '; 10_000]).await.unwrap();
    assert_eq!(response.status(), 413);

    // Alert-only incident: opened by a firing alert, resolved by the resolved alert.
    let firing = serde_json::to_vec(&alert_payload("firing", "checkout")).unwrap();
    let response = post(firing.clone()).await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let incident = detector
        .open_incident("checkout", pb::SignalKind::ErrorRate, DEADLINE)
        .await;
    assert_eq!(incident.source, pb::IncidentSource::Alertmanager as i32);
    assert_eq!(incident.severity, pb::Severity::Critical as i32);
    post(firing).await.unwrap();
    assert_eq!(
        detector.incidents("checkout").await.len(),
        1,
        "repeats dedup"
    );
    let resolved = serde_json::to_vec(&alert_payload("resolved", "checkout")).unwrap();
    assert_eq!(post(resolved).await.unwrap().status(), 200);
    let incidents = detector.incidents("checkout").await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].status, pb::IncidentStatus::Resolved as i32);

    // The same fault scraped and alerted is one incident; the alert resolving does not close
    // what the scrape still sees.
    let scraped = detector
        .open_incident("pay", pb::SignalKind::ErrorRate, DEADLINE)
        .await;
    post(serde_json::to_vec(&alert_payload("firing", "pay")).unwrap())
        .await
        .unwrap();
    post(serde_json::to_vec(&alert_payload("resolved", "pay")).unwrap())
        .await
        .unwrap();
    let incidents = detector.incidents("pay").await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0].id, scraped.id);
    assert_eq!(incidents[0].status, pb::IncidentStatus::Open as i32);
    assert_eq!(
        incidents[0].labels.get("alertname").map(String::as_str),
        Some("HighErrorRate"),
        "the alert's labels join the incident"
    );

    detector.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn incidents_are_retried_until_the_orchestrator_acknowledges_them() {
    let server = ExpositionServer::start().await;
    let pay = server.script("pay", |n| {
        let (ok, failed) = totals(n, |i| if i >= 3 { 30 } else { 0 });
        requests_body(ok, failed)
    });
    // Nothing listens on the orchestrator's address when the incident opens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = fast_config(INTERVAL, &format!("http://{port}"));
    config.scrape.targets.push(target("pay", &pay));
    let detector = TestDetector::start(config).await;
    let incident = detector
        .open_incident("pay", pb::SignalKind::ErrorRate, DEADLINE)
        .await;
    eventually("failed report attempts", DEADLINE, || async {
        let metrics = selfheal_service::testkit::scrape_metrics(detector.service.http_addr).await;
        metrics
            .samples
            .iter()
            .any(|s| {
                s.metric == "detector_report_failures_total"
                    && matches!(s.value, prometheus_parse::Value::Counter(v) if v >= 2.0)
            })
            .then_some(())
    })
    .await;

    // The orchestrator comes up on the configured address.
    let orchestrator = FakeOrchestrator::default();
    let listener = tokio::net::TcpListener::bind(port).await.unwrap();
    let _stop = orchestrator.serve(listener);
    let acknowledged = eventually("the incident to be acknowledged", DEADLINE, || async {
        let acknowledged = orchestrator.acknowledged();
        (!acknowledged.is_empty()).then_some(acknowledged)
    })
    .await;
    assert_eq!(acknowledged.len(), 1);
    assert_eq!(acknowledged[0].id, incident.id);
    assert_eq!(acknowledged[0].service, "pay");

    detector.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn grpc_manages_targets_and_streams_incidents() {
    let server = ExpositionServer::start().await;
    let pay = server.script("pay", |n| {
        let (ok, failed) = totals(n, |i| if i >= 3 { 30 } else { 0 });
        requests_body(ok, failed)
    });
    let (orchestrator, url, _stop) = FakeOrchestrator::start(2).await;
    let detector = TestDetector::start(fast_config(INTERVAL, &url)).await;
    let mut client = detector.client.clone();

    let invalid = client
        .add_target(pb::AddTargetRequest {
            target: Some(pb::ScrapeTarget {
                service: String::new(),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_incident(pb::GetIncidentRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let added = client
        .add_target(pb::AddTargetRequest {
            target: Some(pb::ScrapeTarget {
                service: "pay".into(),
                address: pay,
                labels: [("team".to_owned(), "payments".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.target.unwrap().service, "pay");

    let incident = detector
        .open_incident("pay", pb::SignalKind::ErrorRate, DEADLINE)
        .await;
    assert_eq!(
        incident.labels.get("team").map(String::as_str),
        Some("payments")
    );
    let fetched = client
        .get_incident(pb::GetIncidentRequest {
            id: incident.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(fetched.fingerprint, "pay/error_rate");

    let mut stream = client
        .watch_incidents(pb::WatchIncidentsRequest {
            service: "pay".into(),
            include_open: true,
        })
        .await
        .unwrap()
        .into_inner();
    let replayed = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("replay arrives")
        .unwrap()
        .unwrap();
    assert_eq!(replayed.kind, pb::IncidentEventKind::Opened as i32);
    assert_eq!(replayed.incident.unwrap().id, incident.id);

    let all_series = client
        .query_series(pb::QuerySeriesRequest {
            service: "pay".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .series;
    let names: Vec<&str> = all_series.iter().map(|s| s.name.as_str()).collect();
    for name in ["error_rate", "request_rate", "latency_p99", "memory_bytes"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let unknown = client
        .query_series(pb::QuerySeriesRequest {
            service: "pay".into(),
            names: vec!["nonsense".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);

    eventually(
        "the report to be acknowledged after two refusals",
        DEADLINE,
        || async { (!orchestrator.acknowledged().is_empty()).then_some(()) },
    )
    .await;
    assert!(
        orchestrator
            .attempts
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3
    );

    let removed = client
        .remove_target(pb::RemoveTargetRequest {
            service: "pay".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed);
    assert!(detector.targets().await.is_empty());
    let scrapes = server.scrapes("pay");
    // A negative check: nothing to poll for, so let five intervals pass and compare.
    tokio::time::sleep(INTERVAL * 5).await;
    let later = server.scrapes("pay");
    assert!(later <= scrapes + 1, "{later} > {scrapes} + 1");

    detector.stop().await;
    server.stop().await;
}
