//! Helpers shared by the detector's integration tests: the detector in-process, a scripted
//! `/metrics` server, a fake orchestrator, and polling with deadlines.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use selfheal_detector::{Config, TargetConfig};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_proto::v1::orchestrator_server::{Orchestrator, OrchestratorServer};
use selfheal_service::testkit::ServiceUnderTest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A detector configuration for tests: fast scrapes, a short window, the given orchestrator.
pub fn fast_config(interval: Duration, orchestrator_url: &str) -> Config {
    let mut config = Config::default();
    config.scrape.interval = interval;
    config.scrape.timeout = interval.mul_f64(0.8);
    config.detection.window = interval * 4;
    config.detection.memory_window = interval * 16;
    config.detection.min_requests = 20;
    config.detection.history = Duration::from_secs(600);
    config.orchestrator.url = orchestrator_url.to_owned();
    config.orchestrator.initial_backoff = Duration::from_millis(50);
    config.orchestrator.max_backoff = Duration::from_millis(400);
    config.orchestrator.call_timeout = Duration::from_secs(2);
    config.server.shutdown_grace = Duration::from_secs(2);
    // Resolved alerts release at once unless a test is about the hold.
    config.webhook.resolve_hold = Duration::ZERO;
    config
}

/// An Alertmanager webhook body (version 4) with one `HighErrorRate` alert for `service`.
pub fn alert_payload(status: &str, service: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "selfheal-detector",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HighErrorRate", "service": service, "severity": "critical", "signal": "error_rate"},
            "annotations": {"summary": "errors"},
            "startsAt": "2026-11-30T05:00:00.5Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "f00d"
        }]
    })
}

pub fn target(service: &str, address: &str) -> TargetConfig {
    TargetConfig {
        service: service.to_owned(),
        address: address.to_owned(),
        labels: [("env".to_owned(), "test".to_owned())].into(),
    }
}

/// The detector running in-process on ephemeral ports, with a gRPC client.
pub struct TestDetector {
    pub service: ServiceUnderTest<selfheal_detector::Error>,
    pub client: DetectorClient<Channel>,
}

impl TestDetector {
    pub async fn start(config: Config) -> Self {
        let service = ServiceUnderTest::start(move |listeners, shutdown| {
            selfheal_detector::run(config, listeners, shutdown)
        })
        .await;
        Self::connect(service).await
    }

