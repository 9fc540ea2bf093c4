//! The demo end to end, as the orchestrator drives it: the real deployer runs the good and then
//! the bad payment-service build behind its router, real traffic makes the `.unwrap()` at
//! `src/payments.rs:237` panic, the real detector opens an error-rate incident, and `Analyze`
//! (with no inline evidence) collects from both and names the line and the commit. Replaying
//! the evidence it returned gives the same answer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Rca;
use futures::StreamExt;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_service::testkit::{ServiceUnderTest, wait_serving};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SERVICE: &str = "payment-service";

async fn deploy(client: &mut DeployerClient<Channel>, repo: &str, commit: &str, token: u64) {
    let mut events = client
        .deploy(pb::DeployRequest {
            service: SERVICE.into(),
            source: Some(pb::SourceRef {
                repository: repo.into(),
                commit: commit.into(),
            }),
            strategy: pb::RolloutStrategy::Direct.into(),
            fencing_token: token,
            ..Default::default()
        })
        .await
        .expect("deploy starts")
        .into_inner();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while let Some(event) = tokio::time::timeout_at(deadline, events.next())
        .await
        .expect("rollout finishes")
    {
        last = event.expect("rollout event").event;
    }
    let last = last.expect("events");
    assert_eq!(last.kind(), pb::RolloutEventKind::Promoted, "{last:?}");
}

