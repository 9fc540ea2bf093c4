//! Real Prometheus scraping the payment-service (buggy build) with the project's `HighErrorRate`
//! rule, and real Alertmanager posting to the detector's webhook: the incident opens from the
//! webhook and resolves when the alert does.
//!
//! Needs the backends: `bash scripts/backends.sh start`. The detector listens on free loopback
//! ports; Alertmanager is restarted with a temporary config posting there, and Prometheus with
//! one that adds a job for this test's payment-service; both get their default configs back
//! afterwards.

mod common;
#[path = "common/payment.rs"]
mod payment;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{eventually, fast_config, time_of};
use payment::{Load, Mix, PaymentService};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_service::Listeners;
use tokio_util::sync::CancellationToken;

/// Where the default Alertmanager config posts (the detector's default HTTP address).
const DEFAULT_WEBHOOK_ADDR: &str = "127.0.0.1:50062";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn backend_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

async fn require_ready(name: &str, url: &str) {
    let ready = reqwest::Client::new()
        .get(format!("{url}/-/ready"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match ready {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => panic!(
            "{name} at {url} is not ready ({}); run `bash scripts/backends.sh start`",
            response.status()
        ),
        Err(error) => panic!(
            "{name} at {url} is not reachable ({error}); run `bash scripts/backends.sh start`"
        ),
    }
}

/// Prometheus or Alertmanager running with a temporary config; the default config is restored
/// on drop.
struct TemporaryConfig {
    backend: &'static str,
    variable: &'static str,
    _dir: tempfile::TempDir,
}

impl TemporaryConfig {
    /// Restarts `backend` through `scripts/backends.sh` with `config`, passed in `variable`.
    fn apply(backend: &'static str, variable: &'static str, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(format!("{backend}.yml"));
        std::fs::write(&path, config).expect("config written");
        let output = std::process::Command::new("bash")
            .current_dir(workspace_root())
            .env(variable, &path)
            .args(["scripts/backends.sh", "start", backend])
            .output()
            .expect("backends.sh runs");
        assert!(
            output.status.success(),
            "cannot restart {backend} with the test config:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            backend,
            variable,
            _dir: dir,
        }
    }

    /// The default Prometheus config plus a job scraping this test's payment-service.
    fn prometheus(payment: SocketAddr, service: &str) -> Self {
        let root = workspace_root();
        let default = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.local.yml"))
            .expect("default prometheus config");
        let rules = root.join("deploy/prometheus/rules/*.yml");
        let mut config = default.replace("  - rules/*.yml", &format!("  - {}", rules.display()));
        assert_ne!(
            config, default,
            "the default config names its rule files as rules/*.yml"
        );
        config.push_str(&format!(
            "  - job_name: detector-test-payment\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{payment}\"]\n        labels: {{service: {service}}}\n"
        ));
        Self::apply("prometheus", "SELFHEAL_PROMETHEUS_CONFIG", &config)
    }

    /// The default Alertmanager config posting to this test's detector instead of the default
    /// port, which another process may hold.
    fn alertmanager(webhook: SocketAddr) -> Self {
        let default = std::fs::read_to_string(
            workspace_root().join("deploy/alertmanager/alertmanager.local.yml"),
        )
        .expect("default alertmanager config");
        let config = default.replace(DEFAULT_WEBHOOK_ADDR, &webhook.to_string());
        assert_ne!(
            config, default,
            "the default config posts to {DEFAULT_WEBHOOK_ADDR}"
        );
        Self::apply("alertmanager", "SELFHEAL_ALERTMANAGER_CONFIG", &config)
    }
}

impl Drop for TemporaryConfig {
    fn drop(&mut self) {
        let restored = std::process::Command::new("bash")
            .current_dir(workspace_root())
            .env_remove(self.variable)
            .args(["scripts/backends.sh", "start", self.backend])
            .output();
        if !restored.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "could not restore the default {} config; run `bash scripts/backends.sh restart {}`",
                self.backend, self.backend
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_webhook_opens_and_resolves_an_incident() {
    let prometheus = backend_url("SELFHEAL_TEST_PROMETHEUS_URL", "http://127.0.0.1:9090");
    let alertmanager = backend_url("SELFHEAL_TEST_ALERTMANAGER_URL", "http://127.0.0.1:9093");
    require_ready("Prometheus", &prometheus).await;
    require_ready("Alertmanager", &alertmanager).await;

    let listeners = Listeners::ephemeral().await.expect("loopback ports");
    let grpc_addr = listeners.grpc_addr();
    let _alertmanager_config = TemporaryConfig::alertmanager(listeners.http_addr());
    // No scrape targets: whatever opens must come from the webhook.
    let config = fast_config(Duration::from_millis(500), "http://127.0.0.1:1");
    let shutdown = CancellationToken::new();
    let detector = tokio::spawn(selfheal_detector::run(config, listeners, shutdown.clone()));
    selfheal_service::testkit::wait_serving(grpc_addr, selfheal_proto::service_names::DETECTOR)
        .await;
    let client = DetectorClient::new(
        selfheal_service::testkit::channel(grpc_addr)
            .await
            .expect("detector connects"),
    );

    let build = tokio::task::spawn_blocking(payment::build_bad)
        .await
        .expect("build task");
    let service = PaymentService::start(&build.binary).await;
    let name = format!("payment-service-it-{}", std::process::id());
    let _prometheus_config = TemporaryConfig::prometheus(service.addr, &name);
    let load = Load::start(service.addr, Duration::from_millis(5));
    load.set_mix(Mix::Everyone);

    let incidents = || {
        let mut client = client.clone();
        let name = name.clone();
        async move {
            client
                .list_incidents(pb::ListIncidentsRequest {
                    service: name,
                    status: 0,
                    limit: 0,
                })
                .await
                .expect("ListIncidents answers")
                .into_inner()
                .incidents
        }
    };
    // rate over 30s, `for: 10s`, 2 s evaluations and a 1 s group wait: about 15-20 s.
    let incident = eventually(
        "HighErrorRate to fire and reach the webhook (check Prometheus alerts at :9090/alerts)",
        Duration::from_secs(120),
        || async { incidents().await.into_iter().next() },
    )
    .await;
    assert_eq!(incident.source, pb::IncidentSource::Alertmanager as i32);
    assert_eq!(
        incident.signal,
        pb::SignalKind::ErrorRate as i32,
        "{incident:?}"
    );
    assert_eq!(incident.severity, pb::Severity::Critical as i32);
    assert_eq!(incident.fingerprint, format!("{name}/error_rate"));
    assert_eq!(incident.status, pb::IncidentStatus::Open as i32);
    assert_eq!(
        incident.labels.get("alertname").map(String::as_str),
        Some("HighErrorRate")
    );
    assert!(time_of(&incident.first_bad_at) <= time_of(&incident.opened_at));

    // Spared customers only: the 30 s rate drains and the alert resolves.
    load.set_mix(Mix::GoodOnly);
    let resolved = eventually(
        "the alert to resolve and reach the webhook",
        Duration::from_secs(150),
        || async {
            let all = incidents().await;
            all.iter()
                .all(|i| i.status == pb::IncidentStatus::Resolved as i32)
                .then_some(all)
        },
    )
    .await;
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert_eq!(resolved[0].id, incident.id);

    load.stop().await;
    service.stop().await;
    shutdown.cancel();
    detector
        .await
        .expect("detector task")
        .expect("detector stops cleanly");
}