    pub async fn connect(service: ServiceUnderTest<selfheal_detector::Error>) -> Self {
        selfheal_service::testkit::wait_serving(
            service.grpc_addr,
            selfheal_proto::service_names::DETECTOR,
        )
        .await;
        let channel = selfheal_service::testkit::channel(service.grpc_addr)
            .await
            .expect("detector grpc connects");
        Self {
            service,
            client: DetectorClient::new(channel),
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhook/alertmanager", self.service.http_addr)
    }

    pub async fn incidents(&self, service: &str) -> Vec<pb::Incident> {
        self.client
            .clone()
            .list_incidents(pb::ListIncidentsRequest {
                service: service.to_owned(),
                status: 0,
                limit: 0,
            })
            .await
            .expect("ListIncidents answers")
            .into_inner()
            .incidents
    }

    pub async fn targets(&self) -> Vec<pb::ScrapeTarget> {
        self.client
            .clone()
            .list_targets(pb::ListTargetsRequest {})
            .await
            .expect("ListTargets answers")
            .into_inner()
            .targets
    }

    pub async fn series(&self, service: &str, name: &str) -> Vec<(SystemTime, f64)> {
        let response = self
            .client
            .clone()
            .query_series(pb::QuerySeriesRequest {
                service: service.to_owned(),
                names: vec![name.to_owned()],
                start: None,
                end: None,
                step: None,
            })
            .await
            .expect("QuerySeries answers")
            .into_inner();
        response
            .series
            .into_iter()
            .flat_map(|s| s.points)
            .map(|p| {
                (
                    SystemTime::try_from(p.at.expect("point has a time")).expect("valid time"),
                    p.value,
                )
            })
            .collect()
    }

    /// Polls until `service` has an open incident of `signal`.
    pub async fn open_incident(
        &self,
        service: &str,
        signal: pb::SignalKind,
        deadline: Duration,
    ) -> pb::Incident {
        eventually(
            &format!("an open {signal:?} incident for {service}"),
            deadline,
            || async {
                self.incidents(service).await.into_iter().find(|i| {
                    i.signal == signal as i32 && i.status == pb::IncidentStatus::Open as i32
                })
            },
        )
        .await
    }

    pub async fn stop(self) {
        self.service.stop().await.expect("detector stops cleanly");
    }
}

pub fn time_of(timestamp: &Option<prost_types::Timestamp>) -> SystemTime {
    SystemTime::try_from((*timestamp).expect("timestamp set")).expect("valid timestamp")
}

/// Builds a body from the number of the scrape (0, 1, 2, ...).
pub type Script = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// A script and how many times it was served.
type ScriptEntry = (Script, Arc<AtomicU64>);

#[derive(Clone, Default)]
struct ExpositionState {
    scripts: Arc<Mutex<HashMap<String, ScriptEntry>>>,
}

/// A tiny HTTP server serving hand-written exposition text: `/t/{name}/metrics` answers the
/// named script's next body; `/hang` never answers; `/huge` answers 8 MiB.
pub struct ExpositionServer {
    pub addr: SocketAddr,
    state: ExpositionState,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ExpositionServer {
    pub async fn start() -> Self {
        let state = ExpositionState::default();
        let app = axum::Router::new()
            .route("/t/{name}/metrics", get(scripted))
            .route(
                "/hang",
                get(|| async {
                    std::future::pending::<()>().await;
                    ""
                }),
            )
            .route(
                "/huge",
                get(|| async {
                    let line = "http_requests_total{status=\"200\"} 1\n";
                    line.repeat(8 * 1024 * 1024 / line.len())
                }),
            )
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await;
            }
        });
        Self {
            addr,
            state,
            shutdown,
            task,
        }
    }

    /// Registers `script` under `name`; returns its address for a target.
    pub fn script(
        &self,
        name: &str,
        script: impl Fn(u64) -> String + Send + Sync + 'static,
    ) -> String {
        self.state.scripts.lock().unwrap().insert(
            name.to_owned(),
            (Arc::new(script), Arc::new(AtomicU64::new(0))),
        );
        format!("http://{}/t/{name}/metrics", self.addr)
    }

    /// How many times `name` was scraped.
    pub fn scrapes(&self, name: &str) -> u64 {
        self.state
            .scripts
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |(_, n)| n.load(Ordering::SeqCst))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn scripted(
    State(state): State<ExpositionState>,
    Path(name): Path<String>,
) -> axum::response::Response {
    let entry = state.scripts.lock().unwrap().get(&name).cloned();
    match entry {
        Some((script, counter)) => {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            script(n).into_response()
        }
        None => (axum::http::StatusCode::NOT_FOUND, "no such script").into_response(),
    }
}

/// Request counters for a script: `ok` and `failed` totals.
pub fn requests_body(ok: u64, failed: u64) -> String {
    format!(
        "# HELP http_requests_total HTTP requests answered.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{method=\"POST\",route=\"/pay\",status=\"200\"}} {ok}\n\
         http_requests_total{{method=\"POST\",route=\"/pay\",status=\"500\"}} {failed}\n"
    )
}

/// A fake orchestrator that fails the first `fail_first` reports, then acknowledges.
#[derive(Clone, Default)]
pub struct FakeOrchestrator {
    pub reports: Arc<Mutex<Vec<(Instant, pb::Incident)>>>,
    pub attempts: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
}

impl FakeOrchestrator {
    /// Serves on an ephemeral port; returns the URL and the token that stops it.
    pub async fn start(fail_first: usize) -> (Self, String, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = Self {
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            ..Self::default()
        };
        let token = fake.serve(listener);
        (fake, format!("http://{addr}"), token)
    }

    /// Serves on `listener` until the returned token is cancelled.
    pub fn serve(&self, listener: TcpListener) -> CancellationToken {
        let token = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(OrchestratorServer::new(self.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                token.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        token
    }

    pub fn acknowledged(&self) -> Vec<pb::Incident> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }
}

type SagaStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchSagaResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Orchestrator for FakeOrchestrator {
    type WatchSagaStream = SagaStream;

    async fn report_incident(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(Status::unavailable("not yet"));
        }
        let incident = request.into_inner().incident.expect("incident set");
        self.reports
            .lock()
            .unwrap()
            .push((Instant::now(), incident.clone()));
        Ok(Response::new(pb::ReportIncidentResponse {
            saga_id: format!("saga-{}", incident.id),
            joined: false,
        }))
    }

    async fn get_saga(
        &self,
        _: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_sagas(
        &self,
        _: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn watch_saga(
        &self,
        _: Request<pb::WatchSagaRequest>,
    ) -> Result<Response<Self::WatchSagaStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn approve(
        &self,
        _: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn abort(
        &self,
        _: Request<pb::AbortRequest>,
    ) -> Result<Response<pb::AbortResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_mesh_status(
        &self,
        _: Request<pb::GetMeshStatusRequest>,
    ) -> Result<Response<pb::GetMeshStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}
