//! A small payment service: the target the selfheal demo breaks and heals.
//!
//! [`app`] builds the whole HTTP router, so tests can drive it in-process and `main` only has to
//! bind a socket. Endpoints:
//!
//! - `POST /pay` takes `{"customer_id": "cust-0042", "amount_cents": 1234}` and answers with a
//!   [`payments::Receipt`]; 400 for a malformed or invalid body, 404 for an unknown customer;
//! - `GET /healthz` answers `ok`;
//! - `GET /metrics` serves Prometheus metrics (see [`metrics`]).
//!
//! A panic inside a handler is turned into a 500 response by tower-http's `CatchPanicLayer`; the
//! default panic hook still prints the panic message and location to stderr.

pub mod customers;
pub mod metrics;
pub mod payments;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use crate::customers::CustomerStore;
use crate::metrics::Metrics;
use crate::payments::{PaymentError, PaymentIds, Receipt};

/// Shared state handed to every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The customer accounts.
    pub customers: Arc<CustomerStore>,
    /// The payment id generator.
    pub ids: Arc<PaymentIds>,
    /// The metric registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State with the seeded customer store and fresh metrics.
    pub fn new() -> Self {
        AppState {
            customers: Arc::new(CustomerStore::seeded()),
            ids: Arc::new(PaymentIds::default()),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

impl Default for AppState {
    fn default() -> Self {
        AppState::new()
    }
}

/// The service's router with fresh state.
pub fn app() -> Router {
    app_with_state(AppState::new())
}

/// The service's router over the given state.
pub fn app_with_state(state: AppState) -> Router {
    Router::new()
        .route("/pay", post(pay))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        // Inner layer: a panicking handler becomes a 500 instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        // Outer layer: counts every answer, including the 500s produced above.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

impl IntoResponse for PaymentError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.to_string(), "code": self.code() });
        (self.status(), Json(body)).into_response()
    }
}

async fn pay(State(state): State<AppState>, body: Bytes) -> Result<Json<Receipt>, PaymentError> {
    let request = payments::parse_request(&body)?;
    payments::process_payment(&state.customers, &state.ids, &request).map(Json)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
