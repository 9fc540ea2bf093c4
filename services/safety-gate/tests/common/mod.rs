//! Shared helpers: a safety gate started in-process, the payment-service scenario, candidates
//! written by hand or made with git, and requests built from the example's real routes.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::safety_gate_client::SafetyGateClient;
use selfheal_safety_gate::{Config, Error, SandboxMode};
use selfheal_scenario::Scenario;
use selfheal_service::testkit::ServiceUnderTest;
use tonic::transport::Channel;

pub const SERVICE: &str = "payment-service";

/// A gate running in the test's runtime with its own work dir, and a built demo history.
pub struct Harness {
    pub service: ServiceUnderTest<Error>,
    pub client: SafetyGateClient<Channel>,
    pub scenario: Scenario,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(example: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_at(&selfheal_scenario::examples_dir().join(example), tweak).await
    }

    /// Like [`Harness::start`] with the example at `example_dir`.
    pub async fn start_at(example_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let scenario = selfheal_scenario::build(example_dir, &dir.path().join("repo"))
            .expect("the scenario builds");
        let mut config = Config::default();
        config.gate.work_dir = dir.path().join("gate");
        config.gate.target_dir = Some(selfheal_scenario::example_target_dir());
        // These tests show what the sandbox blocks: they need it.
        config.gate.sandbox = SandboxMode::Require;
        config.gate.max_candidates = 12;
        tweak(&mut config);
        let service = ServiceUnderTest::start(move |listeners, shutdown| {
            selfheal_safety_gate::run(config, listeners, shutdown)
        })
        .await;
        selfheal_service::testkit::wait_serving(
            service.grpc_addr,
            selfheal_proto::service_names::SAFETY_GATE,
        )
        .await;
        let client = SafetyGateClient::connect(service.grpc_url())
            .await
            .expect("the gate accepts connections");
        Self {
            service,
            client,
            scenario,
            dir,
        }
    }

    pub fn request(&self, candidates: Vec<pb::CandidatePatch>) -> pb::EvaluateRequest {
        pb::EvaluateRequest {
            incident_id: "inc-test".into(),
            service: self.scenario.service.clone(),
            source: Some(pb::SourceRef {
                repository: self.scenario.repo.to_string_lossy().into_owned(),
                commit: self.scenario.bad_commit.clone(),
            }),
            candidates,
            service_criticality: 0.5,
            dependents: 2,
            ..Default::default()
        }
    }

    pub async fn evaluate(
        &mut self,
        request: pb::EvaluateRequest,
    ) -> Result<pb::EvaluateResponse, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(1800));
        self.client.evaluate(request).await.map(|r| r.into_inner())
    }

    /// `git diff from to [-- paths]` in the scenario repository.
    pub fn git_diff(&self, from: &str, to: &str, paths: &[&str]) -> String {
        let mut command = Command::new("git");
        command
            .current_dir(&self.scenario.repo)
            .args(["diff", "--no-color", from, to]);
        if !paths.is_empty() {
            command.arg("--").args(paths);
        }
        let out = command.output().expect("git runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 diff")
    }
}

pub fn candidate(id: &str, strategy: pb::PatchStrategy, diff: &str) -> pb::CandidatePatch {
    pb::CandidatePatch {
        id: id.into(),
        strategy: strategy as i32,
        diff: diff.into(),
        rationale: format!("{id} for the unwrap on a customer without a preferred method"),
        confidence: 0.8,
        ..Default::default()
    }
}

/// The template fix of the demo bug, written by hand: `unwrap()` → `unwrap_or(DEFAULT_METHOD)`.
pub fn template_fix(replacement: &str) -> String {
    format!(
        "diff --git a/src/payments.rs b/src/payments.rs
--- a/src/payments.rs
+++ b/src/payments.rs
@@ -234,7 +234,7 @@ pub fn process_payment(
 
     // Charge customers through the method they picked in their account settings, so wallet
     // and bank-transfer users are no longer pushed through card fees.
-    let method = customer.preferred_method.unwrap();
+    let method = customer.preferred_method.{replacement};
 
     let fee_cents = compute_fee(amount_cents, method);
     let total_cents = amount_cents + fee_cents;
"
    )
}

/// A diff adding a new file.
pub fn new_file(path: &str, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut diff = format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{} @@\n",
        lines.len()
    );
    for line in lines {
        diff.push('+');
        diff.push_str(line);
        diff.push('\n');
    }
    diff
}

/// `POST /pay` for a seeded customer, as the router captures it.
pub fn payment(customer: u32, observed_status: u32) -> pb::ReplayRequest {
    pb::ReplayRequest {
        method: "POST".into(),
        path: "/pay".into(),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body: format!(r#"{{"customer_id":"cust-{customer:04}","amount_cents":1250}}"#).into_bytes(),
        observed_status,
    }
}

pub fn verdict<'a>(response: &'a pb::EvaluateResponse, id: &str) -> &'a pb::GateVerdict {
    response
        .verdicts
        .iter()
        .find(|v| v.candidate_id == id)
        .unwrap_or_else(|| panic!("a verdict for {id}"))
}

/// The failed check of a verdict, by name and detail.
pub fn failed_check(verdict: &pb::GateVerdict) -> (&str, &str) {
    let check = verdict
        .checks
        .iter()
        .find(|c| c.status() == pb::CheckStatus::Failed)
        .unwrap_or_else(|| panic!("{} has a failed check: {verdict:#?}", verdict.candidate_id));
    (check.name.as_str(), check.detail.as_str())
}
