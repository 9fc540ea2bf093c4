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

/// `--inject-failure` runs a scenario of the matrix with the live timeline, then its verdict.
#[test]
fn the_demo_shows_an_injected_failure_with_its_timeline_and_verdict() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["demo", "--inject-failure", "no_fix_found", "--work-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\nstderr: {stderr}");
    assert!(stdout.contains("injecting no_fix_found"), "{stdout}");
    assert!(
        stdout.contains("low RCA confidence: escalate with the full report"),
        "the expected reaction is shown: {stdout}"
    );
    let timeline: Vec<&str> = stdout
        .lines()
        .filter(|line| {
            line.trim_start()
                .split_once("s  ")
                .is_some_and(|(t, _)| t.parse::<f64>().is_ok())
        })
        .collect();
    assert!(
        timeline.iter().any(|line| line.contains("escalat")),
        "the timeline shows the saga escalating: {stdout}"
    );
    assert!(stdout.contains("PASS"), "the verdict: {stdout}");
}

#[test]
fn an_injected_failure_outside_the_matrix_or_with_demo_settings_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["demo", "--inject-failure", "cosmic_rays"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a scenario of the matrix") && stderr.contains("memory_leak"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "demo",
            "--inject-failure",
            "memory_leak",
            "--set",
            "detector.detection.window=5s",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a usage error from the parser"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}
