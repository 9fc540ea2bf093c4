//! The failure-injection matrix in the suite: every scenario that is built injects its real
//! fault and its reaction, judged from the system's state, must be the expected one. Scenarios
//! not built yet must say so rather than pass.

use std::process::Command;

#[test]
fn every_built_scenario_of_the_matrix_reacts_as_designed() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["inject", "--all", "--json", "--work-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}\nstderr: {stderr}"));
    assert_eq!(outcomes.len(), 20, "the whole matrix is listed");
    let built: Vec<&str> = selfheal::inject::MATRIX
        .iter()
        .filter(|s| s.built())
        .map(|s| s.name)
        .collect();
    assert!(built.len() >= 9, "{built:?}");
    for outcome in &outcomes {
        let name = outcome["scenario"].as_str().unwrap();
        let result = outcome["result"].as_str().unwrap();
        if built.contains(&name) {
            assert_eq!(result, "pass", "{outcome:#}\nstderr: {stderr}");
        } else {
            assert_eq!(result, "not built", "{outcome:#}");
        }
    }
    // Only the whole matrix passing is success; a scenario not built keeps the command from
    // claiming it.
    assert_eq!(
        output.status.success(),
        built.len() == outcomes.len(),
        "stderr: {stderr}"
    );
}

#[test]
fn an_unknown_scenario_is_refused_with_the_list() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["inject", "--scenario", "meteor_strike"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("high_error_rate"), "{stderr}");
}
