//! The saga engine's surroundings for tests: fake rca, patcher, safety gate and deployer as one
//! in-process tonic server whose behaviour each test scripts, the real audit service on a file
//! store, an escalation webhook receiver, and a cuttable proxy in front of Redis.

// Messages of other services are built with `..Default::default()` so their additive fields never
// break these tests.
#![allow(dead_code, unreachable_pub, clippy::needless_update)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_orchestrator::Config;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::deployer_server::{Deployer, DeployerServer};
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_proto::v1::patcher_server::{Patcher, PatcherServer};
use selfheal_proto::v1::rca_server::{Rca, RcaServer};
use selfheal_proto::v1::safety_gate_server::{SafetyGate, SafetyGateServer};
use selfheal_service::testkit::{DEADLINE, ServiceUnderTest, wait_serving};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What the fake peers answer.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub confidence: f64,
    pub cause_kind: pb::CauseKind,
    pub located: bool,
    pub candidates: usize,
    /// Files every candidate touches.
    pub files: Vec<String>,
    /// One repository for every service (otherwise `/repos/{service}`).
    pub shared_repository: Option<String>,
    pub gate: pb::GateOutcome,
    pub deploy_outcome: pb::RolloutEventKind,
    pub healthy: bool,
    /// Analyze waits for a permit of `analyze_permits`.
    pub hold_analyze: bool,
    /// Evaluate waits for a permit of `gate_permits`.
    pub hold_gate: bool,
    /// A rollout waits for a permit of `deploy_permits` before its outcome.
    pub hold_deploy: bool,
    /// Rollback waits for a permit of `rollback_permits`.
    pub hold_rollback: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            confidence: 0.9,
            cause_kind: pb::CauseKind::CodeDefect,
            located: true,
            candidates: 2,
            files: vec!["src/handler.rs".into()],
            shared_repository: None,
            gate: pb::GateOutcome::Approve,
            deploy_outcome: pb::RolloutEventKind::Promoted,
            healthy: true,
            hold_analyze: false,
            hold_gate: false,
            hold_deploy: false,
            hold_rollback: false,
        }
    }
}

/// One call a fake received.
#[derive(Clone, Debug)]
pub struct Call {
    pub rpc: &'static str,
    pub service: String,
    pub key: String,
    pub token: u64,
    pub at: Instant,
}

type Rollout = watch::Sender<Option<Vec<pb::DeployResponse>>>;

/// The fake peers and what they saw.
pub struct FakeState {
    pub behaviour: Mutex<Behaviour>,
    pub calls: Mutex<Vec<Call>>,
    pub changed: Notify,
    pub analyze_permits: Semaphore,
    pub gate_permits: Semaphore,
    pub deploy_permits: Semaphore,
    pub rollback_permits: Semaphore,
    pub analyzing: AtomicUsize,
    pub max_analyzing: AtomicUsize,
    rollouts: Mutex<HashMap<String, Rollout>>,
    /// The `traceparent` header of every call, in order.
    pub traceparents: Mutex<Vec<String>>,
}

impl Default for FakeState {
    fn default() -> Self {
        Self {
            behaviour: Mutex::default(),
            calls: Mutex::default(),
            changed: Notify::new(),
            analyze_permits: Semaphore::new(0),
            gate_permits: Semaphore::new(0),
            deploy_permits: Semaphore::new(0),
            rollback_permits: Semaphore::new(0),
            analyzing: AtomicUsize::new(0),
            max_analyzing: AtomicUsize::new(0),
            rollouts: Mutex::default(),
            traceparents: Mutex::default(),
        }
    }
}

#[derive(Clone, Default)]
pub struct Fakes {
    pub state: Arc<FakeState>,
}

