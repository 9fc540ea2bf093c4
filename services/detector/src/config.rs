//! Configuration of the detector service: where it listens, what it scrapes, how signals are
//! judged, and where incidents are reported.

use std::collections::BTreeMap;
use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics, webhook) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50052;

/// Everything the detector service reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub scrape: ScrapeConfig,
    pub detection: DetectionConfig,
    pub orchestrator: OrchestratorConfig,
    pub webhook: WebhookConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            scrape: ScrapeConfig::default(),
            detection: DetectionConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            webhook: WebhookConfig::default(),
        }
    }
}

/// How and what the detector scrapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrapeConfig {
    /// Time between two scrapes of one target.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one scrape may take, connection and body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest `/metrics` body accepted; larger ones fail the scrape.
    pub max_body_bytes: usize,
    /// Targets watched from start-up; more can be added over gRPC.
    pub targets: Vec<TargetConfig>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            max_body_bytes: 4 * 1024 * 1024,
            targets: Vec::new(),
        }
    }
}

/// One `/metrics` endpoint to watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetConfig {
    pub service: String,
    /// `host:port` (scraped at `/metrics`) or a full `http(s)://` URL.
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// How scraped samples become signals and signals become incidents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectionConfig {
    /// The sliding window every signal is computed over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The (longer) window memory growth is judged over; at least `window`.
    #[serde(with = "humantime_serde")]
    pub memory_window: Duration,
    /// Fewer requests than this in the window give no error-rate or latency value.
    pub min_requests: u64,
    /// Evaluations used to learn a service's own baseline before relative rules may fire.
    pub baseline_warmup: u32,
    /// How long evaluated points are kept for `QuerySeries`.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    /// Resolved incidents kept for listing; older ones are forgotten.
    pub resolved_kept: usize,
    pub error_rate: RuleConfig,
    pub latency_p99: RuleConfig,
    pub memory_growth: RuleConfig,
    pub restarts: RuleConfig,
    pub target_down: RuleConfig,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            memory_window: Duration::from_secs(300),
            min_requests: 20,
            baseline_warmup: 5,
            history: Duration::from_secs(3600),
            resolved_kept: 1000,
            error_rate: RuleConfig::absolute(0.05, 0.025, 2, 3),
            latency_p99: RuleConfig {
                mode: ThresholdMode::Baseline,
                open_above: 3.0,
                close_below: 1.5,
                floor: 0.05,
                ..RuleConfig::absolute(0.0, 0.0, 3, 3)
            },
            // Bytes per second of resident-memory growth, sustained over the window.
            memory_growth: RuleConfig::absolute(1024.0 * 1024.0, 256.0 * 1024.0, 3, 3),
            // Restarts within the window: one restart is noted, more than one is a crash loop.
            restarts: RuleConfig::absolute(1.0, 0.5, 1, 3),
            // 1 while the target cannot be scraped, 0 when it can.
            target_down: RuleConfig::absolute(0.5, 0.5, 3, 1),
        }
    }
}

/// Whether a rule's thresholds are absolute values or multiples of the service's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    Absolute,
    Baseline,
}

/// A rule with hysteresis: open above one threshold, close below a lower one, each only after
/// the condition held for a number of consecutive evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleConfig {
    pub enabled: bool,
    pub mode: ThresholdMode,
    /// Absolute: the value above which the signal is bad. Baseline: a factor of the baseline.
    pub open_above: f64,
    /// Absolute: the value below which the signal is healthy again. Baseline: a factor.
    pub close_below: f64,
    /// Baseline mode only: the open threshold is never lower than this absolute value.
    pub floor: f64,
    /// Consecutive bad evaluations before an incident opens.
    pub open_after: u32,
    /// Consecutive healthy evaluations before it resolves.
    pub close_after: u32,
}

impl RuleConfig {
    /// An enabled absolute rule.
    pub fn absolute(open_above: f64, close_below: f64, open_after: u32, close_after: u32) -> Self {
        Self {
            enabled: true,
            mode: ThresholdMode::Absolute,
            open_above,
            close_below,
            floor: 0.0,
            open_after,
            close_after,
        }
    }

    fn validate_into(&self, name: &str, problems: &mut Problems) {
        problems.check(
            self.open_above.is_finite() && self.close_below.is_finite(),
            || format!("detection.{name} thresholds must be finite numbers"),
        );
        problems.check(self.close_below <= self.open_above, || {
            format!(
                "detection.{name}.close_below ({}) must not exceed open_above ({})",
                self.close_below, self.open_above
            )
        });
        problems.check(self.open_after >= 1 && self.close_after >= 1, || {
            format!("detection.{name}.open_after and close_after must be at least 1")
        });
        problems.check(self.floor.is_finite() && self.floor >= 0.0, || {
            format!("detection.{name}.floor must be a non-negative number")
        });
    }
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self::absolute(0.0, 0.0, 1, 1)
    }
}

