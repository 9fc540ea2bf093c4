//! `selfheal inject`: the failure-injection matrix. Each scenario injects a real fault into real
//! processes — the demo's mesh, its target, its backing stores — and judges the reaction from
//! observable state only: the saga's final state and decisions, the deployer's stable version,
//! the rollout's last event. Scenarios of the matrix that are not built yet are listed as such
//! and never counted as passing.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_telemetry::TracedChannel;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demo::{DemoOptions, DemoSummary, SagaHook, SagaStarted, TimelineEntry};

mod audit_faults;
pub mod chaos;
mod input_faults;
mod process_faults;
mod target_faults;

/// One row of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioInfo {
    pub name: &'static str,
    /// The reaction the design promises.
    pub expected: &'static str,
}

impl ScenarioInfo {
    /// Whether the scenario can be run yet.
    pub fn built(&self) -> bool {
        BUILT.contains(&self.name)
            || target_faults::BUILT.contains(&self.name)
            || audit_faults::BUILT.contains(&self.name)
            || process_faults::BUILT.contains(&self.name)
            || input_faults::BUILT.contains(&self.name)
    }
}

/// The scenarios this file judges; the submodules list their own.
const BUILT: &[&str] = &[
    "high_error_rate",
    "conflicting_fixes",
    "safety_gate_rejection",
    "infinite_loop",
    "lock_store_unavailable",
    "graph_store_unavailable",
    "patch_build_failure",
    "tests_fail",
    "llm_timeout",
    "no_fix_found",
];

/// The twenty scenarios of the matrix, in its order.
pub const MATRIX: [ScenarioInfo; 20] = [
    info("high_error_rate", "auto-fix, resolved"),
    info(
        "conflicting_fixes",
        "one saga holds the lock; the other incident joins it",
    ),
    info("canary_failure", "rollback, next candidate or escalate"),
    info(
        "safety_gate_rejection",
        "every candidate rejected by policy, escalate",
    ),
    info(
        "cascading_failures",
        "fix the root, or escalate when confidence is low",
    ),
    info("infinite_loop", "canary hangs, latency explodes: rollback"),
    info(
        "audit_log_corruption",
        "verification fails, automation halts, human alerted",
    ),
    info("memory_leak", "canary memory grows: rollback"),
    info(
        "lock_holder_crash",
        "lease expires, another instance resumes; stale token rejected",
    ),
    info(
        "orchestrator_restart_mid_saga",
        "resumes from the journal, nothing done twice",
    ),
    info(
        "audit_store_unavailable",
        "records spool durably and replay; no deploy runs unrecorded",
    ),
    info(
        "lock_store_unavailable",
        "no lock, no deploy: fail closed, incident kept",
    ),
    info(
        "graph_store_unavailable",
        "RCA degrades to logs and traces with lower confidence; resolved",
    ),
    info(
        "patch_build_failure",
        "candidate rejected, next candidate ships",
    ),
    info("tests_fail", "candidate rejected, next candidate ships"),
    info(
        "flapping_alert",
        "hysteresis: one incident, no duplicate sagas",
    ),
    info(
        "llm_timeout",
        "fall back to template and revert strategies; resolved",
    ),
    info(
        "verification_failure",
        "errors persist after 100%: rollback, escalate",
    ),
    info(
        "deployer_crash_during_canary",
        "traffic returns to stable, saga compensates",
    ),
    info(
        "no_fix_found",
        "low RCA confidence: escalate with the full report",
    ),
];

const fn info(name: &'static str, expected: &'static str) -> ScenarioInfo {
    ScenarioInfo { name, expected }
}

/// What one scenario showed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Outcome {
    pub scenario: String,
    pub expected: String,
    pub observed: String,
    /// `pass`, `fail` or `not built`.
    pub result: String,
    pub seconds: f64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.result == "pass"
    }

    /// The headings of an outcome table, matching [`Self::cells`].
    pub const HEADINGS: [&'static str; 5] = ["scenario", "expected", "observed", "result", "time"];

    /// One row of an outcome table.
    pub fn cells(&self) -> [String; 5] {
        [
            self.scenario.clone(),
            self.expected.clone(),
            self.observed.clone(),
            self.result.clone(),
            format!("{:.1} s", self.seconds),
        ]
    }
}

