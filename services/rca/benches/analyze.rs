//! `Analyze` latency over gRPC with a 50-service dependency graph and 10,000 captured log lines
//! (a panic among them), collected from a loopback deployer: on the embedded graph, and on the
//! real Neo4j when `SELFHEAL_TEST_NEO4J_URI` (or bolt://127.0.0.1:7687) answers. Prints the
//! median and p90 of each.
//!
//!     cargo bench -p selfheal-rca --bench analyze

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{Rca, TestDeployer, incident, quiet_config, serve_deployer, ts};
use selfheal_proto::v1 as pb;

const SERVICES: usize = 50;
const LOG_LINES: usize = 10_000;
const RUNS: usize = 30;

fn name(n: usize) -> String {
    format!("svc-{n:02}")
}

fn log_lines() -> Vec<String> {
    let mut lines: Vec<String> = (0..LOG_LINES - 3)
        .map(|n| {
            if n % 50 == 0 {
                format!("2026-01-01T00:00:00Z ERROR request {n} failed: upstream returned 503")
            } else {
                format!("2026-01-01T00:00:00Z INFO request {n} handled in 3ms status=200")
            }
        })
        .collect();
    lines.splice(
        LOG_LINES / 2..LOG_LINES / 2,
        [
            "thread 'tokio-runtime-worker' (41) panicked at src/payments.rs:237:44:".to_owned(),
            "called `Option::unwrap()` on a `None` value".to_owned(),
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace"
                .to_owned(),
        ],
    );
    lines
}

async fn measure(label: &str, mut config: selfheal_rca::Config) {
    let lines = Arc::new(log_lines());
    let served = Arc::clone(&lines);
    let deployer = TestDeployer {
        logs: Arc::new(move |service: &str| {
            let lines: Vec<String> = if service == name(0) {
                served.as_ref().clone()
            } else {
                Vec::new()
            };
            Box::new(lines.into_iter())
        }),
        status: Vec::new(),
    };
    let (url, stop) = serve_deployer(deployer).await;
    config.sources.deployer = url;
    let rca = Rca::start(config).await;
    let mut client = rca.client.clone();
    // A tree: every service calls the next two.
    let edges = (0..SERVICES)
        .flat_map(|n| [2 * n + 1, 2 * n + 2].map(|m| (n, m)))
        .filter(|(_, m)| *m < SERVICES)
        .map(|(n, m)| pb::CallEdge {
            caller: name(n),
            callee: name(m),
        })
        .collect();
    client
        .record_topology(pb::RecordTopologyRequest { edges })
        .await
        .expect("topology recorded");
    let t0 = SystemTime::now();
    for n in 0..SERVICES {
        client
            .record_deployment(pb::RecordDeploymentRequest {
                deployment: Some(pb::Deployment {
                    service: name(n),
                    version: format!("v{n}"),
                    commit: format!("{n:040x}"),
                    deployed_at: Some(ts(t0 - Duration::from_secs(60 * (n as u64 + 1)))),
                    repository: String::new(),
                }),
            })
            .await
            .expect("deployment recorded");
    }
    let request = pb::AnalyzeRequest {
        incident: Some(incident("inc-bench", &name(0), t0)),
        ..Default::default()
    };
    let check = rca.analyze(request.clone()).await.expect("analysed");
    let report = check.report.expect("report");
    assert_eq!(report.causes[0].service, name(0));
    let kept = check.evidence.map_or(0, |e| e.logs.len());

    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        rca.analyze(request.clone()).await.expect("analysed");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "analyze/{label}: {SERVICES} services, {LOG_LINES} log lines ({kept} kept), {RUNS} runs: median {:.1} ms, p90 {:.1} ms, min {:.1} ms",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[RUNS * 9 / 10].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
    rca.stop().await;
    stop.cancel();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        measure("embedded", quiet_config()).await;
        let uri = std::env::var("SELFHEAL_TEST_NEO4J_URI")
            .unwrap_or_else(|_| "bolt://127.0.0.1:7687".to_owned());
        let probe = selfheal_rca::graph::Neo4jGraph::connect(
            &uri,
            "neo4j",
            "neo4j",
            Duration::from_secs(2),
        )
        .expect("pool");
        if let Err(error) = probe.wait_ready(Duration::from_secs(5)).await {
            println!("analyze/neo4j: skipped, {error} (bash scripts/backends.sh start neo4j)");
            return;
        }
        let mut config = quiet_config();
        config.graph.backend = selfheal_rca::GraphBackend::Neo4j;
        config.graph.uri = uri;
        config.graph.password = "neo4j".into();
        config.graph.namespace = format!(
            "bench-{}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after the epoch")
                .as_nanos()
        );
        measure("neo4j", config).await;
    });
}
