//! Faults in the inputs: a flapping alert, and a failure whose root cause is downstream of the
//! services that show it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_proto::v1::rca_client::RcaClient;
use selfheal_telemetry::TracedChannel;
use tokio_util::sync::CancellationToken;

use super::Judged;
use crate::demo::{SERVICE, SagaHook, SagaStarted, is_terminal, saga_state};

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &["flapping_alert", "cascading_failures"];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let work = work.to_path_buf();
    match name {
        "flapping_alert" => Some(Box::pin(flapping_alert(work))),
        "cascading_failures" => Some(Box::pin(cascading_failures(work))),
        _ => None,
    }
}

fn connect(url: &str) -> Result<TracedChannel, String> {
    selfheal_telemetry::connect_lazy(url, Duration::from_secs(5))
        .map_err(|error| format!("cannot connect to {url}: {error}"))
}

async fn sagas_of(
    orchestrator: &mut OrchestratorClient<TracedChannel>,
    service: &str,
) -> Result<Vec<pb::Saga>, String> {
    orchestrator
        .list_sagas(pb::ListSagasRequest {
            service: service.to_owned(),
            ..Default::default()
        })
        .await
        .map(|response| response.into_inner().sagas)
        .map_err(|status| format!("ListSagas for {service}: {}", status.message()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// flapping_alert

/// Firing notifications of the flapping alert, each but the last followed by a resolved one.
const FIRINGS: u32 = 5;
/// `detector.webhook.resolve_hold` for the scenario: longer than the gap between two flaps.
const RESOLVE_HOLD: Duration = Duration::from_secs(3);
/// The gap between two notifications.
const FLAP_GAP: Duration = Duration::from_millis(250);
/// The alert Alertmanager sends; without a `signal` label its incident is its own fingerprint,
/// `payment-service/alert`, apart from the scraped error-rate incident.
const FLAPPING_ALERT: &str = "PaymentServiceFlapping";

/// What the flapping Alertmanager saw of the mesh while it was up.
#[derive(Debug, Default)]
struct FlapSeen {
    /// The detector's incidents of the alert's fingerprint, last read.
    incidents: Vec<pb::Incident>,
    /// The orchestrator's sagas of the service, last read.
    sagas: Vec<pb::Saga>,
    error: Option<String>,
}

/// An Alertmanager webhook body (version 4) with the flapping alert in `status`.
fn flapping_payload(status: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{FLAPPING_ALERT}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "selfheal-detector",
        "groupLabels": {"alertname": FLAPPING_ALERT},
        "commonLabels": {"alertname": FLAPPING_ALERT, "service": SERVICE},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": FLAPPING_ALERT, "service": SERVICE, "severity": "warning"},
            "annotations": {"summary": "payment-service answers are flapping"},
            "startsAt": "2026-11-30T05:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "5e1f4ea1"
        }]
    })
}

/// A loopback port that was free a moment ago, for the detector's webhook listener.
fn free_loopback_port() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|error| format!("no free loopback port for the webhook: {error}"))
}

/// Acts as Alertmanager for a flapping alert during the demo's saga, then reads what the
/// detector and the orchestrator made of it.
async fn flapping_alert(work: PathBuf) -> Result<(bool, String), String> {
    let webhook = free_loopback_port()?;
    let seen: Arc<Mutex<FlapSeen>> = Arc::default();
    let hook = {
        let seen = Arc::clone(&seen);
        SagaHook(Arc::new(move |started: SagaStarted| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                if let Err(error) = flap(&started, webhook, &seen).await {
                    lock(&seen).error = Some(error);
                }
            })
        }))
    };
    let overrides = vec![
        format!("detector.server.http_addr={webhook}"),
        format!(
            "detector.webhook.resolve_hold={}",
            humantime::format_duration(RESOLVE_HOLD)
        ),
    ];
    let s = super::demo(&work, overrides, Some(hook)).await?;
    let seen = std::mem::take(&mut *lock(&seen));
    if let Some(error) = seen.error {
        return Ok((
            false,
            format!("{}; the flapping alert failed: {error}", s.status),
        ));
    }
    let incident = seen.incidents.first();
    let flaps = incident
        .and_then(|i| i.labels.get(selfheal_detector::incident::FLAPS_LABEL))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    let resolved = incident.is_some_and(|i| i.status == pb::IncidentStatus::Resolved as i32);
    let joined = incident.is_some_and(|i| {
        seen.sagas
            .iter()
            .any(|saga| saga.incident_ids.contains(&i.id))
    });
    let one_saga = seen.sagas.len() == 1 && seen.sagas[0].id == s.saga_id;
    let ok = seen.incidents.len() == 1
        && flaps == FIRINGS - 1
        && resolved
        && joined
        && one_saga
        && s.healed();
    Ok((
        ok,
        format!(
            "{FIRINGS} firings → {} incident(s), {flaps} flaps counted, {} after the {} hold; \
             {} saga(s) for {SERVICE}{}: {}{}",
            seen.incidents.len(),
            if resolved { "resolved" } else { "NOT resolved" },
            humantime::format_duration(RESOLVE_HOLD),
            seen.sagas.len(),
            if joined {
                ", the alert joined it"
            } else {
                ", the alert joined none"
            },
            s.status,
            if s.healed() {
                String::new()
            } else {
                format!(" ({})", s.outcome)
            },
        ),
    ))
}

