//! The demo's loop against the real servers: leases in Redis, the audit chain in the
//! Elasticsearch API (OpenSearch), the dependency graph in Neo4j, and one trace per saga in
//! Jaeger covering every service the saga called. Start them with `bash scripts/backends.sh start`.

use std::process::Command;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_heals_on_real_servers_with_one_trace_per_saga() {
    let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let work = tempfile::tempdir().unwrap();
    let settings = [
        "orchestrator.lock.backend=redis".to_owned(),
        format!(
            "orchestrator.lock.redis_url={}",
            env_or("SELFHEAL_TEST_REDIS_URL", "redis://127.0.0.1:6379")
        ),
        format!("orchestrator.lock.key_prefix=selfheal-test-{run}:"),
        "audit.store=elasticsearch".to_owned(),
        format!(
            "audit.elasticsearch.url={}",
            env_or("SELFHEAL_TEST_ELASTICSEARCH_URL", "http://127.0.0.1:9200")
        ),
        format!("audit.elasticsearch.index=selfheal-test-demo-{run}"),
        format!(
            "audit.elasticsearch.spool_dir={}",
            work.path().join("spool").display()
        ),
        "rca.graph.backend=neo4j".to_owned(),
        format!(
            "rca.graph.uri={}",
            env_or("SELFHEAL_TEST_NEO4J_URI", "bolt://127.0.0.1:7687")
        ),
        format!("rca.graph.namespace=selfheal-test-demo-{run}"),
    ];
    let service_name = format!("selfheal-test-demo-{run}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    command
        .args(["demo", "--json", "--timeout", "8m", "--work-dir"])
        .arg(work.path().join("demo"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            env_or("SELFHEAL_TEST_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        )
        .env("OTEL_SERVICE_NAME", &service_name);
    for setting in &settings {
        command.args(["--set", setting]);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{error}\nstdout: {}\nstderr: {stderr}\nhint: start the servers with `bash scripts/backends.sh start`",
                String::from_utf8_lossy(&output.stdout)
            )
        });
    assert!(output.status.success(), "{summary:#}\nstderr: {stderr}");
    assert_eq!(summary["status"], "resolved", "{summary:#}");
    assert_eq!(
        summary["audit_chain_ok"], true,
        "the chain in Elasticsearch verifies"
    );
    assert!(
        summary["error_rate_after"].as_f64().unwrap() < 0.01,
        "{summary:#}"
    );
    let saga_id = summary["saga_id"].as_str().unwrap().to_owned();

    // One trace holds the saga and the server side of every service it called.
    let jaeger = env_or("SELFHEAL_TEST_JAEGER_QUERY_URL", "http://127.0.0.1:16686");
    let url = format!("{jaeger}/api/traces");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last;
    loop {
        let tags = serde_json::json!({ "saga_id": saga_id }).to_string();
        let response = http
            .get(&url)
            .query(&[
                ("service", service_name.as_str()),
                ("operation", "saga"),
                ("tags", tags.as_str()),
                ("lookback", "1h"),
                ("limit", "5"),
            ])
            .send()
            .await;
        let body = match response {
            Ok(response) => response.json::<serde_json::Value>().await,
            Err(error) => Err(error),
        };
        match body {
            Ok(body) => match components_in_saga_trace(&body) {
                Ok(components) => {
                    for component in [
                        "rca",
                        "patcher",
                        "safety-gate",
                        "deployer",
                        "audit",
                        "detector",
                    ] {
                        assert!(
                            components.iter().any(|c| c == component),
                            "{component} is missing from the saga's trace: {components:?}"
                        );
                    }
                    break;
                }
                Err(why) => last = why,
            },
            Err(error) => last = error.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "no trace of saga {saga_id} in Jaeger with every service: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `selfheal.component` of every span of the one trace whose root is the saga.
fn components_in_saga_trace(body: &serde_json::Value) -> Result<Vec<String>, String> {
    let traces = body["data"].as_array().ok_or("no data yet")?;
    let [trace] = traces.as_slice() else {
        return Err(format!("{} traces match the saga", traces.len()));
    };
    let spans = trace["spans"].as_array().ok_or("a trace without spans")?;
    let roots = spans
        .iter()
        .filter(|s| s["references"].as_array().is_none_or(Vec::is_empty))
        .count();
    if roots != 1 {
        return Err(format!("{roots} root spans in the saga's trace"));
    }
    let mut components: Vec<String> = spans
        .iter()
        .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
        .filter(|tag| tag["key"] == "selfheal.component")
        .filter_map(|tag| tag["value"].as_str().map(str::to_owned))
        .collect();
    components.sort();
    components.dedup();
    Ok(components)
}
