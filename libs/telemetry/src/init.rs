//! Process-wide telemetry set-up: the `tracing` subscriber, and the OTLP trace pipeline when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The standard OpenTelemetry variables win.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What [`init`] sets up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
    /// OTLP gRPC endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter used when `RUST_LOG` is unset.
    pub default_filter: String,
}

impl TelemetryConfig {
    /// Reads `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_ENDPOINT` and `SELFHEAL_LOG_FORMAT`
    /// (`text` or `json`) from the process environment.
    pub fn from_env(default_service_name: &str) -> Self {
        let non_empty = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        Self {
            service_name: non_empty("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_owned()),
            otlp_endpoint: non_empty("OTEL_EXPORTER_OTLP_ENDPOINT"),
            log_format: match non_empty("SELFHEAL_LOG_FORMAT").as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Text,
            },
            default_filter: "info,h2=warn,hyper=warn,tower=warn".to_owned(),
        }
    }
}

/// Errors from telemetry set-up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the otlp exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Flushes and shuts the trace pipeline down when dropped.
#[must_use = "traces are flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("selfheal: flushing traces failed: {error}");
        }
    }
}

/// What is exported as spans, whatever the log filter says.
const TRACE_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";

/// Installs the global subscriber. Must be called inside a Tokio runtime when OTLP is on.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    // `RUST_LOG` (or the default filter) decides what is logged; traces keep every span at info,
    // so quieting the logs never cuts a saga's trace apart.
    let log_filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.default_filter))
    };
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        Resource::builder()
                            .with_service_name(config.service_name.clone())
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("selfheal"))
            .with_filter(EnvFilter::new(TRACE_FILTER))
    });
    let (text, json) = match config.log_format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter()),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(log_filter()),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// A subscriber that only feeds `tracer`, for tests that assert on exported spans
/// (install it with `tracing::subscriber::set_default`).
pub fn subscriber_with_tracer<T>(tracer: T) -> impl tracing::Subscriber + Send + Sync
where
    T: opentelemetry::trace::Tracer + Send + Sync + 'static,
    T::Span: Send + Sync,
{
    Registry::default().with(tracing_opentelemetry::layer().with_tracer(tracer))
}
