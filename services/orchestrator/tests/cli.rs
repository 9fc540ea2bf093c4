//! The `selfheal-orchestrator` binary: configuration layering and exit codes.

use std::process::Command;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_selfheal-orchestrator"));
    command.env_remove("SELFHEAL_CONFIG");
    command
}

#[test]
fn dump_config_shows_file_then_env_then_cli_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orchestrator.toml");
    std::fs::write(
        &file,
        "[server]\nshutdown_grace = \"3s\"\ngrpc_addr = \"127.0.0.1:1111\"\n[peers]\naudit = \"http://audit:50057\"\ncall_timeout = \"9s\"\n",
    )
    .unwrap();
    let output = binary()
        .arg("--config")
        .arg(&file)
        .env("SELFHEAL_SERVER__GRPC_ADDR", "127.0.0.1:2222")
        .env("SELFHEAL_PEERS__CALL_TIMEOUT", "8s")
        .args(["--set", "peers.call_timeout=7s", "--dump-config"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("shutdown_grace = \"3s\""),
        "file over defaults:\n{text}"
    );
    assert!(
        text.contains("audit = \"http://audit:50057\""),
        "file over defaults:\n{text}"
    );
    assert!(
        text.contains("grpc_addr = \"127.0.0.1:2222\""),
        "env over file:\n{text}"
    );
    assert!(
        text.contains("call_timeout = \"7s\""),
        "cli over env:\n{text}"
    );
}

#[test]
fn lock_backend_canary_plan_and_deadlines_are_configurable() {
    let output = binary()
        .env("SELFHEAL_LOCK__BACKEND", "redis")
        .args([
            "--set",
            "saga.deadlines.deploy=25m",
            "--set",
            "saga.canary.analysis_window=45s",
            "--set",
            "escalation.webhook_url=http://127.0.0.1:9/hook",
            "--dump-config",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "backend = \"redis\"",
        "deploy = \"25m\"",
        "analysis_window = \"45s\"",
        "webhook_url = \"http://127.0.0.1:9/hook\"",
        "steps = [",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_64_before_binding() {
    let output = binary()
        .env("SELFHEAL_PEERS__AUDIT", "audit:50057")
        .args([
            "--set",
            "server.shutdown_grace=0s",
            "--set",
            "peers.call_timeout=0s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "peers.audit must be an http",
        "server.shutdown_grace must be greater than zero",
        "peers.call_timeout",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn help_explains_layering_and_exit_codes() {
    let output = binary().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SELFHEAL_SERVER__GRPC_ADDR") && text.contains("64 invalid configuration"),
        "{text}"
    );
}
