//! One watched service: its sliding window plus one hysteresis rule per signal. Fed with scrape
//! results, it answers which signals became bad (raise) or healthy (release). Pure: no I/O, time
//! is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::config::{DetectionConfig, RuleConfig, ThresholdMode};
use crate::exposition::Exposition;
use crate::hysteresis::{Hysteresis, Thresholds, Transition};
use crate::incident::{Detection, Severity, Signal};
use crate::window::{ServiceWindow, WindowStats};

/// Weight of a new value in the exponentially weighted baseline.
const BASELINE_WEIGHT: f64 = 0.1;

/// A rule's decision after one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Raise(Detection),
    Release(Signal),
}

/// A service's own typical value of a signal, learned while the signal is healthy.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    value: f64,
    samples: u32,
}

impl Baseline {
    fn learn(&mut self, value: f64) {
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.value = value;
        } else {
            self.value += BASELINE_WEIGHT * (value - self.value);
        }
    }
}

#[derive(Debug)]
struct SignalRule {
    signal: Signal,
    config: RuleConfig,
    machine: Hysteresis<SystemTime>,
    baseline: Baseline,
}

impl SignalRule {
    fn new(signal: Signal, config: &RuleConfig) -> Self {
        Self {
            signal,
            config: config.clone(),
            machine: Hysteresis::new(config.open_after, config.close_after),
            baseline: Baseline::default(),
        }
    }

    fn thresholds(&self, warmup: u32) -> Thresholds {
        let c = &self.config;
        match c.mode {
            ThresholdMode::Absolute => Thresholds {
                open_above: c.open_above,
                close_below: c.close_below,
            },
            ThresholdMode::Baseline if self.baseline.samples < warmup.max(1) => Thresholds {
                open_above: f64::INFINITY,
                close_below: f64::INFINITY,
            },
            ThresholdMode::Baseline => {
                let ratio = if c.open_above > 0.0 {
                    c.close_below / c.open_above
                } else {
                    1.0
                };
                Thresholds {
                    open_above: (self.baseline.value * c.open_above).max(c.floor),
                    close_below: (self.baseline.value * c.close_below).max(c.floor * ratio),
                }
            }
        }
    }
}

/// The window and rules of one service.
#[derive(Debug)]
pub struct ServiceMonitor {
    service: String,
    labels: BTreeMap<String, String>,
    window: ServiceWindow,
    warmup: u32,
    rules: Vec<SignalRule>,
}

impl ServiceMonitor {
    pub fn new(
        service: impl Into<String>,
        labels: BTreeMap<String, String>,
        config: &DetectionConfig,
    ) -> Self {
        let rules = [
            (Signal::ErrorRate, &config.error_rate),
            (Signal::LatencyP99, &config.latency_p99),
            (Signal::MemoryGrowth, &config.memory_growth),
            (Signal::Restarts, &config.restarts),
            (Signal::TargetDown, &config.target_down),
        ]
        .into_iter()
        .filter(|(_, rule)| rule.enabled)
        .map(|(signal, rule)| SignalRule::new(signal, rule))
        .collect();
        Self {
            service: service.into(),
            labels,
            window: ServiceWindow::with_memory_window(
                config.window,
                config.memory_window,
                config.min_requests,
                config.history,
            ),
            warmup: config.baseline_warmup,
            rules,
        }
    }

    pub fn window(&self) -> &ServiceWindow {
        &self.window
    }

    /// A successful scrape made at `at`.
    pub fn observe(&mut self, at: SystemTime, exposition: &Exposition) -> Vec<Verdict> {
        let stats = self.window.ingest(at, exposition);
        self.evaluate(at, &stats, true)
    }

    /// A scrape made at `at` that failed.
    pub fn observe_failure(&mut self, at: SystemTime) -> Vec<Verdict> {
        let stats = self.window.ingest_failure(at);
        self.evaluate(at, &stats, false)
    }

