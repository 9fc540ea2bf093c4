//! Canary analysis: whether a canary is worse than stable over one window, as a [`Decision`].
//!
//! Pure functions over counts, latency and memory samples; no clocks, no I/O. Error rates are
//! compared with a one-sided two-proportion z-test plus an absolute ceiling, latencies with a
//! one-sided Mann–Whitney U test (normal approximation with tie correction), resident memory by
//! its least-squares growth rate over the window and its excess over stable's.

use std::time::Duration;

use crate::config::MemoryLimits;
use crate::model::{Decision, DecisionFactor, DecisionKind};

const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory readings of one process over a window: (seconds into the window, bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MemorySeries {
    pub(crate) points: Vec<(f64, u64)>,
}

impl MemorySeries {
    /// Adds a reading taken `at` into the window; a missing reading is skipped.
    pub(crate) fn push(&mut self, at: Duration, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.points.push((at.as_secs_f64(), bytes));
        }
    }

    /// The least-squares growth rate in bytes per second; `None` with fewer than three readings
    /// or readings all at one instant.
    pub(crate) fn growth_per_second(&self) -> Option<f64> {
        if self.points.len() < 3 {
            return None;
        }
        let n = self.points.len() as f64;
        let mean_t = self.points.iter().map(|(t, _)| t).sum::<f64>() / n;
        let mean_b = self.points.iter().map(|(_, b)| *b as f64).sum::<f64>() / n;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for (t, b) in &self.points {
            covariance += (t - mean_t) * (*b as f64 - mean_b);
            variance += (t - mean_t) * (t - mean_t);
        }
        (variance > 0.0).then(|| covariance / variance)
    }

    /// Seconds between the first and the last reading.
    pub(crate) fn span_seconds(&self) -> f64 {
        match (self.points.first(), self.points.last()) {
            (Some((first, _)), Some((last, _))) => last - first,
            _ => 0.0,
        }
    }

    /// The last reading.
    pub(crate) fn last_bytes(&self) -> Option<u64> {
        self.points.last().map(|(_, bytes)| *bytes)
    }
}

/// Requests one upstream answered during a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WindowSample {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Latencies in milliseconds (a bounded sample of the window's requests).
    pub(crate) latencies_ms: Vec<f64>,
    /// The process's resident memory during the window; empty when it was not read.
    pub(crate) memory: MemorySeries,
}

impl WindowSample {
    pub(crate) fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// The thresholds an analysis holds the canary to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Thresholds {
    pub(crate) min_requests: u64,
    pub(crate) max_error_rate: f64,
    /// One-sided significance of the error-rate comparison.
    pub(crate) error_alpha: f64,
    /// A significant error-rate difference smaller than this is ignored.
    pub(crate) error_margin: f64,
    /// One-sided significance of the latency comparison.
    pub(crate) latency_alpha: f64,
    /// The canary's median latency must exceed stable's by this factor...
    pub(crate) latency_ratio: f64,
    /// ...and by at least this many milliseconds to count as a regression.
    pub(crate) latency_floor_ms: f64,
    /// Bounds on the canary's resident memory.
    pub(crate) memory: MemoryLimits,
}

impl Thresholds {
    pub(crate) fn new(min_requests: u64, max_error_rate: f64, memory: MemoryLimits) -> Self {
        Self {
            min_requests,
            max_error_rate,
            error_alpha: 0.05,
            error_margin: 0.005,
            latency_alpha: 0.01,
            latency_ratio: 1.5,
            latency_floor_ms: 5.0,
            memory,
        }
    }
}

