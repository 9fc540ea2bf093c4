//! The server-side tower layer: one span per incoming gRPC call, parented to the caller's W3C
//! trace context, and per-RPC metrics.

use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{GrpcMetrics, extract_context, split_grpc_path};

/// Wraps a gRPC server so that each call runs in a `grpc.server` span and is counted.
#[derive(Clone)]
pub struct GrpcServerLayer {
    component: &'static str,
    metrics: GrpcMetrics,
}

impl GrpcServerLayer {
    /// `component` names the selfheal service (it becomes the `selfheal.component` span field,
    /// which tells the services apart when several run in one process).
    pub fn new(component: &'static str, metrics: GrpcMetrics) -> Self {
        Self { component, metrics }
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            component: self.component,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service produced by [`GrpcServerLayer`].
#[derive(Clone)]
pub struct GrpcServerService<S> {
    inner: S,
    component: &'static str,
    metrics: GrpcMetrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcServerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // Take the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let path = request.uri().path().to_owned();
        let (rpc_service, rpc_method) = split_grpc_path(&path);
        let (rpc_service, rpc_method) = (rpc_service.to_owned(), rpc_method.to_owned());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            selfheal.component = self.component,
        );
        let parent = extract_context(request.headers());
        // Fails only when no OpenTelemetry layer is installed; the span is then a plain span.
        let _ = span.set_parent(parent);
        let started = Instant::now();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let code = match &result {
                    Ok(response) => grpc_code_of(response.headers()),
                    Err(_) => tonic::Code::Internal,
                };
                let current = tracing::Span::current();
                current.record("rpc.grpc.status_code", code as i32);
                if code != tonic::Code::Ok {
                    current.record("otel.status_code", "ERROR");
                }
                metrics.observe(
                    &rpc_service,
                    &rpc_method,
                    code,
                    started.elapsed().as_secs_f64(),
                );
                result
            }
            .instrument(span),
        )
    }
}

/// The status of a call as visible in its response headers. Unary errors are sent
/// "trailers-only", so their status is in the headers; a missing status means the call
/// produced a response (its final status travels in trailers and is OK for unary calls).
fn grpc_code_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}
