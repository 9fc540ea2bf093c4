//! A broken audit chain halts automation: the orchestrator verifies the chain before a saga
//! starts, journals incidents without acting on them, alerts a person, and resumes only once
//! someone acknowledges the halt.

mod common;

use std::time::Duration;

use common::{Behaviour, Harness, incident, poll};
use selfheal_proto::v1 as pb;
use selfheal_service::testkit::DEADLINE;

/// Alters one byte of the first stored record the orchestrator wrote.
fn alter_one_record(dir: &std::path::Path) -> u64 {
    let path = dir.join("records.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let index = lines
        .iter()
        .position(|line| line.contains("\"actor\":\"orchestrator-"))
        .expect("a record the orchestrator wrote");
    lines[index] =
        lines[index].replacen("\"actor\":\"orchestrator-", "\"actor\":\"Orchestrator-", 1);
    let record: serde_json::Value = serde_json::from_str(&lines[index]).unwrap();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    record["sequence"].as_u64().unwrap()
}

#[tokio::test]
async fn a_broken_chain_halts_automation_and_alerts_until_acknowledged() {
    let (url, received) = common::webhook(0).await;
    let mut h = Harness::start(Behaviour::default(), |c| {
        c.escalation.webhook_url = url.clone();
        c.escalation.timeout = Duration::from_secs(2);
        c.saga.verify_chain_interval = Duration::ZERO;
    })
    .await;
    let first = h.report(incident("inc-c1", "ledger")).await;
    h.wait_state(&first.saga_id, pb::SagaState::Resolved).await;
    let broken = alter_one_record(h.audit_dir());

    let halted = h.report(incident("inc-c2", "ledger")).await;
    let saga = h
        .wait_state(&halted.saga_id, pb::SagaState::Escalated)
        .await;
    assert!(
        saga.outcome.contains("automation halted"),
        "{}",
        saga.outcome
    );
    assert!(
        saga.outcome.contains(&format!("sequence {broken}")),
        "{}",
        saga.outcome
    );
    assert!(saga.steps.is_empty(), "no step ran: {:?}", saga.steps);
    assert_eq!(h.fakes.calls("Analyze").len(), 1);
    let alert = poll(DEADLINE, || {
        let received = received.clone();
        async move {
            received
                .lock()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == "audit_chain_broken")
                .cloned()
        }
    })
    .await;
    assert_eq!(alert["broken_record"]["sequence"], broken);
    assert!(
        alert["broken_record"]["detail"]
            .as_str()
            .unwrap()
            .contains("hash"),
        "{alert}"
    );
    let automation: serde_json::Value =
        reqwest::get(format!("http://{}/automation", h.orchestrator.http_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(automation["halted"], true, "{automation}");
    let metrics = reqwest::get(format!("http://{}/metrics", h.orchestrator.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("orchestrator_automation_halted") && line.ends_with(" 1")),
        "{metrics}"
    );

    // Acknowledging an unhalted orchestrator is refused; acknowledging the halt lifts it.
    h.client
        .approve(pb::ApproveRequest {
            saga_id: "audit-chain".into(),
            approver: "lead".into(),
            comment: "chain inspected".into(),
        })
        .await
        .unwrap();
    let again = h
        .client
        .approve(pb::ApproveRequest {
            saga_id: "audit-chain".into(),
            approver: "lead".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let third = h.report(incident("inc-c3", "ledger")).await;
    h.wait_state(&third.saga_id, pb::SagaState::Resolved).await;
}
