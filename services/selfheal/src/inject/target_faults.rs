//! Faults in the healed target: a release that leaks memory, a canary that crashes, and a fix that
//! passes its canary but not verification once it serves all traffic.
//!
//! - `memory_leak`: the `leak` variant of payment-service keeps 64 KiB per payment and answers
//!   every request 200. Its commit is shipped as a canary over the good commit under load; only the
//!   deployer's memory analysis (resident memory sampled from `/proc` in every window) can see it.
//! - `canary_failure`: the full demo; once the canary of the fix runs, its process is killed with
//!   SIGKILL, as a crash in production would. The deployer must return all traffic to stable and
//!   the saga end rolled back or escalated, with nothing of the fix left serving.
//! - `verification_failure`: the full demo on the `instalments` variant, whose history hides a
//!   second fault under the demo's bug: payments above 5,000 EUR panic, and the demo's load never
//!   pays that much, so the fix passes its canary. Once it is promoted a new client starts paying
//!   large invoices; the errors persist at 100%, verification fails and the saga rolls back.
//! - `deployer_crash_during_canary`: the deployer runs as its own process (`selfheal serve
//!   deployer`, with rca and the orchestrator beside it so they talk to it; the rest of the mesh
//!   in this process). Mid-canary it is killed with SIGKILL and started again on its data
//!   directory: it must stop the versions the crash orphaned, put the stable back behind the same
//!   public address, and answer the saga's retried Deploy as rolled back, so the saga records the
//!   deployer's rollback as the deploy's compensation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_telemetry::TracedChannel;
use tokio_util::sync::CancellationToken;

use super::Judged;
use crate::demo::{DemoOptions, DemoSummary, SagaHook, SagaStarted, TimelineEntry};

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &[
    "memory_leak",
    "canary_failure",
    "verification_failure",
    "deployer_crash_during_canary",
];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let work = work.to_path_buf();
    match name {
        "memory_leak" => Some(Box::pin(memory_leak(work))),
        "canary_failure" => Some(Box::pin(canary_failure(work))),
        "verification_failure" => Some(Box::pin(verification_failure(work))),
        "deployer_crash_during_canary" => Some(Box::pin(deployer_crash(work))),
        _ => None,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn deployer_client(url: &str) -> Result<DeployerClient<TracedChannel>, String> {
    selfheal_telemetry::connect_lazy(url, Duration::from_secs(5))
        .map(DeployerClient::new)
        .map_err(|e| e.to_string())
}

// ---- memory_leak -------------------------------------------------------------------------------

/// A release that keeps memory on every payment, shipped as a canary over the good commit.
async fn memory_leak(work: PathBuf) -> Result<(bool, String), String> {
    let mesh = super::fresh_mesh(&work, Vec::new()).await?;
    let url = mesh.grpc_url("deployer");
    let result = leak_canary(&work, &url).await;
    let _ = mesh.stop().await;
    result
}

async fn leak_canary(work: &Path, deployer_url: &str) -> Result<(bool, String), String> {
    // The deployer's default memory limits judge the canary; the plan only sets the windows.
    let canary = super::canary_variant(work, deployer_url, "leak", "inject-memory-leak").await?;
    let last = canary
        .events
        .last()
        .ok_or("the deployer sent no rollout events")?;
    let rolled_back = last.kind == pb::RolloutEventKind::RolledBack as i32;
    let memory_reason = last
        .decision
        .as_ref()
        .is_some_and(|d| d.reasoning.contains("resident memory"));
    let step = last_analysis_weight(&canary.events);
    let ok = rolled_back && memory_reason && canary.stable_commit == canary.scenario.good_commit;
    Ok((
        ok,
        format!(
            "canary {} at the {step}% step ({}); stable is the {} commit; {} of {} payments failed",
            if rolled_back {
                "rolled back"
            } else {
                "NOT rolled back"
            },
            last.message,
            if canary.stable_commit == canary.scenario.good_commit {
                "good"
            } else {
                "leaking"
            },
            canary.load.server_errors + canary.load.failed,
            canary.load.sent
        ),
    ))
}

fn last_analysis_weight(events: &[pb::RolloutEvent]) -> u32 {
    events
        .iter()
        .rfind(|e| e.kind == pb::RolloutEventKind::Analysis as i32)
        .map_or(0, |e| e.canary_weight)
}

// ---- the demo with a hook ----------------------------------------------------------------------

/// The demo of another example (`super::demo` heals the payment-service example) with `hook`,
/// its timeline discarded.
async fn demo_on(work: &Path, example: PathBuf, hook: SagaHook) -> Result<DemoSummary, String> {
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel::<TimelineEntry>();
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let options = DemoOptions {
        example,
        work_dir: Some(work.to_path_buf()),
        timeout: Duration::from_secs(300),
        on_saga: Some(hook),
        ..Default::default()
    };
    let result = crate::demo::run(options, sink).await;
    let _ = drain.await;
    result.map_err(|error| error.to_string())
}

fn step<'a>(summary: &'a DemoSummary, name: &str) -> Option<&'a crate::demo::StepTiming> {
    summary.steps.iter().rfind(|s| s.name == name)
}

