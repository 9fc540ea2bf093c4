//! `Analyze` over gRPC: ranking a cascade from inline evidence, degrading when Neo4j goes away,
//! bounded log collection from a 100 MB stream, and refusing bad input.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Rca, TestDeployer, incident, quiet_config, serve_deployer, ts};
use selfheal_proto::v1 as pb;
use selfheal_service::CuttableLink;

fn series(service: &str, name: &str, t0: SystemTime, before: f64, after: f64) -> pb::Series {
    let points = (-10i64..10)
        .map(|i| {
            let at = if i < 0 {
                t0 - Duration::from_secs(i.unsigned_abs() * 5)
            } else {
                t0 + Duration::from_secs(i.unsigned_abs() * 5)
            };
            pb::SeriesPoint {
                at: Some(ts(at)),
                value: if i < 0 { before } else { after },
            }
        })
        .collect();
    pb::Series {
        service: service.into(),
        name: name.into(),
        labels: Default::default(),
        points,
    }
}

fn log(service: &str, text: &str) -> pb::LogLine {
    pb::LogLine {
        service: service.into(),
        at: None,
        stream: "stderr".into(),
        text: text.into(),
    }
}

const CUSTOMER_PANIC: &[&str] = &[
    "thread 'tokio-runtime-worker' panicked at src/customers.rs:88:14:",
    "called `Result::unwrap()` on an `Err` value: PoolTimedOut",
    "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
];

