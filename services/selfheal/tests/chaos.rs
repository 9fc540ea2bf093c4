//! A bounded chaos run in the suite: random faults against the running demo for 60 s, then every
//! invariant must hold. The seed is fixed so a failure can be repeated with the same choices.

use std::process::Command;

#[test]
fn a_bounded_chaos_run_keeps_every_invariant() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "inject",
            "--chaos",
            "--duration",
            "60s",
            "--seed",
            "20261207",
            "--json",
            "--work-dir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}\nstderr: {stderr}"));
    let invariants = report["invariants"].as_array().unwrap();
    assert_eq!(invariants.len(), 5, "{report:#}");
    for invariant in invariants {
        assert_eq!(
            invariant["held"], true,
            "{invariant:#}\n{report:#}\nstderr: {stderr}"
        );
    }
    let faults = report["faults"].as_array().unwrap();
    assert!(faults.len() >= 5, "{report:#}");
    assert_eq!(faults[0]["fault"], "bad_release", "{report:#}");
    // The first buggy release is one incident at least, and its saga finished.
    assert!(report["incidents"].as_u64().unwrap() >= 1, "{report:#}");
    let sagas: u64 = report["sagas"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(sagas >= 1, "{report:#}");
    assert!(output.status.success(), "{report:#}\nstderr: {stderr}");
}

#[test]
fn chaos_options_are_checked_before_anything_starts() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["inject", "--chaos", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--duration"), "{stderr}");
    for duration in ["0s", "100years"] {
        let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(["inject", "--chaos", "--duration", duration])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{duration}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("give 5s to 24h"), "{stderr}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["inject", "--seed", "3", "--all"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
