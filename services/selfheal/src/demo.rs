//! `selfheal demo`: the whole loop on the embedded default.
//!
//! The demo starts the seven services in this process, builds the payment-service scenario (a
//! good commit, then a commit whose `.unwrap()` panics for ~15% of customers), deploys the good
//! and then the buggy version behind the deployer's router, points the detector at the running
//! version and starts steady load. From then on only the system acts: the detector opens an
//! incident, the orchestrator runs the saga (lock, analysis, plan, patch, gate, canary, verify),
//! and the demo watches and reports what happened, from the services' own answers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::load::{Counts, LoadPlan, LoadProbe};
use crate::mesh::{MeshOptions, RunningMesh};

/// The service the demo heals.
pub const SERVICE: &str = "payment-service";

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The example to heal: a directory with `selfheal.toml` and `scenario/`.
    pub example: PathBuf,
    /// Where the scenario repository, builds and stores go; a temporary directory when unset.
    pub work_dir: Option<PathBuf>,
    /// Requests per second of the load generator.
    pub rate: u32,
    /// The whole demo gives up after this long.
    pub timeout: Duration,
    /// How long the error rate is measured after recovery.
    pub after_window: Duration,
    /// `service.key=value` settings applied after the demo's own.
    pub overrides: Vec<String>,
    /// Called once, as soon as the incident's saga is known (failure injection uses it).
    pub on_saga: Option<SagaHook>,
}

/// The mesh and the saga, as [`DemoOptions::on_saga`] sees them.
#[derive(Clone, Debug)]
pub struct SagaStarted {
    pub saga_id: String,
    pub incident: pb::Incident,
    /// gRPC addresses (`http://host:port`) of the in-process services, by name.
    pub endpoints: Vec<(&'static str, String)>,
}

impl SagaStarted {
    /// The gRPC address of `service`.
    pub fn endpoint(&self, service: &str) -> String {
        self.endpoints
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, url)| url.clone())
            .unwrap_or_default()
    }
}

/// What a [`SagaHook`] runs.
pub type SagaAction = dyn Fn(SagaStarted) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync;

/// An action run when the demo's saga has started.
#[derive(Clone)]
pub struct SagaHook(pub std::sync::Arc<SagaAction>);

impl std::fmt::Debug for SagaHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SagaHook")
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            example: selfheal_scenario::examples_dir().join(SERVICE),
            work_dir: None,
            rate: 100,
            timeout: Duration::from_secs(600),
            after_window: Duration::from_secs(3),
            overrides: Vec::new(),
            on_saga: None,
        }
    }
}

/// One line of the timeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEntry {
    /// Seconds since the demo started.
    pub elapsed_seconds: f64,
    /// The step or actor: `setup`, `load`, `detect`, a saga step, `summary`.
    pub step: String,
    pub message: String,
    /// Extra lines shown with `--verbose`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// One saga step in the summary's breakdown.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepTiming {
    pub name: String,
    pub seconds: f64,
    pub status: String,
    pub summary: String,
}

/// A decision the system took, in brief.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DecisionBrief {
    pub kind: String,
    pub subject: String,
    pub outcome: String,
    pub confidence: f64,
    pub reasoning: String,
}

/// What the demo observed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DemoSummary {
    /// The saga's final state, lower case (`resolved`, `rolled_back`, `escalated`, …).
    pub status: String,
    pub saga_id: String,
    pub incident_id: String,
    /// From the first failing request to verified recovery.
    pub mttr_seconds: f64,
    /// Error rate seen by the load generator while the buggy version served.
    pub error_rate_before: f64,
    /// Error rate seen by the load generator after recovery.
    pub error_rate_after: f64,
    pub requests_before: u64,
    pub requests_after: u64,
    /// Detection, reporting, then every saga step.
    pub steps: Vec<StepTiming>,
    pub decisions: Vec<DecisionBrief>,
    pub outcome: String,
    /// Whether the audit chain verified at the end.
    pub audit_chain_ok: bool,
    pub audit_records: u64,
    /// Where the scenario repository is (kept with `--work-dir`).
    pub repository: String,
    pub good_commit: String,
    pub bad_commit: String,
    /// The commit the stable version was built from when the demo ended.
    pub final_stable_commit: String,
    pub timeline: Vec<TimelineEntry>,
}

impl DemoSummary {
    /// Whether the system healed the service.
    pub fn healed(&self) -> bool {
        self.status == "resolved"
    }
}

