//! `selfheal load` against the real payment-service at its buggy commit.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn load_measures_the_buggy_services_error_rate() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = selfheal_scenario::build(
        &selfheal_scenario::examples_dir().join("payment-service"),
        &dir.path().join("repo"),
    )
    .unwrap();
    let git = Command::new("git")
        .arg("-C")
        .arg(&scenario.repo)
        .args(["checkout", "--quiet", &scenario.bad_commit])
        .status();
    assert!(git.unwrap().success());
    let target_dir = selfheal_scenario::example_target_dir();
    let built = Command::new("cargo")
        .args(["build", "--locked", "--quiet"])
        .current_dir(&scenario.repo)
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .unwrap();
    assert!(built.success());

    let port = free_port();
    let _service = Kill(
        Command::new(target_dir.join("debug/payment-service"))
            .env("PORT", port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let target = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "payment-service never listened");
        std::thread::sleep(Duration::from_millis(50));
    }

    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "load",
            "--target",
            &target,
            "--rate",
            "200",
            "--duration",
            "3s",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sent = summary["sent"].as_u64().unwrap();
    assert!(sent >= 300, "about 600 requests were started: {summary}");
    let error_rate = summary["error_rate"].as_f64().unwrap();
    assert!(
        (0.07..0.25).contains(&error_rate),
        "about 15% of customers hit the bug: {summary}"
    );
    assert!(summary["latency_ms_p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn load_rejects_a_nonsense_plan_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["load", "--rate", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rate must be"));
}
