//! Faults in the audit trail: a store that goes away mid-saga, and a stored record altered.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_service::CuttableLink;
use selfheal_service::link::authority;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Judged;
use crate::demo::{SagaHook, SagaStarted};

/// The scenarios this module runs.
pub(super) const BUILT: &[&str] = &["audit_store_unavailable", "audit_log_corruption"];

/// The injection and judgement of `name`, when this module owns it.
pub(super) fn judge(name: &str, work: &Path) -> Option<Judged> {
    let work = work.to_path_buf();
    match name {
        "audit_store_unavailable" => Some(Box::pin(audit_store_unavailable(work))),
        "audit_log_corruption" => Some(Box::pin(audit_log_corruption(work))),
        _ => None,
    }
}

/// How long the spool may take to drain once Elasticsearch is back.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn spooled_lines(spool: &Path) -> u64 {
    std::fs::read_to_string(spool.join(selfheal_audit::store::spool::SPOOL_FILE))
        .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0)
}

/// The demo with its audit chain in Elasticsearch behind a proxy that is cut while the saga
/// patches, gates and deploys, and restored once the deploy step ended.
async fn audit_store_unavailable(work: PathBuf) -> Result<(bool, String), String> {
    let elasticsearch = env_or("SELFHEAL_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200");
    let run = uuid_like();
    let index = format!("selfheal-inject-audit-{run}");
    let proxy = Arc::new(
        CuttableLink::start(authority(&elasticsearch))
            .await
            .map_err(|e| format!("cannot start a link to Elasticsearch: {e}"))?,
    );
    // Inside the demo's own audit directory, which each demo run starts afresh.
    let spool = work.join("audit").join("spool");
    let overrides = vec![
        "audit.store=elasticsearch".to_owned(),
        format!("audit.elasticsearch.url=http://{}", proxy.address()),
        format!("audit.elasticsearch.index={index}"),
        "audit.elasticsearch.timeout=2s".to_owned(),
        format!("audit.elasticsearch.spool_dir={}", spool.display()),
    ];
    let peak = Arc::new(AtomicU64::new(0));
    let restored = Arc::new(AtomicBool::new(false));
    let hook = {
        let (proxy, peak, restored, spool) = (
            Arc::clone(&proxy),
            Arc::clone(&peak),
            Arc::clone(&restored),
            spool.clone(),
        );
        SagaHook(Arc::new(move |started: SagaStarted| {
            let (proxy, peak, restored, spool) = (
                Arc::clone(&proxy),
                Arc::clone(&peak),
                Arc::clone(&restored),
                spool.clone(),
            );
            Box::pin(async move {
                proxy.cut();
                super::note(
                    "inject",
                    "the audit service's link to Elasticsearch is cut while the saga runs",
                );
                let _ = wait_deploy_ended(&started, &spool, &peak).await;
                peak.fetch_max(spooled_lines(&spool), Ordering::SeqCst);
                proxy.restore();
                super::note(
                    "inject",
                    format!(
                        "link to Elasticsearch restored after the deploy step ({} records spooled)",
                        peak.load(Ordering::SeqCst)
                    ),
                );
                restored.store(true, Ordering::SeqCst);
            })
        }))
    };
    let result = super::demo(&work, overrides, Some(hook)).await;
    proxy.restore();
    let judged = match result {
        Ok(summary) => judge_spool(&summary, &work, &spool, &elasticsearch, &index, &peak).await,
        Err(error) => Err(error),
    };
    if let Ok(proxy) = Arc::try_unwrap(proxy) {
        proxy.stop().await;
    }
    delete_index(&elasticsearch, &index).await;
    let (ok, observed) = judged?;
    Ok((
        ok && restored.load(Ordering::SeqCst),
        if restored.load(Ordering::SeqCst) {
            observed
        } else {
            format!("{observed}; the link was never restored by the hook")
        },
    ))
}