fn escalation_note(summary: &DemoSummary) -> &'static str {
    if summary.decisions.iter().any(|d| d.kind == "escalation") {
        "; a person was sent the escalation report"
    } else {
        ""
    }
}

/// Polls the deployer's status of the demo's service every `every` until `done` holds, `stop`
/// fires or `limit` passes.
async fn wait_for_status(
    deployer: &mut DeployerClient<TracedChannel>,
    stop: &CancellationToken,
    every: Duration,
    limit: Duration,
    done: impl Fn(&pb::ServiceStatus) -> bool,
) -> Option<pb::ServiceStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !stop.is_cancelled() {
        if let Ok(status) = crate::demo::service_status(deployer).await
            && done(&status)
        {
            return Some(status);
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(every) => {}
        }
    }
    None
}

// ---- canary_failure ----------------------------------------------------------------------------

/// What the canary-killing hook did and saw.
#[derive(Clone, Debug, Default)]
struct CanaryKill {
    /// (version, pid, weight) of the canary that was killed.
    killed: Option<(String, u32, u32)>,
    kill_error: Option<String>,
    /// The stable version when the canary appeared.
    stable_before: String,
    /// The status once the canary was gone.
    after: Option<pb::ServiceStatus>,
}

/// The fix passes the gate, then its canary process crashes in production.
async fn canary_failure(work: PathBuf) -> Result<(bool, String), String> {
    let seen: Arc<Mutex<CanaryKill>> = Arc::default();
    let stop = CancellationToken::new();
    let hook = {
        let (seen, stop) = (Arc::clone(&seen), stop.clone());
        SagaHook(Arc::new(move |started: SagaStarted| {
            let (seen, stop) = (Arc::clone(&seen), stop.clone());
            Box::pin(async move {
                if let Err(error) = kill_the_canary(&started, &seen, &stop).await {
                    lock(&seen).kill_error = Some(error);
                }
            })
        }))
    };
    let result = super::demo(&work, Vec::new(), Some(hook)).await;
    stop.cancel();
    let s = result?;
    let seen = lock(&seen).clone();
    let Some((version, pid, weight)) = seen.killed else {
        return Ok((
            false,
            format!(
                "{}; no canary was killed ({})",
                s.status,
                seen.kill_error
                    .unwrap_or_else(|| "none appeared while the saga ran".into())
            ),
        ));
    };
    let deploy = step(&s, "deploy")
        .map(|d| d.summary.clone())
        .unwrap_or_default();
    let rolled_back = deploy.contains("rolled_back");
    let ended = matches!(s.status.as_str(), "rolled_back" | "escalated");
    let stable_restored = s.final_stable_commit == s.bad_commit;
    // The router's routes once the canary was gone: no canary, all weight on the old stable.
    let routed_to_stable = seen.after.as_ref().is_some_and(|status| {
        status.canary.is_none()
            && status
                .stable
                .as_ref()
                .is_some_and(|stable| stable.version == seen.stable_before && stable.weight == 100)
    });
    let ok = rolled_back && ended && stable_restored && routed_to_stable;
    Ok((
        ok,
        format!(
            "killed canary {version} (pid {pid}) at {weight}%; deploy: {deploy}; {}; saga {}; stable is the {} commit{}",
            if routed_to_stable {
                format!("all traffic back on {}", seen.stable_before)
            } else {
                format!(
                    "traffic NOT back on stable {} ({})",
                    seen.stable_before,
                    seen.after.as_ref().map_or_else(
                        || "no status seen after the rollback".to_owned(),
                        |s| format!(
                            "stable {:?}, canary {:?}",
                            s.stable.as_ref().map(|v| (&v.version, v.weight)),
                            s.canary.as_ref().map(|v| (&v.version, v.weight))
                        )
                    )
                )
            },
            s.status,
            if stable_restored {
                "previous (buggy)"
            } else {
                "FIX's"
            },
            escalation_note(&s)
        ),
    ))
}

