//! Faults in selfheal's own processes: an orchestrator that restarts mid-saga or crashes holding
//! a lease, and a deployer that crashes mid-canary.
//!
//! The orchestrator runs as a child process (`selfheal serve orchestrator`) beside the demo's
//! in-process mesh, with its leases in the real Redis, so that it can be killed with SIGKILL
//! mid-saga and started again (or replaced by another instance).

use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_telemetry::TracedChannel;
use tokio_util::sync::CancellationToken;

use super::Judged;
use super::audit_faults::{env_or, uuid_like};
use crate::demo::SERVICE;
use crate::mesh::RunningMesh;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &["orchestrator_restart_mid_saga", "lock_holder_crash"];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let work = work.to_path_buf();
    match name {
        "orchestrator_restart_mid_saga" => Some(Box::pin(crash_mid_saga(work, Crash::Restart))),
        "lock_holder_crash" => Some(Box::pin(crash_mid_saga(work, Crash::Replace))),
        _ => None,
    }
}

/// What follows the SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// The same instance starts again.
    Restart,
    /// Another instance takes over; the killed one's token is then tried against the deployer.
    Replace,
}

/// Lease time-to-live: short, so the successor's wait for the dead holder's lease is short.
const LEASE_TTL: &str = "3s";

/// The settings of a child orchestrator of instance `instance` on `address`.
fn orchestrator_args(
    work: &Path,
    mesh: &RunningMesh,
    address: &str,
    instance: &str,
    redis: &str,
    prefix: &str,
) -> Vec<String> {
    let url = |service: &str| mesh.grpc_url(service);
    let mut settings: Vec<String> = crate::demo::demo_settings(work)
        .into_iter()
        .filter(|s| s.starts_with("orchestrator."))
        .collect();
    settings.extend([
        format!("orchestrator.server.grpc_addr={address}"),
        "orchestrator.server.http_addr=127.0.0.1:0".to_owned(),
        format!("orchestrator.instance={instance}"),
        format!("orchestrator.peers.detector={}", url("detector")),
        format!("orchestrator.peers.rca={}", url("rca")),
        format!("orchestrator.peers.patcher={}", url("patcher")),
        format!("orchestrator.peers.safety_gate={}", url("safety-gate")),
        format!("orchestrator.peers.deployer={}", url("deployer")),
        format!("orchestrator.peers.audit={}", url("audit")),
        "orchestrator.lock.backend=redis".to_owned(),
        format!("orchestrator.lock.redis_url={redis}"),
        format!("orchestrator.lock.key_prefix={prefix}"),
        format!("orchestrator.lock.ttl={LEASE_TTL}"),
    ]);
    settings
}

fn free_address() -> Result<String, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string())
}

fn connect(url: &str) -> Result<TracedChannel, String> {
    selfheal_telemetry::connect_lazy(url, Duration::from_secs(5)).map_err(|e| e.to_string())
}

/// The version sequence `n` of a deployer version name `r<n>-…`.
fn version_sequence(version: &str) -> Option<u64> {
    version
        .strip_prefix('r')
        .and_then(|rest| rest.split('-').next())
        .and_then(|n| n.parse().ok())
}

/// The demo's failing service with its saga run by a child orchestrator that is killed with
/// SIGKILL mid-saga, then restarted (or replaced by another instance). A restart is judged on
/// the deploy step, which must not run twice; a takeover is killed in the gate step, so that the
/// successor's deploy carries its newer token to the deployer.
async fn crash_mid_saga(work: PathBuf, crash: Crash) -> Result<(bool, String), String> {
    let repo = work.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).map_err(|e| format!("{}: {e}", repo.display()))?;
    }
    let mesh = super::fresh_mesh(&work, Vec::new()).await?;
    let redis = env_or("SELFHEAL_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = format!("selfheal-inject-{}:", uuid_like());
    let stop = CancellationToken::new();
    let mut children = Vec::new();
    let result = run_crash(&work, &mesh, crash, &redis, &prefix, &stop, &mut children).await;
    stop.cancel();
    for child in children {
        child.kill().await;
    }
    if let Ok(store) = selfheal_orchestrator::lock::RedisLockStore::connect(
        &redis,
        &prefix,
        Duration::from_secs(2),
    ) {
        let _ = store.forget(SERVICE).await;
    }
    let _ = mesh.stop().await;
    result
}