/// Posts the flapping alert, then follows its incident until the hold released it and the
/// service's sagas until none runs.
async fn flap(
    started: &SagaStarted,
    webhook: SocketAddr,
    seen: &Mutex<FlapSeen>,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| error.to_string())?;
    let url = format!("http://{webhook}{}", selfheal_detector::webhook::PATH);
    for n in 0..FIRINGS * 2 - 1 {
        let status = if n % 2 == 0 { "firing" } else { "resolved" };
        super::note("inject", format!("Alertmanager posts the alert {status}"));
        let response = http
            .post(&url)
            .json(&flapping_payload(status))
            .send()
            .await
            .map_err(|error| format!("posting to the webhook at {url}: {error}"))?;
        if !response.status().is_success() {
            let code = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("the webhook answered {code}: {body}"));
        }
        tokio::time::sleep(FLAP_GAP).await;
    }
    // The last notification resolves the alert for good.
    http.post(&url)
        .json(&flapping_payload("resolved"))
        .send()
        .await
        .map_err(|error| format!("posting to the webhook at {url}: {error}"))?;

    let mut detector = DetectorClient::new(connect(&started.endpoint("detector"))?);
    let deadline = Instant::now() + RESOLVE_HOLD + Duration::from_secs(30);
    loop {
        let incidents: Vec<pb::Incident> = detector
            .list_incidents(pb::ListIncidentsRequest {
                service: SERVICE.into(),
                ..Default::default()
            })
            .await
            .map_err(|status| format!("ListIncidents: {}", status.message()))?
            .into_inner()
            .incidents
            .into_iter()
            .filter(|i| i.signal == pb::SignalKind::Alert as i32)
            .collect();
        let settled = !incidents.is_empty()
            && incidents
                .iter()
                .all(|i| i.status == pb::IncidentStatus::Resolved as i32);
        lock(seen).incidents = incidents;
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The demo stops the mesh shortly after its saga ends: the last answer is the one judged.
    let mut orchestrator = OrchestratorClient::new(connect(&started.endpoint("orchestrator"))?);
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        let Ok(sagas) = sagas_of(&mut orchestrator, SERVICE).await else {
            break;
        };
        let done = sagas.iter().all(|saga| is_terminal(saga.state));
        lock(seen).sagas = sagas;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cascading_failures

/// The chain, caller first: each link calls the next one's `POST /work`.
const CHAIN: [&str; 3] = ["checkout", "payment", "customer"];
/// The link whose release carries the bug.
const ROOT: &str = "customer";
/// The manifest the deployer reads from each link's repository.
const MANIFEST: &str = "selfheal.toml";

/// One link of the chain as deployed.
#[derive(Debug)]
struct Link {
    service: &'static str,
    repo: PathBuf,
    /// The commit the link runs before the fault.
    commit: String,
    /// The deployer's version of that release.
    version: String,
}

/// The checkout → payment → customer chain of `examples/chain-service`, each link deployed by
/// the mesh's deployer; the customer link gets the buggy release while load runs on checkout.
async fn cascading_failures(work: PathBuf) -> Result<(bool, String), String> {
    let mesh = super::fresh_mesh(
        &work,
        vec![
            // The fault is errors; p99 latency of three links on a loaded machine only adds
            // noise incidents (and sagas) to the callers.
            "detector.detection.latency_p99.enabled=false".to_owned(),
        ],
    )
    .await?;
    let stop = CancellationToken::new();
    let result = cascade(&work, &mesh, &stop).await;
    stop.cancel();
    let _ = mesh.stop().await;
    result
}

async fn cascade(
    work: &Path,
    mesh: &crate::mesh::RunningMesh,
    stop: &CancellationToken,
) -> Result<(bool, String), String> {
    let url = |service: &str| mesh.grpc_url(service);
    let mut deployer = DeployerClient::new(connect(&url("deployer"))?);
    let detector = DetectorClient::new(connect(&url("detector"))?);
    let mut orchestrator = OrchestratorClient::new(connect(&url("orchestrator"))?);
    let mut rca = RcaClient::new(connect(&url("rca"))?);

    // Every link is its own repository of the same code; each caller's release names its
    // downstream in its manifest, the way a platform's deployment config would.
    let example = selfheal_scenario::examples_dir().join("chain-service");
    let scenarios = {
        let work = work.to_path_buf();
        tokio::task::spawn_blocking(move || {
            CHAIN
                .iter()
                .map(|service| {
                    let repo = work.join(format!("repo-{service}"));
                    if repo.exists() {
                        std::fs::remove_dir_all(&repo)
                            .map_err(|e| format!("{}: {e}", repo.display()))?;
                    }
                    selfheal_scenario::build(&example, &repo).map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let root_bad_commit = scenarios
        .last()
        .map(|s| s.bad_commit.clone())
        .ok_or("the chain has no links")?;

    // Leaf first: a caller needs its downstream's public address.
    let mut links = Vec::new();
    let mut downstream: Option<String> = None;
    for (&service, scenario) in CHAIN.iter().zip(&scenarios).rev() {
        let repo = scenario.repo.clone();
        let commit = {
            let (repo, good, next) = (repo.clone(), scenario.good_commit.clone(), downstream);
            tokio::task::spawn_blocking(move || configure_link(&repo, &good, service, next))
                .await
                .map_err(|e| e.to_string())??
        };
        let version = deploy(&mut deployer, service, &repo, &commit).await?;
        let status = status_of(&mut deployer, service).await?;
        downstream = Some(format!("http://{}", status.public_address));
        links.push(Link {
            service,
            repo,
            commit,
            version,
        });
    }
    links.reverse();
    let checkout_public = downstream.unwrap_or_default();

    rca.record_topology(pb::RecordTopologyRequest {
        edges: CHAIN
            .windows(2)
            .map(|pair| pb::CallEdge {
                caller: pair[0].into(),
                callee: pair[1].into(),
            })
            .collect(),
    })
    .await
    .map_err(|status| format!("RecordTopology: {}", status.message()))?;
    let discovery = tokio::spawn(crate::demo::follow_stable_of(
        deployer.clone(),
        detector.clone(),
        &CHAIN,
        stop.clone(),
    ));

    let probe = crate::load::LoadProbe::new();
    let load = {
        let (probe, stop) = (probe.clone(), stop.clone());
        let plan = crate::load::LoadPlan::steady(checkout_public, 100, Duration::from_secs(600));
        tokio::spawn(async move {
            crate::load::run_probed_on(&plan, "/work", stop, &probe, |_| {}).await
        })
    };
    // Healthy traffic first, so every link has a clean window before the fault.
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe.counts().await.finished < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The fault: the leaf's buggy release, shipped directly as a release pipeline would.
    let root_link = links
        .iter()
        .find(|l| l.service == ROOT)
        .ok_or("the chain has no root link")?;
    let bad = tokio::task::spawn_blocking({
        let (repo, bad) = (root_link.repo.clone(), root_bad_commit);
        move || rebase_link_onto(&repo, &bad)
    })
    .await
    .map_err(|e| e.to_string())??;
    let bad_version = deploy(&mut deployer, ROOT, &root_link.repo, &bad).await?;
    super::note(
        "inject",
        format!(
            "buggy release {bad_version} of {ROOT}, at the end of the chain {}",
            CHAIN.join(" → ")
        ),
    );
    let at_fault = probe.counts().await;

    // The root's saga, and any saga an upstream link opened, to their ends.
    let deadline = Instant::now() + Duration::from_secs(300);
    let sagas = loop {
        let mut all = Vec::new();
        for service in CHAIN {
            all.extend(sagas_of(&mut orchestrator, service).await?);
        }
        // A root saga waiting for a human is as far as automation goes: judge it there.
        let root_done = all.iter().any(|s| {
            s.service == ROOT
                && (is_terminal(s.state) || s.state == pb::SagaState::AwaitingApproval as i32)
        });
        let all_done = all
            .iter()
            .all(|s| is_terminal(s.state) || s.state == pb::SagaState::AwaitingApproval as i32);
        if root_done && all_done {
            break all;
        }
        if Instant::now() > deadline {
            return Ok((
                false,
                format!(
                    "sagas did not end within 300 s: {}",
                    describe_sagas(&all.iter().collect::<Vec<_>>())
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // ListSagas gives summaries; the judgement reads each saga in full.
    let mut full = Vec::with_capacity(sagas.len());
    for saga in sagas {
        let answer = orchestrator
            .get_saga(pb::GetSagaRequest {
                id: saga.id.clone(),
            })
            .await
            .map_err(|status| format!("GetSaga {}: {}", saga.id, status.message()))?;
        full.push(answer.into_inner().saga.unwrap_or(saga));
    }
    let sagas = full;
    let during = probe.counts().await;
    let after_start = probe.counts().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_end = probe.counts().await;
    stop.cancel();
    let _ = load.await;
    let _ = discovery.await;

    let mut detected = Vec::new();
    for service in CHAIN {
        let incidents = detector
            .clone()
            .list_incidents(pb::ListIncidentsRequest {
                service: service.into(),
                ..Default::default()
            })
            .await
            .map_err(|status| format!("ListIncidents for {service}: {}", status.message()))?
            .into_inner()
            .incidents;
        let mut signals: Vec<(String, usize)> = Vec::new();
        for incident in &incidents {
            let signal = pb::SignalKind::try_from(incident.signal).map_or_else(
                |_| "unknown".to_owned(),
                |kind| {
                    let name = kind.as_str_name().to_ascii_lowercase();
                    name.trim_start_matches("signal_kind_").to_owned()
                },
            );
            match signals.iter_mut().find(|(name, _)| *name == signal) {
                Some((_, n)) => *n += 1,
                None => signals.push((signal, 1)),
            }
        }
        detected.push(format!(
            "{service} {} ({})",
            incidents.len(),
            signals
                .iter()
                .map(|(name, n)| format!("{n} {name}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let all_detected = !detected.iter().any(|d| d.contains(" 0 ("));
    let error_rate_during = during.error_rate_since(&at_fault).unwrap_or_default();
    let error_rate_after = after_end.error_rate_since(&after_start).unwrap_or(1.0);
    let mut stable = Vec::new();
    for link in &links {
        stable.push(
            status_of(&mut deployer, link.service)
                .await?
                .stable
                .unwrap_or_default(),
        );
    }
    // The root runs a release built from the buggy commit with the saga's patch: a new version
    // of that commit, shipped by the root's own saga.
    let root_stable = stable.last().cloned().unwrap_or_default();
    let root_saga = sagas.iter().find(|s| s.service == ROOT);
    let root_resolved = root_saga.is_some_and(|s| s.state == pb::SagaState::Resolved as i32);
    let root_deployed = root_saga.is_some_and(deployed);
    let root_fixed = root_stable.commit == bad
        && !root_stable.version.is_empty()
        && root_stable.version != bad_version
        && root_deployed;
    let upstream_unchanged = links
        .iter()
        .zip(&stable)
        .filter(|(link, _)| link.service != ROOT)
        .all(|(link, now)| link.commit == now.commit && link.version == now.version);
    let upstream: Vec<&pb::Saga> = sagas.iter().filter(|s| s.service != ROOT).collect();
    let upstream_patched = upstream.iter().filter(|s| deployed(s)).count();
    let upstream_naming_root = upstream.iter().filter(|s| names_root(s)).count();
    let upstream_settled = upstream
        .iter()
        .all(|s| s.state == pb::SagaState::Escalated as i32);
    let ok = all_detected
        && root_fixed
        && root_resolved
        && upstream_unchanged
        && upstream_patched == 0
        && upstream_settled
        && upstream_naming_root == upstream.len()
        && error_rate_during > 0.0
        && error_rate_after < 0.01;
    Ok((
        ok,
        format!(
            "incidents {}; checkout errors {:.1}% → {:.2}%; {ROOT} saga {}, {ROOT} runs {}; \
             upstream: {}{}, {upstream_naming_root} naming {ROOT}, {upstream_patched} patched; \
             checkout and payment releases {}",
            detected.join(", "),
            error_rate_during * 100.0,
            error_rate_after * 100.0,
            root_saga.map_or_else(
                || "missing".to_owned(),
                |s| {
                    let state = saga_state(s.state);
                    match s.decisions.iter().rev().find(|d| {
                        d.kind == pb::DecisionKind::SafetyGate as i32
                            && s.state != pb::SagaState::Resolved as i32
                    }) {
                        Some(gate) => format!("{state} (gate: {})", gate.reasoning),
                        None => state,
                    }
                }
            ),
            if root_fixed {
                format!(
                    "the patched release {} of {}",
                    root_stable.version,
                    short(&bad)
                )
            } else {
                format!(
                    "{} of {} (NOT a fix)",
                    root_stable.version,
                    short(&root_stable.commit)
                )
            },
            describe_sagas(&upstream),
            upstream
                .iter()
                .flat_map(|saga| &saga.decisions)
                .find(|d| d.kind == pb::DecisionKind::FixPlan as i32)
                .map_or_else(String::new, |plan| format!(" ({})", plan.outcome)),
            if upstream_unchanged {
                "unchanged"
            } else {
                "CHANGED"
            },
        ),
    ))
}

/// Whether a saga patched or shipped anything.
fn deployed(saga: &pb::Saga) -> bool {
    saga.steps
        .iter()
        .any(|step| step.name == "deploy" || step.name == "patch")
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}

/// `checkout 2 escalated, payment 1 escalated`: the sagas counted by service and end state.
fn describe_sagas(sagas: &[&pb::Saga]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for saga in sagas {
        let key = format!("{} {}", saga.service, saga_state(saga.state));
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    if counts.is_empty() {
        return "no sagas".to_owned();
    }
    counts
        .iter()
        .map(|(key, n)| format!("{n} {key}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an upstream saga's analysis or plan names the root link as the cause.
fn names_root(saga: &pb::Saga) -> bool {
    saga.decisions.iter().any(|d| {
        [&d.reasoning, &d.outcome, &d.subject]
            .iter()
            .any(|t| t.contains(ROOT))
    }) || saga.outcome.contains(ROOT)
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Release Pipeline"])
        .args(["-c", "user.email=releases@shop.example"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|error| format!("git: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {} in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Commits, on top of `base`, the manifest change that makes this repository's release run as
/// `service` calling `downstream`; returns the new commit.
fn configure_link(
    repo: &Path,
    base: &str,
    service: &str,
    downstream: Option<String>,
) -> Result<String, String> {
    git(repo, &["checkout", "-q", "-B", "release", base])?;
    let path = repo.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut argv = vec!["env".to_owned(), format!("SERVICE_NAME={service}")];
    if let Some(url) = &downstream {
        argv.push(format!("DOWNSTREAM_URL={url}"));
    }
    argv.push("{artifact}".to_owned());
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    let original = "command = [\"{artifact}\"]";
    if !text.contains(original) {
        return Err(format!(
            "{} has no `{original}` run command to configure",
            path.display()
        ));
    }
    let text = text.replacen(original, &format!("command = [{}]", quoted.join(", ")), 1);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let message = match &downstream {
        Some(url) => format!("run as the {service} link, calling {url}"),
        None => format!("run as the {service} link"),
    };
    git(repo, &["commit", "-q", "-am", &message])?;
    git(repo, &["rev-parse", "HEAD"])
}

/// Carries the link's configuration onto `commit` (the buggy release): the release is the bug
/// plus the link's own manifest; returns the new commit.
fn rebase_link_onto(repo: &Path, commit: &str) -> Result<String, String> {
    git(repo, &["checkout", "-q", "-B", "buggy-release", commit])?;
    git(repo, &["cherry-pick", "--allow-empty", "release"])?;
    git(repo, &["rev-parse", "HEAD"])
}

async fn status_of(
    deployer: &mut DeployerClient<TracedChannel>,
    service: &str,
) -> Result<pb::ServiceStatus, String> {
    crate::demo::service_status_of(deployer, service)
        .await
        .map_err(|error| error.to_string())
}

/// Releases `commit` of `repo` as `service`'s new stable, the way a release pipeline would;
/// returns the deployer's version.
async fn deploy(
    deployer: &mut DeployerClient<TracedChannel>,
    service: &str,
    repo: &Path,
    commit: &str,
) -> Result<String, String> {
    let key = format!("inject-cascade-{service}-{commit}");
    crate::demo::deploy_service_direct(deployer, service, repo, commit, &key, 0)
        .await
        .map_err(|error| format!("{service}: {error}"))
}