/// The scenario names, for `--help` and errors.
pub fn names() -> Vec<&'static str> {
    MATRIX.iter().map(|s| s.name).collect()
}

/// Runs one scenario; `work` keeps its repositories and stores.
pub async fn run(name: &str, work: &Path) -> Result<Outcome, String> {
    let info = MATRIX
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown scenario {name:?}; one of: {}", names().join(", ")))?;
    let started = Instant::now();
    let built = info.built();
    let judged: Result<(bool, String), String> = if built {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        judge(name, &dir).await
    } else {
        Ok((false, "not built yet".to_owned()))
    };
    let (passed, observed) = judged.unwrap_or_else(|error| (false, format!("error: {error}")));
    Ok(Outcome {
        scenario: name.to_owned(),
        expected: info.expected.to_owned(),
        observed,
        result: if !built {
            "not built".to_owned()
        } else if passed {
            "pass".to_owned()
        } else {
            "fail".to_owned()
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The demo with `overrides` and an optional hook, its timeline discarded.
pub(crate) async fn demo(
    work: &Path,
    overrides: Vec<String>,
    on_saga: Option<SagaHook>,
) -> Result<DemoSummary, String> {
    // Shown to a person under `selfheal demo --inject-failure` (on the scenario's clock), else
    // dropped.
    let watching = watcher();
    let offset = watching
        .as_ref()
        .map_or(0.0, |(_, started)| started.elapsed().as_secs_f64());
    let (sink, mut events) = mpsc::unbounded_channel::<TimelineEntry>();
    let drain = tokio::spawn(async move {
        while let Some(mut entry) = events.recv().await {
            if let Some((shown, _)) = &watching {
                entry.elapsed_seconds += offset;
                let _ = shown.send(entry);
            }
        }
    });
    let options = DemoOptions {
        work_dir: Some(work.to_path_buf()),
        timeout: Duration::from_secs(300),
        overrides,
        on_saga,
        ..Default::default()
    };
    let result = crate::demo::run(options, sink).await;
    let _ = drain.await;
    result.map_err(|error| error.to_string())
}

/// Where a watched scenario's timeline goes, and when the scenario started. One scenario runs
/// per process under `selfheal demo --inject-failure`, and its faults are injected from
/// spawned tasks too, so this is process-wide rather than task-local.
static WATCHER: std::sync::Mutex<Option<(mpsc::UnboundedSender<TimelineEntry>, Instant)>> =
    std::sync::Mutex::new(None);

fn watcher() -> Option<(mpsc::UnboundedSender<TimelineEntry>, Instant)> {
    WATCHER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Puts a line on the timeline of a watched scenario (what was injected, what was seen); does
/// nothing when nobody watches.
pub(crate) fn note(step: &str, message: impl Into<String>) {
    if let Some((sink, started)) = watcher() {
        let _ = sink.send(TimelineEntry {
            elapsed_seconds: started.elapsed().as_secs_f64(),
            step: step.to_owned(),
            message: message.into(),
            details: Vec::new(),
        });
    }
}

/// Clears the watcher when the watched run ends, however it ends, so the timeline closes.
struct Watching;

impl Drop for Watching {
    fn drop(&mut self) {
        *WATCHER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Runs one scenario as [`run`] does, sending its timeline to `timeline`
/// (`selfheal demo --inject-failure`): every demo run inside it, and the faults it injects.
pub async fn run_with_timeline(
    name: &str,
    work: &Path,
    timeline: mpsc::UnboundedSender<TimelineEntry>,
) -> Result<Outcome, String> {
    *WATCHER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((timeline, Instant::now()));
    let _watching = Watching;
    run(name, work).await
}

pub(crate) fn gate_reasons(summary: &DemoSummary) -> Vec<&str> {
    summary
        .decisions
        .iter()
        .filter(|d| d.kind == "safety_gate" && d.outcome == "reject")
        .map(|d| d.reasoning.as_str())
        .collect()
}

pub(crate) fn step_summary<'a>(summary: &'a DemoSummary, step: &str) -> Option<&'a str> {
    summary
        .steps
        .iter()
        .find(|s| s.name == step)
        .map(|s| s.summary.as_str())
}

pub(crate) fn root_cause_confidence(summary: &DemoSummary) -> f64 {
    summary
        .decisions
        .iter()
        .find(|d| d.kind == "root_cause")
        .map_or(0.0, |d| d.confidence)
}

/// The settings that inject a scenario's fault into the demo's mesh, for the scenarios whose
/// fault is a setting.
fn injected_settings(name: &str) -> Option<Vec<String>> {
    let settings: &[&str] = match name {
        // The smallest fix changes two lines; a one-line limit rejects every candidate.
        "safety_gate_rejection" => &["safety_gate.gate.max_changed_lines=1"],
        // Nothing listens on port 9 of loopback: every lock call fails.
        "lock_store_unavailable" => &[
            "orchestrator.lock.backend=redis",
            "orchestrator.lock.redis_url=redis://127.0.0.1:9",
            "orchestrator.lock.ttl=1s",
            "orchestrator.lock.timeout=200ms",
            "orchestrator.saga.deadlines.lock=3s",
        ],
        "graph_store_unavailable" => &[
            "rca.graph.backend=neo4j",
            "rca.graph.uri=bolt://127.0.0.1:9",
            "rca.graph.connect_timeout=500ms",
            "rca.graph.query_timeout=500ms",
        ],
        // No analysis is ever this sure, so the saga must hand over to a person.
        "no_fix_found" => &["orchestrator.saga.min_confidence=0.999"],
        _ => return None,
    };
    Some(settings.iter().map(|s| (*s).to_owned()).collect())
}

/// A mesh with the demo's settings plus `extra`, on a work directory whose deployer and audit
/// stores start empty (a kept directory is reused across runs).
pub(crate) async fn fresh_mesh(
    work: &Path,
    extra: Vec<String>,
) -> Result<crate::mesh::RunningMesh, String> {
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    for owned in ["deployer", "audit"] {
        let dir = work.join(owned);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    mesh_on(work, extra).await
}

/// A mesh with the demo's settings plus `extra`, on whatever stores `work` already holds (a
/// restart of the mesh on the same data).
pub(crate) async fn mesh_on(
    work: &Path,
    extra: Vec<String>,
) -> Result<crate::mesh::RunningMesh, String> {
    let mut overrides = crate::demo::demo_settings(work);
    overrides.extend(extra);
    crate::mesh::start(crate::mesh::MeshOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        base_port: 0,
        config_file: None,
        overrides,
        env: &selfheal_service::ProcessEnv,
    })
    .await
    .map_err(|e| e.to_string())
}

fn settings(name: &str) -> Vec<String> {
    injected_settings(name).unwrap_or_default()
}

pub(crate) type Judged = Pin<Box<dyn Future<Output = Result<(bool, String), String>> + Send>>;

fn judge(name: &str, work: &Path) -> Judged {
    let work = work.to_path_buf();
    match name {
        "high_error_rate" => Box::pin(async move {
            let s = demo(&work, Vec::new(), None).await?;
            let ok = s.healed() && s.error_rate_after < 0.01 && s.audit_chain_ok;
            Ok((
                ok,
                format!(
                    "{}; errors {:.1}% → {:.2}%; MTTR {:.1} s; chain {}",
                    s.status,
                    s.error_rate_before * 100.0,
                    s.error_rate_after * 100.0,
                    s.mttr_seconds,
                    if s.audit_chain_ok {
                        "verified"
                    } else {
                        "broken"
                    }
                ),
            ))
        }),
        "conflicting_fixes" => Box::pin(conflicting_fixes(work)),
        "safety_gate_rejection" => Box::pin(async move {
            let s = demo(&work, settings("safety_gate_rejection"), None).await?;
            let reasons = gate_reasons(&s);
            let all_policy = !reasons.is_empty() && reasons.iter().all(|r| r.contains("policy"));
            let ok = s.status == "escalated" && all_policy && s.final_stable_commit == s.bad_commit;
            Ok((
                ok,
                format!(
                    "{}; {} candidates rejected by {}; nothing deployed",
                    s.status,
                    reasons.len(),
                    if all_policy { "policy" } else { "other checks" }
                ),
            ))
        }),
        "infinite_loop" => Box::pin(infinite_loop(work)),
        "lock_store_unavailable" => Box::pin(async move {
            let s = demo(&work, settings("lock_store_unavailable"), None).await?;
            let deployed = s
                .steps
                .iter()
                .any(|step| step.name == "deploy" && step.status == "succeeded");
            let ok = !s.healed() && !deployed && s.final_stable_commit == s.bad_commit;
            Ok((
                ok,
                format!(
                    "{}; deploy {}; the buggy version still serves; incident {} kept",
                    s.status,
                    if deployed { "RAN" } else { "never ran" },
                    s.incident_id
                ),
            ))
        }),
        "graph_store_unavailable" => Box::pin(async move {
            let s = demo(&work, settings("graph_store_unavailable"), None).await?;
            let confidence = root_cause_confidence(&s);
            let ok = s.healed() && confidence < 0.97;
            Ok((
                ok,
                format!(
                    "{}; root-cause confidence {confidence:.2} without the graph",
                    s.status
                ),
            ))
        }),
        "patch_build_failure" | "tests_fail" => {
            let check = if name == "patch_build_failure" {
                "build"
            } else {
                "test"
            };
            Box::pin(async move {
                let s = demo(&work, Vec::new(), None).await?;
                let rejected = gate_reasons(&s)
                    .iter()
                    .filter(|r| r.contains(&format!("the {check} check failed")))
                    .count();
                let ok = s.healed() && rejected > 0;
                Ok((
                    ok,
                    format!(
                        "{rejected} candidate(s) rejected at the {check} check; {} with the next candidate",
                        s.status
                    ),
                ))
            })
        }
        "llm_timeout" => Box::pin(llm_timeout(work)),
        "no_fix_found" => Box::pin(async move {
            let s = demo(&work, settings("no_fix_found"), None).await?;
            let patched = s.steps.iter().any(|step| step.name == "patch");
            let ok = s.status == "escalated" && !patched && s.final_stable_commit == s.bad_commit;
            Ok((
                ok,
                format!(
                    "{} at confidence {:.2}; {}",
                    s.status,
                    root_cause_confidence(&s),
                    if patched {
                        "a patch was still generated"
                    } else {
                        "no automated change"
                    }
                ),
            ))
        }),
        other => target_faults::judge(other, &work)
            .or_else(|| audit_faults::judge(other, &work))
            .or_else(|| process_faults::judge(other, &work))
            .or_else(|| input_faults::judge(other, &work))
            .unwrap_or_else(|| {
                let other = other.to_owned();
                Box::pin(async move { Err(format!("{other} has no injection")) })
            }),
    }
}

/// A second incident for the same service while its saga runs.
async fn conflicting_fixes(work: std::path::PathBuf) -> Result<(bool, String), String> {
    let answer: Arc<Mutex<Option<Result<pb::ReportIncidentResponse, String>>>> = Arc::default();
    let seen = Arc::clone(&answer);
    let hook = SagaHook(Arc::new(move |started: SagaStarted| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let result = async {
                let channel = selfheal_telemetry::connect_lazy(
                    &started.endpoint("orchestrator"),
                    Duration::from_secs(5),
                )
                .map_err(|e| e.to_string())?;
                let mut incident = started.incident.clone();
                incident.id = format!("{}-second", incident.id);
                incident.fingerprint = format!("{}-second", incident.fingerprint);
                incident.summary = "a second alert for the same service".into();
                OrchestratorClient::new(channel)
                    .report_incident(pb::ReportIncidentRequest {
                        incident: Some(incident),
                    })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| status.to_string())
            }
            .await;
            *seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
        })
    }));
    let s = demo(&work, Vec::new(), Some(hook)).await?;
    let answer = answer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match answer {
        Some(Ok(response)) => {
            let ok = response.joined && response.saga_id == s.saga_id && s.healed();
            Ok((
                ok,
                format!(
                    "second incident {} saga {}; {}",
                    if response.joined {
                        "joined"
                    } else {
                        "did NOT join"
                    },
                    response.saga_id,
                    s.status
                ),
            ))
        }
        Some(Err(error)) => Ok((false, format!("the second report failed: {error}"))),
        None => Ok((false, "the second incident was never reported".into())),
    }
}

/// An LLM endpoint that accepts connections and never answers.
async fn llm_timeout(work: std::path::PathBuf) -> Result<(bool, String), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let hang = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => {
                        if let Ok((socket, _)) = accepted {
                            held.push(socket);
                        }
                    }
                }
            }
        })
    };
    let result = demo(
        &work,
        vec![
            "patcher.llm.enabled=true".into(),
            format!("patcher.llm.base_url=http://{address}/v1"),
            "patcher.llm.model=any".into(),
            "patcher.llm.api_key_env=".into(),
            "patcher.llm.timeout=1s".into(),
        ],
        None,
    )
    .await;
    stop.cancel();
    let _ = hang.await;
    let s = result?;
    let patch = step_summary(&s, "patch").unwrap_or_default().to_owned();
    let ok = s.healed() && patch.contains("timed out");
    Ok((ok, format!("{}; patch step: {patch}", s.status)))
}

