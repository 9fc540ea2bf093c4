//! The gate on the demo bug, with real builds, tests and replays in the sandbox: it approves the
//! template fix over the reverts, and rejects candidates that break in every way it checks.

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;

use common::*;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::PatchStrategy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approves_the_template_fix_over_the_reverts_and_rejects_broken_candidates() {
    let mut gate = Harness::start("payment-service", |_| {}).await;
    let (good, bad) = (
        gate.scenario.good_commit.clone(),
        gate.scenario.bad_commit.clone(),
    );
    // A listener outside the sandbox that a candidate's test tries to reach.
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    outside.set_nonblocking(true).unwrap();
    let port = outside.local_addr().unwrap().port();

    let fix = template_fix("unwrap_or(DEFAULT_METHOD)");
    let padding: String = (0..45).map(|i| format!("// note {i}\n")).collect();
    let candidates = vec![
        candidate("template", PatchStrategy::Template, &fix),
        candidate(
            "partial-revert",
            PatchStrategy::PartialRevert,
            &gate.git_diff(&bad, &good, &["src/payments.rs"]),
        ),
        candidate(
            "full-revert",
            PatchStrategy::FullRevert,
            &gate.git_diff(&bad, &good, &[]),
        ),
        candidate(
            "does-not-compile",
            PatchStrategy::Template,
            &template_fix("unwrap_or(NO_SUCH_METHOD)"),
        ),
        candidate(
            "fails-tests",
            PatchStrategy::Mutation,
            &format!(
                "{fix}{}",
                new_file(
                    "tests/fees.rs",
                    "#[test]\nfn card_payments_are_free() {\n    assert_eq!(payment_service::payments::compute_fee(1000, payment_service::customers::PaymentMethod::Card), 0);\n}"
                )
            ),
        ),
        candidate(
            "needs-network",
            PatchStrategy::Llm,
            &format!(
                "{fix}{}",
                new_file(
                    "tests/fraud.rs",
                    &format!(
                        "#[test]\nfn reaches_the_fraud_scorer() {{\n    std::net::TcpStream::connect(\"127.0.0.1:{port}\").expect(\"fraud scorer reachable\");\n}}"
                    )
                )
            ),
        ),
        candidate(
            "forbidden-path",
            PatchStrategy::Template,
            "diff --git a/selfheal.toml b/selfheal.toml\n--- a/selfheal.toml\n+++ b/selfheal.toml\n@@ -35,4 +35,4 @@ command = [\"cargo\", \"test\", \"--locked\"]\n \n [policy]\n forbidden_paths = [\"Cargo.toml\", \"Cargo.lock\", \"selfheal.toml\", \".git/\"]\n-max_changed_lines = 40\n+max_changed_lines = 4000\n",
        ),
        candidate(
            "too-large",
            PatchStrategy::Mutation,
            &format!("{fix}{}", new_file("src/notes.rs", &padding)),
        ),
        candidate(
            "does-not-apply",
            PatchStrategy::Template,
            &template_fix("unwrap_or(DEFAULT_METHOD)").replace("card fees.", "card charges."),
        ),
    ];
    let mut request = gate.request(candidates);
    // cust-0000..0002 have no preferred method: the bad build answers 500.
    request.failing_requests = vec![payment(0, 500), payment(1, 500), payment(2, 500)];
    // card, bank transfer, wallet: the bad build answers them correctly.
    // cust-0000 again, as the router sampled it while the good version served: it worked then,
    // the bad build fails it, so for this commit it is a failing request and not a behaviour
    // the fix must keep.
    request.passing_requests = vec![
        payment(3, 200),
        payment(4, 200),
        payment(5, 200),
        payment(0, 200),
    ];

    let response = gate.evaluate(request).await.expect("the gate evaluates");

    // The template fix: every stage passes, nothing that worked changes, low risk.
    let template = verdict(&response, "template");
    assert_eq!(
        template.outcome(),
        pb::GateOutcome::Approve,
        "{template:#?}"
    );
    assert!(template.risk_score <= 0.3, "{}", template.risk_score);
    let names: Vec<&str> = template.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["apply", "policy", "build", "test", "replay"]);
    assert!(
        template
            .checks
            .iter()
            .all(|c| c.status() == pb::CheckStatus::Passed && c.duration.is_some()),
        "{template:#?}"
    );
    assert!(template.warnings.is_empty(), "{:?}", template.warnings);
    assert!(template.behaviour_changes.is_empty());
    let decision = template.decision.as_ref().expect("a decision");
    assert_eq!(decision.kind(), pb::DecisionKind::SafetyGate);
    assert!(!decision.inputs.is_empty() && !decision.constraints.is_empty());
    let weights: f64 = decision.factors.iter().map(|f| f.weight).sum();
    assert!((weights - 1.0).abs() < 1e-9);

    // The reverts cure the failure too, but change what customers with a preference get.
    for id in ["partial-revert", "full-revert"] {
        let revert = verdict(&response, id);
        assert_eq!(revert.outcome(), pb::GateOutcome::NeedsHuman, "{revert:#?}");
        assert!(revert.risk_score > template.risk_score);
        assert!(
            revert
                .behaviour_changes
                .iter()
                .any(|c| c.contains("cust-0004") && c.contains("bank_transfer")),
            "{:?}",
            revert.behaviour_changes
        );
    }

    // The selection and why the template fix beats the revert.
    assert_eq!(response.selected_candidate_id, "template");
    assert_eq!(response.recommended_candidate_id, "template");
    assert_eq!(response.outcome(), pb::GateOutcome::Approve);
    let decision = response.decision.as_ref().expect("a decision");
    assert_eq!(decision.kind(), pb::DecisionKind::SafetyGate);
    let full = decision
        .alternatives
        .iter()
        .find(|a| a.option.starts_with("full-revert"))
        .expect("the full revert is an alternative");
    assert!(
        full.why_not.contains("changes the answers")
            && full.why_not.contains("drops the feature the commit added"),
        "{}",
        full.why_not
    );
    assert!(
        decision.reasoning.contains("beats the others"),
        "{}",
        decision.reasoning
    );

    // Rejections, each with its reason.
    let expect_reject = |id: &str, check: &str, needle: &str| {
        let v = verdict(&response, id);
        assert_eq!(v.outcome(), pb::GateOutcome::Reject, "{v:#?}");
        let (name, detail) = failed_check(v);
        assert_eq!(name, check, "{id}: {detail}");
        assert!(detail.contains(needle), "{id}: {detail}");
        assert_eq!(
            v.checks.last().map(|c| c.name.as_str()),
            Some(check),
            "{id} stops at the first failing stage"
        );
    };
    expect_reject("does-not-compile", "build", "failed");
    assert!(
        failed_check_log(verdict(&response, "does-not-compile")).contains("NO_SUCH_METHOD"),
        "the build log tail names the error"
    );
    expect_reject("fails-tests", "test", "failed");
    expect_reject("needs-network", "test", "the sandbox has no network");
    expect_reject("forbidden-path", "policy", "forbidden path (selfheal.toml)");
    expect_reject("too-large", "policy", "over the limit of 40");
    expect_reject("does-not-apply", "apply", "does not apply");

    // The sandbox really kept the test away from the listener.
    assert_eq!(
        outside.accept().map(|_| ()).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "no connection from the sandbox reached the host"
    );
    // Worktrees are removed afterwards.
    let worktrees = gate.dir.path().join("gate").join("worktrees");
    assert_eq!(std::fs::read_dir(&worktrees).unwrap().count(), 0);
    gate.service.stop().await.expect("clean shutdown");
}

fn failed_check_log(verdict: &pb::GateVerdict) -> &str {
    verdict
        .checks
        .iter()
        .find(|c| c.status() == pb::CheckStatus::Failed)
        .map_or("", |c| c.log_tail.as_str())
}