/// Steady POST /pay traffic, bounded in count and time; stops on the token.
fn traffic(
    addr: SocketAddr,
    stop: CancellationToken,
) -> (Arc<AtomicU64>, tokio::task::JoinSet<()>) {
    let sent = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..3u64 {
        let (sent, stop, client) = (Arc::clone(&sent), stop.clone(), client.clone());
        tasks.spawn(async move {
            let mut n = worker;
            while !stop.is_cancelled()
                && started.elapsed() < Duration::from_secs(240)
                && n < 200_000
            {
                let body = format!(
                    r#"{{"customer_id":"cust-{:04}","amount_cents":1234}}"#,
                    n % 1000
                );
                let _ = client
                    .post(format!("http://{addr}/pay"))
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer secret-token")
                    .body(body)
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                n += 3;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    (sent, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_bug_is_found_from_collected_evidence_and_replays_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = selfheal_scenario::examples_dir().join(SERVICE);
    let scenario = selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
    let repo = scenario.repo.to_string_lossy().into_owned();

    // The real deployer, running the good version.
    let mut deployer_config = selfheal_deployer::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    deployer_config.build.target_dir = Some(selfheal_scenario::example_target_dir());
    deployer_config.processes.health_timeout = Duration::from_secs(20);
    deployer_config.processes.drain_timeout = Duration::from_secs(1);
    let deployer = ServiceUnderTest::start(move |listeners, shutdown| {
        selfheal_deployer::run(deployer_config, listeners, shutdown)
    })
    .await;
    wait_serving(deployer.grpc_addr, selfheal_proto::service_names::DEPLOYER).await;
    let mut deployer_client = DeployerClient::connect(deployer.grpc_url())
        .await
        .expect("deployer answers");
    deploy(&mut deployer_client, &repo, &scenario.good_commit, 1).await;
    let status = deployer_client
        .status(pb::StatusRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("status")
        .into_inner();
    let public: SocketAddr = status.services[0]
        .public_address
        .parse()
        .expect("router address");

    // The real detector, scraping the service through the router.
    let mut detector_config = selfheal_detector::Config::default();
    let interval = Duration::from_millis(500);
    detector_config.scrape.interval = interval;
    detector_config.scrape.timeout = interval.mul_f64(0.8);
    detector_config.detection.window = interval * 4;
    detector_config.detection.memory_window = interval * 16;
    detector_config.detection.min_requests = 20;
    detector_config.detection.history = Duration::from_secs(600);
    detector_config.orchestrator.url = "http://127.0.0.1:1".into();
    detector_config.server.shutdown_grace = Duration::from_secs(2);
    detector_config
        .scrape
        .targets
        .push(selfheal_detector::TargetConfig {
            service: SERVICE.into(),
            address: public.to_string(),
            labels: Default::default(),
        });
    let detector = ServiceUnderTest::start(move |listeners, shutdown| {
        selfheal_detector::run(detector_config, listeners, shutdown)
    })
    .await;
    wait_serving(detector.grpc_addr, selfheal_proto::service_names::DETECTOR).await;
    let mut detector_client = DetectorClient::connect(detector.grpc_url())
        .await
        .expect("detector answers");

    // A healthy baseline, then the bad commit under the same traffic.
    let stop = CancellationToken::new();
    let (_sent, mut load) = traffic(public, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let series = detector_client
            .query_series(pb::QuerySeriesRequest {
                service: SERVICE.into(),
                names: vec!["error_rate".into()],
                ..Default::default()
            })
            .await
            .expect("series")
            .into_inner()
            .series;
        if series.first().is_some_and(|s| s.points.len() >= 6) {
            break;
        }
        assert!(Instant::now() < deadline, "no healthy baseline: {series:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deploy(&mut deployer_client, &repo, &scenario.bad_commit, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let incident = loop {
        let incidents = detector_client
            .list_incidents(pb::ListIncidentsRequest {
                service: SERVICE.into(),
                status: pb::IncidentStatus::Open.into(),
                limit: 10,
            })
            .await
            .expect("incidents")
            .into_inner()
            .incidents;
        if let Some(incident) = incidents
            .into_iter()
            .find(|i| i.signal() == pb::SignalKind::ErrorRate)
        {
            break incident;
        }
        assert!(Instant::now() < deadline, "no error-rate incident opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // What the orchestrator does: deployer Status, record both stables, Analyze.
    let mut config = selfheal_rca::Config::default();
    config.sources.deployer = deployer.grpc_url();
    config.sources.detector = detector.grpc_url();
    let rca = Rca::start(config).await;
    let mut rca_client = rca.client.clone();
    let status = deployer_client
        .status(pb::StatusRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("status")
        .into_inner()
        .services
        .remove(0);
    let (stable, previous) = (
        status.stable.expect("stable"),
        status.previous_stable.expect("previous stable"),
    );
    assert_eq!(stable.commit, scenario.bad_commit);
    for version in [&previous, &stable] {
        rca_client
            .record_deployment(pb::RecordDeploymentRequest {
                deployment: Some(pb::Deployment {
                    service: SERVICE.into(),
                    version: version.version.clone(),
                    commit: version.commit.clone(),
                    deployed_at: version.deployed_at,
                    repository: version.repository.clone(),
                }),
            })
            .await
            .expect("deployment recorded");
    }
    rca_client
        .record_fix(pb::RecordFixRequest {
            incident_id: "inc-earlier".into(),
            service: SERVICE.into(),
            cause_kind: pb::CauseKind::CodeDefect.into(),
            strategy: "template".into(),
            commit: "0000000000000000000000000000000000000001".into(),
            template: "rust.option_unwrap.unwrap_or".into(),
        })
        .await
        .expect("earlier fix recorded");
    let request = pb::AnalyzeRequest {
        incident: Some(incident.clone()),
        evidence: None,
        source: Some(pb::SourceRef {
            repository: repo.clone(),
            commit: stable.commit.clone(),
        }),
        last_good_commit: previous.commit.clone(),
    };
    let response = rca.analyze(request.clone()).await.expect("analysed");
    stop.cancel();
    while load.join_next().await.is_some() {}

    let report = response.report.clone().expect("report");
    let top = &report.causes[0];
    assert_eq!(top.service, SERVICE, "{report:#?}");
    assert_eq!(top.kind(), pb::CauseKind::CodeDefect);
    let location = top.location.as_ref().expect("location");
    assert_eq!(
        (location.file.as_str(), location.line),
        (
            scenario.bug_file.to_str().expect("utf-8"),
            scenario.bug_line
        )
    );
    assert!(
        location.function.ends_with("process_payment"),
        "{}",
        location.function
    );
    assert!(
        location.snippet.contains(".unwrap()"),
        "{}",
        location.snippet
    );
    assert_eq!(
        top.culprit.as_ref().expect("culprit").sha,
        scenario.bad_commit
    );
    assert_eq!(
        top.failure_message,
        "called `Option::unwrap()` on a `None` value"
    );
    assert!(
        top.trace_text.contains("src/payments.rs:237"),
        "{}",
        top.trace_text
    );
    assert!(
        top.deployment
            .as_ref()
            .is_some_and(|d| d.commit == scenario.bad_commit),
        "{top:#?}"
    );
    assert!(
        report.confidence >= 0.8,
        "confidence {} with gaps {:#?} and decision {:#?}",
        report.confidence,
        report.gaps,
        report.decision
    );
    println!(
        "demo analysis: confidence {:.2}, gaps {:?}",
        report.confidence, report.gaps
    );
    assert_eq!(report.past_fixes[0].incident_id, "inc-earlier");
    assert_eq!(
        report.past_fixes[0].template,
        "rust.option_unwrap.unwrap_or"
    );
    let evidence = response.evidence.expect("evidence");
    assert!(
        evidence
            .series
            .iter()
            .any(|s| s.name == "error_rate" && !s.points.is_empty()),
        "the detector's windows are evidence"
    );
    assert!(
        evidence
            .logs
            .iter()
            .any(|l| l.text.contains("panicked at src/payments.rs:237"))
    );
    assert!(
        evidence
            .commits
            .iter()
            .any(|c| c.sha == scenario.bad_commit)
    );

    // Post-mortem: the returned evidence, replayed, gives the same first cause.
    let replayed = rca
        .analyze(pb::AnalyzeRequest {
            evidence: Some(evidence),
            ..request
        })
        .await
        .expect("replayed")
        .report
        .expect("report");
    let again = &replayed.causes[0];
    assert_eq!(again.service, top.service);
    assert_eq!(again.kind, top.kind);
    assert_eq!(again.location, top.location);
    assert_eq!(
        again.culprit.as_ref().map(|c| &c.sha),
        top.culprit.as_ref().map(|c| &c.sha)
    );
    assert!((replayed.confidence - report.confidence).abs() < 1e-9);
    assert_eq!(replayed.past_fixes, report.past_fixes);

    rca.stop().await;
    detector.stop().await.expect("detector stops");
    deployer.stop().await.expect("deployer stops");
}
