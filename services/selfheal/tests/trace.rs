//! One call into the orchestrator is one trace across all seven services, asserted on spans
//! from an in-memory exporter.
//!
//! This test has its own binary on purpose: it installs a thread-local `tracing` subscriber, and
//! tests running on other threads of the same binary would race it for the callsite cache.

use std::net::{IpAddr, Ipv4Addr};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use selfheal::mesh::{MeshOptions, SERVICES};
use selfheal_proto::v1::GetMeshStatusRequest;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_service::testkit::wait_serving;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const GRPC_NAMES: [&str; 7] = [
    "selfheal.v1.Orchestrator",
    "selfheal.v1.Detector",
    "selfheal.v1.Rca",
    "selfheal.v1.Patcher",
    "selfheal.v1.SafetyGate",
    "selfheal.v1.Deployer",
    "selfheal.v1.Audit",
];

#[test]
fn one_call_into_the_orchestrator_is_one_trace_across_all_seven_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = selfheal_telemetry::subscriber_with_tracer(provider.tracer("test"));
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread, so the thread-local subscriber sees every server task.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trace_id = runtime.block_on(async {
        let env: Vec<(String, String)> = Vec::new();
        let audit_dir = tempfile::tempdir().unwrap();
        let options = MeshOptions {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            config_file: None,
            overrides: vec![format!("audit.file.path={}", audit_dir.path().display())],
            env: &env,
        };
        let mesh = selfheal::mesh::start(options).await.expect("mesh starts");
        for (endpoint, name) in mesh.endpoints().iter().zip(GRPC_NAMES) {
            wait_serving(endpoint.grpc_addr, name).await;
        }
        let orchestrator = mesh.endpoint("orchestrator").unwrap().grpc_url();
        let channel =
            selfheal_telemetry::connect_lazy(&orchestrator, std::time::Duration::from_secs(5))
                .unwrap();
        let root = tracing::info_span!("test.request");
        let trace_id = root.context().span().span_context().trace_id();
        let peers = OrchestratorClient::new(channel)
            .get_mesh_status(GetMeshStatusRequest {})
            .instrument(root)
            .await
            .expect("mesh status")
            .into_inner()
            .peers;
        assert_eq!(peers.len(), 6);
        mesh.stop().await.expect("mesh stops cleanly");
        trace_id
    });
    provider.force_flush().unwrap();
    let spans: Vec<_> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|span| span.span_context.trace_id() == trace_id)
        .collect();

    let component = |span: &opentelemetry_sdk::trace::SpanData| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "selfheal.component")
            .map(|kv| kv.value.to_string())
    };
    let servers: Vec<_> = spans
        .iter()
        .filter(|span| component(span).is_some())
        .collect();
    let mut seen: Vec<String> = servers.iter().filter_map(|span| component(span)).collect();
    seen.sort();
    seen.dedup();
    let mut expected: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "server spans of all seven services share the request's trace"
    );

    // Each peer's server span is a child of an orchestrator client span of that trace.
    let client_ids: Vec<_> = spans
        .iter()
        .filter(|span| {
            span.span_kind == opentelemetry::trace::SpanKind::Client
                || span.name.contains("Health/Check")
        })
        .map(|span| span.span_context.span_id())
        .collect();
    for span in servers
        .iter()
        .filter(|span| component(span).as_deref() != Some("orchestrator"))
    {
        assert!(
            client_ids.contains(&span.parent_span_id),
            "{} has a client parent",
            span.name
        );
    }
}
