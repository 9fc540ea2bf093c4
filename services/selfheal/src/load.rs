//! `selfheal load`: steady, open-loop traffic against a service, with the client-side success
//! rate and latency histogram. The request mix is the demo target's: `POST /pay` for customers
//! `cust-0000`..`cust-NNNN` drawn uniformly, with random amounts.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to send, how fast, for how long.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Base URL of the service, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Requests started per second.
    pub rate: u32,
    pub duration: Duration,
    /// Requests in flight at most; past it a tick is counted as skipped (client saturated).
    pub concurrency: usize,
    /// Customers are drawn from `cust-0000` up to this count.
    pub customers: u32,
    pub timeout: Duration,
}

impl LoadPlan {
    /// The demo's steady traffic: `rate` requests a second to `target` for `duration`, 64 in
    /// flight at most, over 1000 customers, each request allowed 5 s.
    pub fn steady(target: impl Into<String>, rate: u32, duration: Duration) -> Self {
        Self {
            target: target.into(),
            rate,
            duration,
            concurrency: 64,
            customers: 1000,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Counts and latency of a run (or of one progress interval).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadSummary {
    pub target: String,
    pub elapsed_seconds: f64,
    pub sent: u64,
    pub succeeded: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// Connection failures and timeouts.
    pub failed: u64,
    pub skipped: u64,
    /// 5xx and failed requests over all requests sent.
    pub error_rate: f64,
    pub achieved_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Seconds from the start of the run to the first 5xx or failed request, if any.
    pub first_failure_after_seconds: Option<f64>,
}

/// Finished requests and failures so far; the difference of two readings is the error rate of
/// the interval between them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub finished: u64,
    /// 5xx answers and failed requests.
    pub failures: u64,
    /// When the first failure was seen.
    pub first_failure_at: Option<SystemTime>,
}

impl Counts {
    /// Error rate of the requests finished between `earlier` and `self`; `None` without requests.
    pub fn error_rate_since(&self, earlier: &Counts) -> Option<f64> {
        let finished = self.finished.saturating_sub(earlier.finished);
        let failures = self.failures.saturating_sub(earlier.failures);
        (finished > 0).then(|| failures as f64 / finished as f64)
    }
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load plan: {0}")]
    Plan(String),
    #[error("cannot build the http client: {0}")]
    Client(#[from] reqwest::Error),
}

#[derive(Debug)]
struct Tally {
    latency_us: Histogram<u64>,
    succeeded: u64,
    client_errors: u64,
    server_errors: u64,
    failed: u64,
    first_failure: Option<(Instant, SystemTime)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3)
                .expect("1µs..120s at 3 significant digits is a valid range"),
            succeeded: 0,
            client_errors: 0,
            server_errors: 0,
            failed: 0,
            first_failure: None,
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            finished: self.succeeded + self.client_errors + self.server_errors + self.failed,
            failures: self.server_errors + self.failed,
            first_failure_at: self.first_failure.map(|(_, at)| at),
        }
    }
}

/// Reads the counts of a run while it is going on.
#[derive(Clone, Debug)]
pub struct LoadProbe {
    tally: Arc<Mutex<Tally>>,
}

impl LoadProbe {
    /// The counts so far.
    pub async fn counts(&self) -> Counts {
        self.tally.lock().await.counts()
    }
}

/// Runs `plan` until its duration passes or `stop` is cancelled; `progress` is called about
/// once a second with the totals so far.
pub async fn run(
    plan: &LoadPlan,
    stop: CancellationToken,
    progress: impl FnMut(&LoadSummary),
) -> Result<LoadSummary, LoadError> {
    run_probed(plan, stop, &LoadProbe::new(), progress).await
}

impl LoadProbe {
    /// A probe for one run of [`run_probed`].
    pub fn new() -> Self {
        Self {
            tally: Arc::new(Mutex::new(Tally::new())),
        }
    }
}

