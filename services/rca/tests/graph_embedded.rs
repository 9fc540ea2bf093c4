//! The graph-store conformance suite against the in-memory graph, and the `Record*` RPCs
//! writing it through the service.

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::rca_client::RcaClient;
use selfheal_rca::graph::{EmbeddedGraph, conformance};
use selfheal_service::testkit::{ServiceUnderTest, channel, wait_serving};

#[tokio::test]
async fn embedded_graph_passes_the_graph_store_conformance_suite() {
    conformance::run_all(&EmbeddedGraph::new(), "embedded").await;
}

#[tokio::test]
async fn record_rpcs_validate_their_input_and_are_idempotent() {
    let service = ServiceUnderTest::start(|listeners, shutdown| {
        selfheal_rca::run(Default::default(), listeners, shutdown)
    })
    .await;
    wait_serving(service.grpc_addr, selfheal_proto::service_names::RCA).await;
    let mut client = RcaClient::new(channel(service.grpc_addr).await.expect("connects"));

    let edge = |a: &str, b: &str| pb::CallEdge {
        caller: a.into(),
        callee: b.into(),
    };
    let recorded = client
        .record_topology(pb::RecordTopologyRequest {
            edges: vec![
                edge("checkout", "payment-service"),
                edge("payment-service", "customer"),
                edge("checkout", "payment-service"),
            ],
        })
        .await
        .expect("topology recorded")
        .into_inner();
    assert_eq!(recorded.edges, 2, "distinct edges");

    let status = client
        .record_topology(pb::RecordTopologyRequest {
            edges: vec![edge("a", "a")],
        })
        .await
        .expect_err("self call");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = client
        .record_topology(pb::RecordTopologyRequest {
            edges: vec![edge("a b", "c")],
        })
        .await
        .expect_err("bad name");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("edges[0].caller"),
        "{}",
        status.message()
    );

    let deployment = pb::Deployment {
        service: "payment-service".into(),
        version: "v2".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        deployed_at: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 0,
        }),
        repository: "/nonexistent/repo".into(),
    };
    for _ in 0..2 {
        client
            .record_deployment(pb::RecordDeploymentRequest {
                deployment: Some(deployment.clone()),
            })
            .await
            .expect("deployment recorded (idempotent)");
    }
    let mut no_time = deployment.clone();
    no_time.deployed_at = None;
    let status = client
        .record_deployment(pb::RecordDeploymentRequest {
            deployment: Some(no_time),
        })
        .await
        .expect_err("no time");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "missing field deployment.deployed_at");

    client
        .record_fix(pb::RecordFixRequest {
            incident_id: "inc-1".into(),
            service: "payment-service".into(),
            cause_kind: pb::CauseKind::CodeDefect.into(),
            strategy: "template".into(),
            commit: "fedcba".into(),
            template: "rust.option_unwrap.unwrap_or".into(),
        })
        .await
        .expect("fix recorded");
    let status = client
        .record_fix(pb::RecordFixRequest {
            incident_id: "inc-1".into(),
            service: "payment-service".into(),
            cause_kind: 42,
            strategy: "template".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    service.stop().await.expect("clean shutdown");
}
