//! `selfheal inject --chaos`: random faults within bounds against the running demo, then the
//! invariants. The payment-service serves steady load behind the deployer while faults arrive
//! at random (seeded, so a run can be repeated): buggy releases, second alerts for a saga's
//! service, bursts of the same Alertmanager alert, crashed version processes and sagas aborted
//! by a person. An on-call stand-in acknowledges escalations so automation resumes. When the
//! time is up the faults stop, the sagas are left to finish, and five invariants are checked
//! from the audit chain, the orchestrator and the deployer:
//!
//! - no audit record lost: the sequence has no gap, and every saga's steps and final state are
//!   in the chain;
//! - the chain verifies;
//! - no two sagas ever held one service's lock at once, and fencing tokens only grow;
//! - every canary ended promoted or rolled back, and none is left behind;
//! - every incident has a saga in a final state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost_types::value::Kind;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_telemetry::TracedChannel;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::demo::SERVICE;
use crate::mesh::RunningMesh;

/// How long a chaos run injects faults, and from which seed.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub duration: Duration,
    pub seed: u64,
    /// Keeps the scenario repository, builds and stores.
    pub work: PathBuf,
}

/// One fault the run injected.
#[derive(Clone, Debug, Serialize)]
pub struct InjectedFault {
    pub at_seconds: f64,
    pub fault: String,
    pub detail: String,
}

/// One invariant and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Invariant {
    pub name: String,
    pub held: bool,
    pub detail: String,
}

/// What a chaos run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub seconds: f64,
    pub faults: Vec<InjectedFault>,
    /// Sagas by final state.
    pub sagas: BTreeMap<String, usize>,
    pub incidents: usize,
    /// Sagas the on-call stand-in approved or acknowledged.
    pub acknowledged: usize,
    pub audit_records: u64,
    pub invariants: Vec<Invariant>,
}

impl ChaosReport {
    /// Whether faults were injected and every invariant held.
    pub fn held(&self) -> bool {
        !self.faults.is_empty()
            && !self.invariants.is_empty()
            && self.invariants.iter().all(|i| i.held)
    }
}

/// The faults a run draws from while a saga runs: disturb it.
const DURING_SAGA: [&str; 5] = [
    "second_alert",
    "alert_burst",
    "kill_version",
    "kill_version",
    "operator_abort",
];

/// The faults a run draws from while no saga runs: mostly a new buggy release.
const BETWEEN_SAGAS: [&str; 3] = ["bad_release", "bad_release", "kill_version"];

/// How long the sagas get to finish once the faults stop.
const SETTLE: Duration = Duration::from_secs(240);

struct Clients {
    orchestrator: OrchestratorClient<TracedChannel>,
    detector: DetectorClient<TracedChannel>,
    deployer: DeployerClient<TracedChannel>,
    audit: AuditClient<TracedChannel>,
    webhook: String,
}

impl Clients {
    fn connect(mesh: &RunningMesh) -> Result<Self, String> {
        let channel = |service: &str| {
            let url = mesh.grpc_url(service);
            selfheal_telemetry::connect_lazy(&url, Duration::from_secs(10))
                .map_err(|error| format!("cannot connect to {service} at {url}: {error}"))
        };
        let webhook = mesh
            .endpoint("detector")
            .map(|e| format!("http://{}/webhook/alertmanager", e.http_addr))
            .unwrap_or_default();
        Ok(Self {
            orchestrator: OrchestratorClient::new(channel("orchestrator")?),
            detector: DetectorClient::new(channel("detector")?),
            deployer: DeployerClient::new(channel("deployer")?),
            audit: AuditClient::new(channel("audit")?),
            webhook,
        })
    }
}

/// Runs the mesh and the demo target, injects faults for `options.duration`, lets the sagas
/// finish and checks the invariants.
pub async fn run(options: ChaosOptions) -> Result<ChaosReport, String> {
    let mesh = super::fresh_mesh(&options.work, Vec::new()).await?;
    let result = drive(&options, &mesh).await;
    if let Err(error) = mesh.stop().await {
        tracing::warn!(%error, "the mesh did not stop cleanly");
    }
    result
}

