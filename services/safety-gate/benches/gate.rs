//! Wall time of the gate on the demo fix: one `Evaluate` with the template fix, three failing and
//! three passing captured requests, real build, tests and replay in the sandbox.
//!
//! Cold: a fresh, empty target directory and work dir (every dependency compiles).
//! Warm: the shared target directory and a work dir that has seen the commit before.
//!
//! ```text
//! cargo bench -p selfheal-safety-gate --bench gate
//! GATE_BENCH_COLD_RUNS=1 GATE_BENCH_WARM_RUNS=5 cargo bench -p selfheal-safety-gate --bench gate
//! ```
//! The warm target directory is `selfheal_scenario::example_target_dir()` (`CARGO_TARGET_DIR`
//! when set).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::safety_gate_client::SafetyGateClient;
use selfheal_safety_gate::Config;
use selfheal_service::testkit::ServiceUnderTest;

const FIX: &str = "diff --git a/src/payments.rs b/src/payments.rs
--- a/src/payments.rs
+++ b/src/payments.rs
@@ -234,7 +234,7 @@ pub fn process_payment(
 
     // Charge customers through the method they picked in their account settings, so wallet
     // and bank-transfer users are no longer pushed through card fees.
-    let method = customer.preferred_method.unwrap();
+    let method = customer.preferred_method.unwrap_or(DEFAULT_METHOD);
 
     let fee_cents = compute_fee(amount_cents, method);
     let total_cents = amount_cents + fee_cents;
";

fn payment(customer: u32, observed_status: u32) -> pb::ReplayRequest {
    pb::ReplayRequest {
        method: "POST".into(),
        path: "/pay".into(),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body: format!(r#"{{"customer_id":"cust-{customer:04}","amount_cents":1250}}"#).into_bytes(),
        observed_status,
    }
}

fn runs(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Times `runs` evaluations with a gate over `work_dir` and `target_dir`.
async fn measure(
    repo: &Path,
    commit: &str,
    work_dir: PathBuf,
    target_dir: PathBuf,
    runs: usize,
) -> Vec<(Duration, pb::EvaluateResponse)> {
    let mut config = Config::default();
    config.gate.work_dir = work_dir;
    config.gate.target_dir = Some(target_dir);
    let service = ServiceUnderTest::start(move |listeners, shutdown| {
        selfheal_safety_gate::run(config, listeners, shutdown)
    })
    .await;
    selfheal_service::testkit::wait_serving(
        service.grpc_addr,
        selfheal_proto::service_names::SAFETY_GATE,
    )
    .await;
    let mut client = SafetyGateClient::connect(service.grpc_url())
        .await
        .expect("the gate accepts connections");
    let mut out = Vec::new();
    for _ in 0..runs {
        let mut request = tonic::Request::new(pb::EvaluateRequest {
            incident_id: "bench".into(),
            service: "payment-service".into(),
            source: Some(pb::SourceRef {
                repository: repo.to_string_lossy().into_owned(),
                commit: commit.to_owned(),
            }),
            candidates: vec![pb::CandidatePatch {
                id: "template".into(),
                strategy: pb::PatchStrategy::Template as i32,
                diff: FIX.into(),
                ..Default::default()
            }],
            failing_requests: vec![payment(0, 500), payment(1, 500), payment(2, 500)],
            passing_requests: vec![payment(3, 200), payment(4, 200), payment(5, 200)],
            service_criticality: 0.5,
            dependents: 2,
        });
        request.set_timeout(Duration::from_secs(3600));
        let started = Instant::now();
        let response = client
            .evaluate(request)
            .await
            .expect("the gate evaluates")
            .into_inner();
        let elapsed = started.elapsed();
        assert_eq!(
            response.selected_candidate_id, "template",
            "the fix is approved: {response:#?}"
        );
        out.push((elapsed, response));
    }
    service.stop().await.expect("clean shutdown");
    out
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn report(label: &str, results: &[(Duration, pb::EvaluateResponse)]) {
    if results.is_empty() {
        return;
    }
    let times: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    println!(
        "{label}: median {:.2} s over {} run(s) (all: {})",
        median(times.clone()).as_secs_f64(),
        times.len(),
        times
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some((_, last)) = results.last() {
        let stages: Vec<String> = last.verdicts[0]
            .checks
            .iter()
            .map(|c| {
                let d = c.duration.unwrap_or_default();
                format!(
                    "{} {:.2} s",
                    c.name,
                    d.seconds as f64 + f64::from(d.nanos) / 1e9
                )
            })
            .collect();
        println!("  last run's stages: {}", stages.join(", "));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let scratch = tempfile::tempdir().expect("temp dir");
    let scenario = selfheal_scenario::build(
        &selfheal_scenario::examples_dir().join("payment-service"),
        &scratch.path().join("repo"),
    )
    .expect("the scenario builds");
    let (repo, commit) = (scenario.repo.clone(), scenario.bad_commit.clone());

    let cold_runs = runs("GATE_BENCH_COLD_RUNS", 1);
    let warm_runs = runs("GATE_BENCH_WARM_RUNS", 5);

    let mut cold = Vec::new();
    for i in 0..cold_runs {
        let dir = scratch.path().join(format!("cold-{i}"));
        cold.extend(measure(&repo, &commit, dir.join("gate"), dir.join("target"), 1).await);
        let _ = std::fs::remove_dir_all(&dir);
    }
    report("cold (empty target dir and work dir)", &cold);

    // Warm: one run to fill the shared target dir and the baseline cache, then the timed runs.
    let work_dir = scratch.path().join("warm-gate");
    let target_dir = selfheal_scenario::example_target_dir();
    let mut warm = measure(&repo, &commit, work_dir, target_dir, warm_runs + 1).await;
    let first = warm.remove(0);
    report("warm-up (shared target dir, new work dir)", &[first]);
    report("warm (shared target dir, work dir seen the commit)", &warm);
}
