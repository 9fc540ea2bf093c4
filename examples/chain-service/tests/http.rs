//! End-to-end tests of the HTTP surface: one link in-process, and real chains over TCP.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::ServiceExt;

use chain_service::downstream::Downstream;
use chain_service::{Config, app};

const TIMEOUT: Duration = Duration::from_secs(5);

fn leaf(name: &str) -> Router {
    app(Config {
        service: name.to_owned(),
        downstream: None,
    })
}

fn caller(name: &str, downstream: &str) -> Router {
    app(Config {
        service: name.to_owned(),
        downstream: Some(Downstream::parse(downstream, TIMEOUT).unwrap()),
    })
}

/// Serves `router` on a free local port and returns its base URL.
async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body is readable");
    (status, body.to_vec())
}

async fn work(app: Router, body: &str) -> (StatusCode, Value) {
    let request = Request::post("/work")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (status, body) = send(app, request).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn the_leaf_answers_from_its_profiles() {
    let (status, body) = work(leaf("customer"), r#"{"customer_id":"cust-0003"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], "customer");
    assert_eq!(body["customer_id"], "cust-0003");
    assert_eq!(body["profile"]["name"], "Customer 0003");

    let (status, body) = work(leaf("customer"), r#"{"customer_id":"cust-4242"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "unknown_customer");

    let (status, body) = work(leaf("customer"), r#"{"customer":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "malformed_body");
}

#[tokio::test]
async fn a_chain_nests_every_answer() {
    let customer = serve(leaf("customer")).await;
    let payment = serve(caller("payment", &customer)).await;
    let (status, body) = work(
        caller("checkout", &payment),
        r#"{"customer_id":"cust-0004"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"], "checkout");
    assert_eq!(body["downstream"]["service"], "payment");
    assert_eq!(body["downstream"]["downstream"]["service"], "customer");
    assert_eq!(
        body["downstream"]["downstream"]["profile"]["customer_id"],
        "cust-0004"
    );
}

#[tokio::test]
async fn downstream_client_errors_are_passed_on() {
    let customer = serve(leaf("customer")).await;
    let (status, body) = work(
        caller("payment", &customer),
        r#"{"customer_id":"cust-4242"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "downstream_refused");
    assert_eq!(body["downstream"]["code"], "unknown_customer");
}

#[tokio::test]
async fn downstream_server_errors_are_502() {
    let failing = Router::new().route(
        "/work",
        post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    );
    let failing = serve(failing).await;
    let (status, body) = work(
        caller("payment", &failing),
        r#"{"customer_id":"cust-0003"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["service"], "payment");
    assert_eq!(body["code"], "downstream_failed");
    assert!(body["error"].as_str().unwrap().contains("500"), "{body}");
}

#[tokio::test]
async fn an_unreachable_downstream_is_502() {
    // Bind and drop a listener: nothing listens on that port any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (status, body) = work(
        caller("checkout", &format!("http://{addr}")),
        r#"{"customer_id":"cust-0003"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["code"], "downstream_unreachable");
}

#[tokio::test]
async fn a_slow_downstream_times_out_as_502() {
    let slow = Router::new().route(
        "/work",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let slow = serve(slow).await;
    let impatient = app(Config {
        service: "checkout".to_owned(),
        downstream: Some(Downstream::parse(&slow, Duration::from_millis(100)).unwrap()),
    });
    let (status, body) = work(impatient, r#"{"customer_id":"cust-0003"}"#).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no answer within 100 ms"),
        "{body}"
    );
}

#[tokio::test]
async fn healthz_is_ok() {
    let (status, body) = send(
        leaf("customer"),
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok");
}

#[tokio::test]
async fn metrics_count_requests() {
    let app = leaf("customer");
    let (status, _) = work(app.clone(), r#"{"customer_id":"cust-0005"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).expect("metrics are utf-8");
    for series in [
        r#"http_requests_total{method="POST",route="/work",status="200"} 1"#,
        r#"http_request_duration_seconds_count{route="/work"} 1"#,
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    if cfg!(target_os = "linux") {
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