/// What the memory readings of one window show.
#[derive(Clone, Debug, PartialEq)]
struct MemoryFinding {
    /// Why the canary fails, with the figures, and how sure that is (how far past its limit the
    /// canary is); `None` when it does not fail.
    regression: Option<(String, f64)>,
    factor: DecisionFactor,
    inputs: Vec<(&'static str, String)>,
}

/// Judges the canary's resident memory against stable's and the limits.
fn memory_finding(
    canary: &MemorySeries,
    stable: &MemorySeries,
    limits: &MemoryLimits,
) -> MemoryFinding {
    let mib = |bytes: f64| bytes / MIB;
    let canary_rate = canary.growth_per_second();
    let stable_rate = stable.growth_per_second();
    let mut inputs = Vec::new();
    let Some(canary_rate) = canary_rate else {
        return MemoryFinding {
            regression: None,
            factor: DecisionFactor {
                name: "memory".into(),
                weight: 0.15,
                score: 0.5,
                explanation: format!(
                    "{} readings of the canary's resident memory, too few to judge",
                    canary.points.len()
                ),
            },
            inputs,
        };
    };
    let canary_growth = canary_rate * canary.span_seconds();
    inputs.push((
        "canary_memory_growth_mib_per_s",
        format!("{:.2}", mib(canary_rate)),
    ));
    inputs.push((
        "canary_memory_growth_mib",
        format!("{:.2}", mib(canary_growth)),
    ));
    if let Some(rate) = stable_rate {
        inputs.push((
            "stable_memory_growth_mib_per_s",
            format!("{:.2}", mib(rate)),
        ));
    }
    let excess = match (canary.last_bytes(), stable.last_bytes()) {
        (Some(c), Some(s)) => {
            inputs.push(("canary_rss_mib", format!("{:.1}", mib(c as f64))));
            inputs.push(("stable_rss_mib", format!("{:.1}", mib(s as f64))));
            Some(c as f64 - s as f64)
        }
        _ => None,
    };
    let limit_rate = limits.max_growth_mib_per_s * MIB;
    let grows = canary_rate > limit_rate
        && canary_growth >= limits.min_growth_mib * MIB
        && stable_rate.is_none_or(|stable| canary_rate > stable);
    let too_big = limits.max_excess_mib > 0.0
        && excess.is_some_and(|excess| excess > limits.max_excess_mib * MIB);
    let past = |value: f64, limit: f64| (1.0 - limit / value).clamp(0.5, 1.0);
    let regression = if grows {
        Some((
            format!(
                "the canary's resident memory grows {:.2} MiB/s ({:.1} MiB over the {:.1} s window{}), above the limit of {} MiB/s",
                mib(canary_rate),
                mib(canary_growth),
                canary.span_seconds(),
                stable_rate.map_or_else(String::new, |rate| format!(
                    "; stable {:.2} MiB/s",
                    mib(rate)
                )),
                limits.max_growth_mib_per_s
            ),
            past(canary_rate, limit_rate),
        ))
    } else if too_big {
        let excess = excess.unwrap_or_default();
        Some((
            format!(
                "the canary's resident memory is {:.1} MiB above stable's ({:.1} vs {:.1} MiB), more than the limit of {} MiB",
                mib(excess),
                mib(canary.last_bytes().unwrap_or_default() as f64),
                mib(stable.last_bytes().unwrap_or_default() as f64),
                limits.max_excess_mib
            ),
            past(excess, limits.max_excess_mib * MIB),
        ))
    } else {
        None
    };
    let score = if regression.is_some() {
        0.0
    } else {
        (1.0 - canary_rate.max(0.0) / limit_rate).clamp(0.0, 1.0)
    };
    MemoryFinding {
        factor: DecisionFactor {
            name: "memory".into(),
            weight: 0.15,
            score,
            explanation: format!(
                "canary resident memory grows {:.2} MiB/s ({:.1} MiB over {:.1} s) against the limit {} MiB/s{}",
                mib(canary_rate),
                mib(canary_growth),
                canary.span_seconds(),
                limits.max_growth_mib_per_s,
                excess.map_or_else(String::new, |excess| format!(
                    "; {:+.1} MiB against stable (limit {} MiB)",
                    mib(excess),
                    limits.max_excess_mib
                ))
            ),
        },
        regression,
        inputs,
    }
}

/// The result of one analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Fail,
    /// Too little canary traffic to judge.
    Inconclusive,
}

/// A verdict with the decision record that explains it.
#[derive(Clone, Debug)]
pub(crate) struct Analysis {
    pub(crate) verdict: Verdict,
    pub(crate) decision: Decision,
}

