//! Turns successive scrapes of one service into per-interval increments and sliding-window
//! statistics.
//!
//! Counters are tracked per series: an increase is the difference to the previous scrape, a
//! decrease is a counter reset (the process restarted) and counts as the new value, never as a
//! negative rate. A series that appears after the first scrape started from zero since then.
//! Failed scrapes leave a gap; the next scrape's increment covers it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::exposition::Exposition;

/// The increments seen by one scrape, relative to the previous one.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub at: SystemTime,
    /// Whether the scrape succeeded.
    pub up: bool,
    pub requests: f64,
    pub errors: f64,
    /// Latency histogram increments, cumulative by upper bound, summed over series.
    pub latency: Vec<(f64, f64)>,
    pub memory_bytes: Option<f64>,
    /// A counter went down or the process start time changed.
    pub restarted: bool,
}

/// Signals computed over the window ending at an evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub at: Option<SystemTime>,
    pub requests: f64,
    pub errors: f64,
    /// `errors / requests`, when the window holds at least the minimum request count.
    pub error_rate: Option<f64>,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// Estimated 99th percentile latency in seconds, when enough requests were observed.
    pub latency_p99: Option<f64>,
    pub memory_bytes: Option<f64>,
    /// Sustained growth of resident memory over the memory window, bytes per second: the lower
    /// of the least-squares slopes of its two halves, so a one-off step (a cache filled, debug
    /// symbols loaded for a first backtrace) is not mistaken for a leak.
    pub memory_slope: Option<f64>,
    pub restarts: u32,
    /// 1 when the last scrape failed, else 0.
    pub down: f64,
    /// Scrapes in the window.
    pub intervals: usize,
}

/// The sliding window of one service.
#[derive(Debug)]
pub struct ServiceWindow {
    window: Duration,
    memory_window: Duration,
    memory: VecDeque<(SystemTime, f64)>,
    min_requests: u64,
    history: Duration,
    scraped_before: bool,
    counters: HashMap<String, f64>,
    histograms: HashMap<String, Vec<(f64, f64)>>,
    start_time: Option<f64>,
    intervals: VecDeque<Interval>,
    points: VecDeque<WindowStats>,
}

impl ServiceWindow {
    pub fn new(window: Duration, min_requests: u64, history: Duration) -> Self {
        Self::with_memory_window(window, window, min_requests, history)
    }