async fn drive(options: &ChaosOptions, mesh: &RunningMesh) -> Result<ChaosReport, String> {
    let mut clients = Clients::connect(mesh)?;
    let scenario = build_scenario(&options.work).await?;
    crate::demo::deploy_direct(&mut clients.deployer, &scenario.repo, &scenario.good_commit)
        .await
        .map_err(|e| e.to_string())?;
    let public = crate::demo::service_status(&mut clients.deployer)
        .await
        .map_err(|e| e.to_string())?
        .public_address;

    let stop = CancellationToken::new();
    let discovery = tokio::spawn(crate::demo::follow_stable(
        clients.deployer.clone(),
        clients.detector.clone(),
        stop.clone(),
    ));
    let load = {
        let stop = stop.clone();
        let plan = crate::load::LoadPlan::steady(
            format!("http://{public}"),
            100,
            options.duration + SETTLE + Duration::from_secs(60),
        );
        tokio::spawn(async move { crate::load::run(&plan, stop, |_| {}).await })
    };
    let on_call = tokio::spawn(acknowledge_escalations(
        clients.orchestrator.clone(),
        stop.clone(),
    ));

    // The clock starts once the target serves: building it is set-up, not chaos.
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut faults = Vec::new();
    let mut releases = 0_u32;
    let mut reported: HashSet<String> = HashSet::new();
    let deadline = started + options.duration;
    // The first fault is always a buggy release, so every run has at least one saga to disturb.
    let mut next = Some("bad_release");
    while Instant::now() < deadline {
        let fault = match next.take() {
            Some(fault) => fault,
            None if running_saga(&mut clients.orchestrator).await.is_some() => {
                DURING_SAGA[rng.usize(..DURING_SAGA.len())]
            }
            // A person restores a service left on the buggy build (a saga rolled back or was
            // aborted), so the next release can start a new incident.
            None if stable_commit(&mut clients.deployer).await == scenario.bad_commit
                && rng.bool() =>
            {
                "good_release"
            }
            None => BETWEEN_SAGAS[rng.usize(..BETWEEN_SAGAS.len())],
        };
        let detail = inject(
            fault,
            &mut clients,
            &scenario,
            &mut rng,
            &mut releases,
            &mut reported,
        )
        .await;
        if let Some(detail) = detail {
            faults.push(InjectedFault {
                at_seconds: started.elapsed().as_secs_f64(),
                fault: fault.to_owned(),
                detail,
            });
        }
        let pause = Duration::from_millis(rng.u64(1_500..4_000));
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }

    let settled = settle(&mut clients.orchestrator).await;
    stop.cancel();
    let acknowledged = on_call.await.unwrap_or_default();
    let _ = load.await;
    let _ = discovery.await;
    let (sagas, incidents, audit_records, invariants) =
        check(&mut clients, &reported, settled).await?;
    Ok(ChaosReport {
        seed: options.seed,
        seconds: started.elapsed().as_secs_f64(),
        faults,
        sagas,
        incidents,
        acknowledged,
        audit_records,
        invariants,
    })
}