/// Why the demo could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the work directory: {0}")]
    WorkDir(#[source] std::io::Error),
    #[error("cannot build the scenario from {example}: {message}")]
    Scenario { example: String, message: String },
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
    #[error("{step}: {message}")]
    Step { step: &'static str, message: String },
    #[error(
        "gave up after {0:?}; the saga had not finished\nhint: rerun with --verbose to see the last steps, or raise --timeout"
    )]
    Timeout(Duration),
}

pub(crate) fn step_error(step: &'static str) -> impl Fn(tonic::Status) -> DemoError {
    move |status| DemoError::Step {
        step,
        message: format!("{}: {}", status.code(), status.message()),
    }
}

/// The settings the demo needs on top of the defaults: fast scrapes and short windows so a
/// 15% error rate is noticed in seconds, and every store inside the work directory.
pub(crate) fn demo_settings(work: &Path) -> Vec<String> {
    let data = |name: &str| work.join(name).display().to_string();
    vec![
        "detector.scrape.interval=250ms".to_owned(),
        "detector.scrape.timeout=250ms".to_owned(),
        "detector.detection.window=3s".to_owned(),
        "detector.detection.min_requests=20".to_owned(),
        // Canary steps and verification judged over seconds, not the production minutes: at the
        // demo's 100 requests/s a 10% canary sees about 20 requests per 2 s window.
        "orchestrator.saga.canary.analysis_window=2s".to_owned(),
        "orchestrator.saga.canary.min_requests=5".to_owned(),
        "orchestrator.saga.verify.window=2s".to_owned(),
        "orchestrator.saga.verify.min_requests=20".to_owned(),
        format!("audit.file.path={}", data("audit")),
        format!("deployer.data_dir={}", data("deployer")),
        // The gate's worktrees and artifacts are per run: two meshes on one machine must not
        // share (or clean up) each other's candidates.
        format!("safety_gate.gate.work_dir={}", data("gate")),
        format!(
            "deployer.build.target_dir={}",
            selfheal_scenario::example_target_dir().display()
        ),
        format!(
            "safety_gate.gate.target_dir={}",
            selfheal_scenario::example_target_dir().display()
        ),
    ]
}

/// Sends timeline entries to the printer and keeps them for the summary.
struct Timeline {
    started: Instant,
    entries: Vec<TimelineEntry>,
    sink: mpsc::UnboundedSender<TimelineEntry>,
}

impl Timeline {
    fn push(&mut self, step: &str, message: impl Into<String>, details: Vec<String>) {
        let entry = TimelineEntry {
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            step: step.to_owned(),
            message: message.into(),
            details,
        };
        let _ = self.sink.send(entry.clone());
        self.entries.push(entry);
    }
}

/// Runs the demo; every timeline entry is also sent to `sink` as it happens.
pub async fn run(
    options: DemoOptions,
    sink: mpsc::UnboundedSender<TimelineEntry>,
) -> Result<DemoSummary, DemoError> {
    let temp;
    let work = match &options.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(DemoError::WorkDir)?;
            std::path::absolute(dir).map_err(DemoError::WorkDir)?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("selfheal-demo-")
                .tempdir()
                .map_err(DemoError::WorkDir)?;
            temp.path().to_path_buf()
        }
    };
    let mut timeline = Timeline {
        started: Instant::now(),
        entries: Vec::new(),
        sink,
    };
    // A kept work directory starts each run afresh: a new deployer (and its fencing tokens)
    // and a new audit chain.
    for owned in ["deployer", "audit"] {
        let dir = work.join(owned);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DemoError::WorkDir)?;
        }
    }
    let mut overrides = demo_settings(&work);
    overrides.extend(options.overrides.iter().cloned());
    let mesh = crate::mesh::start(MeshOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        base_port: 0,
        config_file: None,
        overrides,
        env: &selfheal_service::ProcessEnv,
    })
    .await?;
    timeline.push(
        "setup",
        "seven services up on loopback ports (embedded locks, audit file, in-memory graph)",
        mesh.endpoints()
            .iter()
            .map(|e| format!("{:<13} {}", e.service, e.grpc_addr))
            .collect(),
    );
    let result = tokio::time::timeout(
        options.timeout,
        drive(&options, &work, &mesh, &mut timeline),
    )
    .await;
    let stopped = mesh.stop().await;
    let mut summary = match result {
        Ok(result) => result?,
        Err(_) => return Err(DemoError::Timeout(options.timeout)),
    };
    if let Err(error) = stopped {
        tracing::warn!(%error, "the mesh did not stop cleanly");
    }
    summary.timeline = timeline.entries;
    Ok(summary)
}