#[allow(clippy::too_many_lines)]
async fn run_crash(
    work: &Path,
    mesh: &RunningMesh,
    crash: Crash,
    redis: &str,
    prefix: &str,
    stop: &CancellationToken,
    children: &mut Vec<super::Served>,
) -> Result<(bool, String), String> {
    let url = |service: &str| mesh.grpc_url(service);
    let mut deployer = DeployerClient::new(connect(&url("deployer"))?);
    let mut audit = AuditClient::new(connect(&url("audit"))?);

    // The failing service: the good commit, then the buggy one, under steady load.
    let repo = work.join("repo");
    let example = selfheal_scenario::examples_dir().join(SERVICE);
    let scenario = tokio::task::spawn_blocking(move || selfheal_scenario::build(&example, &repo))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    crate::demo::deploy_direct(&mut deployer, &scenario.repo, &scenario.good_commit)
        .await
        .map_err(|e| e.to_string())?;
    let buggy = crate::demo::deploy_direct(&mut deployer, &scenario.repo, &scenario.bad_commit)
        .await
        .map_err(|e| e.to_string())?;
    let public = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?
        .public_address;
    let load = {
        let stop = stop.clone();
        let plan = crate::load::LoadPlan::steady(
            format!("http://{public}"),
            100,
            Duration::from_secs(600),
        );
        tokio::spawn(async move { crate::load::run(&plan, stop, |_| {}).await })
    };

    let address = free_address()?;
    let (first, second) = match crash {
        Crash::Restart => ("inject-orchestrator", "inject-orchestrator"),
        Crash::Replace => ("inject-orchestrator-a", "inject-orchestrator-b"),
    };
    children.push(super::Served::spawn(
        "orchestrator",
        &orchestrator_args(work, mesh, &address, first, redis, prefix),
        &work.join("orchestrator-1.log"),
    )?);
    let mut orchestrator = OrchestratorClient::new(connect(&format!("http://{address}"))?);

    // Let the failure show for a few seconds, as the detector would, then report it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let incident = super::demo_incident("inject-crash");
    let saga_id = super::report_incident(&mut orchestrator, &incident).await?;
    super::note("saga", format!("incident reported; saga {saga_id} started"));

    // SIGKILL while the step runs.
    let step = match crash {
        Crash::Restart => "deploy",
        Crash::Replace => "gate",
    };
    let deploying = super::poll_saga(&mut orchestrator, &saga_id, Duration::from_secs(180), |s| {
        s.steps.iter().any(|s| s.name == step)
            || crate::demo::is_terminal(s.state)
            || s.state == pb::SagaState::AwaitingApproval as i32
    })
    .await
    .ok_or("the saga never reached its deploy step")?;
    if !deploying.steps.iter().any(|s| s.name == step) {
        return Ok((
            false,
            format!(
                "the saga was {} before its {step} step could be interrupted",
                crate::demo::saga_state(deploying.state)
            ),
        ));
    }
    if let Some(child) = children.pop() {
        child.kill().await;
    }
    super::note(
        "inject",
        format!("SIGKILL of orchestrator {first} during the {step} step"),
    );
    children.push(super::Served::spawn(
        "orchestrator",
        &orchestrator_args(work, mesh, &address, second, redis, prefix),
        &work.join("orchestrator-2.log"),
    )?);
    super::note(
        "inject",
        format!("orchestrator {second} started on the same address"),
    );
    let finished = super::poll_saga(&mut orchestrator, &saga_id, Duration::from_secs(180), |s| {
        crate::demo::is_terminal(s.state)
    })
    .await
    .ok_or("the saga did not finish after the crash")?;
    stop.cancel();
    let _ = load.await;

    let records = super::saga_records(&mut audit, &saga_id).await?;
    let mut twice = Vec::new();
    for record in records
        .iter()
        .filter(|r| r.kind == pb::RecordKind::StepFinished as i32)
    {
        let count = records
            .iter()
            .filter(|r| r.kind == pb::RecordKind::StepFinished as i32 && r.step == record.step)
            .count();
        if count > 1 && !twice.contains(&record.step) {
            twice.push(record.step.clone());
        }
    }
    let resumed_by_second = records.iter().any(|r| {
        r.actor == second && r.kind == pb::RecordKind::StepFinished as i32 && r.step == "deploy"
    });
    let status = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?;
    let stable = status.stable.clone().unwrap_or_default();
    // Versions are numbered per rollout: the saga's one rollout is the one after the buggy one.
    let one_rollout = version_sequence(&stable.version)
        .zip(version_sequence(&buggy))
        .is_some_and(|(stable, buggy)| stable == buggy + 1);
    let resolved = finished.state == pb::SagaState::Resolved as i32;
    let mut ok = resolved && twice.is_empty() && one_rollout && resumed_by_second;
    let mut observed = format!(
        "{} after SIGKILL during {step} and {}; steps finished twice: {}; deployer rollouts for the saga: {} (stable {})",
        crate::demo::saga_state(finished.state),
        match crash {
            Crash::Restart => "a restart of the same instance",
            Crash::Replace => "a takeover by another instance",
        },
        if twice.is_empty() {
            "none".to_owned()
        } else {
            twice.join(", ")
        },
        if one_rollout { "one" } else { "MORE THAN ONE" },
        stable.version,
    );
    if crash == Crash::Replace {
        let token_of = |actor: &str| {
            records
                .iter()
                .filter(|r| r.actor == actor)
                .map(|r| r.fencing_token)
                .max()
                .unwrap_or(0)
        };
        let (old, new) = (token_of(first), token_of(second));
        let refused = deployer
            .rollback(pb::RollbackRequest {
                service: SERVICE.into(),
                fencing_token: old,
                reason: "a call from the crashed lease holder".into(),
                idempotency_key: format!("{saga_id}:stale"),
            })
            .await;
        let refused_code = refused.as_ref().err().map(tonic::Status::code);
        let stale_refused = refused_code == Some(tonic::Code::FailedPrecondition);
        let seen = status.highest_fencing_token;
        ok = ok && old > 0 && new > old && seen == new && stale_refused;
        observed.push_str(&format!(
            "; tokens in the journal: A {old} then B {new} (the deployer's highest {seen}); A's stale rollback {}",
            match refused {
                Ok(_) => "was ACCEPTED".to_owned(),
                Err(status) if stale_refused => format!("refused ({:?})", status.code()),
                Err(status) => format!("failed otherwise: {status}"),
            }
        ));
    }
    Ok((ok, observed))
}