    fn evaluate(&mut self, at: SystemTime, stats: &WindowStats, up: bool) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let window = self.window.window();
        for rule in &mut self.rules {
            let value = match rule.signal {
                Signal::ErrorRate => stats.error_rate,
                Signal::LatencyP99 => stats.latency_p99,
                Signal::MemoryGrowth => stats.memory_slope,
                Signal::Restarts => up.then_some(f64::from(stats.restarts)),
                Signal::TargetDown => Some(stats.down),
                Signal::Alert => None,
            };
            let thresholds = rule.thresholds(self.warmup);
            match rule.machine.step(at, value, thresholds) {
                Transition::Open { first_bad_at } => {
                    verdicts.push(Verdict::Raise(detection(
                        &self.service,
                        &self.labels,
                        rule,
                        value.unwrap_or_default(),
                        thresholds.open_above,
                        first_bad_at,
                        window,
                        stats,
                    )));
                }
                Transition::Close => verdicts.push(Verdict::Release(rule.signal)),
                Transition::None => {}
            }
            // The baseline learns only from healthy evaluations, so a fault cannot become normal.
            if let Some(v) = value
                && !rule.machine.is_firing()
                && v <= thresholds.open_above
            {
                rule.baseline.learn(v);
            }
        }
        verdicts
    }
}

