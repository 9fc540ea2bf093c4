//! Configuration of the orchestrator: peers, the lock store, the saga's settings (canary plan,
//! verification, step deadlines, concurrency) and escalation.
//!
//! ```toml
//! [peers]
//! deployer = "http://127.0.0.1:50056"     # and detector, rca, patcher, safety_gate, audit
//!
//! [lock]
//! backend = "embedded"                    # or "redis"
//! redis_url = "redis://127.0.0.1:6379"
//! ttl = "15s"                             # renewed every ttl/3 while a saga runs
//!
//! [saga]
//! max_parallel = 4                        # sagas of different services at once; the rest queue
//! min_confidence = 0.6                    # below: escalate
//! default_criticality = 0.5
//! criticality = { payment-service = 0.9 }
//! [saga.canary]
//! steps = [10, 50, 100]
//! analysis_window = "30s"
//! verify_chain_interval = "60s"          # audit chain verified at most this long before a saga
//! [saga.deadlines]
//! deploy = "15m"
//!
//! [escalation]
//! webhook_url = "http://127.0.0.1:9000/hook"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50051;

/// gRPC addresses of the other services of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peers {
    pub detector: String,
    pub rca: String,
    pub patcher: String,
    pub safety_gate: String,
    pub deployer: String,
    pub audit: String,
    /// Deadline of one call to a peer.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Deadline for establishing a connection to a peer.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            detector: "http://127.0.0.1:50052".into(),
            rca: "http://127.0.0.1:50053".into(),
            patcher: "http://127.0.0.1:50054".into(),
            safety_gate: "http://127.0.0.1:50055".into(),
            deployer: "http://127.0.0.1:50056".into(),
            audit: "http://127.0.0.1:50057".into(),
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl Peers {
    /// Each peer as (component name, gRPC address).
    pub fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("detector", self.detector.as_str()),
            ("rca", self.rca.as_str()),
            ("patcher", self.patcher.as_str()),
            ("safety-gate", self.safety_gate.as_str()),
            ("deployer", self.deployer.as_str()),
            ("audit", self.audit.as_str()),
        ]
    }
}

/// Where leases live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    /// In this process (a single orchestrator; the default on a bare machine).
    Embedded,
    /// Redis, shared by every orchestrator instance.
    Redis,
}

/// The lock store and the lease of a saga.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockConfig {
    pub backend: LockBackend,
    pub redis_url: String,
    /// Prefix of the Redis keys (`{prefix}lock:{service}`, `{prefix}fence:{service}`).
    pub key_prefix: String,
    /// Lease time to live; the lease is renewed every `ttl / 3` while the saga runs.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Deadline of one command to the lock store.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            backend: LockBackend::Embedded,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "selfheal:".into(),
            ttl: Duration::from_secs(15),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The canary plan sent with every Deploy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryConfig {
    /// Traffic percentages, ascending, ending at 100.
    pub steps: Vec<u32>,
    #[serde(with = "humantime_serde")]
    pub analysis_window: Duration,
    pub min_requests: u64,
    /// Absolute error-rate ceiling of the canary, 0..1.
    pub max_error_rate: f64,
    /// Failed analyses tolerated before rollback.
    pub failure_limit: u32,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            steps: vec![10, 50, 100],
            analysis_window: Duration::from_secs(30),
            min_requests: 20,
            max_error_rate: 0.05,
            failure_limit: 0,
        }
    }
}

/// How the stable version is verified after promotion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_requests: 20,
            max_error_rate: 0.05,
        }
    }
}

/// Deadline of each step, retries and backoff included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepDeadlines {
    /// Taking the lease; longer than the lock TTL so a crashed holder's lease can expire.
    #[serde(with = "humantime_serde")]
    pub lock: Duration,
    #[serde(with = "humantime_serde")]
    pub analyze: Duration,
    #[serde(with = "humantime_serde")]
    pub patch: Duration,
    /// Building and testing every candidate.
    #[serde(with = "humantime_serde")]
    pub gate: Duration,
    /// The whole canary rollout.
    #[serde(with = "humantime_serde")]
    pub deploy: Duration,
    #[serde(with = "humantime_serde")]
    pub verify: Duration,
    /// Each compensation (a rollback).
    #[serde(with = "humantime_serde")]
    pub compensate: Duration,
    /// Appending one journal record; past it the saga fails closed.
    #[serde(with = "humantime_serde")]
    pub journal: Duration,
    /// Recording deployments and fixes in the graph.
    #[serde(with = "humantime_serde")]
    pub record: Duration,
}

