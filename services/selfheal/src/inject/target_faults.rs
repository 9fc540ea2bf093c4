//! Faults in the healed target: a release that leaks memory, a canary that crashes, and a fix that
//! passes its canary but not verification once it serves all traffic.
//!
//! - `memory_leak`: the `leak` variant of payment-service keeps 64 KiB per payment and answers
//!   every request 200. Its commit is shipped as a canary over the good commit under load; only the
//!   deployer's memory analysis (resident memory sampled from `/proc` in every window) can see it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_telemetry::TracedChannel;
use tokio_util::sync::CancellationToken;

use super::Judged;

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &["memory_leak"];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let work = work.to_path_buf();
    match name {
        "memory_leak" => Some(Box::pin(memory_leak(work))),
        _ => None,
    }
}

async fn deployer_client(url: &str) -> Result<DeployerClient<TracedChannel>, String> {
    selfheal_telemetry::connect_lazy(url, Duration::from_secs(5))
        .map(DeployerClient::new)
        .map_err(|e| e.to_string())
}

// ---- memory_leak -------------------------------------------------------------------------------

/// A release that keeps memory on every payment, shipped as a canary over the good commit.
async fn memory_leak(work: PathBuf) -> Result<(bool, String), String> {
    let data = work.join("deployer");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    }
    let mesh = crate::mesh::start(crate::mesh::MeshOptions {
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        base_port: 0,
        config_file: None,
        overrides: crate::demo::demo_settings(&work),
        env: &selfheal_service::ProcessEnv,
    })
    .await
    .map_err(|e| e.to_string())?;
    let url = mesh
        .endpoint("deployer")
        .map(crate::mesh::Endpoint::grpc_url)
        .unwrap_or_default();
    let result = leak_canary(&work, &url).await;
    let _ = mesh.stop().await;
    result
}

async fn leak_canary(work: &Path, deployer_url: &str) -> Result<(bool, String), String> {
    let repo = work.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).map_err(|e| e.to_string())?;
    }
    let example = selfheal_scenario::examples_dir().join(crate::demo::SERVICE);
    let scenario = tokio::task::spawn_blocking(move || {
        selfheal_scenario::build_variant(&example, "leak", &repo)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let mut deployer = deployer_client(deployer_url).await?;
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
            target: format!("http://{public}"),
            rate: 100,
            duration: Duration::from_secs(300),
            concurrency: 256,
            customers: 1000,
            timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move { crate::load::run(&plan, stop, |_| {}).await })
    };
    // The deployer's default memory limits judge the canary; the plan only sets the windows.
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
                idempotency_key: "inject-memory-leak".into(),
                ..Default::default()
            })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut events = Vec::new();
        while let Some(response) = stream.message().await.map_err(|s| s.to_string())? {
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
    let stable = crate::demo::service_status(&mut deployer)
        .await
        .map_err(|e| e.to_string())?
        .stable
        .map(|s| s.commit)
        .unwrap_or_default();
    let last = events.last().ok_or("the deployer sent no rollout events")?;
    let rolled_back = last.kind == pb::RolloutEventKind::RolledBack as i32;
    let memory_reason = last
        .decision
        .as_ref()
        .is_some_and(|d| d.reasoning.contains("resident memory"));
    let step = last_analysis_weight(&events);
    let ok = rolled_back && memory_reason && stable == scenario.good_commit;
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
            if stable == scenario.good_commit {
                "good"
            } else {
                "leaking"
            },
            load.server_errors + load.failed,
            load.sent
        ),
    ))
}

fn last_analysis_weight(events: &[pb::RolloutEvent]) -> u32 {
    events
        .iter()
        .rfind(|e| e.kind == pb::RolloutEventKind::Analysis as i32)
        .map_or(0, |e| e.canary_weight)
}
