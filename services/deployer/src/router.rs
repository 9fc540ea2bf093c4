//! The weighted HTTP router in front of one service: splits requests between stable and canary by
//! weight, counts requests, 5xx answers and latency per upstream (exported as Prometheus metrics),
//! and keeps a bounded sample of failing and passing requests for replay.
//!
//! An upstream that cannot be reached answers 502 (504 on timeout), counted as an error of that
//! upstream: a canary that is down is a failing canary.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RouterConfig;
use crate::error::Error;
use crate::model::ReplaySample;
use crate::process::HttpClient;

/// The body type the router answers with.
pub(crate) type RouterBody = BoxBody<Bytes, hyper::Error>;

/// Latencies kept per upstream for the rank test.
const LATENCY_SAMPLE: usize = 4096;

/// The router's Prometheus metrics, labelled by service and version.
#[derive(Clone, Debug)]
pub(crate) struct RouterMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
}

impl RouterMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let labels = &["target_service", "version"];
        let requests = IntCounterVec::new(
            Opts::new(
                "deployer_router_requests_total",
                "Requests the router sent to an upstream",
            ),
            labels,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "deployer_router_errors_total",
                "Requests an upstream answered with 5xx or could not answer",
            ),
            labels,
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "deployer_router_request_duration_seconds",
                "Time from forwarding a request to the upstream's response headers",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            labels,
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self {
            requests,
            errors,
            latency,
        })
    }
}

/// Request and error totals of one upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

impl Counts {
    pub(crate) fn since(self, earlier: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// One version the router can send requests to.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) version: String,
    pub(crate) addr: SocketAddr,
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    latencies: Mutex<VecDeque<(Instant, f64)>>,
    metric_requests: prometheus::IntCounter,
    metric_errors: prometheus::IntCounter,
    metric_latency: prometheus::Histogram,
}

impl Upstream {
    pub(crate) fn new(
        service: &str,
        version: &str,
        addr: SocketAddr,
        metrics: &RouterMetrics,
    ) -> Arc<Self> {
        let labels = [service, version];
        Arc::new(Self {
            version: version.to_owned(),
            addr,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latencies: Mutex::new(VecDeque::with_capacity(LATENCY_SAMPLE)),
            metric_requests: metrics.requests.with_label_values(&labels),
            metric_errors: metrics.errors.with_label_values(&labels),
            metric_latency: metrics.latency.with_label_values(&labels),
        })
    }

    pub(crate) fn counts(&self) -> Counts {
        // Errors first: a concurrent request can then only make requests >= errors.
        let errors = self.errors.load(Ordering::SeqCst);
        Counts {
            requests: self.requests.load(Ordering::SeqCst),
            errors,
        }
    }

    /// Latencies (ms) of requests answered since `since`, newest last.
    pub(crate) fn latencies_since(&self, since: Instant) -> Vec<f64> {
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        latencies
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, ms)| *ms)
            .collect()
    }

    /// Waits until no request is in flight, at most `timeout`.
    pub(crate) async fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn record(&self, status: StatusCode, latency: Duration) {
        let error = status.is_server_error();
        if error {
            self.errors.fetch_add(1, Ordering::SeqCst);
            self.metric_errors.inc();
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.metric_requests.inc();
        self.metric_latency.observe(latency.as_secs_f64());
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if latencies.len() == LATENCY_SAMPLE {
            latencies.pop_front();
        }
        latencies.push_back((Instant::now(), latency.as_secs_f64() * 1000.0));
    }
}

/// Where requests go right now.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes {
    pub(crate) stable: Option<Arc<Upstream>>,
    pub(crate) canary: Option<Arc<Upstream>>,
    /// Percentage of requests sent to the canary, 0..=100.
    pub(crate) canary_weight: u32,
}

#[derive(Debug, Default)]
struct Samples {
    failing: VecDeque<ReplaySample>,
    passing: VecDeque<ReplaySample>,
}

/// The router of one service.
#[derive(Debug)]
pub(crate) struct ServiceRouter {
    pub(crate) service: String,
    pub(crate) public_addr: SocketAddr,
    routes: RwLock<Routes>,
    samples: Mutex<Samples>,
    client: HttpClient,
    limits: RouterConfig,
}