impl Fakes {
    /// Serves the four fake peers on an ephemeral port; returns the URL.
    pub async fn start(behaviour: Behaviour) -> (Self, String) {
        let fakes = Self::default();
        *fakes.state.behaviour.lock().unwrap() = behaviour;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = fakes.state.clone();
        let capture = move |request: Request<()>| {
            if let Some(value) = request.metadata().get("traceparent") {
                let value = value.to_str().unwrap_or_default().to_owned();
                state.traceparents.lock().unwrap().push(value);
            }
            Ok(request)
        };
        let server = tonic::transport::Server::builder()
            .add_service(RcaServer::with_interceptor(fakes.clone(), capture.clone()))
            .add_service(PatcherServer::with_interceptor(
                fakes.clone(),
                capture.clone(),
            ))
            .add_service(SafetyGateServer::with_interceptor(
                fakes.clone(),
                capture.clone(),
            ))
            .add_service(DeployerServer::with_interceptor(fakes.clone(), capture))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (fakes, url)
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.behaviour.lock().unwrap());
    }

    fn behaviour(&self) -> Behaviour {
        self.state.behaviour.lock().unwrap().clone()
    }

    fn record(&self, rpc: &'static str, service: &str, key: &str, token: u64) {
        self.state.calls.lock().unwrap().push(Call {
            rpc,
            service: service.to_owned(),
            key: key.to_owned(),
            token,
            at: Instant::now(),
        });
        self.state.changed.notify_waiters();
    }

    pub fn calls(&self, rpc: &str) -> Vec<Call> {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.rpc == rpc)
            .cloned()
            .collect()
    }

    /// Waits until `rpc` was called at least `count` times.
    pub async fn wait_calls(&self, rpc: &str, count: usize) -> Vec<Call> {
        let started = Instant::now();
        loop {
            let notified = self.state.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let calls = self.calls(rpc);
            if calls.len() >= count {
                return calls;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{rpc} called {} times, expected {count}",
                calls.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    fn repository(&self, service: &str) -> String {
        self.behaviour()
            .shared_repository
            .unwrap_or_else(|| format!("/repos/{service}"))
    }
}

fn decision(kind: pb::DecisionKind, outcome: &str) -> pb::Decision {
    pb::Decision {
        kind: kind.into(),
        subject: "fake".into(),
        outcome: outcome.into(),
        reasoning: "scripted by the test".into(),
        confidence: 0.8,
        ..Default::default()
    }
}

async fn hold(permits: &Semaphore) {
    permits.acquire().await.expect("never closed").forget();
}

#[tonic::async_trait]
impl Rca for Fakes {
    async fn analyze(
        &self,
        request: Request<pb::AnalyzeRequest>,
    ) -> Result<Response<pb::AnalyzeResponse>, Status> {
        let request = request.into_inner();
        let incident = request.incident.unwrap_or_default();
        self.record("Analyze", &incident.service, &request.last_good_commit, 0);
        let behaviour = self.behaviour();
        let now = self.state.analyzing.fetch_add(1, Ordering::SeqCst) + 1;
        self.state.max_analyzing.fetch_max(now, Ordering::SeqCst);
        if behaviour.hold_analyze {
            hold(&self.state.analyze_permits).await;
        }
        self.state.analyzing.fetch_sub(1, Ordering::SeqCst);
        let cause = pb::RootCause {
            service: incident.service.clone(),
            kind: behaviour.cause_kind.into(),
            score: 0.9,
            explanation: "scripted".into(),
            location: behaviour.located.then(|| pb::CodeLocation {
                file: "src/handler.rs".into(),
                line: 42,
                ..Default::default()
            }),
            failure_message: "called `Option::unwrap()` on a `None` value".into(),
            trace_text: "thread 'main' panicked at src/handler.rs:42:10".into(),
            ..Default::default()
        };
        Ok(Response::new(pb::AnalyzeResponse {
            report: Some(pb::RootCauseReport {
                incident_id: incident.id,
                causes: vec![cause],
                confidence: behaviour.confidence,
                decision: Some(decision(pb::DecisionKind::RootCause, "code defect")),
                ..Default::default()
            }),
            evidence: None,
        }))
    }

    async fn localize(
        &self,
        _request: Request<pb::LocalizeRequest>,
    ) -> Result<Response<pb::LocalizeResponse>, Status> {
        Err(Status::unimplemented("not used by the saga"))
    }

    async fn record_topology(
        &self,
        _request: Request<pb::RecordTopologyRequest>,
    ) -> Result<Response<pb::RecordTopologyResponse>, Status> {
        Err(Status::unimplemented("not used by the saga"))
    }

    async fn record_deployment(
        &self,
        request: Request<pb::RecordDeploymentRequest>,
    ) -> Result<Response<pb::RecordDeploymentResponse>, Status> {
        let deployment = request.into_inner().deployment.unwrap_or_default();
        self.record(
            "RecordDeployment",
            &deployment.service,
            &deployment.commit,
            0,
        );
        Ok(Response::new(pb::RecordDeploymentResponse {}))
    }

    async fn record_fix(
        &self,
        request: Request<pb::RecordFixRequest>,
    ) -> Result<Response<pb::RecordFixResponse>, Status> {
        let fix = request.into_inner();
        self.record("RecordFix", &fix.service, &fix.strategy, 0);
        Ok(Response::new(pb::RecordFixResponse {}))
    }
}

#[tonic::async_trait]
impl Patcher for Fakes {
    async fn generate_candidates(
        &self,
        request: Request<pb::GenerateCandidatesRequest>,
    ) -> Result<Response<pb::GenerateCandidatesResponse>, Status> {
        let request = request.into_inner();
        self.record(
            "GenerateCandidates",
            &request.service,
            &request.incident_id,
            0,
        );
        if request.location.is_none() || request.source.is_none() {
            return Err(Status::invalid_argument("location and source are required"));
        }
        let behaviour = self.behaviour();
        let candidates = (0..behaviour.candidates)
            .map(|n| pb::CandidatePatch {
                id: format!("{}-c{n}", request.service),
                strategy: pb::PatchStrategy::Template.into(),
                diff: behaviour
                    .files
                    .iter()
                    .map(|f| format!("--- a/{f}\n+++ b/{f}\n@@ -42 +42 @@\n-x.unwrap()\n+x.unwrap_or_default() // {n}\n"))
                    .collect(),
                rationale: "scripted".into(),
                confidence: 0.7,
                files: behaviour.files.clone(),
                template: "rust.option_unwrap.unwrap_or_default".into(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::GenerateCandidatesResponse {
            candidates,
            notes: vec![],
        }))
    }
}

#[tonic::async_trait]
impl SafetyGate for Fakes {
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let request = request.into_inner();
        self.record("Evaluate", &request.service, &request.incident_id, 0);
        if request.failing_requests.is_empty() {
            return Err(Status::invalid_argument("expected the failing requests"));
        }
        let behaviour = self.behaviour();
        if behaviour.hold_gate {
            hold(&self.state.gate_permits).await;
        }
        let verdicts: Vec<pb::GateVerdict> = request
            .candidates
            .iter()
            .enumerate()
            .map(|(n, c)| pb::GateVerdict {
                candidate_id: c.id.clone(),
                outcome: if n == 0 {
                    behaviour.gate
                } else {
                    pb::GateOutcome::Reject
                }
                .into(),
                risk_score: 0.2,
                decision: Some(decision(pb::DecisionKind::SafetyGate, "verdict")),
                ..Default::default()
            })
            .collect();
        let first = verdicts
            .first()
            .map(|v| v.candidate_id.clone())
            .unwrap_or_default();
        let selected = if behaviour.gate == pb::GateOutcome::Approve {
            first.clone()
        } else {
            String::new()
        };
        let recommended = if behaviour.gate == pb::GateOutcome::Reject {
            String::new()
        } else {
            first
        };
        Ok(Response::new(pb::EvaluateResponse {
            verdicts,
            selected_candidate_id: selected,
            decision: Some(decision(pb::DecisionKind::SafetyGate, "gate")),
            outcome: behaviour.gate.into(),
            recommended_candidate_id: recommended,
            ..Default::default()
        }))
    }
}

type DeployStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::DeployResponse, Status>> + Send>>;
type LogsStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::LogsResponse, Status>> + Send>>;

fn event(kind: pb::RolloutEventKind, weight: u32, with_decision: bool) -> pb::DeployResponse {
    pb::DeployResponse {
        event: Some(pb::RolloutEvent {
            kind: kind.into(),
            version: "v3".into(),
            canary_weight: weight,
            message: format!("{kind:?}"),
            decision: with_decision
                .then(|| decision(pb::DecisionKind::CanaryAnalysis, "canary healthy")),
            ..Default::default()
        }),
    }
}

#[tonic::async_trait]
impl Deployer for Fakes {
    type DeployStream = DeployStream;
    type LogsStream = LogsStream;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let request = request.into_inner();
        if request.fencing_token == 0
            || request.idempotency_key.is_empty()
            || request.patch.is_empty()
        {
            return Err(Status::invalid_argument(
                "token, key and patch are required",
            ));
        }
        let key = request.idempotency_key.clone();
        let existing = self
            .state
            .rollouts
            .lock()
            .unwrap()
            .get(&key)
            .map(watch::Sender::subscribe);
        let mut outcome = match existing {
            Some(outcome) => {
                self.record(
                    "DeployReplay",
                    &request.service,
                    &key,
                    request.fencing_token,
                );
                outcome
            }
            None => {
                self.record("Deploy", &request.service, &key, request.fencing_token);
                let (sender, receiver) = watch::channel(None);
                self.state
                    .rollouts
                    .lock()
                    .unwrap()
                    .insert(key.clone(), sender.clone());
                let fakes = self.clone();
                // The rollout runs on its own, like the real deployer's, whoever listens.
                tokio::spawn(async move {
                    let behaviour = fakes.behaviour();
                    if behaviour.hold_deploy {
                        hold(&fakes.state.deploy_permits).await;
                    }
                    let last = behaviour.deploy_outcome;
                    let events = vec![
                        event(pb::RolloutEventKind::Started, 0, false),
                        event(pb::RolloutEventKind::Step, 10, false),
                        event(pb::RolloutEventKind::Analysis, 10, true),
                        event(
                            last,
                            if last == pb::RolloutEventKind::Promoted {
                                100
                            } else {
                                0
                            },
                            true,
                        ),
                    ];
                    sender.send_replace(Some(events));
                    fakes.record("DeployDone", &request.service, &key, request.fencing_token);
                });
                receiver
            }
        };
        let events = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::internal("rollout lost"))?
            .clone()
            .unwrap_or_default();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            events.into_iter().map(Ok),
        ))))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let request = request.into_inner();
        self.record(
            "Rollback",
            &request.service,
            &request.idempotency_key,
            request.fencing_token,
        );
        if self.behaviour().hold_rollback {
            hold(&self.state.rollback_permits).await;
        }
        Ok(Response::new(pb::RollbackResponse {
            stable_version: "v2".into(),
            rolled_back: true,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let service = request.into_inner().service;
        self.record("Status", &service, "", 0);
        let repository = self.repository(&service);
        let version = |name: &str, commit: &str| pb::VersionStatus {
            version: name.into(),
            commit: commit.into(),
            repository: repository.clone(),
            healthy: true,
            ..Default::default()
        };
        Ok(Response::new(pb::StatusResponse {
            services: vec![pb::ServiceStatus {
                service: service.clone(),
                stable: Some(version("v2", "bad2")),
                previous_stable: Some(version("v1", "good1")),
                ..Default::default()
            }],
        }))
    }

    async fn logs(
        &self,
        _request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("not used by the saga"))
    }

    async fn failing_requests(
        &self,
        request: Request<pb::FailingRequestsRequest>,
    ) -> Result<Response<pb::FailingRequestsResponse>, Status> {
        let request = request.into_inner();
        self.record("FailingRequests", &request.service, "", 0);
        let replay = |status: u32| pb::ReplayRequest {
            method: "GET".into(),
            path: "/pay".into(),
            observed_status: status,
            ..Default::default()
        };
        Ok(Response::new(pb::FailingRequestsResponse {
            failing: vec![replay(500)],
            passing: vec![replay(200)],
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let request = request.into_inner();
        self.record("Verify", &request.service, "", 0);
        let healthy = self.behaviour().healthy;
        Ok(Response::new(pb::VerifyResponse {
            healthy,
            error_rate: if healthy { 0.0 } else { 0.5 },
            requests: 100,
            errors: if healthy { 0 } else { 50 },
            decision: Some(decision(
                pb::DecisionKind::Verification,
                if healthy { "healthy" } else { "unhealthy" },
            )),
        }))
    }
}

/// The real audit service on a file store in `dir`.
pub async fn start_audit(dir: &std::path::Path) -> ServiceUnderTest<selfheal_audit::Error> {
    let config = selfheal_audit::Config::with_file_store(dir);
    let audit = ServiceUnderTest::start(|l, s| selfheal_audit::run(config, l, s)).await;
    wait_serving(audit.grpc_addr, selfheal_proto::service_names::AUDIT).await;
    audit
}

/// An orchestrator configuration pointing at the fakes and the audit service, with short
/// deadlines for tests.
pub fn config(fakes_url: &str, audit_url: &str) -> Config {
    let mut config = Config::default();
    for peer in [
        &mut config.peers.detector,
        &mut config.peers.rca,
        &mut config.peers.patcher,
        &mut config.peers.safety_gate,
        &mut config.peers.deployer,
    ] {
        *peer = fakes_url.to_owned();
    }
    config.peers.audit = audit_url.to_owned();
    config.lock.ttl = Duration::from_secs(3);
    config.saga.backoff.initial = Duration::from_millis(20);
    config.saga.backoff.max = Duration::from_millis(200);
    let d = &mut config.saga.deadlines;
    d.lock = Duration::from_secs(15);
    d.analyze = Duration::from_secs(15);
    d.patch = Duration::from_secs(15);
    d.gate = Duration::from_secs(30);
    d.deploy = Duration::from_secs(30);
    d.verify = Duration::from_secs(15);
    d.compensate = Duration::from_secs(10);
    d.journal = Duration::from_secs(5);
    config
}

pub fn redis_url() -> String {
    std::env::var("SELFHEAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn unique_prefix() -> String {
    format!("selfheal-test:{}:{}:", std::process::id(), uuid_like())
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Everything one saga test needs.
pub struct Harness {
    pub fakes: Fakes,
    pub fakes_url: String,
    pub audit: ServiceUnderTest<selfheal_audit::Error>,
    pub orchestrator: ServiceUnderTest<selfheal_orchestrator::Error>,
    pub client: OrchestratorClient<Channel>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(behaviour: Behaviour, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (fakes, fakes_url) = Fakes::start(behaviour).await;
        let audit = start_audit(dir.path()).await;
        let mut config = config(&fakes_url, &audit.grpc_url());
        tweak(&mut config);
        let orchestrator = start_orchestrator(config).await;
        let client = OrchestratorClient::new(channel(&orchestrator.grpc_url()).await);
        Self {
            fakes,
            fakes_url,
            audit,
            orchestrator,
            client,
            _dir: dir,
        }
    }

    pub async fn report(&mut self, incident: pb::Incident) -> pb::ReportIncidentResponse {
        report(&mut self.client, incident).await
    }

    pub async fn wait_state(&mut self, id: &str, state: pb::SagaState) -> pb::Saga {
        wait_state(&mut self.client, id, state).await
    }

    pub async fn journal(&self, saga_id: &str) -> Vec<pb::AuditRecord> {
        journal(&self.audit.grpc_url(), saga_id).await
    }

    /// The directory of the audit service's file store.
    pub fn audit_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

pub async fn start_orchestrator(config: Config) -> ServiceUnderTest<selfheal_orchestrator::Error> {
    let service = ServiceUnderTest::start(|l, s| selfheal_orchestrator::run(config, l, s)).await;
    wait_serving(
        service.grpc_addr,
        selfheal_proto::service_names::ORCHESTRATOR,
    )
    .await;
    service
}

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn incident(id: &str, service: &str) -> pb::Incident {
    pb::Incident {
        id: id.into(),
        fingerprint: format!("{service}:error_rate"),
        service: service.into(),
        signal: pb::SignalKind::ErrorRate.into(),
        severity: pb::Severity::Critical.into(),
        status: pb::IncidentStatus::Open.into(),
        observed_value: 0.4,
        threshold: 0.05,
        summary: format!("{service} answers 40% errors"),
        ..Default::default()
    }
}

/// Reports, retrying while the orchestrator is still reading its journal.
pub async fn report(
    client: &mut OrchestratorClient<Channel>,
    incident: pb::Incident,
) -> pb::ReportIncidentResponse {
    let started = Instant::now();
    loop {
        match client
            .report_incident(pb::ReportIncidentRequest {
                incident: Some(incident.clone()),
            })
            .await
        {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == tonic::Code::Unavailable && started.elapsed() < DEADLINE =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("report failed: {status}"),
        }
    }
}

pub async fn get(client: &mut OrchestratorClient<Channel>, id: &str) -> pb::Saga {
    client
        .get_saga(pb::GetSagaRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap()
}

/// Polls GetSaga until the saga is in `state`; panics when it ends in another final state.
pub async fn wait_state(
    client: &mut OrchestratorClient<Channel>,
    id: &str,
    state: pb::SagaState,
) -> pb::Saga {
    poll(DEADLINE, || {
        let mut client = client.clone();
        async move {
            let saga = get(&mut client, id).await;
            if saga.state() == state {
                return Some(saga);
            }
            let final_states = [
                pb::SagaState::Resolved,
                pb::SagaState::RolledBack,
                pb::SagaState::Escalated,
                pb::SagaState::Aborted,
            ];
            assert!(
                !final_states.contains(&saga.state()),
                "saga ended {:?} ({}) while waiting for {state:?}; steps: {:#?}",
                saga.state(),
                saga.outcome,
                saga.steps
            );
            None
        }
    })
    .await
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn poll<T, F, Fut>(deadline: Duration, mut check: F) -> T
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
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every journal record of `saga_id`.
pub async fn journal(audit_url: &str, saga_id: &str) -> Vec<pb::AuditRecord> {
    let mut client = AuditClient::new(channel(audit_url).await);
    client
        .query(pb::QueryRequest {
            saga_id: saga_id.into(),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
}

/// `(kind, step)` of each record, in order.
pub fn kinds(records: &[pb::AuditRecord]) -> Vec<(pb::RecordKind, String)> {
    records.iter().map(|r| (r.kind(), r.step.clone())).collect()
}

/// The string field `field` of a record's payload.
pub fn payload_str(record: &pb::AuditRecord, field: &str) -> String {
    record
        .payload
        .as_ref()
        .and_then(|p| p.fields.get(field))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Steps whose STEP_FINISHED appears more than once.
pub fn steps_finished_twice(records: &[pb::AuditRecord]) -> Vec<String> {
    let mut seen = HashMap::new();
    for record in records
        .iter()
        .filter(|r| r.kind() == pb::RecordKind::StepFinished)
    {
        *seen.entry(record.step.clone()).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(s, _)| s)
        .collect()
}

/// Collects JSON bodies POSTed to `/hook`; `fail_first` requests answer 503 first.
pub async fn webhook(fail_first: usize) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (store, failures) = (store.clone(), failures.clone());
            async move {
                if failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                store.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

/// A link to Redis that can be cut: afterwards every connection is closed and new ones are
/// refused. Returns the `redis://` URL to use instead of Redis's own.
pub async fn redis_proxy() -> (String, selfheal_service::CuttableLink) {
    let link =
        selfheal_service::CuttableLink::start(selfheal_service::link::authority(&redis_url()))
            .await
            .expect("a loopback port for the link");
    (format!("redis://{}", link.address()), link)
}
