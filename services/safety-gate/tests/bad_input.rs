//! Requests the gate cannot evaluate get a clear status before any build starts.

mod common;

use common::*;
use selfheal_proto::v1::PatchStrategy;
use tonic::Code;

#[tokio::test]
async fn refuses_requests_it_cannot_evaluate_with_clear_statuses() {
    let mut gate = Harness::start("payment-service", |_| {}).await;
    let fix = template_fix("unwrap_or(DEFAULT_METHOD)");

    let status = gate.evaluate(gate.request(vec![])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at least one candidate"),
        "{status}"
    );

    let mut request = gate.request(vec![candidate("fix", PatchStrategy::Template, &fix)]);
    request.source.as_mut().unwrap().commit = "0123456789abcdef0123456789abcdef01234567".into();
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("does not exist"), "{status}");

    let mut request = gate.request(vec![candidate("fix", PatchStrategy::Template, &fix)]);
    request.source = None;
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("source"), "{status}");

    let mut request = gate.request(vec![candidate("fix", PatchStrategy::Template, &fix)]);
    request.source.as_mut().unwrap().repository = "/nonexistent/selfheal/repo".into();
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not a directory"), "{status}");

    let escaping = "--- a/../../etc/cron.d/x\n+++ b/../../etc/cron.d/x\n@@ -1 +1 @@\n-a\n+b\n";
    let request = gate.request(vec![
        candidate("fix", PatchStrategy::Template, &fix),
        candidate("escape", PatchStrategy::Llm, escaping),
    ]);
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("candidates[1].diff (escape)")
            && status.message().contains("escapes the repository"),
        "{status}"
    );

    let request = gate.request(vec![
        candidate("same", PatchStrategy::Template, &fix),
        candidate("same", PatchStrategy::Template, &fix),
    ]);
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("used twice"), "{status}");

    let request = gate.request(vec![candidate("empty", PatchStrategy::Template, "")]);
    let status = gate.evaluate(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("empty"), "{status}");

    // Nothing was checked out for any of them.
    let worktrees = gate.dir.path().join("gate").join("worktrees");
    assert_eq!(std::fs::read_dir(&worktrees).unwrap().count(), 0);
    gate.service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn verdicts_say_when_the_network_sandbox_is_off() {
    let mut gate = Harness::start("payment-service", |c| {
        c.gate.sandbox = selfheal_safety_gate::SandboxMode::Off;
    })
    .await;
    // A candidate that stops at apply: no build needed to see the warning.
    let stale = template_fix("unwrap_or(DEFAULT_METHOD)").replace("card fees.", "card charges.");
    let response = gate
        .evaluate(gate.request(vec![candidate("stale", PatchStrategy::Template, &stale)]))
        .await
        .expect("the gate evaluates");
    let v = verdict(&response, "stale");
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("network sandbox is disabled")),
        "{:?}",
        v.warnings
    );
    assert_eq!(failed_check(v).0, "apply");
    assert!(response.selected_candidate_id.is_empty());
    gate.service.stop().await.expect("clean shutdown");
}
