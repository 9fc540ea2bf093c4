//! `selfheal explain` and `selfheal audit verify` against the audit service of a real mesh.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use selfheal::mesh::{MeshOptions, RunningMesh};
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::{
    AppendRequest, Decision, DecisionAlternative, DecisionFactor, DecisionInput, DecisionKind,
    NewRecord, RecordKind,
};
use selfheal_service::testkit::{channel, wait_serving};

async fn start_mesh(audit_dir: &Path) -> RunningMesh {
    let env: Vec<(String, String)> = Vec::new();
    let mesh = selfheal::mesh::start(MeshOptions {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        base_port: 0,
        config_file: None,
        overrides: vec![format!("audit.file.path={}", audit_dir.display())],
        env: &env,
    })
    .await
    .expect("mesh starts");
    wait_serving(
        mesh.endpoint("audit").unwrap().grpc_addr,
        "selfheal.v1.Audit",
    )
    .await;
    mesh
}

fn selfheal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .output()
        .unwrap()
}

fn gate_decision() -> Decision {
    Decision {
        id: "gate-1".into(),
        kind: DecisionKind::SafetyGate.into(),
        subject: "candidate tpl-1".into(),
        inputs: vec![DecisionInput {
            name: "risk_score".into(),
            value: "0.18".into(),
            note: "from six factors".into(),
        }],
        factors: vec![DecisionFactor {
            name: "error_severity".into(),
            weight: 0.9,
            score: 0.9,
            explanation: "15% of requests fail".into(),
        }],
        constraints: vec!["changed lines ≤ 40".into()],
        alternatives: vec![DecisionAlternative {
            option: "full revert".into(),
            why_not: "drops the feature".into(),
            score: 0.4,
        }],
        outcome: "approve".into(),
        reasoning: "low risk, high urgency".into(),
        confidence: 0.92,
        decided_at: None,
    }
}

#[tokio::test]
async fn explain_renders_an_incidents_decisions_and_verify_passes_then_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = start_mesh(dir.path()).await;
    let audit = mesh.endpoint("audit").unwrap();
    let url = audit.grpc_url();
    let mut client = AuditClient::new(channel(audit.grpc_addr).await.unwrap());
    client
        .append(AppendRequest {
            records: vec![
                NewRecord {
                    kind: RecordKind::StepStarted.into(),
                    saga_id: "saga-1".into(),
                    incident_id: "inc-1".into(),
                    step: "gate".into(),
                    actor: "orchestrator".into(),
                    ..Default::default()
                },
                NewRecord {
                    kind: RecordKind::Decision.into(),
                    saga_id: "saga-1".into(),
                    incident_id: "inc-1".into(),
                    step: "gate".into(),
                    actor: "safety-gate".into(),
                    decision: Some(gate_decision()),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap();

    let (explained, verified, verified_json, unknown) = tokio::task::spawn_blocking(move || {
        (
            selfheal(&["explain", "inc-1", "--audit", &url]),
            selfheal(&["audit", "verify", "--audit", &url]),
            selfheal(&["audit", "verify", "--json", "--audit", &url]),
            selfheal(&["explain", "inc-unknown", "--audit", &url]),
        )
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    for needle in ["error_severity", "drops the feature", "approve", "0.92"] {
        assert!(
            report.contains(needle),
            "{needle:?} in the report:\n{report}"
        );
    }
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let json: serde_json::Value = serde_json::from_slice(&verified_json.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert!(
        !unknown.status.success(),
        "an incident without decisions is an error"
    );
    mesh.stop().await.unwrap();

    // Alter one stored byte of a record's payload: verification must fail and exit non-zero.
    let chain = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .expect("the chain file");
    let text = std::fs::read_to_string(&chain).unwrap();
    std::fs::write(
        &chain,
        text.replacen("low risk, high urgency", "low risk, high urgencY", 1),
    )
    .unwrap();
    let mesh = start_mesh(dir.path()).await;
    let url = mesh.endpoint("audit").unwrap().grpc_url();
    let broken = tokio::task::spawn_blocking(move || {
        selfheal(&["audit", "verify", "--json", "--audit", &url])
    })
    .await
    .unwrap();
    assert_eq!(
        broken.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["first_broken_sequence"], 2, "{json}");
    mesh.stop().await.unwrap();
}
