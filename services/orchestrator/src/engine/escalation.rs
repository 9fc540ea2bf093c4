//! Escalation reports: a JSON document POSTed to the configured webhook, with retries and a
//! deadline per attempt. Delivery failures are returned to the caller, which records them.

use std::time::Duration;

use serde_json::Value;

use crate::config::EscalationConfig;

/// POSTs `report` to the webhook; `Ok(None)` when no webhook is configured, `Ok(Some(status))`
/// when delivered.
pub(crate) async fn post(
    http: &reqwest::Client,
    config: &EscalationConfig,
    report: &Value,
) -> Result<Option<u16>, String> {
    if config.webhook_url.is_empty() {
        return Ok(None);
    }
    let mut last = String::new();
    for attempt in 1..=config.attempts.max(1) {
        let sent = http
            .post(&config.webhook_url)
            .timeout(config.timeout)
            .json(report)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                return Ok(Some(response.status().as_u16()));
            }
            Ok(response) => last = format!("webhook answered {}", response.status()),
            Err(error) => last = format!("webhook unreachable: {error}"),
        }
        tracing::warn!(attempt, error = %last, url = %config.webhook_url, "escalation report not delivered");
        if attempt < config.attempts {
            let ceiling = 200.0 * f64::from(1u32 << attempt.min(6));
            tokio::time::sleep(Duration::from_millis((ceiling * fastrand::f64()) as u64)).await;
        }
    }
    Err(format!(
        "not delivered to {} after {} attempts: {last}",
        config.webhook_url, config.attempts
    ))
}
