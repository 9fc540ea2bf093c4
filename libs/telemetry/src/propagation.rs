//! W3C trace-context (`traceparent`, `tracestate`) injection and extraction on HTTP headers.
//!
//! The W3C propagator is used directly rather than through the global propagator, so that
//! propagation works the same in tests and in processes that never called [`crate::init`].

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes the context of `span` into `headers`.
pub fn inject_context(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Reads a remote parent context from `headers` (an empty context when there is none).
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The hex trace id of the current span, when it belongs to a sampled OpenTelemetry trace.
pub fn trace_id_of_current_span() -> Option<String> {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}