/// What shipping a variant's bad commit as a canary over its good commit showed.
pub(crate) struct VariantCanary {
    pub scenario: selfheal_scenario::Scenario,
    /// Every rollout event of the canary, in order.
    pub events: Vec<pb::RolloutEvent>,
    /// The stable commit once the rollout ended.
    pub stable_commit: String,
    /// The demo's load, sent through the router the whole time.
    pub load: crate::load::LoadSummary,
}

/// An open error-rate incident of the demo's service, as the detector reports it three seconds
/// after the failure began; its id starts with `prefix` and is unique to this run.
pub(crate) fn demo_incident(prefix: &str) -> pb::Incident {
    let now = std::time::SystemTime::now();
    pb::Incident {
        id: format!("{prefix}-{}", audit_faults::uuid_like()),
        fingerprint: format!("{}:error_rate", crate::demo::SERVICE),
        service: crate::demo::SERVICE.into(),
        signal: pb::SignalKind::ErrorRate.into(),
        severity: pb::Severity::Critical.into(),
        status: pb::IncidentStatus::Open.into(),
        observed_value: 0.15,
        threshold: 0.05,
        first_bad_at: Some((now - Duration::from_secs(3)).into()),
        opened_at: Some(now.into()),
        summary: format!("error rate above 5% on {}", crate::demo::SERVICE),
        ..Default::default()
    }
}

