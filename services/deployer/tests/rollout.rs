//! The deployer with real builds of payment-service, real processes and real loopback traffic.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, Load, SERVICE, eventually};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::RolloutEventKind as Kind;

fn plan(steps: &[u32], window: Duration, min_requests: u64) -> pb::CanaryPlan {
    pb::CanaryPlan {
        steps: steps.to_vec(),
        analysis_window: Some(window.try_into().expect("window converts")),
        min_requests,
        max_error_rate: 0.05,
        failure_limit: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buggy_commit_deployed_direct_fails_about_fifteen_percent_through_the_router() {
    let h = Harness::start().await;
    let bad = h.scenario.bad_commit.clone();
    let rollout = h.deploy_stable(&bad, 1).await;
    assert_eq!(
        rollout.kinds(),
        [
            Kind::BuildStarted,
            Kind::BuildFinished,
            Kind::Started,
            Kind::Healthy,
            Kind::Promoted
        ]
    );
    let promoted = rollout.events.last().unwrap();
    assert!(promoted.decision.is_some(), "promotion carries a decision");

    let load = Load::start(h.public_addr().await, 4);
    let (requests, errors) = load.wait_for(400, Duration::from_secs(60)).await;
    let rate = errors as f64 / requests as f64;
    assert!(
        (0.10..=0.20).contains(&rate),
        "client saw {errors}/{requests}"
    );

    let mut client = h.client.clone();
    let verify = client
        .verify(pb::VerifyRequest {
            service: SERVICE.into(),
            window: Some(Duration::from_secs(1).try_into().unwrap()),
            min_requests: 20,
            max_error_rate: 0.01,
        })
        .await
        .unwrap()
        .into_inner();
    load.stop().await;
    assert!(!verify.healthy, "{verify:?}");
    assert!((0.08..=0.25).contains(&verify.error_rate), "{verify:?}");
    let decision = verify.decision.expect("verify decision");
    assert_eq!(decision.outcome, "unhealthy");

    let status = h.status().await;
    let stable = status.stable.expect("stable runs");
    assert_eq!(stable.commit, bad);
    let router_rate = stable.errors as f64 / stable.requests as f64;
    assert!(
        (0.12..=0.18).contains(&router_rate),
        "router counted {}/{}",
        stable.errors,
        stable.requests
    );

    let samples = client
        .failing_requests(pb::FailingRequestsRequest {
            service: SERVICE.into(),
            limit: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(samples.failing.len(), 5);
    assert!(!samples.passing.is_empty());
    let failing = &samples.failing[0];
    assert_eq!(
        (
            failing.method.as_str(),
            failing.path.as_str(),
            failing.observed_status
        ),
        ("POST", "/pay", 500)
    );
    assert!(String::from_utf8_lossy(&failing.body).contains("cust-"));
    assert!(
        !failing.headers.contains_key("authorization"),
        "{:?}",
        failing.headers
    );
    assert_eq!(
        failing.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );

    let scrape = selfheal_service::testkit::scrape_metrics(h.service.http_addr).await;
    let routed: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "deployer_router_errors_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(routed >= 40.0, "router error counter exported: {routed}");

    let mut logs = client
        .logs(pb::LogsRequest {
            service: SERVICE.into(),
            version: rollout.version(),
            follow: false,
            tail: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(line) = logs.message().await.unwrap() {
        lines.push(line.text);
    }
    // The start-up line may already have left the bounded buffer (panics with backtraces fill
    // it quickly), so only the panics are required.
    assert!(!lines.is_empty(), "the version's output is captured");
    assert!(
        lines.iter().any(|l| l.contains("panicked")),
        "panics are captured: {lines:#?}"
    );
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_of_the_fix_is_promoted_step_by_step_and_errors_drop() {
    let h = Harness::start().await;
    let bad = h.scenario.bad_commit.clone();
    h.deploy_stable(&bad, 1).await;
    let load = Load::start(h.public_addr().await, 4);
    load.wait_for(100, Duration::from_secs(30)).await;

    let mut request = h.request(&bad, pb::RolloutStrategy::Canary, 2);
    request.patch = h.fix_patch();
    request.plan = Some(plan(&[10, 50, 100], Duration::from_millis(1500), 20));
    let rollout = h.deploy(request).await;
    assert!(rollout.error.is_none(), "{rollout:#?}");
    let steps: Vec<u32> = rollout
        .of_kind(Kind::Step)
        .iter()
        .map(|e| e.canary_weight)
        .collect();
    assert_eq!(steps, [10, 50, 100]);
    let analyses = rollout.of_kind(Kind::Analysis);
    assert!(analyses.len() >= 3, "{rollout:#?}");
    for analysis in &analyses {
        let decision = analysis.decision.as_ref().expect("analysis decision");
        assert!(
            !decision.inputs.is_empty() && !decision.factors.is_empty(),
            "{decision:?}"
        );
        assert!((0.0..=1.0).contains(&decision.confidence));
    }
    assert_eq!(rollout.last_kind(), Kind::Promoted, "{rollout:#?}");

    let status = h.status().await;
    let stable = status.stable.as_ref().unwrap();
    assert_eq!(stable.version, rollout.version());
    assert!(!stable.repository.is_empty() && stable.deployed_at.is_some());
    assert!(status.canary.is_none());
    // The version the fix replaced is reported as the last known good.
    let previous = status.previous_stable.as_ref().expect("previous stable");
    assert_eq!(previous.commit, h.scenario.bad_commit, "{status:#?}");
    let (requests, errors) = load.wait_for(400, Duration::from_secs(60)).await;
    let mut client = h.client.clone();
    let verify = client
        .verify(pb::VerifyRequest {
            service: SERVICE.into(),
            window: Some(Duration::from_secs(1).try_into().unwrap()),
            min_requests: 20,
            max_error_rate: 0.01,
        })
        .await
        .unwrap()
        .into_inner();
    load.stop().await;
    assert!(
        (errors as f64) < 0.01 * requests as f64,
        "{errors}/{requests} after promotion"
    );
    assert!(verify.healthy, "{verify:?}");
    assert_eq!(verify.errors, 0, "{verify:?}");
    let decision = verify.decision.expect("verify decision");
    assert_eq!(decision.outcome, "healthy");
    assert!(decision.confidence > 0.5, "{decision:?}");
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_within_one_window_and_stable_is_untouched() {
    let h = Harness::start().await;
    let good = h.scenario.good_commit.clone();
    let stable = h.deploy_stable(&good, 1).await.version();
    let load = Load::start(h.public_addr().await, 4);
    load.wait_for(50, Duration::from_secs(30)).await;
    let (before_total, before_errors) = load.tally.snapshot();
    assert_eq!(before_errors, 0);

    let mut request = h.request(&good, pb::RolloutStrategy::Canary, 2);
    request.patch = h.patch(
        &good,
        &[
            ("src/lib.rs", ".route(\"/pay\", post(pay))", ".route(\"/pay\", post(always_500))"),
            (
                "src/lib.rs",
                "async fn healthz() -> &'static str {",
                "async fn always_500() -> StatusCode {\n    StatusCode::INTERNAL_SERVER_ERROR\n}\n\nasync fn healthz() -> &'static str {",
            ),
        ],
    );
    let window = Duration::from_millis(1500);
    request.plan = Some(plan(&[10, 50, 100], window, 15));
    let rollout = h.deploy(request).await;
    assert!(rollout.error.is_none(), "{rollout:#?}");
    assert_eq!(rollout.last_kind(), Kind::RolledBack, "{rollout:#?}");
    // A window with too little canary traffic (a loaded machine) is inconclusive and repeated;
    // the first window with enough traffic fails, and nothing moves past the first step.
    let analyses = rollout.of_kind(Kind::Analysis);
    let (last, earlier) = analyses.split_last().expect("an analysis");
    assert!(
        earlier.iter().all(|a| a.message == "inconclusive"),
        "one failed analysis is enough: {rollout:#?}"
    );
    assert!(
        analyses.iter().all(|a| a.canary_weight == 10),
        "{rollout:#?}"
    );
    assert_eq!(last.message, "fail");
    let rolled_back = rollout.events.last().unwrap();
    let decision = rolled_back.decision.as_ref().expect("rollback decision");
    assert!(decision.reasoning.contains("ceiling"), "{decision:?}");
    let at = |e: &pb::RolloutEvent| {
        let t = e.at.unwrap();
        t.seconds as f64 + f64::from(t.nanos) / 1e9
    };
    let after_last_window = at(rolled_back) - at(last);
    assert!(
        after_last_window < 0.5,
        "rolled back {after_last_window}s after the failed analysis"
    );
    let step = at(rollout.of_kind(Kind::Step)[0]);
    let windows = analyses.len() as f64;
    assert!(
        at(rolled_back) - step < window.as_secs_f64() * windows + 1.0,
        "rolled back within the windows it analysed"
    );

    let (during_total, during_errors) = load.tally.snapshot();
    let share = (during_errors - before_errors) as f64 / (during_total - before_total) as f64;
    assert!(share < 0.3, "only the canary's share failed: {share}");
    let (requests, errors) = load.wait_for(200, Duration::from_secs(30)).await;
    load.stop().await;
    assert_eq!(errors, 0, "no errors after rollback ({requests} requests)");
    let status = h.status().await;
    assert_eq!(status.stable.unwrap().version, stable);
    assert!(status.canary.is_none());
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_process_killed_during_a_step_is_rolled_back() {
    let h = Harness::start().await;
    let good = h.scenario.good_commit.clone();
    let stable = h.deploy_stable(&good, 1).await.version();
    let load = Load::start(h.public_addr().await, 2);

    let mut request = h.request(&good, pb::RolloutStrategy::Canary, 2);
    request.plan = Some(plan(&[50, 100], Duration::from_secs(60), 20));
    let deploy = tokio::spawn({
        let h_request = request.clone();
        let mut client = h.client.clone();
        async move {
            let mut stream = client.deploy(h_request).await.unwrap().into_inner();
            let mut events = Vec::new();
            while let Some(event) = stream.message().await.unwrap() {
                events.push(event.event.unwrap());
            }
            events
        }
    });
    let mut pid = 0;
    eventually(
        Duration::from_secs(120),
        "the canary takes traffic",
        async || {
            let status = h.status().await;
            if let Some(canary) = status.canary.filter(|c| c.weight == 50 && c.healthy) {
                pid = canary.pid;
                return true;
            }
            false
        },
    )
    .await;
    let killed_at = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let events = tokio::time::timeout(Duration::from_secs(30), deploy)
        .await
        .unwrap()
        .unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "rollback long before the 60 s window"
    );
    let last = events.last().unwrap();
    assert_eq!(last.kind(), Kind::RolledBack, "{events:#?}");
    assert!(
        last.decision.as_ref().unwrap().reasoning.contains("exited"),
        "{last:?}"
    );
    load.stop().await;
    assert_eq!(h.status().await.stable.unwrap().version, stable);
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaking_canary_is_rolled_back_on_its_memory_growth() {
    // The leak variant's bug commit keeps 64 KiB per payment; every answer stays 200.
    let h = Harness::start_variant("leak", |_| {}).await;
    let good = h.scenario.good_commit.clone();
    let stable = h.deploy_stable(&good, 1).await.version();
    let load = Load::start(h.public_addr().await, 4);
    load.wait_for(50, Duration::from_secs(30)).await;

    let mut request = h.request(&h.scenario.bad_commit, pb::RolloutStrategy::Canary, 2);
    request.plan = Some(plan(&[50, 100], Duration::from_secs(2), 20));
    let rollout = h.deploy(request).await;
    let (requests, errors) = load.tally.snapshot();
    load.stop().await;
    assert!(rollout.error.is_none(), "{rollout:#?}");
    assert_eq!(rollout.last_kind(), Kind::RolledBack, "{rollout:#?}");
    assert_eq!(
        errors, 0,
        "the leak answers every payment ({requests} requests)"
    );
    let failed = rollout
        .of_kind(Kind::Analysis)
        .into_iter()
        .rfind(|a| a.message == "fail")
        .expect("a failed analysis");
    let decision = failed.decision.as_ref().expect("analysis decision");
    assert!(
        decision.reasoning.contains("resident memory grows"),
        "{decision:#?}"
    );
    let input = |name: &str| {
        decision
            .inputs
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.value.parse::<f64>().expect("a number"))
            .unwrap_or_else(|| panic!("{name} missing from {decision:#?}"))
    };
    assert!(
        input("canary_memory_growth_mib_per_s") > 1.0,
        "{decision:#?}"
    );
    assert!(
        input("stable_memory_growth_mib_per_s") < 1.0,
        "{decision:#?}"
    );
    let memory = decision
        .factors
        .iter()
        .find(|f| f.name == "memory")
        .expect("memory factor");
    assert_eq!(memory.score, 0.0, "{memory:?}");
    let rolled_back = rollout.events.last().unwrap();
    assert!(
        rolled_back.message.contains("MiB/s") && rolled_back.message.contains("rolled back to"),
        "the rollback says why, with the figures: {}",
        rolled_back.message
    );
    let status = h.status().await;
    assert_eq!(status.stable.unwrap().version, stable);
    assert!(status.canary.is_none());
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fencing_token_is_rejected_and_changes_nothing() {
    let h = Harness::start().await;
    let good = h.scenario.good_commit.clone();
    let mut first = h.request(&good, pb::RolloutStrategy::Direct, 5);
    first.idempotency_key = "saga-1/deploy/1".into();
    let rollout = h.deploy(first.clone()).await;
    assert_eq!(rollout.last_kind(), Kind::Promoted, "{rollout:#?}");
    let before = h.status().await;
    assert_eq!(before.highest_fencing_token, 5);

    let replay = h.deploy(first.clone()).await;
    assert_eq!(
        replay.version(),
        rollout.version(),
        "a repeated key returns the recorded rollout"
    );
    assert_eq!(replay.kinds(), rollout.kinds());
    // A successor resuming the same step shows its newer token; the old holder repeating its
    // own key is then refused rather than answered from the record.
    let mut successor = first.clone();
    successor.fencing_token = 6;
    assert_eq!(h.deploy(successor).await.version(), rollout.version());
    let stale_repeat = h.deploy(first).await;
    let status = stale_repeat.error.expect("a stale repeat is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");

    let stale = h
        .deploy(h.request(&h.scenario.bad_commit, pb::RolloutStrategy::Direct, 4))
        .await;
    let status = stale.error.expect("stale token rejected");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("fencing token 4"), "{status}");
    let mut client = h.client.clone();
    let rollback = client
        .rollback(pb::RollbackRequest {
            service: SERVICE.into(),
            fencing_token: 3,
            reason: "stale holder".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(rollback.code(), tonic::Code::FailedPrecondition);

    let after = h.status().await;
    assert_eq!(
        after.stable.as_ref().unwrap().version,
        before.stable.as_ref().unwrap().version
    );
    assert_eq!(after.stable.unwrap().pid, before.stable.unwrap().pid);
    assert_eq!(after.highest_fencing_token, 6);
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_clear_errors_and_stable_keeps_serving() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let occupied_port = occupied.local_addr().unwrap().port();
    let h = Harness::start_with(|config| {
        config.processes.health_timeout = Duration::from_secs(3);
        config
            .router
            .ports
            .insert("blocked-service".into(), occupied_port);
    })
    .await;
    let good = h.scenario.good_commit.clone();
    let stable = h.deploy_stable(&good, 1).await.version();
    let addr = h.public_addr().await;
    let check_stable = async || {
        let response = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let status = h.status().await;
        assert_eq!(status.stable.unwrap().version, stable);
        assert!(status.canary.is_none());
    };

    let unknown = h
        .deploy(h.request(
            "0123456789abcdef0123456789abcdef01234567",
            pb::RolloutStrategy::Canary,
            1,
        ))
        .await;
    let status = unknown.error.expect("unknown commit fails");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    assert!(status.message().contains("does not exist"), "{status}");
    check_stable().await;

    let mut broken_build = h.request(&good, pb::RolloutStrategy::Canary, 1);
    broken_build.patch = h.patch(
        &good,
        &[(
            "src/lib.rs",
            "async fn healthz() -> &'static str {",
            "async fn healthz() -> &'static str { this is not rust",
        )],
    );
    let rollout = h.deploy(broken_build).await;
    let status = rollout.error.clone().expect("build failure is an error");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(status.message().contains("build of"), "{status}");
    assert!(
        status.message().contains("error"),
        "log tail carries the compiler error: {status}"
    );
    assert_eq!(rollout.last_kind(), Kind::Failed);
    check_stable().await;

    let mut never_healthy = h.request(&good, pb::RolloutStrategy::Canary, 1);
    never_healthy.patch = h.patch(
        &good,
        &[(
            "src/lib.rs",
            ".route(\"/healthz\", get(healthz))",
            ".route(\"/healthz\", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))",
        )],
    );
    let started = Instant::now();
    let rollout = h.deploy(never_healthy).await;
    let status = rollout.error.clone().expect("unhealthy version fails");
    assert!(
        status.message().contains("did not become healthy"),
        "{status}"
    );
    assert!(rollout.kinds().contains(&Kind::Started));
    assert!(started.elapsed() < Duration::from_secs(90));
    check_stable().await;

    let mut bad_manifest = h.request(&good, pb::RolloutStrategy::Canary, 1);
    bad_manifest.patch = h.patch(
        &good,
        &[("selfheal.toml", "port_env = \"PORT\"", "port_env = ")],
    );
    let rollout = h.deploy(bad_manifest).await;
    let status = rollout.error.clone().expect("malformed manifest fails");
    assert!(status.message().contains("selfheal.toml"), "{status}");
    check_stable().await;

    let mut blocked = h.request(&good, pb::RolloutStrategy::Direct, 1);
    blocked.service = "blocked-service".into();
    let rollout = h.deploy(blocked).await;
    let status = rollout.error.clone().expect("occupied port fails");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(
        status.message().contains(&occupied_port.to_string()),
        "{status}"
    );
    check_stable().await;
    drop(occupied);
    h.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_cancels_a_canary_and_later_restores_the_previous_stable() {
    let h = Harness::start().await;
    let good = h.scenario.good_commit.clone();
    let first = h.deploy_stable(&good, 1).await.version();
    let mut client = h.client.clone();

    let mut request = h.request(&good, pb::RolloutStrategy::Canary, 2);
    request.plan = Some(plan(&[50, 100], Duration::from_secs(60), 20));
    let mut stream = client.deploy(request).await.unwrap().into_inner();
    eventually(
        Duration::from_secs(60),
        "the canary takes its step",
        async || h.status().await.canary.is_some_and(|c| c.weight == 50),
    )
    .await;
    let outcome = client
        .rollback(pb::RollbackRequest {
            service: SERVICE.into(),
            fencing_token: 3,
            reason: "operator abort".into(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(outcome.rolled_back);
    assert_eq!(outcome.stable_version, first);
    let mut last = None;
    while let Some(event) = stream.message().await.unwrap() {
        last = event.event;
    }
    let last = last.expect("events");
    assert_eq!(last.kind(), Kind::RolledBack);
    assert!(last.decision.unwrap().reasoning.contains("operator abort"));
    assert!(h.status().await.canary.is_none());

    let mut follow = client
        .logs(pb::LogsRequest {
            service: SERVICE.into(),
            version: String::new(),
            follow: true,
            tail: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let second = h
        .deploy_stable(&h.scenario.bad_commit.clone(), 4)
        .await
        .version();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = follow.message().await.unwrap() {
            if line.version == second && line.text.contains("listening") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "follow streams the new version's output");

    let rollback = pb::RollbackRequest {
        service: SERVICE.into(),
        fencing_token: 5,
        reason: "verification failed".into(),
        idempotency_key: "saga-9/rollback/1".into(),
    };
    let outcome = client
        .rollback(rollback.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(outcome.rolled_back);
    assert_eq!(
        outcome.stable_version, first,
        "the build stable replaced is restored"
    );
    let status = h.status().await;
    let stable = status.stable.unwrap();
    assert_eq!(stable.commit, good);
    assert!(stable.healthy);
    let repeated = client.rollback(rollback).await.unwrap().into_inner();
    assert_eq!(
        repeated, outcome,
        "a repeated key returns the recorded outcome"
    );
    assert_eq!(
        h.status().await.stable.unwrap().pid,
        stable.pid,
        "and changes nothing"
    );

    let nothing = client
        .rollback(pb::RollbackRequest {
            service: SERVICE.into(),
            fencing_token: 6,
            reason: String::new(),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), tonic::Code::FailedPrecondition, "{nothing}");
    assert!(
        nothing.message().contains("nothing to roll back"),
        "{nothing}"
    );
    h.service.stop().await.unwrap();
}