impl Default for StepDeadlines {
    fn default() -> Self {
        Self {
            lock: Duration::from_secs(60),
            analyze: Duration::from_secs(120),
            patch: Duration::from_secs(120),
            gate: Duration::from_secs(20 * 60),
            deploy: Duration::from_secs(20 * 60),
            verify: Duration::from_secs(5 * 60),
            compensate: Duration::from_secs(5 * 60),
            journal: Duration::from_secs(30),
            record: Duration::from_secs(30),
        }
    }
}

/// Backoff between attempts of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffConfig {
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

/// How sagas run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SagaConfig {
    /// Sagas of different services running at once; the others wait in DETECTED.
    pub max_parallel: usize,
    /// Root-cause confidence below which the saga escalates.
    pub min_confidence: f64,
    /// Candidates asked of the patcher.
    pub max_candidates: u32,
    /// Failing and passing requests asked of the deployer for replay.
    pub replay_requests: u32,
    /// Criticality (0..1) of services not listed in `criticality`.
    pub default_criticality: f64,
    /// Criticality per service, sent to the safety gate.
    pub criticality: BTreeMap<String, f64>,
    /// Number of dependents per service, sent to the safety gate.
    pub dependents: BTreeMap<String, u32>,
    pub canary: CanaryConfig,
    pub verify: VerifyConfig,
    pub deadlines: StepDeadlines,
    pub backoff: BackoffConfig,
    /// How long a good verification of the audit chain holds: a saga starts only after the
    /// chain verified within this interval (verified again otherwise). `0s` verifies before
    /// every saga. A broken chain halts automation until a person acknowledges it.
    #[serde(with = "humantime_serde")]
    pub verify_chain_interval: Duration,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            max_parallel: 4,
            min_confidence: 0.6,
            max_candidates: 5,
            replay_requests: 20,
            default_criticality: 0.5,
            criticality: BTreeMap::new(),
            dependents: BTreeMap::new(),
            canary: CanaryConfig::default(),
            verify: VerifyConfig::default(),
            deadlines: StepDeadlines::default(),
            backoff: BackoffConfig::default(),
            verify_chain_interval: Duration::from_secs(60),
        }
    }
}

impl SagaConfig {
    /// The criticality the gate is told for `service`.
    pub fn criticality_of(&self, service: &str) -> f64 {
        self.criticality
            .get(service)
            .copied()
            .unwrap_or(self.default_criticality)
    }
}

/// Where escalation reports go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EscalationConfig {
    /// URL the JSON report is POSTed to; empty: reports are only journaled and logged.
    pub webhook_url: String,
    /// Deadline of one POST.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// POST attempts before giving up (failures are recorded on the saga).
    pub attempts: u32,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            timeout: Duration::from_secs(5),
            attempts: 3,
        }
    }
}

/// Everything the orchestrator reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub peers: Peers,
    pub lock: LockConfig,
    pub saga: SagaConfig,
    pub escalation: EscalationConfig,
    /// Name of this orchestrator in lease owners and journal records; empty: host name and pid.
    pub instance: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            peers: Peers::default(),
            lock: LockConfig::default(),
            saga: SagaConfig::default(),
            escalation: EscalationConfig::default(),
            instance: String::new(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        for (name, address) in self.peers.named() {
            let key = name.replace('-', "_");
            problems.check(
                address.starts_with("http://") || address.starts_with("https://"),
                || format!("peers.{key} must be an http:// or https:// URL (got {address:?})"),
            );
        }
        problems.check(!self.peers.call_timeout.is_zero(), || {
            "peers.call_timeout must be greater than zero".into()
        });
        problems.check(!self.peers.connect_timeout.is_zero(), || {
            "peers.connect_timeout must be greater than zero".into()
        });
        self.validate_lock(problems);
        self.validate_saga(problems);
        let hook = &self.escalation.webhook_url;
        problems.check(
            hook.is_empty() || hook.starts_with("http://") || hook.starts_with("https://"),
            || format!("escalation.webhook_url must be empty or an http(s) URL (got {hook:?})"),
        );
        problems.check(!self.escalation.timeout.is_zero(), || {
            "escalation.timeout must be greater than zero".into()
        });
        problems.check(self.escalation.attempts >= 1, || {
            "escalation.attempts must be at least 1".into()
        });
        problems.check(
            self.instance.len() <= 100 && !self.instance.chars().any(char::is_control),
            || "instance must be at most 100 printable characters".into(),
        );
    }
}

fn unit(value: f64) -> bool {
    (0.0..=1.0).contains(&value)
}

