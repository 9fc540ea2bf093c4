//! The audit service started in-process on 127.0.0.1:0, driven over real gRPC.

mod common;

use std::path::Path;

use prost_types::value::Kind;
use selfheal_audit::{Config, Error, record_from_proto, render_decision_report};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_service::testkit::{ServiceUnderTest, scrape_metrics, wait_serving};
use tonic::Code;
use tonic::transport::Channel;

async fn start(config: Config) -> (ServiceUnderTest<Error>, AuditClient<Channel>) {
    let service = ServiceUnderTest::start(move |listeners, shutdown| {
        selfheal_audit::run(config, listeners, shutdown)
    })
    .await;
    wait_serving(service.grpc_addr, selfheal_proto::service_names::AUDIT).await;
    let client = AuditClient::connect(service.grpc_url())
        .await
        .expect("client connects");
    (service, client)
}

fn file_config(dir: &Path, interval: u64) -> Config {
    Config {
        checkpoint_interval: interval,
        ..Config::with_file_store(dir)
    }
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn step(saga: &str, incident: &str, n: u64) -> pb::NewRecord {
    pb::NewRecord {
        kind: pb::RecordKind::StepFinished.into(),
        saga_id: saga.into(),
        incident_id: incident.into(),
        step: "gate".into(),
        actor: "orchestrator".into(),
        fencing_token: 3,
        payload: Some(prost_types::Struct {
            fields: [
                ("n".to_owned(), number(n as f64)),
                ("ok".to_owned(), text("yes")),
            ]
            .into(),
        }),
        ..Default::default()
    }
}

fn decision(incident: &str) -> pb::NewRecord {
    pb::NewRecord {
        kind: pb::RecordKind::Decision.into(),
        saga_id: "saga-1".into(),
        incident_id: incident.into(),
        step: "rca".into(),
        actor: "rca".into(),
        decision: Some(pb::Decision {
            id: "d-1".into(),
            kind: pb::DecisionKind::RootCause.into(),
            subject: "payment-service errors".into(),
            inputs: vec![pb::DecisionInput {
                name: "error_rate".into(),
                value: "15.2%".into(),
                note: "7.6x the baseline".into(),
            }],
            factors: vec![pb::DecisionFactor {
                name: "stack trace".into(),
                weight: 0.6,
                score: 0.9,
                explanation: "unwrap on None".into(),
            }],
            constraints: vec!["touch one file".into()],
            alternatives: vec![pb::DecisionAlternative {
                option: "slow database".into(),
                why_not: "latency unchanged".into(),
                score: 0.1,
            }],
            outcome: "commit abc is the cause".into(),
            reasoning: "the failing line came with abc".into(),
            confidence: 0.9,
            decided_at: None,
        }),
        ..Default::default()
    }
}

async fn append(
    client: &mut AuditClient<Channel>,
    records: Vec<pb::NewRecord>,
) -> pb::AppendResponse {
    client
        .append(pb::AppendRequest { records })
        .await
        .expect("append succeeds")
        .into_inner()
}

async fn verify(client: &mut AuditClient<Channel>) -> pb::VerifyChainResponse {
    client
        .verify(pb::VerifyChainRequest {})
        .await
        .expect("verify answers")
        .into_inner()
}

#[tokio::test]
async fn serves_health_reflection_and_metrics_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _client) = start(file_config(dir.path(), 100)).await;
    service
        .assert_standard_endpoints(selfheal_proto::service_names::AUDIT)
        .await;
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn appends_then_queries_verifies_and_lists_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(file_config(dir.path(), 100)).await;

    let first = append(
        &mut client,
        vec![step("saga-1", "inc-1", 1), step("saga-2", "inc-2", 2)],
    )
    .await;
    assert_eq!(first.durability(), pb::Durability::Stored);
    let second = append(
        &mut client,
        vec![decision("inc-1"), step("saga-1", "inc-1", 3)],
    )
    .await;
    let records: Vec<pb::AuditRecord> = first.records.into_iter().chain(second.records).collect();
    let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4]);
    assert_eq!(records[0].prev_hash, "0".repeat(64));
    for pair in records.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each record links to the previous"
        );
    }

    let saga = client
        .query(pb::QueryRequest {
            saga_id: "saga-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        saga.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert_eq!(
        saga.records[0], records[0],
        "query returns the record as appended"
    );
    let paged = client
        .query(pb::QueryRequest {
            incident_id: "inc-1".into(),
            from_sequence: 2,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paged.records.len(), 1);
    assert_eq!(paged.records[0].sequence, 3);

    let report = verify(&mut client).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, 4);
    assert_eq!(report.head_hash, records[3].hash);

    let decisions = client
        .list_decisions(pb::ListDecisionsRequest {
            incident_id: "inc-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0].sequence, 3);
    let domain: Vec<_> = decisions
        .into_iter()
        .map(|r| record_from_proto(r).unwrap())
        .collect();
    let text = render_decision_report(&domain);
    assert!(text.contains("██████░░░░ 0.60"), "{text}");
    assert!(text.contains("Confidence: high (0.90)"), "{text}");

    let scrape = scrape_metrics(service.http_addr).await;
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("audit_records_appended_total"), Some(4.0));
    assert_eq!(value("audit_head_sequence"), Some(4.0));
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_existing_record() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(file_config(dir.path(), 100)).await;
    let keyed = |n| pb::NewRecord {
        idempotency_key: "saga-1/patch/1".into(),
        ..step("saga-1", "inc-1", n)
    };
    let first = append(&mut client, vec![keyed(1)]).await.records;
    let again = append(&mut client, vec![keyed(2), keyed(3)]).await.records;
    assert_eq!(again, vec![first[0].clone(), first[0].clone()]);
    let next = append(&mut client, vec![step("saga-1", "inc-1", 4)])
        .await
        .records;
    assert_eq!(next[0].sequence, 2, "no sequence was used by the repeats");
    service.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_never_fork_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (service, client) = start(file_config(dir.path(), 25)).await;
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                let saga = format!("saga-{writer}");
                append(
                    &mut client,
                    vec![step(&saga, "inc-c", n), step(&saga, "inc-c", n)],
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = client;
    let report = verify(&mut client).await;
    assert!(report.ok, "{report:?}");
    // 320 records and a checkpoint after every 25 of them.
    assert_eq!(report.checkpoints_checked, 320 / 25);
    assert_eq!(report.records_checked, 320 + 320 / 25);
    let all = client
        .query(pb::QueryRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let sequences: Vec<u64> = all.iter().map(|r| r.sequence).collect();
    assert_eq!(sequences, (1..=332).collect::<Vec<u64>>());
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restarted_service_continues_the_chain_after_its_shutdown_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(file_config(dir.path(), 100)).await;
    append(
        &mut client,
        (1..=5).map(|n| step("saga-1", "inc-1", n)).collect(),
    )
    .await;
    service.stop().await.expect("clean shutdown");

    let (service, mut client) = start(file_config(dir.path(), 100)).await;
    let checkpoint = client
        .query(pb::QueryRequest {
            from_sequence: 6,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(checkpoint.len(), 1);
    assert_eq!(checkpoint[0].kind(), pb::RecordKind::Checkpoint);
    let next = append(&mut client, vec![step("saga-1", "inc-1", 6)])
        .await
        .records;
    assert_eq!(next[0].sequence, 7);
    assert_eq!(next[0].prev_hash, checkpoint[0].hash);
    let report = verify(&mut client).await;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.records_checked, report.checkpoints_checked), (7, 1));
    assert!(
        dir.path().join(selfheal_audit::SIGNING_KEY_FILE).exists(),
        "a generated key is kept beside the store"
    );
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_oversized_payload_is_rejected_with_its_size_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        payload_limit: 1024,
        ..file_config(dir.path(), 100)
    };
    let (service, mut client) = start(config).await;
    let mut big = step("saga-1", "inc-1", 1);
    big.payload = Some(prost_types::Struct {
        fields: [("blob".to_owned(), text(&"x".repeat(2000)))].into(),
    });
    let status = client
        .append(pb::AppendRequest {
            records: vec![step("saga-1", "inc-1", 0), big],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let message = status.message();
    assert!(message.contains("records[1].payload"), "{message}");
    assert!(message.contains("2011 bytes"), "{message}");
    assert!(message.contains("limit of 1024 bytes"), "{message}");
    let report = verify(&mut client).await;
    assert_eq!(
        report.records_checked, 0,
        "nothing of the rejected batch was written"
    );
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(file_config(dir.path(), 100)).await;
    let cases: Vec<(Vec<pb::NewRecord>, &str)> = vec![
        (vec![], "records"),
        (
            vec![pb::NewRecord {
                kind: pb::RecordKind::Unspecified.into(),
                ..step("s", "i", 1)
            }],
            "missing field records[0].kind",
        ),
        (
            vec![
                step("s", "i", 1),
                pb::NewRecord {
                    decision: None,
                    ..decision("inc-1")
                },
            ],
            "missing field records[1].decision",
        ),
        (
            vec![pb::NewRecord {
                kind: pb::RecordKind::Checkpoint.into(),
                ..step("s", "i", 1)
            }],
            "records[0].kind",
        ),
        (vec![step("saga\n1", "i", 1)], "records[0].saga_id"),
        (
            vec![pb::NewRecord {
                kind: 42,
                ..step("s", "i", 1)
            }],
            "records[0].kind",
        ),
    ];
    for (records, field) in cases {
        let status = client
            .append(pb::AppendRequest { records })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    let mut bad_confidence = decision("inc-1");
    if let Some(d) = bad_confidence.decision.as_mut() {
        d.confidence = 1.5;
    }
    let status = client
        .append(pb::AppendRequest {
            records: vec![bad_confidence],
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("records[0].decision.confidence"),
        "{status:?}"
    );
    let status = client
        .list_decisions(pb::ListDecisionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("incident_id"));
    service.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn verify_reports_a_record_altered_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (service, mut client) = start(file_config(dir.path(), 100)).await;
    append(
        &mut client,
        (1..=6).map(|n| step("saga-1", "inc-1", n)).collect(),
    )
    .await;
    let path = dir.path().join(selfheal_audit::store::file::RECORDS_FILE);
    let content = std::fs::read_to_string(&path).unwrap();
    let altered: Vec<String> = content
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 3 {
                line.replace("\"ok\":\"yes\"", "\"ok\":\"no!\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    std::fs::write(&path, altered.join("\n") + "\n").unwrap();
    let report = verify(&mut client).await;
    assert!(!report.ok);
    assert_eq!(report.first_broken_sequence, 4);
    assert_eq!(report.reason(), pb::BreakReason::HashMismatch);
    assert_eq!(report.records_checked, 3);
    service.stop().await.expect("clean shutdown");
}