async fn kill_the_canary(
    started: &SagaStarted,
    seen: &Mutex<CanaryKill>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut deployer = deployer_client(&started.endpoint("deployer")).await?;
    let limit = Duration::from_secs(240);
    let Some(status) = wait_for_status(
        &mut deployer,
        stop,
        Duration::from_millis(20),
        limit,
        |status| status.canary.as_ref().is_some_and(|c| c.pid != 0),
    )
    .await
    else {
        return Ok(());
    };
    let canary = status.canary.unwrap_or_default();
    lock(seen).stable_before = status.stable.map(|s| s.version).unwrap_or_default();
    let pid = i32::try_from(canary.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("the canary's pid {} is not a process id", canary.pid))?;
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .map_err(|e| format!("kill -KILL {}: {e}", canary.pid))?;
    super::note(
        "inject",
        format!(
            "SIGKILL of the canary {} (pid {}) at {}% of traffic",
            canary.version, canary.pid, canary.weight
        ),
    );
    lock(seen).killed = Some((canary.version.clone(), canary.pid, canary.weight));
    // The deployer rolls back within milliseconds, and the saga may end (and the demo stop the
    // mesh) a few milliseconds later: read the routes without pausing between calls.
    let after = wait_for_status(
        &mut deployer,
        stop,
        Duration::from_millis(1),
        limit,
        |status| status.canary.is_none(),
    )
    .await;
    lock(seen).after = after;
    Ok(())
}

// ---- verification_failure ----------------------------------------------------------------------

/// Payments a client paying large invoices sent once the fix was promoted.
#[derive(Clone, Debug, Default)]
struct Invoices {
    /// The version the fix was promoted as.
    promoted: Option<String>,
    answered: u64,
    server_errors: u64,
    error: Option<String>,
}

/// The amounts of the large-invoice client, in cents: 6,000 to 9,000 EUR, above the last
/// instalment plan (5,000 EUR) and within the single-payment limit (10,000 EUR).
const INVOICE_CENTS: std::ops::Range<u64> = 600_000..900_000;
/// Invoices per second.
const INVOICE_RATE: u32 = 25;

/// The fix passes its canary; at 100% a new client meets a fault the canary never saw.
async fn verification_failure(work: PathBuf) -> Result<(bool, String), String> {
    let example = variant_example(&work, "instalments")?;
    let seen: Arc<Mutex<Invoices>> = Arc::default();
    let stop = CancellationToken::new();
    let hook = {
        let (seen, stop) = (Arc::clone(&seen), stop.clone());
        SagaHook(Arc::new(move |started: SagaStarted| {
            let (seen, stop) = (Arc::clone(&seen), stop.clone());
            Box::pin(async move {
                if let Err(error) = invoices_after_promotion(&started, &seen, &stop).await {
                    lock(&seen).error = Some(error);
                }
            })
        }))
    };
    let result = demo_on(&work, example, hook).await;
    stop.cancel();
    let s = result?;
    let seen = lock(&seen).clone();
    let deploy = step(&s, "deploy")
        .map(|d| d.summary.clone())
        .unwrap_or_default();
    let promoted = deploy.contains("promoted") && seen.promoted.is_some();
    let verify = step(&s, "verify");
    let verify_failed = verify.is_some_and(|v| v.summary.starts_with("not healthy"));
    let ended = matches!(s.status.as_str(), "rolled_back" | "escalated");
    let stable_restored = s.final_stable_commit == s.bad_commit;
    let ok = promoted && seen.server_errors > 0 && verify_failed && ended && stable_restored;
    Ok((
        ok,
        format!(
            "fix {}; large invoices after promotion: {} of {} answered 5xx{}; verify: {}; saga {}; stable is the {} commit{}",
            seen.promoted
                .as_ref()
                .map_or_else(|| "NOT promoted".to_owned(), |v| format!("promoted as {v}")),
            seen.server_errors,
            seen.answered,
            seen.error
                .as_ref()
                .map_or_else(String::new, |e| format!(" ({e})")),
            verify.map_or("never ran", |v| v.summary.as_str()),
            s.status,
            if stable_restored {
                "previous (buggy)"
            } else {
                "fix's"
            },
            escalation_note(&s)
        ),
    ))
}

