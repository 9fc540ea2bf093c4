//! Per-RPC Prometheus metrics recorded by [`crate::GrpcServerLayer`].

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Request count, error count and latency per gRPC method, in one registry.
#[derive(Clone)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
}

impl GrpcMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls handled, by method and status code",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "grpc_server_errors_total",
                "gRPC calls that ended with a non-OK status",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from request to response headers, by method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["grpc_service", "grpc_method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            requests,
            errors,
            latency,
        })
    }

    /// Records one finished call.
    pub fn observe(&self, service: &str, method: &str, code: tonic::Code, seconds: f64) {
        let code_label = code_name(code);
        self.requests
            .with_label_values(&[service, method, code_label])
            .inc();
        if code != tonic::Code::Ok {
            self.errors
                .with_label_values(&[service, method, code_label])
                .inc();
        }
        self.latency
            .with_label_values(&[service, method])
            .observe(seconds);
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
