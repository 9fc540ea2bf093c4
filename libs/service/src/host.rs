//! Hosting one selfheal gRPC service: the service itself plus gRPC health, reflection v1 and
//! v1alpha, the telemetry layer, and an HTTP server for `/metrics` and `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use selfheal_telemetry::{GrpcMetrics, GrpcServerLayer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The two sockets a service serves on.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

impl Listeners {
    /// Binds both addresses; the error names the address that could not be bound.
    pub async fn bind(grpc: SocketAddr, http: SocketAddr) -> Result<Self, ServeError> {
        let grpc_listener = TcpListener::bind(grpc)
            .await
            .map_err(|source| ServeError::Bind {
                what: "grpc",
                addr: grpc,
                source,
            })?;
        let http_listener = TcpListener::bind(http)
            .await
            .map_err(|source| ServeError::Bind {
                what: "http",
                addr: http,
                source,
            })?;
        Ok(Self {
            grpc: grpc_listener,
            http: http_listener,
        })
    }

    /// Binds both on `127.0.0.1:0`, for tests.
    pub async fn ephemeral() -> Result<Self, ServeError> {
        Self::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// Errors from hosting a service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind the {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("http server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("reflection service cannot be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Whether the service is ready, mirrored to gRPC health and `/healthz`.
#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    service_name: &'static str,
    serving: Arc<AtomicBool>,
}

impl Readiness {
    /// Reports SERVING (dependencies ready).
    pub async fn set_serving(&self) {
        self.set(true).await;
    }

    /// Reports NOT_SERVING (a dependency is not ready, or shutdown began).
    pub async fn set_not_serving(&self) {
        self.set(false).await;
    }

    /// Whether SERVING is being reported.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    async fn set(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(self.service_name, status)
            .await;
    }
}

/// The shared parts of one service: its metrics registry, readiness and telemetry layer.
pub struct ServiceHost {
    component: &'static str,
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    readiness: Readiness,
    health_server:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl std::fmt::Debug for ServiceHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHost")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl ServiceHost {
    /// `component` is the selfheal service name (`detector`); `grpc_service_name` the fully
    /// qualified gRPC name it serves (`selfheal.v1.Detector`). Health starts NOT_SERVING.
    pub fn new(
        component: &'static str,
        grpc_service_name: &'static str,
    ) -> Result<Self, ServeError> {
        let registry = Registry::new_custom(
            None,
            Some([("service".to_owned(), component.to_owned())].into()),
        )?;
        let grpc_metrics = GrpcMetrics::register(&registry)?;
        let reporter = HealthReporter::new();
        let health_server = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let readiness = Readiness {
            reporter,
            service_name: grpc_service_name,
            serving: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self {
            component,
            registry,
            grpc_metrics,
            readiness,
            health_server,
        })
    }

    /// The registry served at `/metrics`; services register their own metrics here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A handle to report readiness.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves `service` and `routes` until `shutdown` is cancelled, then lets in-flight calls
    /// finish for at most `grace`. Health turns NOT_SERVING as soon as shutdown begins.
    pub async fn serve<S>(
        self,
        service: S,
        routes: Router,
        listeners: Listeners,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), ServeError>
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let service_name = self.readiness.service_name;
        let reflection_v1 = reflection(service_name)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .build_v1()?;
        let reflection_v1alpha = reflection(service_name)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let readiness = self.readiness.clone();
        let http_routes = routes.merge(observability_routes(
            self.registry.clone(),
            readiness.clone(),
        ));
        let grpc_addr = listeners.grpc_addr();
        let http_addr = listeners.http_addr();
        tracing::info!(component = self.component, %grpc_addr, %http_addr, "serving");

        let grpc = tonic::transport::Server::builder()
            .layer(GrpcServerLayer::new(
                self.component,
                self.grpc_metrics.clone(),
            ))
            .add_service(self.health_server)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
                {
                    let shutdown = shutdown.clone();
                    let readiness = readiness.clone();
                    async move {
                        shutdown.cancelled().await;
                        readiness.set_not_serving().await;
                    }
                },
            );
        let http = axum::serve(listeners.http, http_routes)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let both = async {
            let (grpc_result, http_result) = tokio::join!(grpc, http);
            grpc_result?;
            http_result.map_err(ServeError::Http)?;
            Ok::<(), ServeError>(())
        };
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = both => result,
            () = deadline => {
                tracing::warn!(component = self.component, ?grace, "in-flight calls did not finish within the grace period; dropping them");
                Ok(())
            }
        }
    }
}

/// Reflection that lists exactly what this server serves: its own service, health, and both
/// reflection versions (grpcurl 1.8 only speaks v1alpha).
fn reflection(service_name: &'static str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(selfheal_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

fn observability_routes(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { render_metrics(&registry) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    if readiness.is_serving() {
                        (StatusCode::OK, "SERVING\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
                    }
                }
            }),
        )
}

fn render_metrics(registry: &Registry) -> axum::response::Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(http::header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response()
        }
    }
}
