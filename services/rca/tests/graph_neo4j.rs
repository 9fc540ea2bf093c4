//! The graph-store conformance suite against the real Neo4j (`bash scripts/backends.sh start
//! neo4j`), isolated by a namespace of its own; and an address where nothing listens.

use std::time::Duration;

use selfheal_rca::graph::{GraphError, GraphStore, Neo4jGraph, Neo4jSettings, conformance};

fn neo4j_uri() -> String {
    std::env::var("SELFHEAL_TEST_NEO4J_URI").unwrap_or_else(|_| "bolt://127.0.0.1:7687".to_owned())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn settings(uri: &str, namespace: &str, timeout: Duration) -> Neo4jSettings {
    Neo4jSettings {
        uri: uri.to_owned(),
        user: "neo4j".to_owned(),
        password: "neo4j".to_owned(),
        namespace: namespace.to_owned(),
        query_timeout: timeout,
        max_connections: 4,
    }
}

async fn ready(graph: &Neo4jGraph) {
    if let Err(error) = graph.wait_ready(Duration::from_secs(30)).await {
        panic!("{error}\nhint: start the test servers with `bash scripts/backends.sh start neo4j`");
    }
}

#[tokio::test]
async fn neo4j_graph_passes_the_graph_store_conformance_suite() {
    let namespace = unique("conformance");
    let graph = Neo4jGraph::open(&settings(&neo4j_uri(), &namespace, Duration::from_secs(10)))
        .expect("pool");
    ready(&graph).await;
    conformance::run_all(&graph, &namespace).await;
    graph.clear_namespace().await.expect("cleared");
    assert!(graph.topology().await.expect("topology").is_empty());
}

#[tokio::test]
async fn namespaces_do_not_see_each_other() {
    let (first, second) = (unique("ns-a"), unique("ns-b"));
    let a = Neo4jGraph::open(&settings(&neo4j_uri(), &first, Duration::from_secs(10))).expect("a");
    let b = Neo4jGraph::open(&settings(&neo4j_uri(), &second, Duration::from_secs(10))).expect("b");
    ready(&a).await;
    a.record_calls(&[selfheal_rca::graph::CallEdge::new("x", "y")])
        .await
        .expect("recorded");
    assert_eq!(a.callees("x").await.expect("callees"), vec!["y".to_owned()]);
    assert!(b.callees("x").await.expect("callees").is_empty());
    assert!(b.topology().await.expect("topology").is_empty());
    a.clear_namespace().await.expect("cleared");
}

#[tokio::test]
async fn reaches_the_real_neo4j_over_bolt() {
    let graph =
        Neo4jGraph::connect(&neo4j_uri(), "neo4j", "neo4j", Duration::from_secs(10)).unwrap();
    ready(&graph).await;
    graph.ping().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_within_the_deadline() {
    let graph = Neo4jGraph::open(&settings(
        "bolt://127.0.0.1:1",
        "nowhere",
        Duration::from_millis(500),
    ))
    .unwrap();
    let started = std::time::Instant::now();
    let error = graph.wait_ready(Duration::from_secs(2)).await.unwrap_err();
    let GraphError::Unavailable { uri, .. } = &error else {
        panic!("not an availability error: {error}");
    };
    assert_eq!(uri, "bolt://127.0.0.1:1");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    let error = graph.topology().await.unwrap_err();
    assert!(error.to_string().contains("bolt://127.0.0.1:1"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up near its deadline, not never"
    );
}