/// Compares `canary` with `stable` over one window.
pub(crate) fn analyse(
    subject: String,
    canary: &WindowSample,
    stable: &WindowSample,
    t: &Thresholds,
) -> Analysis {
    let canary_rate = canary.error_rate();
    let stable_rate = stable.error_rate();
    let mut decision = Decision::new(DecisionKind::CanaryAnalysis, subject)
        .input(
            "canary_requests",
            canary.requests,
            "requests routed to the canary in the window",
        )
        .input(
            "canary_errors",
            canary.errors,
            "5xx answers and upstream failures",
        )
        .input("canary_error_rate", format!("{canary_rate:.4}"), "")
        .input(
            "stable_requests",
            stable.requests,
            "requests routed to stable",
        )
        .input("stable_errors", stable.errors, "")
        .input("stable_error_rate", format!("{stable_rate:.4}"), "");
    decision.constraints = vec![
        format!("canary requests >= {}", t.min_requests),
        format!("canary error rate <= {}", t.max_error_rate),
        format!(
            "canary error rate not significantly above stable (one-sided z-test, alpha {}, margin {})",
            t.error_alpha, t.error_margin
        ),
        format!(
            "canary latency not significantly above stable (Mann-Whitney U, alpha {}, median ratio {}, floor {} ms)",
            t.latency_alpha, t.latency_ratio, t.latency_floor_ms
        ),
        format!(
            "canary resident memory grows at most {} MiB/s (or less than {} MiB over the window, or no faster than stable's)",
            t.memory.max_growth_mib_per_s, t.memory.min_growth_mib
        ),
        format!(
            "canary resident memory at most {} MiB above stable's (0: no bound)",
            t.memory.max_excess_mib
        ),
    ];

    let traffic_score = if t.min_requests == 0 {
        1.0
    } else {
        (canary.requests as f64 / t.min_requests as f64).min(1.0)
    };
    decision.factors.push(DecisionFactor {
        name: "traffic".into(),
        weight: 0.2,
        score: traffic_score,
        explanation: format!(
            "{} of {} required canary requests",
            canary.requests, t.min_requests
        ),
    });
    if canary.requests < t.min_requests {
        decision.outcome = "inconclusive".into();
        decision.reasoning = format!(
            "the canary answered {} requests, fewer than the {} an analysis needs",
            canary.requests, t.min_requests
        );
        decision.confidence = 1.0 - traffic_score;
        return Analysis {
            verdict: Verdict::Inconclusive,
            decision,
        };
    }

    // Ceiling: a one-sample z against the ceiling gives the confidence that the true rate is above.
    let ceiling_z = if t.max_error_rate > 0.0 && t.max_error_rate < 1.0 {
        (canary_rate - t.max_error_rate)
            / (t.max_error_rate * (1.0 - t.max_error_rate) / canary.requests as f64).sqrt()
    } else {
        f64::INFINITY
    };
    let ceiling_ok = canary_rate <= t.max_error_rate;
    decision.factors.push(DecisionFactor {
        name: "error_rate_ceiling".into(),
        weight: 0.4,
        score: if ceiling_ok {
            1.0 - canary_rate / t.max_error_rate.max(f64::EPSILON)
        } else {
            0.0
        },
        explanation: format!(
            "canary error rate {canary_rate:.4} against the ceiling {}",
            t.max_error_rate
        ),
    });

    let comparison = two_proportion_z(
        canary.errors,
        canary.requests,
        stable.errors,
        stable.requests,
    );
    let error_regression = comparison
        .is_some_and(|(_, p)| p < t.error_alpha && canary_rate - stable_rate > t.error_margin);
    let p_err = comparison.map_or(1.0, |(_, p)| p);
    decision.factors.push(DecisionFactor {
        name: "error_rate_vs_stable".into(),
        weight: 0.25,
        score: if error_regression { 0.0 } else { p_err.max(0.5) },
        explanation: match comparison {
            Some((z, p)) => format!(
                "canary {canary_rate:.4} vs stable {stable_rate:.4}: z = {z:.2}, one-sided p = {p:.4}"
            ),
            None => "stable had no traffic to compare with".into(),
        },
    });

    let latency = mann_whitney_u(&canary.latencies_ms, &stable.latencies_ms);
    let (canary_median, stable_median) =
        (median(&canary.latencies_ms), median(&stable.latencies_ms));
    let latency_regression = latency.is_some_and(|(_, p)| {
        p < t.latency_alpha
            && canary_median > stable_median * t.latency_ratio
            && canary_median - stable_median > t.latency_floor_ms
    });
    let p_lat = latency.map_or(1.0, |(_, p)| p);
    decision.factors.push(DecisionFactor {
        name: "latency_vs_stable".into(),
        weight: 0.15,
        score: if latency_regression { 0.0 } else { p_lat.max(0.5) },
        explanation: match latency {
            Some((z, p)) => format!(
                "median {canary_median:.2} ms vs {stable_median:.2} ms: Mann-Whitney z = {z:.2}, one-sided p = {p:.4}"
            ),
            None => "too few latency samples to compare".into(),
        },
    });
    decision = decision
        .input(
            "canary_median_latency_ms",
            format!("{canary_median:.2}"),
            "",
        )
        .input(
            "stable_median_latency_ms",
            format!("{stable_median:.2}"),
            "",
        );
    let memory = memory_finding(&canary.memory, &stable.memory, &t.memory);
    for (name, value) in memory.inputs {
        decision = decision.input(name, value, "");
    }
    decision.factors.push(memory.factor);

    let (verdict, outcome, reasoning, confidence) = if !ceiling_ok {
        (
            Verdict::Fail,
            "fail",
            format!(
                "the canary's error rate {canary_rate:.4} is above the ceiling {}",
                t.max_error_rate
            ),
            normal_cdf(ceiling_z).max(0.5),
        )
    } else if error_regression {
        (
            Verdict::Fail,
            "fail",
            format!(
                "the canary fails significantly more often than stable ({canary_rate:.4} vs {stable_rate:.4}, p = {p_err:.4})"
            ),
            1.0 - p_err,
        )
    } else if latency_regression {
        (
            Verdict::Fail,
            "fail",
            format!(
                "the canary is significantly slower than stable (median {canary_median:.2} ms vs {stable_median:.2} ms, p = {p_lat:.4})"
            ),
            1.0 - p_lat,
        )
    } else if let Some((reasoning, confidence)) = memory.regression {
        (Verdict::Fail, "fail", reasoning, confidence)
    } else {
        let weighted: f64 = decision.factors.iter().map(|f| f.weight * f.score).sum();
        let total: f64 = decision.factors.iter().map(|f| f.weight).sum();
        (
            Verdict::Pass,
            "pass",
            format!(
                "the canary's error rate {canary_rate:.4} is within the ceiling and not significantly above stable's {stable_rate:.4}; latency and memory show no regression"
            ),
            weighted / total,
        )
    };
    decision.outcome = outcome.into();
    decision.reasoning = reasoning;
    decision.confidence = confidence.clamp(0.0, 1.0);
    Analysis { verdict, decision }
}

