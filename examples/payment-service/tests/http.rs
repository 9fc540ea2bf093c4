//! End-to-end tests of the HTTP surface, driving the router in-process.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use payment_service::app;

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body is readable");
    (status, body.to_vec())
}

async fn pay(app: Router, body: &str) -> (StatusCode, Value) {
    let request = Request::post("/pay")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (status, body) = send(app, request).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn pays_for_a_customer_with_a_preferred_method() {
    // cust-0003 prefers card.
    let (status, receipt) = pay(app(), r#"{"customer_id":"cust-0003","amount_cents":1234}"#).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["customer_id"], "cust-0003");
    assert_eq!(receipt["amount_cents"], 1234);
    assert_eq!(receipt["currency"], "EUR");
    assert!(receipt["payment_id"].as_str().unwrap().starts_with("pay-"));
    assert!(receipt["method"].is_string());
}

#[tokio::test]
async fn pays_for_a_customer_without_a_preferred_method() {
    // cust-0000 never picked a method: the payment must still go through, on the default one.
    let (status, receipt) = pay(app(), r#"{"customer_id":"cust-0000","amount_cents":1234}"#).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["customer_id"], "cust-0000");
    assert_eq!(receipt["method"], "card");
    assert_eq!(
        receipt["total_cents"],
        1234 + receipt["fee_cents"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn unknown_customer_is_404() {
    let (status, body) = pay(app(), r#"{"customer_id":"cust-4242","amount_cents":100}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "unknown_customer");
}

#[tokio::test]
async fn bad_json_is_400() {
    let (status, body) = pay(app(), "{\"customer_id\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "malformed_body");

    let (status, _) = pay(app(), r#"{"customer_id":"cust-0001"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = pay(app(), r#"{"customer_id":"cust-0001","amount_cents":0}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "non_positive_amount");
}

#[tokio::test]
async fn healthz_is_ok() {
    let (status, body) = send(app(), Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"ok");
}

/// Parses Prometheus text format into `(series, value)` pairs, failing on malformed lines.
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value = value.parse::<f64>().expect("sample value is a number");
            (series.to_owned(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests() {
    let app = app();
    let (status, _) = pay(
        app.clone(),
        r#"{"customer_id":"cust-0004","amount_cents":500}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = pay(
        app.clone(),
        r#"{"customer_id":"nobody","amount_cents":500}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = send(app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).expect("metrics are utf-8");
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("missing {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"http_requests_total{method="POST",route="/pay",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"http_requests_total{method="POST",route="/pay",status="404"}"#),
        1.0
    );
    assert_eq!(
        value(r#"http_request_duration_seconds_count{route="/pay"}"#),
        2.0
    );
    if cfg!(target_os = "linux") {
        assert!(value("process_resident_memory_bytes") > 0.0);
    }
}
