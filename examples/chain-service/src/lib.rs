//! One link of a call chain such as `checkout → payment → customer`.
//!
//! Every link runs the same code; its [`Config`] says who it is and whether it calls a next link.
//! [`app`] builds the whole HTTP router, so tests can drive it in-process. Endpoints:
//!
//! - `POST /work` takes `{"customer_id": "cust-0042"}`. A link with a downstream forwards the body
//!   to the downstream's `POST /work` and answers 200 with the downstream's answer nested, 502
//!   when the downstream answers 5xx or cannot be reached in time, and the downstream's status for
//!   a 4xx. The leaf (no downstream) answers itself from its customer profiles (see
//!   [`profiles`]): 200 with the profile, 404 for an unknown customer. A malformed body is 400
//!   either way, before any call;
//! - `GET /healthz` answers `ok`;
//! - `GET /metrics` serves Prometheus metrics (see [`metrics`]).
//!
//! Every answered request is logged to stderr as one line. A panic inside a handler is turned
//! into a 500 response by tower-http's `CatchPanicLayer`; the default panic hook still prints the
//! panic message and location to stderr.

pub mod downstream;
pub mod metrics;
pub mod profiles;

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tower_http::catch_panic::CatchPanicLayer;

use crate::downstream::Downstream;
use crate::metrics::Metrics;
use crate::profiles::{ProfileStore, WorkError};

/// Who a link is and what it calls.
#[derive(Debug, Clone)]
pub struct Config {
    /// The link's name in answers and log lines, e.g. `checkout`.
    pub service: String,
    /// The next link; `None` for the leaf.
    pub downstream: Option<Downstream>,
}

/// Shared state handed to every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Who this link is and what it calls.
    pub config: Arc<Config>,
    /// The customer profiles the leaf answers from.
    pub profiles: Arc<ProfileStore>,
    /// The metric registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for `config` with the seeded profiles and fresh metrics.
    pub fn new(config: Config) -> Self {
        AppState {
            config: Arc::new(config),
            profiles: Arc::new(ProfileStore::seeded()),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// The link's router for `config`, with fresh state.
pub fn app(config: Config) -> Router {
    app_with_state(AppState::new(config))
}

/// The link's router over the given state.
pub fn app_with_state(state: AppState) -> Router {
    Router::new()
        .route("/work", post(work))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        // Inner layer: a panicking handler becomes a 500 instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        // Outer layers: count and log every answer, including the 500s produced above.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_request,
        ))
        .with_state(state)
}

/// An error answer naming the link that gives it.
fn error_answer(state: &AppState, status: StatusCode, code: &str, error: String) -> Response {
    let body = json!({ "service": state.config.service, "code": code, "error": error });
    (status, Json(body)).into_response()
}

fn work_error(state: &AppState, error: &WorkError) -> Response {
    error_answer(state, error.status(), error.code(), error.to_string())
}

async fn work(State(state): State<AppState>, body: Bytes) -> Response {
    let request = match profiles::parse_request(&body) {
        Ok(request) => request,
        Err(e) => return work_error(&state, &e),
    };
    let Some(downstream) = &state.config.downstream else {
        return match profiles::lookup(&state.profiles, &request.customer_id) {
            Ok(profile) => Json(json!({
                "service": state.config.service,
                "customer_id": request.customer_id,
                "profile": profile,
            }))
            .into_response(),
            Err(e) => work_error(&state, &e),
        };
    };

    match downstream.post("/work", &body).await {
        Ok(answer) => {
            let nested = serde_json::from_slice::<Value>(&answer.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&answer.body).into_owned())
            });
            if answer.status.is_server_error() {
                error_answer(
                    &state,
                    StatusCode::BAD_GATEWAY,
                    "downstream_failed",
                    format!("{} answered {}", downstream.url(), answer.status),
                )
            } else if answer.status.is_success() {
                Json(json!({
                    "service": state.config.service,
                    "customer_id": request.customer_id,
                    "downstream": nested,
                }))
                .into_response()
            } else {
                let body = json!({
                    "service": state.config.service,
                    "code": "downstream_refused",
                    "error": format!("{} answered {}", downstream.url(), answer.status),
                    "downstream": nested,
                });
                (answer.status, Json(body)).into_response()
            }
        }
        Err(e) => error_answer(
            &state,
            StatusCode::BAD_GATEWAY,
            "downstream_unreachable",
            format!("calling {}: {e}", downstream.url()),
        ),
    }
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

/// Middleware that logs one line per answered request to stderr:
/// `<service> <method> <path> <status> <milliseconds>ms`.
async fn log_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    eprintln!(
        "{} {method} {path} {} {:.1}ms",
        state.config.service,
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}