/// A copy of the payment-service example whose scenario file is its `variant`, for the demo
/// (which builds an example's `scenario.toml`).
fn variant_example(work: &Path, variant: &str) -> Result<PathBuf, String> {
    let source = selfheal_scenario::examples_dir().join(crate::demo::SERVICE);
    let copy = work.join(format!("example-{variant}"));
    if copy.exists() {
        std::fs::remove_dir_all(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    }
    copy_tree(&source, &copy).map_err(|e| format!("copying {}: {e}", source.display()))?;
    let scenario = copy.join(selfheal_scenario::SCENARIO_DIR);
    std::fs::copy(
        scenario.join(format!("{variant}.toml")),
        scenario.join(selfheal_scenario::SCENARIO_FILE),
    )
    .map_err(|e| format!("{variant}.toml: {e}"))?;
    Ok(copy)
}

/// Copies `from` to `to`, leaving out build output.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "target" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Waits for the fix's promotion, then pays large invoices through the router until `stop`.
async fn invoices_after_promotion(
    started: &SagaStarted,
    seen: &Arc<Mutex<Invoices>>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut deployer = deployer_client(&started.endpoint("deployer")).await?;
    let before = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?
        .stable
        .map(|s| s.version)
        .unwrap_or_default();
    let Some(status) = wait_for_status(
        &mut deployer,
        stop,
        Duration::from_millis(20),
        Duration::from_secs(240),
        |status| {
            status.canary.is_none()
                && status
                    .stable
                    .as_ref()
                    .is_some_and(|stable| stable.version != before)
        },
    )
    .await
    else {
        return Ok(());
    };
    lock(seen).promoted = status.stable.map(|s| s.version);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}/pay", status.public_address);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / INVOICE_RATE);
    let mut in_flight = tokio::task::JoinSet::new();
    // Bounded: the demo ends within minutes, and so does this client.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        let body = serde_json::json!({
            "customer_id": format!("cust-{:04}", fastrand::u32(0..1000)),
            "amount_cents": fastrand::u64(INVOICE_CENTS),
        });
        let request = client.post(&url).json(&body);
        let seen = Arc::clone(seen);
        in_flight.spawn(async move {
            // Only answers count: a connection refused as the demo stops says nothing.
            if let Ok(response) = request.send().await {
                let mut seen = lock(&seen);
                seen.answered += 1;
                if response.status().is_server_error() {
                    seen.server_errors += 1;
                }
            }
        });
    }
    in_flight.abort_all();
    Ok(())
}

// ---- deployer_crash_during_canary --------------------------------------------------------------

fn free_address() -> Result<String, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `pid` is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The deployer, rca and orchestrator processes of the scenario.
#[derive(Default)]
struct Processes {
    deployer: Option<super::Served>,
    others: Vec<super::Served>,
}