    /// Like [`ServiceWindow::new`], judging memory growth over its own (longer) window.
    pub fn with_memory_window(
        window: Duration,
        memory_window: Duration,
        min_requests: u64,
        history: Duration,
    ) -> Self {
        Self {
            window,
            memory_window: memory_window.max(window),
            memory: VecDeque::new(),
            min_requests,
            history,
            scraped_before: false,
            counters: HashMap::new(),
            histograms: HashMap::new(),
            start_time: None,
            intervals: VecDeque::new(),
            points: VecDeque::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a successful scrape made at `at` and returns the window's statistics.
    pub fn ingest(&mut self, at: SystemTime, exposition: &Exposition) -> WindowStats {
        let interval = self.increments(at, exposition);
        self.push(interval)
    }

    /// Records a failed scrape made at `at`.
    pub fn ingest_failure(&mut self, at: SystemTime) -> WindowStats {
        self.push(Interval {
            at,
            up: false,
            requests: 0.0,
            errors: 0.0,
            latency: Vec::new(),
            memory_bytes: None,
            restarted: false,
        })
    }

    /// Every evaluated point still in the history, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &WindowStats> {
        self.points.iter()
    }

    fn increments(&mut self, at: SystemTime, exposition: &Exposition) -> Interval {
        let first = !self.scraped_before;
        self.scraped_before = true;
        let mut restarted = false;
        if let Some(start) = exposition.process_start_time_seconds {
            restarted |= self.start_time.is_some_and(|previous| previous != start);
            self.start_time = Some(start);
        }

        let mut requests = 0.0;
        let mut errors = 0.0;
        let mut counters = HashMap::with_capacity(exposition.requests.len());
        for sample in &exposition.requests {
            let increase = match self.counters.get(&sample.series) {
                Some(&previous) if sample.value >= previous => sample.value - previous,
                Some(_) => {
                    restarted = true;
                    sample.value
                }
                None if first => 0.0,
                None => sample.value,
            };
            requests += increase;
            if sample.server_error {
                errors += increase;
            }
            counters.insert(sample.series.clone(), sample.value);
        }
        self.counters = counters;

        let mut latency: Vec<(f64, f64)> = Vec::new();
        let mut histograms = HashMap::with_capacity(exposition.latency.len());
        for sample in &exposition.latency {
            let previous = self.histograms.get(&sample.series);
            let reset = previous.is_some_and(|p| total(p) > total(&sample.buckets));
            restarted |= reset;
            for &(bound, count) in &sample.buckets {
                let increase = match previous {
                    _ if first && previous.is_none() => 0.0,
                    Some(p) if !reset => {
                        let before = p.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
                        (count - before).max(0.0)
                    }
                    _ => count,
                };
                add_bucket(&mut latency, bound, increase);
            }
            histograms.insert(sample.series.clone(), sample.buckets.clone());
        }
        self.histograms = histograms;

        Interval {
            at,
            up: true,
            requests,
            errors,
            latency,
            memory_bytes: exposition.resident_memory_bytes,
            restarted,
        }
    }

    fn push(&mut self, interval: Interval) -> WindowStats {
        let at = interval.at;
        if let Some(bytes) = interval.memory_bytes {
            self.memory.push_back((at, bytes));
        }
        while self
            .memory
            .front()
            .is_some_and(|(t, _)| !within(*t, at, self.memory_window))
        {
            self.memory.pop_front();
        }
        self.intervals.push_back(interval);
        while self
            .intervals
            .front()
            .is_some_and(|oldest| !within(oldest.at, at, self.window))
        {
            self.intervals.pop_front();
        }
        let stats = self.stats(at);
        self.points.push_back(stats.clone());
        while self
            .points
            .front()
            .is_some_and(|oldest| oldest.at.is_some_and(|t| !within(t, at, self.history)))
        {
            self.points.pop_front();
        }
        stats
    }

    fn stats(&self, at: SystemTime) -> WindowStats {
        let mut requests = 0.0;
        let mut errors = 0.0;
        let mut restarts = 0;
        let mut latency: Vec<(f64, f64)> = Vec::new();
        for interval in &self.intervals {
            requests += interval.requests;
            errors += interval.errors;
            restarts += u32::from(interval.restarted);
            for &(bound, count) in &interval.latency {
                add_bucket(&mut latency, bound, count);
            }
        }
        let memory: Vec<(f64, f64)> = self
            .memory
            .iter()
            .map(|(t, bytes)| {
                let seconds = t
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                (seconds, *bytes)
            })
            .collect();
        let enough = requests >= self.min_requests as f64 && requests > 0.0;
        let last = self.intervals.back();
        WindowStats {
            at: Some(at),
            requests,
            errors,
            error_rate: enough.then(|| (errors / requests).clamp(0.0, 1.0)),
            request_rate: requests / self.window.as_secs_f64().max(f64::EPSILON),
            latency_p99: if enough {
                quantile(0.99, &latency)
            } else {
                None
            },
            memory_bytes: last.and_then(|i| i.memory_bytes),
            memory_slope: sustained_slope(&memory, self.memory_window),
            restarts,
            down: if last.is_some_and(|i| !i.up) {
                1.0
            } else {
                0.0
            },
            intervals: self.intervals.len(),
        }
    }
}

fn within(t: SystemTime, now: SystemTime, span: Duration) -> bool {
    now.duration_since(t).map_or(true, |age| age < span)
}

fn total(buckets: &[(f64, f64)]) -> f64 {
    buckets.last().map_or(0.0, |(_, count)| *count)
}

fn add_bucket(buckets: &mut Vec<(f64, f64)>, bound: f64, count: f64) {
    match buckets.binary_search_by(|(b, _)| b.total_cmp(&bound)) {
        Ok(index) => buckets[index].1 += count,
        Err(index) => buckets.insert(index, (bound, count)),
    }
}

/// `histogram_quantile`: linear interpolation inside the bucket holding rank `q * total`.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = total(buckets);
    if buckets.is_empty() || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Prometheus answers the highest finite bound when the rank is in +Inf.
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket);
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

/// The lower of the slopes of the two halves of `points` (sharing the middle point); needs four
/// points spanning half the window. Growth must hold in both halves to count.
fn sustained_slope(points: &[(f64, f64)], window: Duration) -> Option<f64> {
    if points.len() < 4 {
        return None;
    }
    let span = points[points.len() - 1].0 - points[0].0;
    if span < window.as_secs_f64() / 2.0 {
        return None;
    }
    let middle = points.len() / 2;
    let first = slope(&points[..=middle])?;
    let second = slope(&points[middle..])?;
    Some(first.min(second))
}