#[allow(clippy::too_many_arguments)]
fn detection(
    service: &str,
    labels: &BTreeMap<String, String>,
    rule: &SignalRule,
    observed: f64,
    threshold: f64,
    first_bad_at: SystemTime,
    window: Duration,
    stats: &WindowStats,
) -> Detection {
    let (severity, sample_count, bad_sample_count, summary) = match rule.signal {
        Signal::ErrorRate => (
            Severity::Critical,
            stats.requests as u64,
            stats.errors as u64,
            format!(
                "{service}: {:.1}% of {} requests failed with 5xx over {window:?} (threshold {:.1}%)",
                observed * 100.0,
                stats.requests as u64,
                threshold * 100.0
            ),
        ),
        Signal::LatencyP99 => (
            Severity::Warning,
            stats.requests as u64,
            0,
            format!(
                "{service}: p99 latency {:.0} ms over {window:?}, above {:.0} ms (baseline {:.0} ms)",
                observed * 1e3,
                threshold * 1e3,
                rule.baseline.value * 1e3
            ),
        ),
        Signal::MemoryGrowth => (
            Severity::Warning,
            stats.intervals as u64,
            u64::from(rule.config.open_after),
            format!(
                "{service}: resident memory grows {:.0} KiB/s over {window:?} (threshold {:.0} KiB/s)",
                observed / 1024.0,
                threshold / 1024.0
            ),
        ),
        Signal::Restarts => (
            Severity::Critical,
            stats.intervals as u64,
            u64::from(stats.restarts),
            format!("{service}: restarted {observed} times within {window:?}"),
        ),
        Signal::TargetDown | Signal::Alert => (
            Severity::Critical,
            stats.intervals as u64,
            u64::from(rule.config.open_after),
            format!(
                "{service}: /metrics could not be scraped {} times in a row",
                rule.config.open_after
            ),
        ),
    };
    let mut labels = labels.clone();
    labels.insert("signal".into(), rule.signal.as_str().into());
    Detection {
        service: service.to_owned(),
        signal: rule.signal,
        severity,
        observed_value: observed,
        threshold,
        baseline: rule.baseline.value,
        window,
        sample_count,
        bad_sample_count,
        first_bad_at,
        labels,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;

    fn config() -> DetectionConfig {
        DetectionConfig {
            window: Duration::from_secs(2),
            min_requests: 10,
            ..DetectionConfig::default()
        }
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000_000 + ms)
    }

    fn body(ok: u64, failed: u64) -> String {
        format!(
            "http_requests_total{{status=\"200\"}} {ok}\nhttp_requests_total{{status=\"500\"}} {failed}\n"
        )
    }

    #[test]
    fn opens_error_rate_with_the_first_crossing_and_resolves_after_a_healthy_window() {
        let mut monitor = ServiceMonitor::new("pay", BTreeMap::new(), &config());
        let (mut ok, mut failed) = (0, 0);
        let mut opened = None;
        let mut resolved = None;
        for step in 0..40u64 {
            ok += 85;
            if (5..15).contains(&step) {
                failed += 15;
            } else {
                ok += 15;
            }
            for verdict in monitor.observe(at(step * 500), &parse(&body(ok, failed))) {
                match verdict {
                    Verdict::Raise(d) => opened = Some((step, d)),
                    Verdict::Release(Signal::ErrorRate) => resolved = Some(step),
                    Verdict::Release(_) => {}
                }
            }
        }
        let (step, detection) = opened.expect("incident opened");
        assert_eq!(detection.signal, Signal::ErrorRate);
        // Step 5 fails 15 of 100 requests, but the 2 s window (4 scrapes) holds 3.75%; step 6
        // holds 7.5% and is the first crossing; step 7 confirms it.
        assert_eq!(
            detection.first_bad_at,
            at(6 * 500),
            "first crossing, not confirmation"
        );
        assert_eq!(step, 7, "confirmed one evaluation later");
        assert!(resolved.expect("resolved") > 15);
    }

    #[test]
    fn a_single_restart_opens_nothing_and_rates_stay_non_negative() {
        let mut monitor = ServiceMonitor::new("pay", BTreeMap::new(), &config());
        let mut verdicts = Vec::new();
        verdicts.extend(monitor.observe(at(0), &parse(&body(1000, 0))));
        verdicts.extend(monitor.observe(at(500), &parse(&body(1100, 0))));
        verdicts.extend(monitor.observe(at(1000), &parse(&body(20, 0))));
        verdicts.extend(monitor.observe(at(1500), &parse(&body(120, 0))));
        assert!(verdicts.is_empty(), "{verdicts:?}");
        assert!(monitor.window().points().all(|p| p.requests >= 0.0));
    }

    #[test]
    fn latency_is_judged_against_the_services_own_baseline() {
        let mut config = config();
        config.latency_p99.open_after = 2;
        let mut monitor = ServiceMonitor::new("pay", BTreeMap::new(), &config);
        let (mut fast, mut slow) = (0u64, 0u64);
        let mut opened = None;
        for step in 0..30u64 {
            if step < 20 {
                fast += 100;
            } else {
                slow += 100;
            }
            let text = format!(
                "# TYPE http_request_duration_seconds histogram\n\
                 http_request_duration_seconds_bucket{{le=\"0.01\"}} {fast}\n\
                 http_request_duration_seconds_bucket{{le=\"1\"}} {}\n\
                 http_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 http_requests_total{{status=\"200\"}} {}\n",
                fast + slow,
                fast + slow,
                fast + slow
            );
            for verdict in monitor.observe(at(step * 500), &parse(&text)) {
                if let Verdict::Raise(d) = verdict {
                    opened = Some((step, d));
                }
            }
        }
        let (step, detection) = opened.expect("latency incident");
        assert_eq!(detection.signal, Signal::LatencyP99);
        assert!(step >= 21, "{step}");
        assert!(detection.baseline < 0.011, "{}", detection.baseline);
    }

    #[test]
    fn unreachable_target_becomes_target_down_then_recovers() {
        let mut monitor = ServiceMonitor::new("pay", BTreeMap::new(), &config());
        let mut verdicts = Vec::new();
        for step in 0..3 {
            verdicts.extend(monitor.observe_failure(at(step * 500)));
        }
        assert!(matches!(&verdicts[..], [Verdict::Raise(d)] if d.signal == Signal::TargetDown));
        let verdicts = monitor.observe(at(2000), &parse(&body(1, 0)));
        assert_eq!(verdicts, vec![Verdict::Release(Signal::TargetDown)]);
    }
}
