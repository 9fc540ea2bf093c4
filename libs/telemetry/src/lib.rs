//! Telemetry shared by every selfheal service: logs through `tracing`, traces exported over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, W3C trace context carried across every gRPC
//! hop, and per-RPC Prometheus metrics.
//!
//! This crate owns process-wide set-up ([`init`]) and the tower layers that services put on
//! their servers ([`GrpcServerLayer`]) and clients ([`TracedChannel`]). It holds no domain logic.

mod client;
mod init;
mod metrics;
mod propagation;
mod server;

pub use client::{InjectTraceContext, TracedChannel, connect_lazy};
pub use init::{
    LogFormat, TelemetryConfig, TelemetryError, TelemetryGuard, init, subscriber_with_tracer,
};
pub use metrics::GrpcMetrics;
pub use propagation::{extract_context, inject_context, trace_id_of_current_span};
pub use server::{GrpcServerLayer, GrpcServerService};

/// Splits a gRPC request path `/package.Service/Method` into service and method.
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (service, method),
        None => (trimmed, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::split_grpc_path;

    #[test]
    fn splits_service_and_method_from_grpc_path() {
        assert_eq!(
            split_grpc_path("/selfheal.v1.Audit/Verify"),
            ("selfheal.v1.Audit", "Verify")
        );
        assert_eq!(split_grpc_path("/odd"), ("odd", ""));
    }
}