async fn build_scenario(work: &Path) -> Result<selfheal_scenario::Scenario, String> {
    let repo = work.join("repo");
    let example = selfheal_scenario::examples_dir().join(SERVICE);
    tokio::task::spawn_blocking(move || {
        if repo.exists() {
            std::fs::remove_dir_all(&repo).ok();
        }
        selfheal_scenario::build(&example, &repo)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Injects one fault; `None` when its precondition does not hold right now (nothing done).
async fn inject(
    fault: &str,
    clients: &mut Clients,
    scenario: &selfheal_scenario::Scenario,
    rng: &mut fastrand::Rng,
    releases: &mut u32,
    reported: &mut HashSet<String>,
) -> Option<String> {
    let running = running_saga(&mut clients.orchestrator).await;
    match fault {
        // A release pipeline ships the buggy commit again (a new rollout each time).
        "bad_release" | "good_release" => {
            if running.is_some() {
                return None;
            }
            let (commit, done, refused) = if fault == "bad_release" {
                (
                    &scenario.bad_commit,
                    "released the buggy commit as",
                    "release refused",
                )
            } else {
                (
                    &scenario.good_commit,
                    "a person restored the good commit as",
                    "restore refused",
                )
            };
            *releases += 1;
            // The pipeline reads the service's fencing epoch and releases under it: the deployer
            // refuses the release if a saga's lease holder acts in between.
            let epoch = crate::demo::service_status(&mut clients.deployer)
                .await
                .map(|s| s.highest_fencing_token)
                .unwrap_or_default();
            Some(
                match crate::demo::deploy_direct_keyed(
                    &mut clients.deployer,
                    &scenario.repo,
                    commit,
                    &format!("chaos-release-{releases}"),
                    epoch,
                )
                .await
                {
                    Ok(version) => format!("{done} {version}"),
                    Err(error) => format!("{refused}: {error}"),
                },
            )
        }
        // Another alert for the service while its saga runs: it must join, never start a second.
        "second_alert" => {
            let saga = running?;
            let first = saga.incident_ids.first()?.clone();
            let incident = clients
                .detector
                .get_incident(pb::GetIncidentRequest { id: first.clone() })
                .await
                .ok()
                .and_then(|r| r.into_inner().incident);
            let mut incident = incident.unwrap_or_else(|| pb::Incident {
                service: SERVICE.into(),
                summary: "a second alert".into(),
                ..Default::default()
            });
            incident.id = format!("chaos-{}-{}", first, rng.u32(..));
            incident.fingerprint = incident.id.clone();
            let answer = clients
                .orchestrator
                .report_incident(pb::ReportIncidentRequest {
                    incident: Some(incident.clone()),
                })
                .await;
            reported.insert(incident.id.clone());
            Some(match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    format!(
                        "incident {} {} saga {}",
                        incident.id,
                        if r.joined { "joined" } else { "started" },
                        r.saga_id
                    )
                }
                Err(status) => format!("incident {} refused: {}", incident.id, status.message()),
            })
        }
        // Alertmanager repeats one firing alert in a burst, then says it resolved.
        "alert_burst" => {
            let count = rng.usize(3..8);
            let body = |status: &str| {
                serde_json::json!({
                "version": "4",
                "status": status,
                "receiver": "selfheal",
                "groupKey": "{}:{alertname=\"PaymentErrors\"}",
                "alerts": [{
                    "status": status,
                    "labels": {
                        "alertname": "PaymentErrors",
                        "service": SERVICE,
                        "signal": "error_rate",
                        "severity": "critical",
                    },
                    "annotations": { "summary": "payment errors above 5%" },
                    "fingerprint": "chaos-payment-errors",
                }],
                })
            };
            let http = reqwest::Client::new();
            let mut accepted = 0;
            for status in std::iter::repeat_n("firing", count).chain(["resolved"]) {
                if http
                    .post(&clients.webhook)
                    .json(&body(status))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    accepted += 1;
                }
            }
            Some(format!(
                "{count} copies of one firing alert, then resolved; {accepted} of {} accepted",
                count + 1
            ))
        }
        // A version process dies: the canary when there is one, else the stable.
        "kill_version" => {
            let status = crate::demo::service_status(&mut clients.deployer)
                .await
                .ok()?;
            let (role, version) = match (status.canary, status.stable) {
                (Some(canary), _) if canary.pid != 0 => ("canary", canary),
                (_, Some(stable)) if stable.pid != 0 => ("stable", stable),
                _ => return None,
            };
            let pid = rustix::process::Pid::from_raw(i32::try_from(version.pid).ok()?)?;
            let killed = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            Some(format!(
                "SIGKILL to the {role} {} (pid {}){}",
                version.version,
                version.pid,
                if killed.is_ok() { "" } else { ": already gone" }
            ))
        }
        // A person aborts a saga that is still analysing or planning.
        "operator_abort" => {
            let saga = running?;
            let early = matches!(
                pb::SagaState::try_from(saga.state),
                Ok(pb::SagaState::Analyzing | pb::SagaState::Planning | pb::SagaState::Patching)
            );
            if !early || rng.u8(..4) != 0 {
                return None;
            }
            let answer = clients
                .orchestrator
                .abort(pb::AbortRequest {
                    saga_id: saga.id.clone(),
                    actor: "chaos".into(),
                    reason: "aborted by the chaos run".into(),
                })
                .await;
            Some(format!(
                "abort of saga {}: {}",
                saga.id,
                answer.map_or_else(|s| s.message().to_owned(), |_| "accepted".to_owned())
            ))
        }
        _ => None,
    }
}

