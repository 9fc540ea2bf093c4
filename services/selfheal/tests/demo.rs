//! `selfheal demo` end to end on the embedded default: the real payment-service is built,
//! deployed with its bug, put under load, and healed by the system alone.

use std::process::Command;

#[test]
fn the_demo_heals_the_payment_service_and_the_audit_chain_verifies() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["demo", "--json", "--timeout", "8m", "--work-dir"])
        .arg(work.path())
        .arg("--metrics-out")
        .arg(work.path().join("demo.prom"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{error}\nstdout: {}\nstderr: {stderr}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
    assert!(output.status.success(), "{summary:#}\nstderr: {stderr}");
    assert_eq!(summary["status"], "resolved", "{summary:#}");
    assert_eq!(summary["audit_chain_ok"], true, "{summary:#}");

    let before = summary["error_rate_before"].as_f64().unwrap();
    let after = summary["error_rate_after"].as_f64().unwrap();
    assert!(before > 0.05, "the bug was visible to clients: {summary:#}");
    assert!(after < 0.01, "clients stopped seeing errors: {summary:#}");
    assert!(
        summary["requests_after"].as_u64().unwrap() > 20,
        "{summary:#}"
    );
    let mttr = summary["mttr_seconds"].as_f64().unwrap();
    assert!(mttr > 0.0, "{summary:#}");

    let steps: Vec<&str> = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"detect"), "{summary:#}");
    assert!(
        steps.len() >= 6,
        "every saga step is in the breakdown: {steps:?}"
    );
    let kinds: Vec<&str> = summary["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    for kind in ["root_cause", "safety_gate"] {
        assert!(kinds.contains(&kind), "{kind} decision missing: {kinds:?}");
    }

    let metrics = std::fs::read_to_string(work.path().join("demo.prom")).unwrap();
    assert!(metrics.contains("selfheal_demo_mttr_seconds"), "{metrics}");
    assert!(metrics.contains("selfheal_demo_healed 1"), "{metrics}");
}