impl ServiceRouter {
    /// Binds `addr` and serves until `shutdown`; connections are tracked by `tracker`.
    pub(crate) async fn bind(
        service: &str,
        addr: SocketAddr,
        limits: RouterConfig,
        client: HttpClient,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::PortInUse {
                service: service.to_owned(),
                addr,
                reason: e.to_string(),
            })?;
        let public_addr = listener.local_addr().map_err(Error::io("router address"))?;
        let router = Arc::new(Self {
            service: service.to_owned(),
            public_addr,
            routes: RwLock::new(Routes::default()),
            samples: Mutex::new(Samples::default()),
            client,
            limits,
        });
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&router),
            tracker.clone(),
            shutdown,
        ));
        Ok(router)
    }

    pub(crate) fn routes(&self) -> Routes {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the routes in one step.
    pub(crate) fn set_routes(&self, routes: Routes) {
        *self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
    }

    /// Changes only the canary's share.
    pub(crate) fn set_canary_weight(&self, weight: u32) {
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .canary_weight = weight.min(100);
    }

    /// Up to `limit` failing and `limit` passing samples, newest first.
    pub(crate) fn samples(&self, limit: usize) -> (Vec<ReplaySample>, Vec<ReplaySample>) {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            samples.failing.iter().rev().take(limit).cloned().collect(),
            samples.passing.iter().rev().take(limit).cloned().collect(),
        )
    }

    fn pick(&self) -> Option<Arc<Upstream>> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let weight = routes.canary_weight;
        let to_canary = routes.canary.is_some()
            && (routes.stable.is_none()
                || weight >= 100
                || (weight > 0 && fastrand::u32(0..100) < weight));
        if to_canary {
            routes.canary.clone()
        } else {
            routes.stable.clone()
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<RouterBody> {
        let Some(upstream) = self.pick() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no version of this service is running\n",
            );
        };
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.limits.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = format!("http://{}{path}", upstream.addr).parse::<hyper::Uri>() else {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        let mut forward = Request::new(Full::new(body.clone()));
        *forward.method_mut() = parts.method.clone();
        *forward.uri_mut() = uri;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name) && name != http::header::HOST {
                forward.headers_mut().append(name.clone(), value.clone());
            }
        }

        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let answer =
            tokio::time::timeout(self.limits.upstream_timeout, self.client.request(forward)).await;
        let latency = started.elapsed();
        let response = match answer {
            Ok(Ok(response)) => response.map(BodyExt::boxed),
            Ok(Err(error)) => {
                tracing::debug!(service = %self.service, version = %upstream.version, %error, "upstream unreachable");
                plain(StatusCode::BAD_GATEWAY, "upstream unreachable\n")
            }
            Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        };
        upstream.record(response.status(), latency);
        upstream.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.sample(
            &parts.method,
            path,
            &parts.headers,
            &body,
            response.status(),
        );
        response
    }

    fn sample(
        &self,
        method: &http::Method,
        path: String,
        headers: &HeaderMap,
        body: &Bytes,
        status: StatusCode,
    ) {
        let failing = status.is_server_error();
        let capacity = self.limits.sample_capacity;
        {
            let samples = self
                .samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Passing requests are plentiful: once the ring is full keep about one in ten.
            if !failing && samples.passing.len() >= capacity && fastrand::u8(0..10) != 0 {
                return;
            }
        }
        let sample = ReplaySample {
            method: method.to_string(),
            path,
            headers: redacted(headers),
            body: body
                .slice(..body.len().min(self.limits.sample_body_bytes))
                .to_vec(),
            observed_status: status.as_u16(),
        };
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ring = if failing {
            &mut samples.failing
        } else {
            &mut samples.passing
        };
        if ring.len() >= capacity {
            ring.pop_front();
        }
        ring.push_back(sample);
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Arc<ServiceRouter>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(service = %router.service, %error, "router accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = Arc::clone(&router);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let router = Arc::clone(&router);
                async move { Ok::<_, Infallible>(router.handle(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<RouterBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers fit to store: no credentials, no hop-by-hop headers.
pub(crate) fn redacted(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name) && !is_secret(name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect()
}

fn is_secret(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ];
    const PARTS: &[&str] = &[
        "token",
        "secret",
        "password",
        "passwd",
        "api-key",
        "apikey",
        "session",
        "auth",
        "signature",
    ];
    EXACT.contains(&name) || PARTS.iter().any(|p| name.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_credentials_and_keeps_the_rest() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer x"),
            ("cookie", "a=b"),
            ("x-api-key", "k"),
            ("x-auth-token", "t"),
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("x-request-id", "42"),
        ] {
            headers.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        let kept = redacted(&headers);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            ["content-type", "x-request-id"]
        );
    }

    #[test]
    fn counts_subtract() {
        let now = Counts {
            requests: 10,
            errors: 3,
        };
        let before = Counts {
            requests: 4,
            errors: 1,
        };
        assert_eq!(
            now.since(before),
            Counts {
                requests: 6,
                errors: 2
            }
        );
    }
}
