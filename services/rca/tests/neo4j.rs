//! The rca service's own Neo4j client against the real server (`bash scripts/backends.sh start
//! neo4j`), and against an address where nothing listens.

use std::time::Duration;

use selfheal_rca::graph::{GraphError, Neo4jGraph};

fn neo4j_uri() -> String {
    std::env::var("SELFHEAL_TEST_NEO4J_URI").unwrap_or_else(|_| "bolt://127.0.0.1:7687".to_owned())
}

#[tokio::test]
async fn reaches_the_real_neo4j_over_bolt() {
    let graph =
        Neo4jGraph::connect(&neo4j_uri(), "neo4j", "neo4j", Duration::from_secs(10)).unwrap();
    if let Err(error) = graph.wait_ready(Duration::from_secs(30)).await {
        panic!("{error}\nhint: start the test servers with `bash scripts/backends.sh start neo4j`");
    }
    graph.ping().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_within_the_deadline() {
    let graph = Neo4jGraph::connect(
        "bolt://127.0.0.1:1",
        "neo4j",
        "neo4j",
        Duration::from_millis(500),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let error = graph.wait_ready(Duration::from_secs(2)).await.unwrap_err();
    let GraphError::Unavailable { uri, .. } = &error;
    assert_eq!(uri, "bolt://127.0.0.1:1");
    assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up near its deadline, not never"
    );
}