/// The deployer crashes while the saga's canary runs, and starts again.
async fn deployer_crash(work: PathBuf) -> Result<(bool, String), String> {
    for dir in ["repo", "deployer-process"] {
        let dir = work.join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let mesh = super::fresh_mesh(&work, Vec::new()).await?;
    let stop = CancellationToken::new();
    let mut processes = Processes::default();
    let result = crash_the_deployer(&work, &mesh, &stop, &mut processes).await;
    stop.cancel();
    while let Some(process) = processes.others.pop() {
        process.stop().await;
    }
    // Last, and gently: the deployer stops the versions it runs.
    if let Some(deployer) = processes.deployer.take() {
        deployer.stop().await;
    }
    let _ = mesh.stop().await;
    result
}

#[allow(clippy::too_many_lines)]
async fn crash_the_deployer(
    work: &Path,
    mesh: &crate::mesh::RunningMesh,
    stop: &CancellationToken,
    processes: &mut Processes,
) -> Result<(bool, String), String> {
    let mesh_url = |service: &str| mesh.grpc_url(service);
    let demo = |prefix: &str| -> Vec<String> {
        crate::demo::demo_settings(work)
            .into_iter()
            .filter(|s| s.starts_with(prefix))
            .collect()
    };
    let (deployer_addr, rca_addr, orchestrator_addr) =
        (free_address()?, free_address()?, free_address()?);
    let mut deployer_settings = demo("deployer.");
    deployer_settings.extend([
        format!("deployer.server.grpc_addr={deployer_addr}"),
        "deployer.server.http_addr=127.0.0.1:0".to_owned(),
        format!(
            "deployer.data_dir={}",
            work.join("deployer-process").display()
        ),
    ]);
    let mut rca_settings = demo("rca.");
    rca_settings.extend([
        format!("rca.server.grpc_addr={rca_addr}"),
        "rca.server.http_addr=127.0.0.1:0".to_owned(),
        format!("rca.sources.deployer=http://{deployer_addr}"),
        format!("rca.sources.detector={}", mesh_url("detector")),
    ]);
    let mut orchestrator_settings = demo("orchestrator.");
    orchestrator_settings.extend([
        format!("orchestrator.server.grpc_addr={orchestrator_addr}"),
        "orchestrator.server.http_addr=127.0.0.1:0".to_owned(),
        format!("orchestrator.peers.detector={}", mesh_url("detector")),
        format!("orchestrator.peers.rca=http://{rca_addr}"),
        format!("orchestrator.peers.patcher={}", mesh_url("patcher")),
        format!("orchestrator.peers.safety_gate={}", mesh_url("safety-gate")),
        format!("orchestrator.peers.deployer=http://{deployer_addr}"),
        format!("orchestrator.peers.audit={}", mesh_url("audit")),
    ]);
    processes.deployer = Some(super::Served::spawn(
        "deployer",
        &deployer_settings,
        &work.join("deployer-1.log"),
    )?);
    processes.others.push(super::Served::spawn(
        "rca",
        &rca_settings,
        &work.join("rca.log"),
    )?);
    processes.others.push(super::Served::spawn(
        "orchestrator",
        &orchestrator_settings,
        &work.join("orchestrator.log"),
    )?);
    let deployer_url = format!("http://{deployer_addr}");
    let mut deployer = deployer_client(&deployer_url).await?;
    let mut orchestrator = selfheal_proto::v1::orchestrator_client::OrchestratorClient::new(
        selfheal_telemetry::connect_lazy(
            &format!("http://{orchestrator_addr}"),
            Duration::from_secs(5),
        )
        .map_err(|e| e.to_string())?,
    );

    // The failing service: the good commit, then the buggy one, under steady load.
    let repo = work.join("repo");
    let example = selfheal_scenario::examples_dir().join(crate::demo::SERVICE);
    let scenario = tokio::task::spawn_blocking(move || selfheal_scenario::build(&example, &repo))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(30);
    while deployer.status(pb::StatusRequest::default()).await.is_err() {
        if Instant::now() > until {
            return Err("the deployer process never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for commit in [&scenario.good_commit, &scenario.bad_commit] {
        crate::demo::deploy_direct(&mut deployer, &scenario.repo, commit)
            .await
            .map_err(|e| e.to_string())?;
    }
    let before = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?;
    let probe = crate::load::LoadProbe::new();
    let load = {
        let (stop, probe) = (stop.clone(), probe.clone());
        let plan = crate::load::LoadPlan::steady(
            format!("http://{}", before.public_address),
            100,
            Duration::from_secs(600),
        );
        tokio::spawn(async move { crate::load::run_probed(&plan, stop, &probe, |_| {}).await })
    };

    // Let the failure show for a few seconds, as the detector would, then report it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let incident = super::demo_incident("inject-deployer-crash");
    let saga_id = super::report_incident(&mut orchestrator, &incident).await?;
    super::note("saga", format!("incident reported; saga {saga_id} started"));

    // SIGKILL once the fix's canary takes traffic.
    let Some(during) = wait_for_status(
        &mut deployer,
        stop,
        Duration::from_millis(20),
        Duration::from_secs(240),
        |status| {
            status
                .canary
                .as_ref()
                .is_some_and(|c| c.weight > 0 && c.pid != 0)
        },
    )
    .await
    else {
        let saga = get_saga(&mut orchestrator, &saga_id).await;
        return Ok((
            false,
            format!(
                "no canary ran to interrupt; the saga is {}",
                saga.map_or_else(|| "unknown".into(), |s| crate::demo::saga_state(s.state))
            ),
        ));
    };
    let canary = during.canary.clone().unwrap_or_default();
    let stable = during.stable.clone().unwrap_or_default();
    if let Some(killed) = processes.deployer.take() {
        killed.kill().await;
    }
    super::note(
        "inject",
        format!(
            "SIGKILL of the deployer while the canary {} takes {}% of traffic",
            canary.version, canary.weight
        ),
    );
    let down_at = probe.counts().await;
    processes.deployer = Some(super::Served::spawn(
        "deployer",
        &deployer_settings,
        &work.join("deployer-2.log"),
    )?);
    super::note(
        "inject",
        "the deployer started again on the same data directory",
    );

    let until = Instant::now() + Duration::from_secs(240);
    let saga = loop {
        if let Some(saga) = get_saga(&mut orchestrator, &saga_id).await
            && crate::demo::is_terminal(saga.state)
        {
            break saga;
        }
        if Instant::now() > until {
            return Ok((false, "the saga did not finish after the crash".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Traffic flows again through the same public address.
    let after = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?;
    let served_after = {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let now = probe.counts().await;
            let answered = (now.finished - now.failures) - (down_at.finished - down_at.failures);
            if answered >= 50 || Instant::now() > until {
                break answered;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    stop.cancel();
    let _ = load.await;

    let state = crate::demo::saga_state(saga.state);
    let deploy = saga.steps.iter().rfind(|s| s.name == "deploy");
    let deploy_summary = deploy.map(|d| d.summary.clone()).unwrap_or_default();
    let compensated = deploy.is_some_and(|d| d.status == pb::StepStatus::Compensated as i32);
    let rolled_back =
        deploy_summary.contains("rolled_back") && deploy_summary.contains("restarted");
    let ended = matches!(state.as_str(), "rolled_back" | "escalated");
    let restored = after.public_address == before.public_address
        && after.canary.is_none()
        && after
            .stable
            .as_ref()
            .is_some_and(|s| s.version == stable.version && s.weight == 100 && s.healthy);
    let orphans: Vec<u32> = [stable.pid, canary.pid]
        .into_iter()
        .filter(|pid| !gone(*pid))
        .collect();
    let escalated = saga
        .decisions
        .iter()
        .any(|d| d.kind == pb::DecisionKind::Escalation as i32);
    let ok =
        ended && rolled_back && compensated && restored && orphans.is_empty() && served_after >= 50;
    Ok((
        ok,
        format!(
            "deployer killed with canary {} at {}%; after its restart: {} on {} ({} requests answered since), canary {}, orphaned processes {}; deploy step {} ({deploy_summary}); saga {state}{}",
            canary.version,
            canary.weight,
            after
                .stable
                .as_ref()
                .map_or("NO stable", |s| s.version.as_str()),
            if after.public_address == before.public_address {
                format!("the same address {}", after.public_address)
            } else {
                format!("ANOTHER address {}", after.public_address)
            },
            served_after,
            if after.canary.is_none() {
                "gone"
            } else {
                "STILL THERE"
            },
            if orphans.is_empty() {
                "stopped".to_owned()
            } else {
                format!("STILL RUNNING {orphans:?}")
            },
            if compensated {
                "compensated by the deployer's rollback"
            } else {
                "NOT compensated"
            },
            if escalated {
                "; a person was sent the escalation report"
            } else {
                ""
            }
        ),
    ))
}

async fn get_saga(
    orchestrator: &mut selfheal_proto::v1::orchestrator_client::OrchestratorClient<TracedChannel>,
    id: &str,
) -> Option<pb::Saga> {
    orchestrator
        .get_saga(pb::GetSagaRequest { id: id.to_owned() })
        .await
        .ok()
        .and_then(|r| r.into_inner().saga)
}