/// Where and how incidents are reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrchestratorConfig {
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one `ReportIncident` call, sent as `grpc-timeout`.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// First retry delay after a failed report; doubles up to `max_backoff`, with jitter.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// An incident still open this long after the orchestrator acknowledged it is reported
    /// again (Alertmanager's `repeat_interval`). The orchestrator retries it with a new saga when
    /// the last one ended escalated or rolled back and a person has resumed automation. `0s`
    /// reports once.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50051".to_owned(),
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            repeat_interval: Duration::from_secs(300),
        }
    }
}

/// The Alertmanager webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// The largest webhook body accepted (413 above).
    pub max_body_bytes: usize,
    /// How long a resolved alert must stay resolved before its incident is released. An alert
    /// that fires again within the hold keeps the same incident open and counts a flap (label
    /// `flaps`), so a flapping alert is one incident and one saga. `0s` releases at once.
    #[serde(with = "humantime_serde")]
    pub resolve_hold: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            resolve_hold: Duration::from_secs(60),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        let scrape = &self.scrape;
        problems.check(!scrape.interval.is_zero(), || {
            "scrape.interval must be greater than zero".into()
        });
        problems.check(
            !scrape.timeout.is_zero() && scrape.timeout <= scrape.interval,
            || "scrape.timeout must be greater than zero and at most scrape.interval".into(),
        );
        problems.check(scrape.max_body_bytes >= 1024, || {
            "scrape.max_body_bytes must be at least 1024".into()
        });
        for (index, target) in scrape.targets.iter().enumerate() {
            if let Err(problem) = crate::target::TargetSpec::new(
                target.service.clone(),
                target.address.clone(),
                target.labels.clone(),
            ) {
                problems.push(format!("scrape.targets[{index}]: {problem}"));
            }
        }
        let detection = &self.detection;
        problems.check(detection.window >= scrape.interval * 2, || {
            format!(
                "detection.window ({:?}) must cover at least two scrape intervals ({:?})",
                detection.window, scrape.interval
            )
        });
        problems.check(detection.history >= detection.window, || {
            "detection.history must be at least detection.window".into()
        });
        problems.check(detection.memory_window >= detection.window, || {
            "detection.memory_window must be at least detection.window".into()
        });
        for (name, rule) in [
            ("error_rate", &detection.error_rate),
            ("latency_p99", &detection.latency_p99),
            ("memory_growth", &detection.memory_growth),
            ("restarts", &detection.restarts),
            ("target_down", &detection.target_down),
        ] {
            rule.validate_into(name, problems);
        }
        let orchestrator = &self.orchestrator;
        problems.check(
            orchestrator.url.starts_with("http://") || orchestrator.url.starts_with("https://"),
            || {
                format!(
                    "orchestrator.url must be an http(s) URL (got {:?})",
                    orchestrator.url
                )
            },
        );
        problems.check(
            !orchestrator.call_timeout.is_zero() && !orchestrator.initial_backoff.is_zero(),
            || "orchestrator.call_timeout and initial_backoff must be greater than zero".into(),
        );
        problems.check(
            orchestrator.max_backoff >= orchestrator.initial_backoff,
            || "orchestrator.max_backoff must be at least initial_backoff".into(),
        );
        problems.check(
            orchestrator.repeat_interval.is_zero()
                || orchestrator.repeat_interval >= Duration::from_secs(1),
            || {
                format!(
                    "orchestrator.repeat_interval must be 0s (report once) or at least 1s (got {:?})",
                    orchestrator.repeat_interval
                )
            },
        );
        problems.check(self.webhook.max_body_bytes >= 1024, || {
            "webhook.max_body_bytes must be at least 1024".into()
        });
    }
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerConfig {
        &self.server
    }

    fn server_mut(&mut self) -> &mut ServerConfig {
        &mut self.server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let mut problems = Problems::default();
        Config::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn rejects_inverted_hysteresis_and_short_windows() {
        let mut config = Config::default();
        config.detection.error_rate.close_below = 0.5;
        config.detection.window = Duration::from_secs(1);
        config.scrape.targets.push(TargetConfig {
            service: String::new(),
            address: "127.0.0.1:1".into(),
            labels: BTreeMap::new(),
        });
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let text = problems.into_vec().join("\n");
        assert!(text.contains("close_below"), "{text}");
        assert!(text.contains("detection.window"), "{text}");
        assert!(text.contains("scrape.targets[0]"), "{text}");
    }

    #[test]
    fn a_repeat_interval_is_off_or_at_least_a_second() {
        let check = |interval: Duration| {
            let mut config = Config::default();
            config.orchestrator.repeat_interval = interval;
            let mut problems = Problems::default();
            config.validate(&mut problems);
            problems.into_vec().join("\n")
        };
        assert!(check(Duration::ZERO).is_empty());
        assert!(check(Duration::from_secs(1)).is_empty());
        assert!(check(Duration::from_secs(1000 * 365 * 86_400)).is_empty());
        assert!(check(Duration::from_millis(5)).contains("orchestrator.repeat_interval"));
    }
}