async fn stable_commit(deployer: &mut DeployerClient<TracedChannel>) -> String {
    crate::demo::service_status(deployer)
        .await
        .ok()
        .and_then(|s| s.stable)
        .map(|s| s.commit)
        .unwrap_or_default()
}

async fn list_sagas(orchestrator: &mut OrchestratorClient<TracedChannel>) -> Vec<pb::Saga> {
    orchestrator
        .list_sagas(pb::ListSagasRequest {
            service: String::new(),
            state: pb::SagaState::Unspecified.into(),
            limit: 0,
        })
        .await
        .map(|r| r.into_inner().sagas)
        .unwrap_or_default()
}

async fn running_saga(orchestrator: &mut OrchestratorClient<TracedChannel>) -> Option<pb::Saga> {
    list_sagas(orchestrator)
        .await
        .into_iter()
        .find(|s| s.service == SERVICE && !crate::demo::is_terminal(s.state))
}

/// Stands in for the person on call: approves what the gate asks a person about, and
/// acknowledges every escalated or rolled-back saga so that automation of the service resumes.
/// Returns how many sagas it answered.
async fn acknowledge_escalations(
    mut orchestrator: OrchestratorClient<TracedChannel>,
    stop: CancellationToken,
) -> usize {
    let mut done: HashSet<String> = HashSet::new();
    loop {
        for saga in list_sagas(&mut orchestrator).await {
            let waiting = matches!(
                pb::SagaState::try_from(saga.state),
                Ok(pb::SagaState::Escalated
                    | pb::SagaState::RolledBack
                    | pb::SagaState::AwaitingApproval)
            );
            // A saga approved while it waits may come back escalated: answer each state once.
            let answered = format!("{}:{}", saga.id, saga.state);
            if waiting && !done.contains(&answered) {
                let answer = orchestrator
                    .approve(pb::ApproveRequest {
                        saga_id: saga.id.clone(),
                        approver: "on-call".into(),
                        comment: "acknowledged during a chaos run".into(),
                    })
                    .await;
                if answer.is_ok() {
                    done.insert(answered);
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return done.len(),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Waits until no saga has run for two seconds; false when [`SETTLE`] passed first.
async fn settle(orchestrator: &mut OrchestratorClient<TracedChannel>) -> bool {
    let deadline = Instant::now() + SETTLE;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let busy = list_sagas(orchestrator)
            .await
            .iter()
            .any(|s| !crate::demo::is_terminal(s.state));
        match (busy, quiet_since) {
            (true, _) => quiet_since = None,
            (false, None) => quiet_since = Some(Instant::now()),
            (false, Some(since)) if since.elapsed() >= Duration::from_secs(2) => return true,
            (false, Some(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

type Checked = (BTreeMap<String, usize>, usize, u64, Vec<Invariant>);

/// Reads the chain, the sagas, the incidents and the deployer, and judges the invariants.
async fn check(
    clients: &mut Clients,
    reported: &HashSet<String>,
    settled: bool,
) -> Result<Checked, String> {
    let records = read_chain(&mut clients.audit).await?;
    let verify = clients
        .audit
        .verify(pb::VerifyChainRequest {})
        .await
        .map_err(|s| format!("audit verify: {}", s.message()))?
        .into_inner();
    let sagas = list_sagas(&mut clients.orchestrator).await;
    let mut by_state = BTreeMap::new();
    for saga in &sagas {
        *by_state
            .entry(crate::demo::saga_state(saga.state))
            .or_insert(0) += 1;
    }
    let mut incidents: HashSet<String> = reported.clone();
    if let Ok(listed) = clients
        .detector
        .list_incidents(pb::ListIncidentsRequest {
            service: SERVICE.into(),
            status: 0,
            limit: 0,
        })
        .await
    {
        incidents.extend(listed.into_inner().incidents.into_iter().map(|i| i.id));
    }
    let status = crate::demo::service_status(&mut clients.deployer)
        .await
        .map_err(|e| e.to_string())?;

    let mut invariants = vec![
        no_record_lost(&records, &sagas),
        Invariant {
            name: "the chain verifies".into(),
            held: verify.ok,
            detail: if verify.ok {
                format!("{} records checked", verify.records_checked)
            } else {
                format!(
                    "broken at {}: {}",
                    verify.first_broken_sequence, verify.detail
                )
            },
        },
        one_lock_holder(&records),
        canaries_concluded(&records, &status),
    ];
    let mut open = Vec::new();
    for id in &incidents {
        let saga = clients
            .orchestrator
            .get_saga(pb::GetSagaRequest { id: id.clone() })
            .await
            .ok()
            .and_then(|r| r.into_inner().saga);
        match saga {
            Some(saga) if crate::demo::is_terminal(saga.state) => {}
            Some(saga) => open.push(format!(
                "{id}: saga {} {}",
                saga.id,
                crate::demo::saga_state(saga.state)
            )),
            None => open.push(format!("{id}: no saga")),
        }
    }
    open.sort();
    invariants.push(Invariant {
        name: "every incident has a final state".into(),
        held: open.is_empty() && settled,
        detail: if open.is_empty() && settled {
            format!("{} incidents, each with a finished saga", incidents.len())
        } else if !settled {
            format!(
                "sagas still running {} s after the faults stopped",
                SETTLE.as_secs()
            )
        } else {
            format!("{} without a final state: {}", open.len(), open.join("; "))
        },
    });
    Ok((
        by_state,
        incidents.len(),
        verify.records_checked,
        invariants,
    ))
}

async fn read_chain(
    audit: &mut AuditClient<TracedChannel>,
) -> Result<Vec<pb::AuditRecord>, String> {
    let mut records = Vec::new();
    let mut from = 0_u64;
    loop {
        let page = audit
            .query(pb::QueryRequest {
                from_sequence: from,
                limit: 500,
                ..Default::default()
            })
            .await
            .map_err(|s| format!("audit query: {}", s.message()))?
            .into_inner()
            .records;
        let Some(last) = page.last().map(|r| r.sequence) else {
            return Ok(records);
        };
        if last < from {
            return Ok(records);
        }
        from = last + 1;
        records.extend(page);
    }
}

fn field<'a>(record: &'a pb::AuditRecord, name: &str) -> Option<&'a Kind> {
    record
        .payload
        .as_ref()
        .and_then(|p| p.fields.get(name))
        .and_then(|v| v.kind.as_ref())
}

fn text_field(record: &pb::AuditRecord, name: &str) -> String {
    match field(record, name) {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

fn kind(record: &pb::AuditRecord) -> pb::RecordKind {
    pb::RecordKind::try_from(record.kind).unwrap_or(pb::RecordKind::Unspecified)
}

/// No gap in the sequence, and every saga's steps and final state are in the chain.
fn no_record_lost(records: &[pb::AuditRecord], sagas: &[pb::Saga]) -> Invariant {
    let mut problems = Vec::new();
    for pair in records.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 {
            problems.push(format!(
                "gap between {} and {}",
                pair[0].sequence, pair[1].sequence
            ));
        }
    }
    let mut started: HashSet<(&str, &str)> = HashSet::new();
    let mut finished: HashSet<(&str, &str)> = HashSet::new();
    let mut final_state: HashMap<&str, String> = HashMap::new();
    for record in records {
        match kind(record) {
            pb::RecordKind::StepStarted => {
                started.insert((&record.saga_id, &record.step));
            }
            pb::RecordKind::StepFinished => {
                finished.insert((&record.saga_id, &record.step));
            }
            pb::RecordKind::SagaState => {
                final_state.insert(&record.saga_id, text_field(record, "state"));
            }
            _ => {}
        }
    }
    for saga in sagas.iter().filter(|s| crate::demo::is_terminal(s.state)) {
        let state = crate::demo::saga_state(saga.state);
        match final_state.get(saga.id.as_str()) {
            Some(recorded) if recorded.eq_ignore_ascii_case(&state) => {}
            Some(recorded) => problems.push(format!(
                "saga {} is {state} but its last state record says {recorded}",
                saga.id
            )),
            None => problems.push(format!("saga {} has no state record", saga.id)),
        }
        for step in &saga.steps {
            let key = (saga.id.as_str(), step.name.as_str());
            if !started.contains(&key) {
                problems.push(format!(
                    "saga {} step {}: no start record",
                    saga.id, step.name
                ));
            }
            if step.status == pb::StepStatus::Succeeded as i32 && !finished.contains(&key) {
                problems.push(format!(
                    "saga {} step {}: no end record",
                    saga.id, step.name
                ));
            }
        }
    }
    Invariant {
        name: "no audit record lost".into(),
        held: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{} records without a gap; {} sagas' steps and final states all recorded",
                records.len(),
                sagas.len()
            )
        } else {
            problems.join("; ")
        },
    }
}

/// Walks the chain in order: a saga holds its service's lock from its `lock` step's end until
/// its `release` step's end or its final state; no other saga may take it meanwhile, and each
/// new holder's fencing token is larger than every earlier one.
fn one_lock_holder(records: &[pb::AuditRecord]) -> Invariant {
    let mut holder: HashMap<String, String> = HashMap::new();
    let mut highest: HashMap<String, u64> = HashMap::new();
    let mut problems = Vec::new();
    let mut takes = 0;
    for record in records {
        let service = text_field(record, "service");
        if service.is_empty() {
            continue;
        }
        match (kind(record), record.step.as_str()) {
            (pb::RecordKind::StepFinished, "lock") => {
                takes += 1;
                if let Some(other) = holder.get(&service)
                    && *other != record.saga_id
                {
                    problems.push(format!(
                        "saga {} took the {service} lock at record {} while saga {other} held it",
                        record.saga_id, record.sequence
                    ));
                }
                let token = record.fencing_token;
                if let Some(previous) = highest.get(&service)
                    && token <= *previous
                {
                    problems.push(format!(
                        "saga {} got token {token} after token {previous} was issued",
                        record.saga_id
                    ));
                }
                highest.insert(service.clone(), token);
                holder.insert(service, record.saga_id.clone());
            }
            (pb::RecordKind::StepFinished, "release") | (pb::RecordKind::SagaState, _) => {
                let ended = kind(record) == pb::RecordKind::StepFinished
                    || is_final_name(&text_field(record, "state"));
                if ended && holder.get(&service) == Some(&record.saga_id) {
                    holder.remove(&service);
                }
            }
            _ => {}
        }
    }
    Invariant {
        name: "one lock holder per service".into(),
        held: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{takes} leases taken, never two at once, tokens always growing")
        } else {
            problems.join("; ")
        },
    }
}

fn is_final_name(state: &str) -> bool {
    ["RESOLVED", "ROLLED_BACK", "ESCALATED", "ABORTED"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(state))
}

/// Every deploy step that started ended promoted or rolled back (or was compensated), and the
/// deployer has no canary left.
fn canaries_concluded(records: &[pb::AuditRecord], status: &pb::ServiceStatus) -> Invariant {
    let mut open: BTreeMap<&str, &str> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        match (kind(record), record.step.as_str()) {
            (pb::RecordKind::StepStarted, "deploy") => {
                open.insert(&record.saga_id, "started");
            }
            (pb::RecordKind::StepFinished, "deploy") => {
                let outcome = match field(record, "outputs") {
                    Some(Kind::StructValue(outputs)) => {
                        match outputs.fields.get("outcome").and_then(|v| v.kind.as_ref()) {
                            Some(Kind::StringValue(s)) => s.clone(),
                            _ => String::new(),
                        }
                    }
                    _ => String::new(),
                };
                if outcome == "promoted" || outcome == "rolled_back" {
                    open.remove(record.saga_id.as_str());
                    *outcomes.entry(outcome).or_insert(0) += 1;
                } else {
                    open.insert(&record.saga_id, "ended without promotion or rollback");
                }
            }
            (pb::RecordKind::StepFailed, "deploy") => {
                open.insert(&record.saga_id, "failed, not yet compensated");
            }
            (pb::RecordKind::Compensation, _) if open.contains_key(record.saga_id.as_str()) => {
                open.remove(record.saga_id.as_str());
                *outcomes.entry("compensated".into()).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    let leftover = status.canary.as_ref().filter(|c| c.weight > 0);
    let held = open.is_empty() && leftover.is_none();
    Invariant {
        name: "every canary promoted or rolled back".into(),
        held,
        detail: if held {
            if outcomes.is_empty() {
                "no canary ran".into()
            } else {
                outcomes
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        } else {
            let mut problems: Vec<String> = open
                .iter()
                .map(|(saga, why)| format!("saga {saga}: deploy {why}"))
                .collect();
            if let Some(canary) = leftover {
                problems.push(format!(
                    "canary {} still takes {}% of traffic",
                    canary.version, canary.weight
                ));
            }
            problems.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Struct, Value};

    fn record(
        sequence: u64,
        kind: pb::RecordKind,
        saga: &str,
        step: &str,
        token: u64,
    ) -> pb::AuditRecord {
        let mut fields = BTreeMap::new();
        fields.insert(
            "service".to_owned(),
            Value {
                kind: Some(Kind::StringValue(SERVICE.into())),
            },
        );
        if kind == pb::RecordKind::SagaState {
            fields.insert(
                "state".to_owned(),
                Value {
                    kind: Some(Kind::StringValue("RESOLVED".into())),
                },
            );
        }
        pb::AuditRecord {
            sequence,
            kind: kind.into(),
            saga_id: saga.into(),
            step: step.into(),
            fencing_token: token,
            payload: Some(Struct { fields }),
            ..Default::default()
        }
    }

    #[test]
    fn a_second_holder_before_the_release_breaks_the_lock_invariant() {
        use pb::RecordKind::{SagaState, StepFinished};
        let sequential = [
            record(1, StepFinished, "a", "lock", 1),
            record(2, StepFinished, "a", "release", 1),
            record(3, StepFinished, "b", "lock", 2),
            record(4, SagaState, "b", "", 2),
            record(5, StepFinished, "c", "lock", 3),
        ];
        assert!(one_lock_holder(&sequential).held);
        let overlapping = [
            record(1, StepFinished, "a", "lock", 1),
            record(2, StepFinished, "b", "lock", 2),
        ];
        let verdict = one_lock_holder(&overlapping);
        assert!(!verdict.held);
        assert!(
            verdict.detail.contains("while saga a held it"),
            "{}",
            verdict.detail
        );
        let stale = [
            record(1, StepFinished, "a", "lock", 5),
            record(2, StepFinished, "a", "release", 5),
            record(3, StepFinished, "b", "lock", 4),
        ];
        assert!(
            one_lock_holder(&stale)
                .detail
                .contains("token 4 after token 5")
        );
    }

    #[test]
    fn a_gap_or_a_missing_final_state_is_a_lost_record() {
        use pb::RecordKind::{SagaState, StepFinished, StepStarted};
        let saga = pb::Saga {
            id: "a".into(),
            state: pb::SagaState::Resolved.into(),
            steps: vec![pb::SagaStep {
                name: "lock".into(),
                status: pb::StepStatus::Succeeded.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let whole = [
            record(1, StepStarted, "a", "lock", 1),
            record(2, StepFinished, "a", "lock", 1),
            record(3, SagaState, "a", "", 1),
        ];
        assert!(no_record_lost(&whole, std::slice::from_ref(&saga)).held);
        let gap = [whole[0].clone(), whole[2].clone()];
        let verdict = no_record_lost(&gap, std::slice::from_ref(&saga));
        assert!(!verdict.held);
        assert!(
            verdict.detail.contains("gap between 1 and 3"),
            "{}",
            verdict.detail
        );
        assert!(
            verdict.detail.contains("no end record"),
            "{}",
            verdict.detail
        );
        let unfinished = [whole[0].clone(), whole[1].clone()];
        assert!(
            no_record_lost(&unfinished, &[saga])
                .detail
                .contains("no state record")
        );
    }

    #[test]
    fn a_deploy_without_an_ending_or_a_canary_left_behind_fails() {
        use pb::RecordKind::StepStarted;
        let started = [record(1, StepStarted, "a", "deploy", 1)];
        let status = pb::ServiceStatus::default();
        assert!(!canaries_concluded(&started, &status).held);
        let status = pb::ServiceStatus {
            canary: Some(pb::VersionStatus {
                version: "v9".into(),
                weight: 10,
                ..Default::default()
            }),
            ..Default::default()
        };
        let verdict = canaries_concluded(&[], &status);
        assert!(
            verdict.detail.contains("v9 still takes 10%"),
            "{}",
            verdict.detail
        );
    }
}
