//! Router cost and rollback speed, measured against the real payment-service.
//!
//! `cargo bench -p selfheal-deployer --bench router` prints:
//! - requests/s, p50 and p99 of `POST /pay` straight to the service and through the router, at the
//!   same concurrency (`ROUTER_BENCH_CONCURRENCY`, default 8) for `ROUTER_BENCH_SECONDS` (default 5);
//! - the time from a failed canary analysis to all traffic on stable (event timestamps), and the
//!   client-observed time from that analysis to the last canary 5xx.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use tokio::sync::Mutex;

const SERVICE: &str = "payment-service";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            selfheal_scenario::examples_dir()
                .parent()
                .expect("examples/ has a parent")
                .join("target")
                .join("examples")
        },
        Into::into,
    )
}

struct Measured {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn print(&self, label: &str) {
        println!(
            "{label:>16}: {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests, {} errors)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.requests,
            self.errors
        );
    }
}

/// Closed-loop load: `concurrency` workers, each sending one request at a time, for `duration`.
async fn load(addr: SocketAddr, concurrency: usize, duration: Duration) -> Measured {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = client.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n = worker;
            while started.elapsed() < duration {
                // Customers whose number is 3 or more modulo 20 never hit the scenario's bug.
                let customer = 3 + (n % 17);
                n += concurrency;
                let body = format!(r#"{{"customer_id":"cust-{customer:04}","amount_cents":1234}}"#);
                let sent = Instant::now();
                let ok = client
                    .post(format!("http://{addr}/pay"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                latencies.push(sent.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (l, e) = joined.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Measured {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

async fn deploy(
    client: &mut DeployerClient<tonic::transport::Channel>,
    request: pb::DeployRequest,
) -> Vec<pb::RolloutEvent> {
    let mut stream = client
        .deploy(request)
        .await
        .expect("deploy starts")
        .into_inner();
    let mut events = Vec::new();
    while let Some(response) = stream.message().await.expect("deploy stream") {
        events.push(response.event.expect("event"));
    }
    events
}

fn at(event: &pb::RolloutEvent) -> SystemTime {
    let ts = event.at.expect("timestamp");
    SystemTime::UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos as u32)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let concurrency = env_or("ROUTER_BENCH_CONCURRENCY", 8) as usize;
    let seconds = Duration::from_secs(env_or("ROUTER_BENCH_SECONDS", 5));
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = selfheal_scenario::build(
        &selfheal_scenario::examples_dir().join(SERVICE),
        &dir.path().join("repo"),
    )
    .expect("scenario");
    let mut config = selfheal_deployer::Config {
        data_dir: dir.path().join("data"),
        ..Default::default()
    };
    config.build.target_dir = Some(target_dir());
    let listeners = selfheal_service::Listeners::ephemeral()
        .await
        .expect("ports");
    let grpc = listeners.grpc_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(selfheal_deployer::run(config, listeners, shutdown.clone()));
    selfheal_service::testkit::wait_serving(grpc, selfheal_proto::service_names::DEPLOYER).await;
    let mut client = DeployerClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");

    let source = |commit: &str| pb::SourceRef {
        repository: scenario.repo.to_string_lossy().into_owned(),
        commit: commit.to_owned(),
    };
    let events = deploy(
        &mut client,
        pb::DeployRequest {
            service: SERVICE.into(),
            source: Some(source(&scenario.good_commit)),
            strategy: pb::RolloutStrategy::Direct.into(),
            fencing_token: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        events.last().map(pb::RolloutEvent::kind),
        Some(pb::RolloutEventKind::Promoted),
        "{events:#?}"
    );
    let status = client
        .status(pb::StatusRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("status")
        .into_inner()
        .services
        .remove(0);
    let public: SocketAddr = status.public_address.parse().expect("public address");
    let direct: SocketAddr = status
        .stable
        .expect("stable")
        .address
        .parse()
        .expect("stable address");

    println!("router cost, POST /pay, {concurrency} concurrent clients, {seconds:?} each:");
    load(direct, concurrency, Duration::from_millis(500)).await;
    let straight = load(direct, concurrency, seconds).await;
    straight.print("direct");
    let routed = load(public, concurrency, seconds).await;
    routed.print("through router");
    println!(
        "{:>16}: p50 +{:.3} ms, p99 +{:.3} ms, throughput {:.0}%",
        "router overhead",
        (routed.percentile(0.5).as_secs_f64() - straight.percentile(0.5).as_secs_f64()) * 1000.0,
        (routed.percentile(0.99).as_secs_f64() - straight.percentile(0.99).as_secs_f64()) * 1000.0,
        100.0 * routed.requests as f64
            / routed.elapsed.as_secs_f64()
            / (straight.requests as f64 / straight.elapsed.as_secs_f64())
    );

    // A canary that answers every /pay with 500, analysed over 1 s windows.
    let patch = always_500_patch(&scenario.repo, &scenario.good_commit);
    let last_error = Arc::new(Mutex::new(None::<SystemTime>));
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (last_error, stop) = (Arc::clone(&last_error), stop.clone());
        async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client");
            while !stop.is_cancelled() {
                let body = r#"{"customer_id":"cust-0005","amount_cents":1234}"#;
                if let Ok(r) = http
                    .post(format!("http://{public}/pay"))
                    .body(body)
                    .send()
                    .await
                    && r.status().is_server_error()
                {
                    *last_error.lock().await = Some(SystemTime::now());
                }
            }
        }
    });
    let events = deploy(
        &mut client,
        pb::DeployRequest {
            service: SERVICE.into(),
            source: Some(source(&scenario.good_commit)),
            strategy: pb::RolloutStrategy::Canary.into(),
            plan: Some(pb::CanaryPlan {
                steps: vec![10, 50, 100],
                analysis_window: Some(Duration::from_secs(1).try_into().expect("window")),
                min_requests: 20,
                max_error_rate: 0.05,
                failure_limit: 1,
            }),
            fencing_token: 2,
            patch,
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let _ = watcher.await;
    let analysis = events
        .iter()
        .find(|e| e.kind() == pb::RolloutEventKind::Analysis)
        .expect("an analysis");
    let rolled_back = events
        .iter()
        .find(|e| e.kind() == pb::RolloutEventKind::RolledBack)
        .expect("a rollback");
    let decided = at(analysis);
    let switched = at(rolled_back);
    println!("rollback of a failing canary (1 s analysis windows):");
    println!(
        "{:>16}: {:.3} ms from the failed analysis to 100% on stable",
        "router switch",
        switched
            .duration_since(decided)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    );
    if let Some(last) = *last_error.lock().await {
        println!(
            "{:>16}: {:.3} ms from the failed analysis to the last 5xx a client saw",
            "client view",
            last.duration_since(decided)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        );
    }
    shutdown.cancel();
    let _ = server.await;
}

fn always_500_patch(repo: &std::path::Path, commit: &str) -> String {
    let scratch = tempfile::tempdir().expect("temp dir");
    let tree = scratch.path().join("tree");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let tree_arg = tree.to_string_lossy().into_owned();
    git(repo, &["worktree", "add", "--detach", &tree_arg, commit]);
    let lib = tree.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).expect("lib.rs");
    let text = text
        .replacen(".route(\"/pay\", post(pay))", ".route(\"/pay\", post(always_500))", 1)
        .replacen(
            "async fn healthz() -> &'static str {",
            "async fn always_500() -> StatusCode {\n    StatusCode::INTERNAL_SERVER_ERROR\n}\n\nasync fn healthz() -> &'static str {",
            1,
        );
    std::fs::write(&lib, text).expect("write lib.rs");
    let diff = git(&tree, &["diff"]);
    git(repo, &["worktree", "remove", "--force", &tree_arg]);
    diff
}
