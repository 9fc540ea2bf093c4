//! The Alertmanager webhook (`POST /webhook/alertmanager`, payload version "4"): firing alerts
//! raise incidents, resolved alerts release them once they stayed resolved for the resolve hold
//! (`webhook.resolve_hold`), so an alert that flaps is one incident that counts its flaps. Alerts
//! share fingerprints (service + signal) with scraped incidents, so the same fault seen both ways
//! is one incident.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::detector::Detector;
use crate::incident::{Detection, Severity, Signal, Source};

/// The path Alertmanager posts to.
pub const PATH: &str = "/webhook/alertmanager";

/// The webhook payload, as documented for Alertmanager's `webhook_config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub fingerprint: String,
}

/// What the webhook did with a payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub firing: usize,
    pub resolved: usize,
    /// Alerts that could not be used, with the reason.
    pub skipped: Vec<String>,
}

/// Parses a webhook body; the error is the reason for a 400.
pub fn parse(body: &[u8]) -> Result<Payload, String> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|error| format!("malformed alertmanager webhook: {error}"))?;
    if payload.version != "4" {
        return Err(format!(
            "unsupported alertmanager webhook version {:?}; expected \"4\"",
            payload.version
        ));
    }
    Ok(payload)
}

/// How alerts become incidents.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The window recorded on an alert's incident.
    pub window: Duration,
    /// How long a resolved alert must stay resolved before its incident is released.
    pub resolve_hold: Duration,
}

/// Applies every alert of `payload` to the detector.
pub fn apply(detector: &Detector, payload: Payload, settings: Settings) -> Outcome {
    let mut outcome = Outcome::default();
    for alert in payload.alerts {
        let name = alert.labels.get("alertname").cloned().unwrap_or_default();
        let Some(service) = alert
            .labels
            .get("service")
            .or_else(|| alert.labels.get("job"))
            .filter(|s| !s.trim().is_empty())
            .cloned()
        else {
            outcome.skipped.push(format!(
                "alert {name:?} has neither a service nor a job label"
            ));
            continue;
        };
        let signal = alert
            .labels
            .get("signal")
            .map_or(Signal::Alert, |s| Signal::from_label(s));
        match alert.status {
            AlertStatus::Firing => {
                let first_bad_at = alert
                    .starts_at
                    .as_deref()
                    .and_then(parse_time)
                    .unwrap_or_else(SystemTime::now);
                let severity = alert
                    .labels
                    .get("severity")
                    .and_then(|s| Severity::from_label(s))
                    .unwrap_or(Severity::Warning);
                let summary = alert
                    .annotations
                    .get("summary")
                    .or_else(|| alert.annotations.get("description"))
                    .cloned()
                    .unwrap_or_else(|| format!("{service}: alert {name} is firing"));
                let mut labels = alert.labels.clone();
                if !alert.fingerprint.is_empty() {
                    labels.insert("alertmanager_fingerprint".into(), alert.fingerprint);
                }
                detector.raise(
                    Source::Alertmanager,
                    Detection {
                        service,
                        signal,
                        severity,
                        observed_value: 0.0,
                        threshold: 0.0,
                        baseline: 0.0,
                        window: settings.window,
                        sample_count: 0,
                        bad_sample_count: 0,
                        first_bad_at,
                        labels,
                        summary,
                    },
                );
                outcome.firing += 1;
            }
            AlertStatus::Resolved => {
                detector.release_after(
                    Source::Alertmanager,
                    &service,
                    signal,
                    settings.resolve_hold,
                );
                outcome.resolved += 1;
            }
        }
    }
    outcome
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    // Alertmanager sends the zero time for unset timestamps.
    (parsed.year() > 1970).then(|| SystemTime::from(parsed))
}

#[derive(Clone)]
struct WebhookState {
    detector: Detector,
    settings: Settings,
}

/// The webhook route, with its body size limit.
pub fn router(detector: Detector, max_body_bytes: usize, settings: Settings) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(WebhookState { detector, settings })
}

async fn receive(State(state): State<WebhookState>, body: Bytes) -> Response {
    let payload = match parse(&body) {
        Ok(payload) => payload,
        Err(reason) => {
            state
                .detector
                .metrics()
                .webhook_alerts
                .with_label_values(&["rejected"])
                .inc();
            tracing::warn!(%reason, "rejected alertmanager webhook");
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": reason })),
            )
                .into_response();
        }
    };
    tracing::debug!(group_key = %payload.group_key, receiver = %payload.receiver, status = ?payload.status, alerts = payload.alerts.len(), "alertmanager webhook");
    let outcome = apply(&state.detector, payload, state.settings);
    let metrics = &state.detector.metrics().webhook_alerts;
    metrics
        .with_label_values(&["firing"])
        .inc_by(outcome.firing as u64);
    metrics
        .with_label_values(&["resolved"])
        .inc_by(outcome.resolved as u64);
    metrics
        .with_label_values(&["skipped"])
        .inc_by(outcome.skipped.len() as u64);
    axum::Json(json!({
        "firing": outcome.firing,
        "resolved": outcome.resolved,
        "skipped": outcome.skipped,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_payload() {
        let body = br#"{
          "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
          "status": "firing", "receiver": "selfheal-detector",
          "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
          "externalURL": "http://127.0.0.1:9093",
          "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "payment-service", "severity": "critical", "signal": "error_rate"},
            "annotations": {"summary": "15% fail"},
            "startsAt": "2026-11-30T05:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "abc123"
          }]
        }"#;
        let payload = parse(body).unwrap();
        assert_eq!(payload.alerts.len(), 1);
        let starts = parse_time(payload.alerts[0].starts_at.as_deref().unwrap()).unwrap();
        assert!(starts > SystemTime::UNIX_EPOCH);
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
    }

    #[test]
    fn malformed_payloads_say_why() {
        let reason = parse(b"{not json").unwrap_err();
        assert!(
            reason.contains("malformed alertmanager webhook"),
            "{reason}"
        );
        let reason = parse(br#"{"version":"4","status":"firing"}"#).unwrap_err();
        assert!(reason.contains("alerts"), "{reason}");
        let reason = parse(br#"{"version":"3","status":"firing","alerts":[]}"#).unwrap_err();
        assert!(reason.contains("version"), "{reason}");
    }
}
