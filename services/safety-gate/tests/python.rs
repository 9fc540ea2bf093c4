//! The gate on the Python target (examples/inventory-service): the guard fix for the `None`
//! supplier is built, tested and replayed in the sandbox and approved; the same fix with the
//! guard on the wrong attribute is rejected because the crash persists.

mod common;

use common::*;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::PatchStrategy;

/// The guard fix of the bug line, written by hand.
fn guard_fix(line: &str) -> String {
    format!(
        "diff --git a/inventory/catalog.py b/inventory/catalog.py
--- a/inventory/catalog.py
+++ b/inventory/catalog.py
@@ -57,7 +57,7 @@ def availability(item: Item) -> dict:
     \"\"\"What GET /items/{{sku}} answers for an item.\"\"\"
     available = item.on_hand - item.reserved
     # Quote the supplier's own lead time, so buyers see when a restock can really arrive.
-    lead_days = item.supplier.lead_time_days
+{line}
     return {{
         \"sku\": item.sku,
         \"name\": item.name,
"
    )
}

fn lookup(sku: u32, observed_status: u32) -> pb::ReplayRequest {
    pb::ReplayRequest {
        method: "GET".into(),
        path: format!("/items/sku-{sku:04}"),
        observed_status,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approves_the_guard_fix_of_the_python_service_and_rejects_a_wrong_guard() {
    let mut gate = Harness::start("inventory-service", |_| {}).await;

    let good = "    lead_days = item.supplier.lead_time_days if item.supplier is not None else DEFAULT_LEAD_TIME_DAYS";
    let wrong = "    lead_days = item.supplier.lead_time_days if item.name is not None else DEFAULT_LEAD_TIME_DAYS";
    let mut request = gate.request(vec![
        candidate("guard", PatchStrategy::Template, &guard_fix(good)),
        candidate("wrong-guard", PatchStrategy::Mutation, &guard_fix(wrong)),
    ]);
    // sku-0000..0002 are made in-house (no supplier): 500 at the bad commit.
    request.failing_requests = vec![lookup(0, 500), lookup(1, 500), lookup(20, 500)];
    request.passing_requests = vec![lookup(5, 200), lookup(10, 200), lookup(999, 200)];

    let response = gate.evaluate(request).await.expect("the gate evaluates");

    let guard = verdict(&response, "guard");
    assert_eq!(guard.outcome(), pb::GateOutcome::Approve, "{guard:#?}");
    assert!(guard.risk_score <= 0.3, "{}", guard.risk_score);
    assert!(
        guard
            .checks
            .iter()
            .all(|c| c.status() == pb::CheckStatus::Passed),
        "{guard:#?}"
    );
    assert_eq!(response.selected_candidate_id, "guard");

    let wrong = verdict(&response, "wrong-guard");
    assert_eq!(wrong.outcome(), pb::GateOutcome::Reject, "{wrong:#?}");
    let (check, detail) = failed_check(wrong);
    assert_eq!(check, "replay");
    assert!(
        detail.contains("3 of 3 captured failing requests still fail")
            && detail.contains("/items/sku-0000"),
        "{detail}"
    );
    gate.service.stop().await.expect("clean shutdown");
}