fn cascade_evidence(t0: SystemTime) -> pb::Evidence {
    let edge = |a: &str, b: &str| pb::CallEdge {
        caller: a.into(),
        callee: b.into(),
    };
    let mut logs = Vec::new();
    for n in 0..20 {
        logs.push(log(
            "checkout",
            &format!("ERROR order {n}: payment returned 502"),
        ));
        logs.push(log(
            "payment-service",
            &format!("ERROR payment {n}: customer lookup returned 500"),
        ));
        logs.push(log(
            "customer",
            &format!("ERROR lookup {n} failed: pool timed out"),
        ));
    }
    logs.extend(CUSTOMER_PANIC.iter().map(|t| log("customer", t)));
    pb::Evidence {
        series: vec![
            series("checkout", "error_rate", t0, 0.0, 0.31),
            series("payment-service", "error_rate", t0, 0.0, 0.33),
            series("customer", "error_rate", t0, 0.002, 0.28),
            series("checkout", "latency_p99", t0, 0.05, 0.06),
        ],
        logs,
        topology: vec![
            edge("checkout", "payment-service"),
            edge("payment-service", "customer"),
            edge("checkout", "catalog"),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failing_dependency_ranks_above_the_callers_that_show_its_errors() {
    let rca = Rca::start(quiet_config()).await;
    let t0 = SystemTime::now() - Duration::from_secs(60);
    let response = rca
        .analyze(pb::AnalyzeRequest {
            incident: Some(incident("inc-cascade", "checkout", t0)),
            evidence: Some(cascade_evidence(t0)),
            ..Default::default()
        })
        .await
        .expect("analysed");
    let report = response.report.expect("report");
    let order: Vec<&str> = report.causes.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(
        order,
        ["customer", "payment-service", "checkout"],
        "{report:#?}"
    );
    assert!(report.causes[0].score > report.causes[1].score);
    assert!(report.causes[1].score > report.causes[2].score);
    assert_eq!(report.causes[0].kind(), pb::CauseKind::CodeDefect);
    assert_eq!(report.causes[1].kind(), pb::CauseKind::Dependency);
    assert_eq!(report.causes[2].kind(), pb::CauseKind::Dependency);
    assert!(report.causes[0].trace_text.contains("customers.rs:88"));
    assert_eq!(
        report.causes[0].failure_message,
        "called `Result::unwrap()` on an `Err` value: PoolTimedOut"
    );
    assert!(
        report.causes[1].explanation.contains("customer"),
        "{}",
        report.causes[1].explanation
    );
    // No repository to localise in: a real cause, but not one to patch blindly.
    assert!(report.confidence < 0.8, "{}", report.confidence);
    assert!(
        report
            .gaps
            .iter()
            .any(|g| g.contains("no repository known for customer")),
        "{:#?}",
        report.gaps
    );
    let decision = report.decision.expect("decision");
    assert_eq!(decision.kind(), pb::DecisionKind::RootCause);
    assert_eq!(decision.factors.len(), 4);
    assert_eq!(decision.alternatives.len(), 2);
    assert!(
        decision.alternatives[0]
            .why_not
            .contains("explained by customer")
    );
    assert!(decision.reasoning.contains("Confidence"));
    // Replay is exact: the same evidence gives the same ranking, again.
    let evidence = response.evidence.expect("evidence used");
    assert_eq!(evidence.topology.len(), 3);
    rca.stop().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_that_say_what_is_wrong() {
    let mut config = quiet_config();
    config.analysis.max_request_bytes = 64 * 1024;
    let rca = Rca::start(config).await;
    let t0 = SystemTime::now();
    let good = pb::AnalyzeRequest {
        incident: Some(incident("inc-bad", "payment-service", t0)),
        evidence: Some(pb::Evidence::default()),
        ..Default::default()
    };
    let expect_invalid = |result: Result<pb::AnalyzeResponse, tonic::Status>, says: &str| {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(says),
            "{:?} lacks {says:?}",
            status.message()
        );
    };

    expect_invalid(
        rca.analyze(pb::AnalyzeRequest::default()).await,
        "missing field incident",
    );
    let mut no_service = good.clone();
    no_service.incident.as_mut().unwrap().service.clear();
    expect_invalid(rca.analyze(no_service).await, "incident.service");

    let mut bad_time = good.clone();
    bad_time.incident.as_mut().unwrap().first_bad_at = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: -5,
    });
    expect_invalid(rca.analyze(bad_time).await, "incident.first_bad_at");

    let mut option = good.clone();
    option.source = Some(pb::SourceRef {
        repository: "/tmp/repo".into(),
        commit: "--upload-pack=touch /tmp/owned".into(),
    });
    expect_invalid(rca.analyze(option).await, "source.commit");

    let mut odd_name = good.clone();
    odd_name
        .evidence
        .as_mut()
        .unwrap()
        .logs
        .push(log("pay\nment", "x"));
    expect_invalid(rca.analyze(odd_name).await, "evidence.logs[0].service");

    let mut oversized = good.clone();
    oversized.evidence.as_mut().unwrap().logs = (0..100)
        .map(|_| log("payment-service", &"x".repeat(1000)))
        .collect();
    expect_invalid(rca.analyze(oversized).await, "more than the 65536 allowed");

    rca.analyze(good)
        .await
        .expect("a well-formed request is analysed");
    rca.stop().await;
}

#[tokio::test]
async fn hostile_paths_in_traces_are_never_read_through_analyze() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = selfheal_scenario::examples_dir().join("payment-service");
    let scenario = selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario");
    let rca = Rca::start(quiet_config()).await;
    let t0 = SystemTime::now();
    let evidence = pb::Evidence {
        logs: [
            "thread 'main' (1) panicked at ../../../../etc/passwd:1:1:",
            "boom",
            "thread 'main' (1) panicked at /etc/shadow:1:1:",
            "boom",
        ]
        .iter()
        .map(|t| log("payment-service", t))
        .collect(),
        ..Default::default()
    };
    let report = rca
        .analyze(pb::AnalyzeRequest {
            incident: Some(incident("inc-hostile", "payment-service", t0)),
            evidence: Some(evidence),
            source: Some(pb::SourceRef {
                repository: scenario.repo.to_string_lossy().into_owned(),
                commit: scenario.bad_commit.clone(),
            }),
            last_good_commit: scenario.good_commit.clone(),
        })
        .await
        .expect("analysed despite the paths")
        .report
        .expect("report");
    let top = &report.causes[0];
    assert_eq!(top.service, "payment-service");
    assert!(top.location.is_none(), "{top:#?}");
    assert!(top.culprit.is_none());
    let gap = report
        .gaps
        .iter()
        .find(|g| g.contains("not localised"))
        .expect("the failed localisation is a gap");
    assert!(
        gap.contains("climbs out") || gap.contains("no file of the repository"),
        "{gap}"
    );
    assert!(!top.trace_text.is_empty());
    rca.stop().await;
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos();
    format!("{prefix}-{nanos}")
}