/// Polls the saga until its deploy step ended or the saga did, noting the spool's peak.
async fn wait_deploy_ended(
    started: &SagaStarted,
    spool: &Path,
    peak: &AtomicU64,
) -> Result<(), String> {
    let channel =
        selfheal_telemetry::connect_lazy(&started.endpoint("orchestrator"), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
    let mut orchestrator = OrchestratorClient::new(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while tokio::time::Instant::now() < deadline {
        peak.fetch_max(spooled_lines(spool), Ordering::SeqCst);
        if let Ok(saga) = orchestrator
            .get_saga(pb::GetSagaRequest {
                id: started.saga_id.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            && let Some(saga) = saga.saga
        {
            let deploy_over = saga
                .steps
                .iter()
                .any(|step| step.name == "deploy" && step.status != pb::StepStatus::Running as i32);
            let over = matches!(
                pb::SagaState::try_from(saga.state),
                Ok(pb::SagaState::Resolved
                    | pb::SagaState::RolledBack
                    | pb::SagaState::Escalated
                    | pb::SagaState::Aborted)
            );
            if deploy_over || over {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the deploy step never ended".into())
}

/// After the demo: an audit service on the same index and spool drains what is left, then the
/// chain must verify and hold every record of the saga, in Elasticsearch itself.
async fn judge_spool(
    s: &crate::demo::DemoSummary,
    work: &Path,
    spool: &Path,
    elasticsearch: &str,
    index: &str,
    peak: &AtomicU64,
) -> Result<(bool, String), String> {
    let left_at_end = spooled_lines(spool);
    let config = selfheal_audit::Config {
        server: selfheal_service::ServerConfig::loopback(0),
        store: selfheal_audit::StoreKind::Elasticsearch,
        elasticsearch: selfheal_audit::ElasticsearchStoreConfig {
            url: elasticsearch.to_owned(),
            index: index.to_owned(),
            spool_dir: spool.to_path_buf(),
            ..Default::default()
        },
        file: selfheal_audit::FileStoreConfig {
            path: work.join("audit"),
        },
        ..Default::default()
    };
    let audit = AuditService::start(config).await?;
    let result = async {
        let drained = poll(DRAIN_DEADLINE, || async { spooled_lines(spool) == 0 }).await;
        let mut client = audit.client()?;
        let verify = client
            .verify(pb::VerifyChainRequest {})
            .await
            .map_err(|status| format!("audit Verify: {status}"))?
            .into_inner();
        let records = super::saga_records(&mut client, &s.saga_id).await?;
        let in_elasticsearch = count_saga_documents(elasticsearch, index, &s.saga_id).await?;
        let position = |kind: pb::RecordKind, step: &str| {
            records
                .iter()
                .find(|r| r.kind == kind as i32 && r.step == step)
                .map(|r| r.sequence)
        };
        let missing: Vec<String> = s
            .steps
            .iter()
            .filter(|step| step.name != "detect")
            .filter(|step| {
                position(pb::RecordKind::StepStarted, &step.name).is_none()
                    || (step.status == "succeeded"
                        && position(pb::RecordKind::StepFinished, &step.name).is_none())
            })
            .map(|step| step.name.clone())
            .collect();
        let deploy_ordered = matches!(
            (
                position(pb::RecordKind::StepStarted, "deploy"),
                position(pb::RecordKind::StepFinished, "deploy"),
            ),
            (Some(start), Some(end)) if start < end
        );
        let final_state = records.iter().rev().find(|r| {
            r.kind == pb::RecordKind::SagaState as i32
                && payload_str(r, "state") == "RESOLVED"
        });
        let peak = peak.load(Ordering::SeqCst);
        let ok = s.healed()
            && peak > 0
            && drained
            && verify.ok
            && missing.is_empty()
            && deploy_ordered
            && final_state.is_some()
            && in_elasticsearch == records.len() as u64;
        Ok((
            ok,
            format!(
                "{}; {peak} records spooled while Elasticsearch was cut, {} after restore ({left_at_end} left when the mesh stopped); chain {} with {} records; saga's {} records all in Elasticsearch: {}; steps without their records: {}; deploy start before its end: {}",
                s.status,
                if drained { "all replayed" } else { "NOT all replayed" },
                if verify.ok {
                    "verified".to_owned()
                } else {
                    format!(
                        "BROKEN at sequence {} ({})",
                        verify.first_broken_sequence, verify.detail
                    )
                },
                verify.records_checked,
                records.len(),
                if in_elasticsearch == records.len() as u64 {
                    "yes".to_owned()
                } else {
                    format!("no, {in_elasticsearch}")
                },
                if missing.is_empty() {
                    "none".to_owned()
                } else {
                    missing.join(", ")
                },
                if deploy_ordered { "yes" } else { "NO" },
            ),
        ))
    }
    .await;
    audit.stop().await;
    result
}

pub(crate) fn payload_str(record: &pb::AuditRecord, field: &str) -> String {
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

/// Polls `check` every 100 ms until it holds or `deadline` passes.
pub(crate) async fn poll<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Documents of `saga_id` that Elasticsearch itself holds (not the spool).
async fn count_saga_documents(url: &str, index: &str, saga_id: &str) -> Result<u64, String> {
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    let _ = client.post(format!("{base}/{index}/_refresh")).send().await;
    let body: serde_json::Value = client
        .post(format!("{base}/{index}/_count"))
        .json(&serde_json::json!({ "query": { "term": { "saga_id": saga_id } } }))
        .send()
        .await
        .map_err(|e| format!("elasticsearch at {base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("elasticsearch at {base}: {e}"))?;
    body["count"]
        .as_u64()
        .ok_or_else(|| format!("elasticsearch at {base} sent no count: {body}"))
}

async fn delete_index(url: &str, index: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{}/{index}", url.trim_end_matches('/')))
        .send()
        .await;
}

/// A name part unique to this run.
pub(crate) fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{:x}", std::process::id(), nanos)
}

/// One audit service of its own, outside the demo's mesh.
pub(crate) struct AuditService {
    url: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AuditService {
    pub(crate) async fn start(config: selfheal_audit::Config) -> Result<Self, String> {
        let listeners =
            selfheal_service::Listeners::bind(config.server.grpc_addr, config.server.http_addr)
                .await
                .map_err(|e| format!("audit: {e}"))?;
        let url = format!("http://{}", listeners.grpc_addr());
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(error) = selfheal_audit::run(config, listeners, stop).await {
                    tracing::warn!(%error, "the audit service stopped with an error");
                }
            })
        };
        Ok(Self { url, stop, task })
    }

    pub(crate) fn client(&self) -> Result<AuditClient<selfheal_telemetry::TracedChannel>, String> {
        selfheal_telemetry::connect_lazy(&self.url, Duration::from_secs(5))
            .map(AuditClient::new)
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// JSON bodies POSTed to a local webhook.
pub(crate) struct Webhook {
    pub(crate) url: String,
    received: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Webhook {
    pub(crate) async fn start() -> Result<Self, String> {
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = Arc::clone(&received);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let store = Arc::clone(&store);
                async move {
                    store
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(body);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot bind the webhook: {e}"))?;
        let url = format!(
            "http://{}/hook",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            })
        };
        Ok(Self {
            url,
            received,
            stop,
            task,
        })
    }

    pub(crate) fn received(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Alters one byte of the first stored record the orchestrator wrote, in the JSON-lines file
/// of the audit store in `dir`; returns its sequence.
fn alter_one_record(dir: &Path) -> Result<u64, String> {
    let path = dir.join(selfheal_audit::store::file::RECORDS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let marker = "\"actor\":\"orchestrator-";
    let index = lines
        .iter()
        .position(|line| line.contains(marker))
        .ok_or_else(|| format!("{} holds no record of the orchestrator", path.display()))?;
    lines[index] = lines[index].replacen(marker, "\"actor\":\"Orchestrator-", 1);
    let record: serde_json::Value =
        serde_json::from_str(&lines[index]).map_err(|e| e.to_string())?;
    std::fs::write(&path, lines.join("\n") + "\n")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    record["sequence"]
        .as_u64()
        .ok_or_else(|| "the altered record has no sequence".to_owned())
}

/// The demo to resolution, one byte of its audit file altered, then a new incident for the
/// service to a fresh mesh on the same stores.
async fn audit_log_corruption(work: PathBuf) -> Result<(bool, String), String> {
    let s = super::demo(&work, Vec::new(), None).await?;
    if !s.healed() || !s.audit_chain_ok {
        return Ok((
            false,
            format!(
                "the demo before the corruption did not resolve with a good chain: {}",
                s.status
            ),
        ));
    }
    let broken = alter_one_record(&work.join("audit"))?;
    super::note(
        "inject",
        format!("one byte of audit record {broken} changed in the audit file"),
    );
    let webhook = Webhook::start().await?;
    let mesh = super::mesh_on(
        &work,
        vec![format!(
            "orchestrator.escalation.webhook_url={}",
            webhook.url
        )],
    )
    .await;
    let mesh = match mesh {
        Ok(mesh) => mesh,
        Err(error) => {
            webhook.stop().await;
            return Err(error);
        }
    };
    let result = report_after_corruption(&mesh, &webhook, broken).await;
    let _ = mesh.stop().await;
    webhook.stop().await;
    result
}

async fn report_after_corruption(
    mesh: &crate::mesh::RunningMesh,
    webhook: &Webhook,
    broken: u64,
) -> Result<(bool, String), String> {
    let url = |service: &str| mesh.grpc_url(service);
    let channel = |service: &str| {
        selfheal_telemetry::connect_lazy(&url(service), Duration::from_secs(5))
            .map_err(|e| e.to_string())
    };
    let mut orchestrator = OrchestratorClient::new(channel("orchestrator")?);
    let mut audit = AuditClient::new(channel("audit")?);
    // The orchestrator answers once it has read the journal at start-up.
    let saga_id = super::report_incident(
        &mut orchestrator,
        &super::demo_incident("inject-corruption"),
    )
    .await?;
    let saga = super::poll_saga(&mut orchestrator, &saga_id, Duration::from_secs(30), |s| {
        !matches!(
            pb::SagaState::try_from(s.state),
            Ok(pb::SagaState::Detected | pb::SagaState::Unspecified) | Err(_)
        )
    })
    .await
    .ok_or("the incident's saga did not get past DETECTED")?;
    let verify = audit
        .verify(pb::VerifyChainRequest {})
        .await
        .map_err(|status| format!("audit Verify: {status}"))?
        .into_inner();
    let alerted = poll(Duration::from_secs(15), || async {
        webhook
            .received()
            .iter()
            .any(|r| r["broken_record"]["sequence"] == broken)
    })
    .await;
    let halted = saga.state == pb::SagaState::Escalated as i32
        && saga.steps.is_empty()
        && saga.outcome.contains("automation halted");
    let ok = !verify.ok && verify.first_broken_sequence == broken && halted && alerted;
    Ok((
        ok,
        format!(
            "record {broken} altered; Verify {} at sequence {} ({:?}); the new incident's saga {} ended {} with {} steps ({}); webhook {}",
            if verify.ok { "PASSED" } else { "failed" },
            verify.first_broken_sequence,
            verify.reason(),
            saga_id,
            crate::demo::saga_state(saga.state),
            saga.steps.len(),
            if saga.outcome.contains("automation halted") {
                "automation halted"
            } else {
                "NOT halted"
            },
            if alerted {
                "received the alert naming that sequence"
            } else {
                "got NO alert"
            },
        ),
    ))
}