impl Config {
    fn validate_lock(&self, problems: &mut Problems) {
        let lock = &self.lock;
        if lock.backend == LockBackend::Redis {
            problems.check(
                lock.redis_url.starts_with("redis://") || lock.redis_url.starts_with("rediss://"),
                || {
                    format!(
                        "lock.redis_url must be a redis:// URL (got {:?})",
                        lock.redis_url
                    )
                },
            );
        }
        problems.check(lock.ttl >= Duration::from_millis(100), || {
            format!("lock.ttl must be at least 100ms (got {:?})", lock.ttl)
        });
        problems.check(!lock.timeout.is_zero(), || {
            "lock.timeout must be greater than zero".into()
        });
    }

    fn validate_saga(&self, problems: &mut Problems) {
        let saga = &self.saga;
        problems.check(saga.max_parallel >= 1, || {
            "saga.max_parallel must be at least 1".into()
        });
        problems.check(unit(saga.min_confidence), || {
            format!(
                "saga.min_confidence must be within 0..1 (got {})",
                saga.min_confidence
            )
        });
        problems.check(saga.max_candidates >= 1, || {
            "saga.max_candidates must be at least 1".into()
        });
        problems.check(unit(saga.default_criticality), || {
            "saga.default_criticality must be within 0..1".into()
        });
        for (service, value) in &saga.criticality {
            problems.check(unit(*value), || {
                format!("saga.criticality.{service} must be within 0..1 (got {value})")
            });
        }
        let steps = &saga.canary.steps;
        problems.check(
            !steps.is_empty()
                && steps.windows(2).all(|pair| pair[0] < pair[1])
                && steps.last() == Some(&100)
                && steps.first().is_some_and(|first| *first > 0),
            || format!("saga.canary.steps must rise strictly from above 0 to 100 (got {steps:?})"),
        );
        problems.check(!saga.canary.analysis_window.is_zero(), || {
            "saga.canary.analysis_window must be greater than zero".into()
        });
        problems.check(unit(saga.canary.max_error_rate), || {
            "saga.canary.max_error_rate must be within 0..1".into()
        });
        problems.check(!saga.verify.window.is_zero(), || {
            "saga.verify.window must be greater than zero".into()
        });
        problems.check(unit(saga.verify.max_error_rate), || {
            "saga.verify.max_error_rate must be within 0..1".into()
        });
        let d = &saga.deadlines;
        for (name, value) in [
            ("lock", d.lock),
            ("analyze", d.analyze),
            ("patch", d.patch),
            ("gate", d.gate),
            ("deploy", d.deploy),
            ("verify", d.verify),
            ("compensate", d.compensate),
            ("journal", d.journal),
            ("record", d.record),
        ] {
            problems.check(!value.is_zero(), || {
                format!("saga.deadlines.{name} must be greater than zero")
            });
        }
        problems.check(saga.backoff.max_attempts >= 1, || {
            "saga.backoff.max_attempts must be at least 1".into()
        });
        problems.check(saga.backoff.initial <= saga.backoff.max, || {
            "saga.backoff.initial must not exceed saga.backoff.max".into()
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

    fn problems(config: &Config) -> Vec<String> {
        let mut problems = Problems::default();
        config.validate(&mut problems);
        problems.into_vec()
    }

    #[test]
    fn defaults_are_valid_embedded_and_canary_10_50_100() {
        let config = Config::default();
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        assert_eq!(config.lock.backend, LockBackend::Embedded);
        assert_eq!(config.saga.canary.steps, [10, 50, 100]);
        assert!((config.saga.min_confidence - 0.6).abs() < f64::EPSILON);
        assert!(
            config.saga.deadlines.lock > config.lock.ttl,
            "a crashed holder's lease can lapse within the lock step"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut config = Config::default();
        config.lock.backend = LockBackend::Redis;
        config.lock.redis_url = "localhost:6379".into();
        config.saga.max_parallel = 0;
        config.saga.min_confidence = 1.5;
        config.saga.criticality.insert("svc".into(), -1.0);
        config.saga.canary.steps = vec![50, 10];
        config.saga.deadlines.deploy = Duration::ZERO;
        config.escalation.webhook_url = "ftp://x".into();
        let found = problems(&config);
        for needle in [
            "lock.redis_url",
            "saga.max_parallel",
            "saga.min_confidence",
            "saga.criticality.svc",
            "saga.canary.steps",
            "saga.deadlines.deploy",
            "escalation.webhook_url",
        ] {
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "{needle} missing in {found:#?}"
            );
        }
    }

    #[test]
    fn criticality_falls_back_to_the_default() {
        let mut saga = SagaConfig::default();
        saga.criticality.insert("payment-service".into(), 0.9);
        assert!((saga.criticality_of("payment-service") - 0.9).abs() < f64::EPSILON);
        assert!((saga.criticality_of("other") - 0.5).abs() < f64::EPSILON);
    }
}