impl Default for LoadProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// [`run`], with `probe` reading the counts while the run goes on.
pub async fn run_probed(
    plan: &LoadPlan,
    stop: CancellationToken,
    probe: &LoadProbe,
    progress: impl FnMut(&LoadSummary),
) -> Result<LoadSummary, LoadError> {
    run_probed_on(plan, "/pay", stop, probe, progress).await
}

/// [`run_probed`] against `route` of the target (`/pay` for the demo's payment-service), for
/// targets whose endpoint takes the same `customer_id` body under another path.
pub(crate) async fn run_probed_on(
    plan: &LoadPlan,
    route: &str,
    stop: CancellationToken,
    probe: &LoadProbe,
    mut progress: impl FnMut(&LoadSummary),
) -> Result<LoadSummary, LoadError> {
    if plan.rate == 0 || plan.rate > 100_000 {
        return Err(LoadError::Plan(format!(
            "rate must be 1..=100000 requests/s (got {})",
            plan.rate
        )));
    }
    if plan.concurrency == 0 || plan.customers == 0 {
        return Err(LoadError::Plan(
            "concurrency and customers must be at least 1".into(),
        ));
    }
    let url = format!("{}{route}", plan.target.trim_end_matches('/'));
    reqwest::Url::parse(&url)
        .map_err(|error| LoadError::Plan(format!("target {:?}: {error}", plan.target)))?;
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .pool_max_idle_per_host(plan.concurrency)
        .build()?;
    let tally = Arc::clone(&probe.tally);
    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let mut tasks = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if started.elapsed() >= plan.duration {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        sent += 1;
        let customer = fastrand::u32(0..plan.customers);
        let body = serde_json::json!({ "customer_id": format!("cust-{customer:04}"), "amount_cents": fastrand::u32(100..50_000) });
        let request = client.post(&url).json(&body);
        let shared = tally.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            let begun_wall = SystemTime::now();
            let outcome = request.send().await;
            let micros = u64::try_from(begun.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut tally = shared.lock().await;
            let _ = tally.latency_us.record(micros.min(120_000_000));
            match outcome.map(|response| response.status().as_u16()) {
                Ok(200..=399) => tally.succeeded += 1,
                Ok(400..=499) => tally.client_errors += 1,
                Ok(_) => tally.server_errors += 1,
                Err(_) => tally.failed += 1,
            }
            if tally.first_failure.is_none() && tally.server_errors + tally.failed > 0 {
                tally.first_failure = Some((begun, begun_wall));
            }
            drop(permit);
        });
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(&summarise(
                plan,
                &*tally.lock().await,
                started.elapsed(),
                sent,
                skipped,
            ));
        }
    }
    while tasks.join_next().await.is_some() {}
    let tally = tally.lock().await;
    let mut summary = summarise(plan, &tally, started.elapsed(), sent, skipped);
    summary.first_failure_after_seconds = tally
        .first_failure
        .map(|(at, _)| at.saturating_duration_since(started).as_secs_f64());
    Ok(summary)
}

fn summarise(
    plan: &LoadPlan,
    tally: &Tally,
    elapsed: Duration,
    sent: u64,
    skipped: u64,
) -> LoadSummary {
    let finished = tally.succeeded + tally.client_errors + tally.server_errors + tally.failed;
    let ms = |quantile: f64| tally.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
    LoadSummary {
        target: plan.target.clone(),
        elapsed_seconds: elapsed.as_secs_f64(),
        sent,
        succeeded: tally.succeeded,
        client_errors: tally.client_errors,
        server_errors: tally.server_errors,
        failed: tally.failed,
        skipped,
        error_rate: if finished == 0 {
            0.0
        } else {
            (tally.server_errors + tally.failed) as f64 / finished as f64
        },
        achieved_rate: if elapsed.is_zero() {
            0.0
        } else {
            sent as f64 / elapsed.as_secs_f64()
        },
        latency_ms_p50: ms(0.5),
        latency_ms_p90: ms(0.9),
        latency_ms_p99: ms(0.99),
        latency_ms_max: tally.latency_us.max() as f64 / 1000.0,
        first_failure_after_seconds: None,
    }
}
