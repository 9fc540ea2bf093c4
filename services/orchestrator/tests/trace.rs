//! A saga is one trace: every call it makes to the peers carries the trace context of the
//! saga's root span.
//!
//! This test has its own binary on purpose: it installs a thread-local `tracing` subscriber,
//! and tests on other threads of the same binary would race it for the callsite cache.

mod common;

use common::{Behaviour, Fakes, incident};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;

#[test]
fn every_peer_call_of_a_saga_carries_the_sagas_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = selfheal_telemetry::subscriber_with_tracer(provider.tracer("test"));
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread, so the thread-local subscriber sees every task.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (traceparents, saga_id) = runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (fakes, fakes_url) = Fakes::start(Behaviour::default()).await;
        let audit = common::start_audit(dir.path()).await;
        let orchestrator =
            common::start_orchestrator(common::config(&fakes_url, &audit.grpc_url())).await;
        let mut client = OrchestratorClient::new(common::channel(&orchestrator.grpc_url()).await);
        let saga_id = common::report(&mut client, incident("inc-t", "traced"))
            .await
            .saga_id;
        common::wait_state(&mut client, &saga_id, pb::SagaState::Resolved).await;
        let traceparents = fakes.state.traceparents.lock().unwrap().clone();
        orchestrator.stop().await.unwrap();
        (traceparents, saga_id)
    });
    assert!(
        traceparents.len() >= 8,
        "status, record deployment ×2, analyze, generate, failing requests, evaluate, deploy, verify…: {traceparents:?}"
    );
    let trace_ids: std::collections::BTreeSet<&str> = traceparents
        .iter()
        .map(|header| header.split('-').nth(1).expect("version-trace-span-flags"))
        .collect();
    assert_eq!(
        trace_ids.len(),
        1,
        "one trace for the whole saga: {trace_ids:?}"
    );
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|span| span.name == "saga")
        .expect("the saga's root span is exported");
    assert_eq!(
        root.span_context.trace_id().to_string(),
        *trace_ids.first().unwrap(),
        "the peers' trace is the saga's root span's"
    );
    assert!(
        root.attributes
            .iter()
            .any(|kv| kv.value.as_str() == saga_id),
        "the root span names the saga"
    );
}