/// Reports `incident`, retrying while the orchestrator starts.
pub(crate) async fn report_incident(
    orchestrator: &mut OrchestratorClient<TracedChannel>,
    incident: &pb::Incident,
) -> Result<String, String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match orchestrator
            .report_incident(pb::ReportIncidentRequest {
                incident: Some(incident.clone()),
            })
            .await
        {
            Ok(response) => return Ok(response.into_inner().saga_id),
            Err(status) if tokio::time::Instant::now() >= until => {
                return Err(format!(
                    "the orchestrator did not take the incident: {status}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls the saga (through restarts of its orchestrator) until `done` holds.
pub(crate) async fn poll_saga(
    orchestrator: &mut OrchestratorClient<TracedChannel>,
    saga_id: &str,
    deadline: Duration,
    done: impl Fn(&pb::Saga) -> bool,
) -> Option<pb::Saga> {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if let Ok(response) = orchestrator
            .get_saga(pb::GetSagaRequest {
                id: saga_id.to_owned(),
            })
            .await
            && let Some(saga) = response.into_inner().saga
            && done(&saga)
        {
            return Some(saga);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Every audit record of `saga_id`, in order.
pub(crate) async fn saga_records(
    audit: &mut selfheal_proto::v1::audit_client::AuditClient<TracedChannel>,
    saga_id: &str,
) -> Result<Vec<pb::AuditRecord>, String> {
    Ok(audit
        .query(pb::QueryRequest {
            saga_id: saga_id.to_owned(),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|status| format!("audit Query: {status}"))?
        .into_inner()
        .records)
}

/// Builds `variant` of the payment-service example, releases its good commit through the
/// deployer at `deployer_url`, sends the demo's load through the router, and ships the bad
/// commit as a canary (10 → 50 → 100 %, 3 s analysis windows) under the idempotency `key`.
pub(crate) async fn canary_variant(
    work: &Path,
    deployer_url: &str,
    variant: &str,
    key: &str,
) -> Result<VariantCanary, String> {
    let repo = work.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).map_err(|e| e.to_string())?;
    }
    let example = selfheal_scenario::examples_dir().join(crate::demo::SERVICE);
    let variant = variant.to_owned();
    let scenario = tokio::task::spawn_blocking({
        let variant = variant.clone();
        move || selfheal_scenario::build_variant(&example, &variant, &repo)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let channel = selfheal_telemetry::connect_lazy(deployer_url, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut deployer = DeployerClient::new(channel);
    crate::demo::deploy_direct(&mut deployer, &scenario.repo, &scenario.good_commit)
        .await
        .map_err(|e| e.to_string())?;
    let public = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?
        .public_address;
    let stop = CancellationToken::new();
    let load = {
        let stop = stop.clone();
        let plan = crate::load::LoadPlan {
            concurrency: 256,
            ..crate::load::LoadPlan::steady(
                format!("http://{public}"),
                100,
                Duration::from_secs(300),
            )
        };
        tokio::spawn(async move { crate::load::run(&plan, stop, |_| {}).await })
    };
    note(
        "inject",
        format!(
            "the {variant} release {} shipped as a canary (10 → 50 → 100 %) under 100 req/s",
            &scenario.bad_commit[..10.min(scenario.bad_commit.len())]
        ),
    );
    let rollout = async {
        let mut stream = deployer
            .deploy(pb::DeployRequest {
                service: crate::demo::SERVICE.into(),
                source: Some(pb::SourceRef {
                    repository: scenario.repo.display().to_string(),
                    commit: scenario.bad_commit.clone(),
                }),
                strategy: pb::RolloutStrategy::Canary.into(),
                plan: Some(pb::CanaryPlan {
                    steps: vec![10, 50, 100],
                    analysis_window: Some(
                        Duration::from_secs(3)
                            .try_into()
                            .map_err(|_| "a valid duration".to_owned())?,
                    ),
                    min_requests: 10,
                    max_error_rate: 0.05,
                    failure_limit: 0,
                }),
                idempotency_key: key.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut events = Vec::new();
        while let Some(response) = stream.message().await.map_err(|s| s.to_string())? {
            if let Some(event) = &response.event {
                note(
                    "deploy",
                    format!(
                        "rollout {}: {}% {} {}",
                        event
                            .kind()
                            .as_str_name()
                            .trim_start_matches("ROLLOUT_EVENT_KIND_"),
                        event.canary_weight,
                        event.version,
                        event.message
                    ),
                );
            }
            events.extend(response.event);
        }
        Ok::<_, String>(events)
    }
    .await;
    stop.cancel();
    let load = load
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let events = rollout?;
    let stable_commit = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?
        .stable
        .map(|s| s.commit)
        .unwrap_or_default();
    Ok(VariantCanary {
        scenario,
        events,
        stable_commit,
        load,
    })
}

/// A release whose new code hangs for some customers, shipped as a canary.
async fn infinite_loop(work: std::path::PathBuf) -> Result<(bool, String), String> {
    let mesh = fresh_mesh(&work, vec!["deployer.router.upstream_timeout=1s".into()]).await?;
    let url = mesh.grpc_url("deployer");
    let result = canary_variant(&work, &url, "loop", "inject-infinite-loop").await;
    let _ = mesh.stop().await;
    let canary = result?;
    let last = canary
        .events
        .last()
        .ok_or("the deployer sent no rollout events")?;
    let rolled_back = last.kind == pb::RolloutEventKind::RolledBack as i32;
    let good = canary.stable_commit == canary.scenario.good_commit;
    Ok((
        rolled_back && good,
        format!(
            "canary {} ({}); stable is the {} commit",
            if rolled_back {
                "rolled back"
            } else {
                "NOT rolled back"
            },
            last.message,
            if good { "good" } else { "hanging" }
        ),
    ))
}

/// One service of the mesh as its own process (`selfheal serve SERVICE`).
pub(crate) struct Served {
    child: tokio::process::Child,
}

impl Served {
    pub(crate) fn spawn(service: &str, settings: &[String], log: &Path) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find selfheal: {e}"))?;
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(exe)
            .args(["serve", service])
            .args(settings.iter().flat_map(|s| ["--set", s.as_str()]))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start selfheal serve {service}: {e}"))?;
        Ok(Self { child })
    }

    /// SIGKILL: nothing is cleaned up, nothing is finished.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, so a deployer stops its versions; SIGKILL after 30 s.
    pub(crate) async fn stop(mut self) {
        let pid = self
            .child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}