#[tokio::test]
async fn losing_neo4j_mid_run_lowers_confidence_and_says_why() {
    let neo4j: std::net::SocketAddr = std::env::var("SELFHEAL_TEST_NEO4J_URI")
        .unwrap_or_else(|_| "bolt://127.0.0.1:7687".to_owned())
        .trim_start_matches("bolt://")
        .parse()
        .expect("neo4j address");
    let proxy = CuttableLink::start(neo4j.to_string())
        .await
        .expect("a loopback port for the link");
    let service = unique("pay");
    let panic_service = service.clone();
    let deployer = TestDeployer {
        logs: Arc::new(move |asked: &str| {
            let lines: Vec<String> = if asked == panic_service {
                let mut lines: Vec<String> =
                    (0..50).map(|n| format!("INFO request {n} ok")).collect();
                lines.extend(CUSTOMER_PANIC.iter().map(|s| (*s).to_owned()));
                lines
            } else {
                Vec::new()
            };
            Box::new(lines.into_iter())
        }),
        status: Vec::new(),
    };
    let (deployer_url, stop_deployer) = serve_deployer(deployer).await;
    let mut config = quiet_config();
    config.sources.deployer = deployer_url;
    config.graph.backend = selfheal_rca::GraphBackend::Neo4j;
    config.graph.uri = format!("bolt://{}", proxy.address());
    config.graph.password = "neo4j".into();
    let namespace = unique("rca-cut");
    config.graph.namespace = namespace.clone();
    config.graph.query_timeout = Duration::from_secs(3);
    let rca = Rca::start(config).await;
    let mut client = rca.client.clone();

    let t0 = SystemTime::now() - Duration::from_secs(30);
    client
        .record_topology(pb::RecordTopologyRequest {
            edges: vec![pb::CallEdge {
                caller: "web".into(),
                callee: service.clone(),
            }],
        })
        .await
        .expect("topology recorded through the proxy");
    client
        .record_deployment(pb::RecordDeploymentRequest {
            deployment: Some(pb::Deployment {
                service: service.clone(),
                version: "v7".into(),
                commit: "7777777777777777777777777777777777777777".into(),
                deployed_at: Some(ts(t0 - Duration::from_secs(120))),
                repository: String::new(),
            }),
        })
        .await
        .expect("deployment recorded");
    let request = pb::AnalyzeRequest {
        incident: Some(incident(&unique("inc"), &service, t0)),
        ..Default::default()
    };

    let with_graph = rca.analyze(request.clone()).await.expect("analysed");
    let report = with_graph.report.clone().expect("report");
    assert_eq!(report.causes[0].service, service);
    assert!(
        report.causes[0]
            .deployment
            .as_ref()
            .is_some_and(|d| d.version == "v7"),
        "the graph's deployment is evidence: {report:#?}"
    );
    assert!(
        !report.gaps.iter().any(|g| g.contains("graph store")),
        "{:#?}",
        report.gaps
    );
    let with_graph_confidence = report.confidence;

    // The same evidence, replayed: the same answer, without asking any source.
    let replayed = rca
        .analyze(pb::AnalyzeRequest {
            evidence: with_graph.evidence.clone(),
            ..request.clone()
        })
        .await
        .expect("replayed")
        .report
        .expect("report");
    assert_eq!(replayed.causes[0].service, service);
    assert!((replayed.confidence - with_graph_confidence).abs() < 1e-9);

    proxy.cut();
    let started = std::time::Instant::now();
    let without = rca
        .analyze(request)
        .await
        .expect("analysis completes without the graph")
        .report
        .expect("report");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        without.causes[0].service, service,
        "the logs still point at it"
    );
    let gap = without
        .gaps
        .iter()
        .find(|g| g.starts_with("graph store unreachable"))
        .unwrap_or_else(|| panic!("no graph gap in {:#?}", without.gaps));
    assert!(
        gap.contains(&proxy.address().to_string()),
        "names the server: {gap}"
    );
    assert!(
        without.confidence < with_graph_confidence,
        "{} !< {with_graph_confidence}",
        without.confidence
    );
    let decision = without.decision.expect("decision");
    assert!(decision.reasoning.contains("graph store unreachable"));
    rca.stop().await;
    stop_deployer.cancel();
    let direct = selfheal_rca::graph::Neo4jGraph::open(&selfheal_rca::graph::Neo4jSettings {
        uri: format!("bolt://{neo4j}"),
        user: "neo4j".into(),
        password: "neo4j".into(),
        namespace,
        query_timeout: Duration::from_secs(10),
        max_connections: 1,
    })
    .expect("pool");
    direct.clear_namespace().await.expect("test data removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_log_is_read_within_a_bounded_memory_and_its_panics_are_found() {
    const LINES: usize = 1_000_000;
    const MAX_BYTES: usize = 256 * 1024;
    let deployer = TestDeployer {
        logs: Arc::new(|service: &str| {
            let service = service.to_owned();
            Box::new((0..LINES).flat_map(move |n| {
                let mut lines = vec![format!(
                    "2026-01-01T00:00:00Z INFO {service} request {n:07} handled in 3ms status=200 path=/pay padding={}",
                    "x".repeat(22)
                )];
                if n == LINES / 2 {
                    lines.extend(CUSTOMER_PANIC.iter().map(|s| (*s).to_owned()));
                }
                if n == LINES - 10 {
                    lines.push("thread 'tokio-runtime-worker' panicked at src/payments.rs:237:44:".to_owned());
                    lines.push("called `Option::unwrap()` on a `None` value".to_owned());
                }
                lines
            }))
        }),
        status: Vec::new(),
    };
    let (deployer_url, stop_deployer) = serve_deployer(deployer).await;
    let mut config = quiet_config();
    config.sources.deployer = deployer_url;
    config.sources.timeout = Duration::from_secs(240);
    config.sources.max_log_bytes = MAX_BYTES;
    config.sources.max_log_lines = 2_000;
    let rca = Rca::start(config).await;
    let response = rca
        .analyze(pb::AnalyzeRequest {
            incident: Some(incident("inc-big", "payment-service", SystemTime::now())),
            ..Default::default()
        })
        .await
        .expect("analysed");
    let evidence = response.evidence.expect("evidence");
    let stats = &evidence.log_stats[0];
    assert!(
        stats.bytes_seen >= 100_000_000,
        "read {} bytes",
        stats.bytes_seen
    );
    assert_eq!(stats.lines_seen, LINES as u64 + 5);
    assert_eq!(stats.stack_traces, 2);
    let kept: usize = evidence.logs.iter().map(|l| l.text.len()).sum();
    assert!(kept <= MAX_BYTES, "kept {kept} bytes");
    assert_eq!(stats.bytes_kept as usize, kept);
    let texts: Vec<&str> = evidence.logs.iter().map(|l| l.text.as_str()).collect();
    for line in CUSTOMER_PANIC {
        assert!(texts.contains(line), "the middle panic is kept");
    }
    assert!(
        texts.contains(&"called `Option::unwrap()` on a `None` value"),
        "the last panic is kept"
    );
    let report = response.report.expect("report");
    assert_eq!(report.causes[0].service, "payment-service");
    assert!(report.causes[0].trace_text.contains("panicked at"));
    rca.stop().await;
    stop_deployer.cancel();
}