/// One-sided two-proportion z-test of H1: rate 1 > rate 2. `None` when either side is empty.
pub(crate) fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        // Both rates are 0 or both are 1: no evidence either way.
        return Some((0.0, 0.5));
    }
    let z = (p1 - p2) / se;
    Some((z, 1.0 - normal_cdf(z)))
}

/// One-sided Mann–Whitney U test of H1: `a` tends to be larger than `b`. Returns (z, p);
/// `None` when either sample has fewer than 8 values.
pub(crate) fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.len() < 8 || b.len() < 8 {
        return None;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied = (j - i + 1) as f64;
        tie_term += tied * tied * tied - tied;
        rank_sum_a += all[i..=j].iter().filter(|(_, from_a)| *from_a).count() as f64 * average_rank;
        i = j + 1;
    }
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return Some((0.0, 0.5));
    }
    let z = (u - mean) / variance.sqrt();
    Some((z, 1.0 - normal_cdf(z)))
}

/// The median, or 0 for an empty sample.
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The standard normal CDF.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    if z.is_infinite() {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(requests: u64, errors: u64, latency: f64) -> WindowSample {
        WindowSample {
            requests,
            errors,
            latencies_ms: (0..requests.min(200))
                .map(|i| latency + (i % 7) as f64 * 0.1)
                .collect(),
            memory: MemorySeries::default(),
        }
    }

    fn thresholds(min_requests: u64, max_error_rate: f64) -> Thresholds {
        Thresholds::new(min_requests, max_error_rate, MemoryLimits::default())
    }

    /// Readings every 250 ms over `seconds`: `start_mib`, then `mib_per_s` of growth.
    fn memory(start_mib: f64, mib_per_s: f64, seconds: f64) -> MemorySeries {
        let mut series = MemorySeries::default();
        let mut t = 0.0;
        while t <= seconds + 1e-9 {
            let bytes = (start_mib + mib_per_s * t) * MIB;
            series.push(Duration::from_secs_f64(t), Some(bytes as u64));
            t += 0.25;
        }
        series
    }

    fn with_memory(mut sample: WindowSample, memory: MemorySeries) -> WindowSample {
        sample.memory = memory;
        sample
    }

    #[test]
    fn leaking_canary_fails_with_its_growth_in_the_reasoning() {
        let a = analyse(
            "x".into(),
            &with_memory(sample(150, 0, 2.0), memory(6.0, 3.1, 3.0)),
            &with_memory(sample(150, 0, 2.0), memory(6.0, 0.0, 3.0)),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Fail, "{:?}", a.decision);
        let why = &a.decision.reasoning;
        assert!(why.contains("grows 3.10 MiB/s"), "{why}");
        assert!(why.contains("9.3 MiB over the 3.0 s window"), "{why}");
        assert!(why.contains("stable 0.00 MiB/s"), "{why}");
        assert!(why.contains("limit of 1 MiB/s"), "{why}");
        let factor = a
            .decision
            .factors
            .iter()
            .find(|f| f.name == "memory")
            .unwrap();
        assert_eq!(factor.score, 0.0);
        assert!(
            a.decision
                .inputs
                .iter()
                .any(|i| i.name == "canary_memory_growth_mib_per_s" && i.value == "3.10"),
            "{:?}",
            a.decision.inputs
        );
        assert!(a.decision.confidence > 0.6, "{}", a.decision.confidence);
    }

    #[test]
    fn warm_up_and_flat_memory_pass() {
        // A fresh process allocates a little at first, then stays flat.
        let mut warming = MemorySeries::default();
        for (i, mib) in [5.8, 5.95, 5.96, 5.96, 5.97, 5.97, 5.97, 5.98, 5.98]
            .into_iter()
            .enumerate()
        {
            warming.push(
                Duration::from_millis(250 * i as u64),
                Some((mib * MIB) as u64),
            );
        }
        let a = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), warming),
            &with_memory(sample(360, 54, 2.0), memory(6.0, 0.0, 2.0)),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Pass, "{:?}", a.decision);
        assert!(a.decision.reasoning.contains("memory show no regression"));
    }

    #[test]
    fn growth_below_the_floor_or_no_faster_than_stable_passes() {
        let t = thresholds(20, 0.05);
        // 3 MiB/s for half a second is 1.5 MiB, under the 2 MiB floor.
        let short = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), memory(6.0, 3.0, 0.5)),
            &with_memory(sample(40, 0, 2.0), memory(6.0, 0.0, 0.5)),
            &t,
        );
        assert_eq!(short.verdict, Verdict::Pass, "{:?}", short.decision);
        // Stable leaks as fast: the canary did not bring the leak.
        let both = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), memory(6.0, 3.0, 3.0)),
            &with_memory(sample(40, 0, 2.0), memory(60.0, 3.5, 3.0)),
            &t,
        );
        assert_eq!(both.verdict, Verdict::Pass, "{:?}", both.decision);
    }

    #[test]
    fn canary_far_above_stable_fails_on_excess() {
        let a = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), memory(400.0, 0.0, 2.0)),
            &with_memory(sample(40, 0, 2.0), memory(50.0, 0.0, 2.0)),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Fail, "{:?}", a.decision);
        assert!(
            a.decision.reasoning.contains("350.0 MiB above stable's"),
            "{}",
            a.decision.reasoning
        );
        let limits = MemoryLimits {
            max_excess_mib: 0.0,
            ..MemoryLimits::default()
        };
        let unbounded = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), memory(400.0, 0.0, 2.0)),
            &with_memory(sample(40, 0, 2.0), memory(50.0, 0.0, 2.0)),
            &Thresholds::new(20, 0.05, limits),
        );
        assert_eq!(unbounded.verdict, Verdict::Pass);
    }

    #[test]
    fn unreadable_memory_is_not_judged() {
        let a = analyse(
            "x".into(),
            &with_memory(sample(40, 0, 2.0), memory(6.0, 50.0, 0.25)),
            &sample(40, 0, 2.0),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Pass, "{:?}", a.decision);
        let factor = a
            .decision
            .factors
            .iter()
            .find(|f| f.name == "memory")
            .unwrap();
        assert!(factor.explanation.contains("too few"), "{factor:?}");
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.645) - 0.05).abs() < 1e-3);
    }

    #[test]
    fn fixed_canary_against_buggy_stable_passes() {
        let a = analyse(
            "x".into(),
            &sample(40, 0, 2.0),
            &sample(360, 54, 2.0),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Pass, "{:?}", a.decision);
        assert!(a.decision.confidence > 0.5);
    }

    #[test]
    fn always_failing_canary_fails_the_ceiling() {
        let a = analyse(
            "x".into(),
            &sample(40, 40, 2.0),
            &sample(360, 0, 2.0),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Fail);
        assert!(
            a.decision.reasoning.contains("ceiling"),
            "{}",
            a.decision.reasoning
        );
        assert!(a.decision.confidence > 0.99);
    }

    #[test]
    fn significantly_worse_canary_fails_even_under_the_ceiling() {
        let t = thresholds(20, 0.2);
        let a = analyse(
            "x".into(),
            &sample(1000, 150, 2.0),
            &sample(9000, 9, 2.0),
            &t,
        );
        assert_eq!(a.verdict, Verdict::Fail);
        assert!(a.decision.reasoning.contains("significantly more often"));
    }

    #[test]
    fn slow_canary_fails_on_latency() {
        let a = analyse(
            "x".into(),
            &sample(100, 0, 80.0),
            &sample(900, 0, 2.0),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Fail);
        assert!(a.decision.reasoning.contains("slower"));
    }

    #[test]
    fn too_little_traffic_is_inconclusive() {
        let a = analyse(
            "x".into(),
            &sample(5, 0, 2.0),
            &sample(100, 0, 2.0),
            &thresholds(20, 0.05),
        );
        assert_eq!(a.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn mann_whitney_detects_a_shift_and_not_equality() {
        let low: Vec<f64> = (0..50).map(f64::from).collect();
        let high: Vec<f64> = (40..90).map(f64::from).collect();
        let (_, p) = mann_whitney_u(&high, &low).unwrap();
        assert!(p < 0.001, "{p}");
        let (_, p) = mann_whitney_u(&low, &low).unwrap();
        assert!((p - 0.5).abs() < 0.05, "{p}");
    }

    proptest! {
        #[test]
        fn growth_rate_recovers_a_linear_slope(start in 100.0f64..500.0, rate in -3.0f64..50.0, seconds in 1.0f64..30.0) {
            let fitted = memory(start, rate, seconds).growth_per_second().unwrap() / MIB;
            prop_assert!((fitted - rate).abs() < 0.01, "{fitted} vs {rate}");
        }

        #[test]
        fn p_values_are_probabilities(x1 in 0u64..500, n1 in 1u64..500, x2 in 0u64..500, n2 in 1u64..500) {
            let (x1, x2) = (x1.min(n1), x2.min(n2));
            let (_, p) = two_proportion_z(x1, n1, x2, n2).unwrap();
            prop_assert!((0.0..=1.0).contains(&p));
        }

        #[test]
        fn more_canary_errors_never_turn_a_fail_into_a_pass(errors in 0u64..100, extra in 0u64..100) {
            let t = thresholds(20, 0.1);
            let stable = sample(500, 10, 2.0);
            let first = analyse("x".into(), &sample(200, errors, 2.0), &stable, &t).verdict;
            let second = analyse("x".into(), &sample(200, (errors + extra).min(200), 2.0), &stable, &t).verdict;
            prop_assert!(!(first == Verdict::Fail && second == Verdict::Pass));
        }
    }
}