/// Least-squares slope of `(seconds, value)` points.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let origin = points[0].0;
    let mean_t = points.iter().map(|(t, _)| t - origin).sum::<f64>() / n;
    let mean_v = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let mut numerator = 0.0;
    let mut denominator = 0.0;
    for (t, v) in points {
        let dt = t - origin - mean_t;
        numerator += dt * (v - mean_v);
        denominator += dt * dt;
    }
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;

    fn body(ok: u64, failed: u64) -> String {
        format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{status=\"200\"}} {ok}\n\
             http_requests_total{{status=\"500\"}} {failed}\n"
        )
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + seconds)
    }

    #[test]
    fn error_rate_is_computed_from_increments_over_the_window() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 10, Duration::from_secs(60));
        let first = window.ingest(at(0), &parse(&body(1000, 0)));
        assert_eq!(
            first.requests, 0.0,
            "history before the first scrape is not counted"
        );
        let stats = window.ingest(at(1), &parse(&body(1090, 10)));
        assert_eq!(stats.requests, 100.0);
        assert_eq!(stats.error_rate, Some(0.1));
    }

    #[test]
    fn a_counter_reset_counts_as_a_restart_and_never_as_a_negative_rate() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 1, Duration::from_secs(60));
        window.ingest(at(0), &parse(&body(500, 0)));
        window.ingest(at(1), &parse(&body(600, 0)));
        let stats = window.ingest(at(2), &parse(&body(50, 0)));
        assert_eq!(stats.requests, 150.0);
        assert_eq!(stats.errors, 0.0);
        assert_eq!(stats.error_rate, Some(0.0));
        assert_eq!(stats.restarts, 1);
    }

    #[test]
    fn a_series_that_appears_later_counted_from_zero() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 1, Duration::from_secs(60));
        window.ingest(
            at(0),
            &parse("# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\"} 10\n"),
        );
        let stats = window.ingest(at(1), &parse(&body(20, 5)));
        assert_eq!((stats.requests, stats.errors), (15.0, 5.0));
    }

    #[test]
    fn old_intervals_leave_the_window() {
        let mut window = ServiceWindow::new(Duration::from_secs(3), 1, Duration::from_secs(60));
        window.ingest(at(0), &parse(&body(0, 0)));
        window.ingest(at(1), &parse(&body(0, 10)));
        for s in 2..6 {
            window.ingest(at(s), &parse(&body(10 * s, 10)));
        }
        let stats = window.ingest(at(6), &parse(&body(60, 10)));
        assert_eq!(stats.errors, 0.0);
        assert_eq!(stats.intervals, 3);
    }

    #[test]
    fn failed_scrapes_mark_the_service_down_without_inventing_requests() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 1, Duration::from_secs(60));
        window.ingest(at(0), &parse(&body(0, 0)));
        let stats = window.ingest_failure(at(1));
        assert_eq!(stats.down, 1.0);
        let stats = window.ingest(at(2), &parse(&body(10, 0)));
        assert_eq!(stats.down, 0.0);
        assert_eq!(stats.requests, 10.0);
    }

    #[test]
    fn p99_interpolates_like_histogram_quantile() {
        let buckets = [
            (0.1, 50.0),
            (0.2, 90.0),
            (0.4, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p99 - 0.38).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &[(f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }

    #[test]
    fn memory_slope_follows_growth() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 1, Duration::from_secs(60));
        let mut stats = WindowStats::default();
        for s in 0..10 {
            let text = format!("process_resident_memory_bytes {}\n", 1_000_000 + s * 2048);
            stats = window.ingest(at(s), &parse(&text));
        }
        let slope = stats.memory_slope.unwrap();
        assert!((slope - 2048.0).abs() < 1e-6, "{slope}");
    }

    #[test]
    fn a_one_off_memory_step_is_not_growth() {
        let mut window = ServiceWindow::new(Duration::from_secs(10), 1, Duration::from_secs(60));
        let mut stats = WindowStats::default();
        for s in 0..10 {
            let bytes = if s < 6 { 1_000_000 } else { 21_000_000 };
            stats = window.ingest(
                at(s),
                &parse(&format!("process_resident_memory_bytes {bytes}\n")),
            );
        }
        let slope = stats.memory_slope.unwrap();
        assert!(slope.abs() < 1.0, "{slope}");
    }
}