#[tokio::test]
async fn logs_in_an_elasticsearch_index_are_evidence() {
    let url = std::env::var("SELFHEAL_TEST_ELASTICSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".to_owned());
    let index = unique("rca-logs");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let t0 = SystemTime::now() - Duration::from_secs(30);
    let at = |back: u64| {
        (t0 - Duration::from_secs(back))
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis() as u64
    };
    let mut bulk = String::new();
    let mut docs = vec![
        ("inventory", "INFO reserved 3 items".to_owned(), 20),
        ("checkout", "INFO order placed".to_owned(), 19),
    ];
    docs.extend(
        CUSTOMER_PANIC
            .iter()
            .enumerate()
            .map(|(i, line)| ("inventory", (*line).to_owned(), 10 - i as u64)),
    );
    for (service, message, back) in &docs {
        bulk.push_str("{\"index\":{}}\n");
        bulk.push_str(
            &serde_json::json!({"service": service, "message": message, "@timestamp": at(*back)})
                .to_string(),
        );
        bulk.push('\n');
    }
    let created = http
        .put(format!("{url}/{index}"))
        .json(&serde_json::json!({"mappings": {"properties": {
            "@timestamp": {"type": "date", "format": "epoch_millis||strict_date_optional_time"},
            "service": {"type": "keyword"},
            "message": {"type": "text"}
        }}}))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nhint: start the test servers with `bash scripts/backends.sh start opensearch`"
            )
        });
    assert!(created.status().is_success(), "{:?}", created.text().await);
    let indexed = http
        .post(format!("{url}/{index}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .expect("bulk indexed");
    assert!(indexed.status().is_success(), "{:?}", indexed.text().await);

    let mut config = quiet_config();
    config.sources.elasticsearch_url = url.clone();
    config.sources.elasticsearch_index = index.clone();
    let rca = Rca::start(config).await;
    let response = rca
        .analyze(pb::AnalyzeRequest {
            incident: Some(incident("inc-es", "inventory", t0)),
            ..Default::default()
        })
        .await
        .expect("analysed");
    let evidence = response.evidence.expect("evidence");
    let texts: Vec<&str> = evidence.logs.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts.len(), 4, "only the incident's service: {texts:#?}");
    assert_eq!(texts[0], "INFO reserved 3 items", "oldest first");
    assert!(
        evidence
            .logs
            .iter()
            .all(|l| l.at.is_some() && l.service == "inventory")
    );
    assert!(
        !evidence.gaps.iter().any(|g| g.contains("log index")),
        "{:#?}",
        evidence.gaps
    );
    let report = response.report.expect("report");
    assert_eq!(report.causes[0].service, "inventory");
    assert!(report.causes[0].trace_text.contains("customers.rs:88"));
    rca.stop().await;
    let _ = http.delete(format!("{url}/{index}")).send().await;
}
