//! The client-side tower service: one `grpc.client` span per outgoing call, whose W3C trace
//! context is injected into the request headers so the callee continues the same trace.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;

use crate::{inject_context, split_grpc_path};

/// A channel whose calls carry the caller's trace context. Every selfheal client uses it.
pub type TracedChannel = InjectTraceContext<Channel>;

/// Creates a [`TracedChannel`] to `uri` that connects on first use, so services can start in
/// any order. `timeout` bounds connection establishment; per-call deadlines are set on each
/// request with `Request::set_timeout` so that they travel as `grpc-timeout`.
pub fn connect_lazy(
    uri: &str,
    connect_timeout: Duration,
) -> Result<TracedChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(InjectTraceContext::new(channel))
}

/// Wraps a gRPC transport so that each call is traced and carries `traceparent`.
#[derive(Clone, Debug)]
pub struct InjectTraceContext<S> {
    inner: S,
}

impl<S> InjectTraceContext<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for InjectTraceContext<S>
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

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        let (rpc_service, rpc_method) = split_grpc_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
        );
        inject_context(&span, request.headers_mut());
        Box::pin(async move { inner.call(request).await }.instrument(span))
    }
}