struct Clients {
    orchestrator: OrchestratorClient<selfheal_telemetry::TracedChannel>,
    detector: DetectorClient<selfheal_telemetry::TracedChannel>,
    deployer: DeployerClient<selfheal_telemetry::TracedChannel>,
    audit: AuditClient<selfheal_telemetry::TracedChannel>,
}

impl Clients {
    fn connect(mesh: &RunningMesh) -> Result<Self, DemoError> {
        let channel = |service: &'static str| {
            let url = mesh.grpc_url(service);
            selfheal_telemetry::connect_lazy(&url, Duration::from_secs(5)).map_err(|error| {
                DemoError::Step {
                    step: "setup",
                    message: format!("cannot connect to {service} at {url}: {error}"),
                }
            })
        };
        Ok(Self {
            orchestrator: OrchestratorClient::new(channel("orchestrator")?),
            detector: DetectorClient::new(channel("detector")?),
            deployer: DeployerClient::new(channel("deployer")?),
            audit: AuditClient::new(channel("audit")?),
        })
    }
}

async fn drive(
    options: &DemoOptions,
    work: &Path,
    mesh: &RunningMesh,
    timeline: &mut Timeline,
) -> Result<DemoSummary, DemoError> {
    let mut clients = Clients::connect(mesh)?;
    let repo_dir = work.join("repo");
    let example = options.example.clone();
    let scenario = tokio::task::spawn_blocking(move || {
        if repo_dir.exists() {
            std::fs::remove_dir_all(&repo_dir).ok();
        }
        selfheal_scenario::build(&example, &repo_dir)
    })
    .await
    .map_err(|error| DemoError::Step {
        step: "setup",
        message: error.to_string(),
    })?
    .map_err(|error| DemoError::Scenario {
        example: options.example.display().to_string(),
        message: error.to_string(),
    })?;
    timeline.push(
        "setup",
        format!(
            "scenario repository built: good {} then bad {} ({})",
            short(&scenario.good_commit),
            short(&scenario.bad_commit),
            scenario.bug_file.display(),
        ),
        vec![format!("repository {}", scenario.repo.display())],
    );

    for (label, commit) in [
        ("good", &scenario.good_commit),
        ("buggy", &scenario.bad_commit),
    ] {
        let version = deploy_direct(&mut clients.deployer, &scenario.repo, commit).await?;
        timeline.push(
            "setup",
            format!("deployed the {label} commit {} as {version}", short(commit)),
            Vec::new(),
        );
    }
    let status = service_status(&mut clients.deployer).await?;
    let public = status.public_address.clone();

    // Service discovery: the detector watches whichever process is stable, as a scrape
    // configuration fed by the platform would.
    let stop = CancellationToken::new();
    let discovery = tokio::spawn(follow_stable(
        clients.deployer.clone(),
        clients.detector.clone(),
        stop.clone(),
    ));
    let probe = LoadProbe::new();
    let load_plan = LoadPlan::steady(format!("http://{public}"), options.rate, options.timeout);
    let load = {
        let probe = probe.clone();
        let stop = stop.clone();
        tokio::spawn(async move { crate::load::run_probed(&load_plan, stop, &probe, |_| {}).await })
    };
    timeline.push(
        "load",
        format!(
            "{} requests/s of POST /pay through the router at {public}",
            options.rate
        ),
        Vec::new(),
    );
    let at_load_start = probe.counts().await;

    let endpoints: Vec<(&'static str, String)> = mesh
        .endpoints()
        .iter()
        .map(|e| (e.service, e.grpc_url()))
        .collect();
    let outcome = watch(
        &mut clients,
        &probe,
        timeline,
        options.on_saga.as_ref(),
        endpoints,
    )
    .await;
    let (saga, incident, at_detection) = match outcome {
        Ok(found) => found,
        Err(error) => {
            stop.cancel();
            let _ = load.await;
            let _ = discovery.await;
            return Err(error);
        }
    };

    let at_end = probe.counts().await;
    let state = saga_state(saga.state);
    let after_start = probe.counts().await;
    if state == "resolved" {
        timeline.push(
            "measure",
            format!(
                "measuring the error rate for {:?} after recovery",
                options.after_window
            ),
            Vec::new(),
        );
        tokio::time::sleep(options.after_window).await;
    }
    let after_end = probe.counts().await;
    stop.cancel();
    let _ = load.await;
    let _ = discovery.await;

    let final_stable_commit = service_status(&mut clients.deployer)
        .await
        .ok()
        .and_then(|status| status.stable)
        .map(|stable| stable.commit)
        .unwrap_or_default();
    let verify = clients
        .audit
        .verify(pb::VerifyChainRequest {})
        .await
        .map_err(step_error("audit"))?
        .into_inner();
    timeline.push(
        "audit",
        format!(
            "chain {}: {} records checked",
            if verify.ok { "verified" } else { "BROKEN" },
            verify.records_checked
        ),
        if verify.ok {
            Vec::new()
        } else {
            vec![verify.detail.clone()]
        },
    );

    let first_failure = at_end.first_failure_at;
    let finished_at = saga.finished_at.and_then(|t| SystemTime::try_from(t).ok());
    let mttr_seconds = match (first_failure, finished_at) {
        (Some(first), Some(end)) => end.duration_since(first).unwrap_or_default().as_secs_f64(),
        _ => 0.0,
    };
    let mut steps = Vec::new();
    if let (Some(first), Some(opened)) = (
        first_failure,
        incident
            .opened_at
            .and_then(|t| SystemTime::try_from(t).ok()),
    ) {
        steps.push(StepTiming {
            name: "detect".into(),
            seconds: opened
                .duration_since(first)
                .unwrap_or_default()
                .as_secs_f64(),
            status: "succeeded".into(),
            summary: incident.summary.clone(),
        });
    }
    steps.extend(saga.steps.iter().map(|step| {
        StepTiming {
            name: step.name.clone(),
            seconds: step
                .duration
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or_default()
                .as_secs_f64(),
            status: step_status(step.status),
            summary: step.summary.clone(),
        }
    }));
    let decisions = saga
        .decisions
        .iter()
        .map(|d| DecisionBrief {
            kind: decision_kind(d.kind),
            subject: d.subject.clone(),
            outcome: d.outcome.clone(),
            confidence: d.confidence,
            reasoning: d.reasoning.clone(),
        })
        .collect();
    let requests_before = at_detection.finished.saturating_sub(at_load_start.finished);
    Ok(DemoSummary {
        status: state,
        saga_id: saga.id.clone(),
        incident_id: incident.id.clone(),
        mttr_seconds,
        error_rate_before: at_detection
            .error_rate_since(&at_load_start)
            .unwrap_or_default(),
        error_rate_after: after_end.error_rate_since(&after_start).unwrap_or_default(),
        requests_before,
        requests_after: after_end.finished.saturating_sub(after_start.finished),
        steps,
        decisions,
        outcome: saga.outcome.clone(),
        audit_chain_ok: verify.ok,
        audit_records: verify.records_checked,
        repository: scenario.repo.display().to_string(),
        good_commit: scenario.good_commit.clone(),
        bad_commit: scenario.bad_commit.clone(),
        final_stable_commit,
        timeline: Vec::new(),
    })
}

/// Waits for the incident and its saga, narrating both, until the saga ends.
async fn watch(
    clients: &mut Clients,
    probe: &LoadProbe,
    timeline: &mut Timeline,
    on_saga: Option<&SagaHook>,
    endpoints: Vec<(&'static str, String)>,
) -> Result<(pb::Saga, pb::Incident, Counts), DemoError> {
    let mut incidents = clients
        .detector
        .watch_incidents(pb::WatchIncidentsRequest {
            service: SERVICE.into(),
            include_open: true,
        })
        .await
        .map_err(step_error("detect"))?
        .into_inner();
    let incident = loop {
        match incidents.message().await.map_err(step_error("detect"))? {
            Some(pb::WatchIncidentsResponse {
                incident: Some(incident),
                kind,
            }) if kind == pb::IncidentEventKind::Opened as i32 => break incident,
            Some(_) => continue,
            None => {
                return Err(DemoError::Step {
                    step: "detect",
                    message: "the detector closed its incident stream".into(),
                });
            }
        }
    };
    let at_detection = probe.counts().await;
    timeline.push(
        "detect",
        format!(
            "incident {} opened: {}",
            incident.id,
            if incident.summary.is_empty() {
                format!("observed {:.3}", incident.observed_value)
            } else {
                incident.summary.clone()
            }
        ),
        Vec::new(),
    );

    let saga_id = poll_saga_for(&mut clients.orchestrator, &incident.id).await?;
    timeline.push(
        "saga",
        format!("saga {saga_id} started for {}", incident.id),
        Vec::new(),
    );
    if let Some(hook) = on_saga {
        tokio::spawn((hook.0)(SagaStarted {
            saga_id: saga_id.clone(),
            incident: incident.clone(),
            endpoints,
        }));
    }
    let mut events = clients
        .orchestrator
        .watch_saga(pb::WatchSagaRequest {
            id: saga_id.clone(),
        })
        .await
        .map_err(step_error("saga"))?
        .into_inner();
    while let Some(response) = events.message().await.map_err(step_error("saga"))? {
        let Some(event) = response.event else {
            continue;
        };
        let step = if event.step.is_empty() {
            saga_state(event.state)
        } else {
            event.step.clone()
        };
        let details = event
            .decision
            .as_ref()
            .map(decision_details)
            .unwrap_or_default();
        timeline.push(&step, event.message.clone(), details);
        if is_terminal(event.state) {
            break;
        }
    }
    let saga = clients
        .orchestrator
        .get_saga(pb::GetSagaRequest { id: saga_id })
        .await
        .map_err(step_error("saga"))?
        .into_inner()
        .saga
        .ok_or_else(|| DemoError::Step {
            step: "saga",
            message: "the orchestrator answered without a saga".into(),
        })?;
    Ok((saga, incident, at_detection))
}

/// The saga that took `incident_id`, once the orchestrator has it.
async fn poll_saga_for(
    orchestrator: &mut OrchestratorClient<selfheal_telemetry::TracedChannel>,
    incident_id: &str,
) -> Result<String, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match orchestrator
            .get_saga(pb::GetSagaRequest {
                id: incident_id.to_owned(),
            })
            .await
        {
            Ok(response) => {
                if let Some(saga) = response.into_inner().saga {
                    return Ok(saga.id);
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(step_error("saga")(status)),
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step {
                step: "saga",
                message: format!(
                    "the orchestrator never started a saga for incident {incident_id}; is the detector reporting to it?"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Points the detector at the stable process whenever it changes, until `stop`.
pub(crate) async fn follow_stable(
    deployer: DeployerClient<selfheal_telemetry::TracedChannel>,
    detector: DetectorClient<selfheal_telemetry::TracedChannel>,
    stop: CancellationToken,
) {
    follow_stable_of(deployer, detector, &[SERVICE], stop).await;
}

/// [`follow_stable`] for each of `services`.
pub(crate) async fn follow_stable_of(
    mut deployer: DeployerClient<selfheal_telemetry::TracedChannel>,
    mut detector: DetectorClient<selfheal_telemetry::TracedChannel>,
    services: &'static [&'static str],
    stop: CancellationToken,
) {
    let mut watched = vec![String::new(); services.len()];
    loop {
        for (service, watched) in services.iter().zip(watched.iter_mut()) {
            follow_once(&mut deployer, &mut detector, service, watched).await;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Points the detector at `service`'s stable process if it is not `watched`.
async fn follow_once(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
    detector: &mut DetectorClient<selfheal_telemetry::TracedChannel>,
    service: &str,
    watched: &mut String,
) {
    if let Ok(status) = service_status_of(deployer, service).await
        && let Some(stable) = status.stable
        && stable.address != *watched
    {
        let target = pb::ScrapeTarget {
            service: service.into(),
            address: stable.address.clone(),
            labels: [("version".to_owned(), stable.version.clone())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        if detector
            .add_target(pb::AddTargetRequest {
                target: Some(target),
            })
            .await
            .is_ok()
        {
            *watched = stable.address;
        }
    }
}

pub(crate) async fn service_status(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
) -> Result<pb::ServiceStatus, DemoError> {
    service_status_of(deployer, SERVICE).await
}

/// The deployer's status of `service`.
pub(crate) async fn service_status_of(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
    service: &str,
) -> Result<pb::ServiceStatus, DemoError> {
    deployer
        .status(pb::StatusRequest {
            service: service.into(),
        })
        .await
        .map_err(step_error("deploy"))?
        .into_inner()
        .services
        .into_iter()
        .next()
        .ok_or_else(|| DemoError::Step {
            step: "deploy",
            message: format!("the deployer does not run {service}"),
        })
}

/// Deploys `commit` as the new stable (the way a release pipeline would) and returns its version.
pub(crate) async fn deploy_direct(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
    repo: &Path,
    commit: &str,
) -> Result<String, DemoError> {
    deploy_direct_keyed(deployer, repo, commit, &format!("demo-release-{commit}"), 0).await
}

/// [`deploy_direct`] under the caller's idempotency key, so one commit can be released again,
/// and fencing token: a pipeline that read the service's highest token passes it, and is
/// refused if a saga's lease holder acted since.
pub(crate) async fn deploy_direct_keyed(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
    repo: &Path,
    commit: &str,
    key: &str,
    fencing_token: u64,
) -> Result<String, DemoError> {
    deploy_service_direct(deployer, SERVICE, repo, commit, key, fencing_token).await
}

/// [`deploy_direct_keyed`] for any `service` the deployer runs.
pub(crate) async fn deploy_service_direct(
    deployer: &mut DeployerClient<selfheal_telemetry::TracedChannel>,
    service: &str,
    repo: &Path,
    commit: &str,
    key: &str,
    fencing_token: u64,
) -> Result<String, DemoError> {
    let mut stream = deployer
        .deploy(pb::DeployRequest {
            service: service.into(),
            source: Some(pb::SourceRef {
                repository: repo.display().to_string(),
                commit: commit.to_owned(),
            }),
            strategy: pb::RolloutStrategy::Direct.into(),
            idempotency_key: key.to_owned(),
            fencing_token,
            ..Default::default()
        })
        .await
        .map_err(step_error("deploy"))?
        .into_inner();
    let mut last = None;
    while let Some(response) = stream.message().await.map_err(step_error("deploy"))? {
        last = response.event;
    }
    match last {
        Some(event) if event.kind == pb::RolloutEventKind::Promoted as i32 => Ok(event.version),
        Some(event) => Err(DemoError::Step {
            step: "deploy",
            message: format!("deploying {} ended with: {}", short(commit), event.message),
        }),
        None => Err(DemoError::Step {
            step: "deploy",
            message: "the deployer sent no rollout events".into(),
        }),
    }
}

fn decision_details(decision: &pb::Decision) -> Vec<String> {
    let mut lines = vec![format!(
        "{} → {} (confidence {:.2})",
        decision_kind(decision.kind),
        decision.outcome,
        decision.confidence
    )];
    if !decision.reasoning.is_empty() {
        lines.push(format!("why: {}", decision.reasoning));
    }
    lines.extend(decision.factors.iter().map(|f| {
        format!(
            "factor {} = {:.2} × weight {:.2}: {}",
            f.name, f.score, f.weight, f.explanation
        )
    }));
    lines.extend(
        decision
            .alternatives
            .iter()
            .map(|a| format!("not {}: {}", a.option, a.why_not)),
    );
    lines
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// Whether a saga in `state` has finished.
pub(crate) fn is_terminal(state: i32) -> bool {
    matches!(
        pb::SagaState::try_from(state),
        Ok(pb::SagaState::Resolved
            | pb::SagaState::RolledBack
            | pb::SagaState::Escalated
            | pb::SagaState::Aborted)
    )
}

/// `SAGA_STATE_ROLLED_BACK` → `rolled_back`.
pub fn saga_state(state: i32) -> String {
    enum_name(
        pb::SagaState::try_from(state).map(|s| s.as_str_name()),
        "SAGA_STATE_",
    )
}

fn step_status(status: i32) -> String {
    enum_name(
        pb::StepStatus::try_from(status).map(|s| s.as_str_name()),
        "STEP_STATUS_",
    )
}

fn decision_kind(kind: i32) -> String {
    enum_name(
        pb::DecisionKind::try_from(kind).map(|s| s.as_str_name()),
        "DECISION_KIND_",
    )
}

fn enum_name<E>(name: Result<&'static str, E>, prefix: &str) -> String {
    name.map_or_else(
        |_| "unknown".to_owned(),
        |name| name.trim_start_matches(prefix).to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_are_short_and_lower_case() {
        assert_eq!(saga_state(pb::SagaState::RolledBack as i32), "rolled_back");
        assert_eq!(saga_state(999), "unknown");
        assert_eq!(step_status(pb::StepStatus::Succeeded as i32), "succeeded");
        assert_eq!(
            decision_kind(pb::DecisionKind::SafetyGate as i32),
            "safety_gate"
        );
    }

    #[test]
    fn only_the_exits_are_terminal() {
        assert!(is_terminal(pb::SagaState::Resolved as i32));
        assert!(is_terminal(pb::SagaState::Escalated as i32));
        assert!(!is_terminal(pb::SagaState::AwaitingApproval as i32));
        assert!(!is_terminal(pb::SagaState::Deploying as i32));
    }
}
