//! The whole mesh in one process, talking real gRPC, driven by the `selfheal` command.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use selfheal::mesh::{MeshOptions, RunningMesh, SERVICES};
use selfheal_service::testkit::wait_serving;

const GRPC_NAMES: [&str; 7] = [
    "selfheal.v1.Orchestrator",
    "selfheal.v1.Detector",
    "selfheal.v1.Rca",
    "selfheal.v1.Patcher",
    "selfheal.v1.SafetyGate",
    "selfheal.v1.Deployer",
    "selfheal.v1.Audit",
];

async fn start_mesh(audit_dir: &std::path::Path) -> RunningMesh {
    let env: Vec<(String, String)> = Vec::new();
    let mesh = selfheal::mesh::start(MeshOptions {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        base_port: 0,
        config_file: None,
        overrides: vec![
            "audit.server.shutdown_grace=2s".into(),
            format!("audit.file.path={}", audit_dir.display()),
        ],
        env: &env,
    })
    .await
    .expect("mesh starts");
    for (endpoint, name) in mesh.endpoints().iter().zip(GRPC_NAMES) {
        wait_serving(endpoint.grpc_addr, name).await;
    }
    mesh
}

#[tokio::test]
async fn status_command_prints_every_service_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = start_mesh(dir.path()).await;
    let orchestrator = mesh.endpoint("orchestrator").unwrap().grpc_url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(["status", "--json", "--orchestrator", &orchestrator])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert!(
        rows.iter().all(|row| row["status"] == "SERVING"),
        "{rows:?}"
    );
    mesh.stop().await.unwrap();
}

#[test]
fn status_command_explains_an_unreachable_orchestrator() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "status",
            "--orchestrator",
            "http://127.0.0.1:1",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the orchestrator") && stderr.contains("selfheal up"),
        "{stderr}"
    );
}

#[test]
fn up_dry_run_binds_every_service_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["up", "--base-port", "0", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for service in SERVICES {
        assert!(
            stdout.contains(service),
            "{service} in the table:\n{stdout}"
        );
    }
}

#[test]
fn up_rejects_bad_settings_of_several_services_at_once_with_exit_64() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "up",
            "--base-port",
            "0",
            "--set",
            "audit.server.shutdown_grace=0s",
            "--set",
            "orchestrator.peers.call_timeout=0s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("audit: server.shutdown_grace")
            && stderr.contains("orchestrator: peers.call_timeout"),
        "{stderr}"
    );
}

#[test]
fn up_and_serve_refuse_settings_nothing_reads_with_exit_64() {
    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "up",
            "--base-port",
            "0",
            "--dry-run",
            "--set",
            "deployer.canary.nosuch=1",
            "--set",
            "deployr.canary.steps=[10]",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("deployer: unknown setting `canary.nosuch` (on the command line)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"deployr.canary.steps=[10]\" names no service"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["serve", "deployer", "--set", "deployer.nosuch=1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown setting `nosuch`"), "{stderr}");
}
