//! Configuration of the deployer service.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50056;

/// Everything the deployer service reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    /// Worktrees, build logs, copied artifacts and the fencing-token file live here.
    pub data_dir: PathBuf,
    pub build: BuildConfig,
    pub router: RouterConfig,
    pub processes: ProcessConfig,
    /// The plan used for the fields a CANARY request leaves empty.
    pub canary: CanaryDefaults,
}

/// How versions are built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildConfig {
    /// `CARGO_TARGET_DIR` shared by every build so rebuilds are incremental. Unset: the
    /// environment's `CARGO_TARGET_DIR`, else `<data_dir>/target`.
    pub target_dir: Option<PathBuf>,
    /// A build running longer than this is killed and fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How many lines of the build log a failure carries.
    pub log_tail_lines: usize,
}

/// The weighted HTTP router in front of each service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouterConfig {
    /// Host the public listeners bind to.
    pub bind_host: IpAddr,
    /// Public port per service name; a service not listed gets a free port on first deploy.
    pub ports: BTreeMap<String, u16>,
    /// Largest request body the router forwards, in bytes.
    pub max_body_bytes: usize,
    /// How many failing (and, separately, passing) requests are kept for replay.
    pub sample_capacity: usize,
    /// How much of a request body a sample keeps, in bytes.
    pub sample_body_bytes: usize,
    /// An upstream answering slower than this counts as a failed (504) request.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
}

/// The processes that run versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    /// First port handed to versions (inclusive).
    pub port_range_start: u16,
    /// Last port handed to versions (inclusive).
    pub port_range_end: u16,
    /// A version that does not answer its health path within this is stopped and fails.
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Lines of stdout/stderr kept per service for `Logs`.
    pub log_lines: usize,
    /// Longest wait between restarts of a crashing process.
    #[serde(with = "humantime_serde")]
    pub max_restart_backoff: Duration,
    /// How long a replaced version may finish in-flight requests before it is stopped.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// Canary plan defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanaryDefaults {
    pub steps: Vec<u32>,
    #[serde(with = "humantime_serde")]
    pub analysis_window: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub failure_limit: u32,
    /// Bounds on the canary's resident memory, checked in every analysis window.
    pub memory: MemoryLimits,
}

/// The canary's memory check. During every analysis window the deployer reads the resident
/// memory (RSS, `VmRSS` of `/proc/<pid>/status`, summed over each version's process and its
/// descendants) of the canary and stable every `sample_interval`, and fails the window when the canary leaks: its RSS grows (least-squares
/// slope over the window) faster than `max_growth_mib_per_s` and faster than stable's, by at least
/// `min_growth_mib` over the window; or it ends the window more than `max_excess_mib` above
/// stable's. A healthy fresh process grows by a fraction of a MiB while it warms up, then stays
/// flat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryLimits {
    /// How often both processes are read during a window; `0s` turns the memory check off.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// The canary's RSS growing faster than this, in MiB per second, is a leak...
    pub max_growth_mib_per_s: f64,
    /// ...once it has grown at least this many MiB over the window.
    pub min_growth_mib: f64,
    /// The canary's RSS above stable's by more than this many MiB fails too; `0` turns this
    /// bound off.
    pub max_excess_mib: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            data_dir: std::env::temp_dir().join("selfheal-deployer"),
            build: BuildConfig::default(),
            router: RouterConfig::default(),
            processes: ProcessConfig::default(),
            canary: CanaryDefaults::default(),
        }
    }
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            target_dir: None,
            timeout: Duration::from_secs(600),
            log_tail_lines: 40,
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            bind_host: IpAddr::from([127, 0, 0, 1]),
            ports: BTreeMap::new(),
            max_body_bytes: 1 << 20,
            sample_capacity: 64,
            sample_body_bytes: 4096,
            upstream_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            port_range_start: 41000,
            port_range_end: 41999,
            health_timeout: Duration::from_secs(15),
            log_lines: 2000,
            max_restart_backoff: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for CanaryDefaults {
    fn default() -> Self {
        Self {
            steps: vec![10, 50, 100],
            analysis_window: Duration::from_secs(30),
            min_requests: 50,
            max_error_rate: 0.05,
            failure_limit: 1,
            memory: MemoryLimits::default(),
        }
    }
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_millis(250),
            max_growth_mib_per_s: 1.0,
            min_growth_mib: 2.0,
            max_excess_mib: 256.0,
        }
    }
}

impl Config {
    /// The `CARGO_TARGET_DIR` builds share.
    pub fn build_target_dir(&self) -> PathBuf {
        self.build
            .target_dir
            .clone()
            .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
            .unwrap_or_else(|| self.data_dir.join("target"))
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        problems.check(!self.data_dir.as_os_str().is_empty(), || {
            "data_dir must not be empty".into()
        });
        problems.check(!self.build.timeout.is_zero(), || {
            "build.timeout must be greater than zero".into()
        });
        let p = &self.processes;
        problems.check(
            p.port_range_start != 0 && p.port_range_start <= p.port_range_end,
            || {
                format!(
                    "processes.port_range_start must be non-zero and at most processes.port_range_end ({} > {})",
                    p.port_range_start, p.port_range_end
                )
            },
        );
        problems.check(!p.health_timeout.is_zero(), || {
            "processes.health_timeout must be greater than zero".into()
        });
        problems.check(p.log_lines > 0, || {
            "processes.log_lines must be greater than zero".into()
        });
        problems.check(self.router.max_body_bytes > 0, || {
            "router.max_body_bytes must be greater than zero".into()
        });
        for (service, port) in &self.router.ports {
            problems.check(
                *port < p.port_range_start || *port > p.port_range_end,
                || {
                    format!(
                        "router.ports.{service} ({port}) must lie outside the version port range"
                    )
                },
            );
        }
        validate_plan(&self.canary, "canary", problems);
        let m = &self.canary.memory;
        problems.check(
            m.max_growth_mib_per_s.is_finite() && m.max_growth_mib_per_s > 0.0,
            || {
                format!(
                    "canary.memory.max_growth_mib_per_s must be greater than zero ({})",
                    m.max_growth_mib_per_s
                )
            },
        );
        for (name, value) in [
            ("min_growth_mib", m.min_growth_mib),
            ("max_excess_mib", m.max_excess_mib),
        ] {
            problems.check(value.is_finite() && value >= 0.0, || {
                format!("canary.memory.{name} must be zero or more ({value})")
            });
        }
    }
}

/// Adds the problems of a canary plan under `section`; shared with request validation.
pub(crate) fn validate_plan(plan: &CanaryDefaults, section: &str, problems: &mut Problems) {
    problems.check(!plan.steps.is_empty(), || {
        format!("{section}.steps must not be empty")
    });
    problems.check(plan.steps.windows(2).all(|w| w[0] < w[1]), || {
        format!("{section}.steps must increase ({:?})", plan.steps)
    });
    problems.check(plan.steps.iter().all(|s| (1..=100).contains(s)), || {
        format!("{section}.steps must each be within 1..=100")
    });
    problems.check(plan.steps.last() == Some(&100), || {
        format!("{section}.steps must end at 100")
    });
    problems.check(!plan.analysis_window.is_zero(), || {
        format!("{section}.analysis_window must be greater than zero")
    });
    problems.check((0.0..=1.0).contains(&plan.max_error_rate), || {
        format!("{section}.max_error_rate must be within 0..=1")
    });
    problems.check(plan.failure_limit > 0, || {
        format!("{section}.failure_limit must be at least 1")
    });
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
    fn lists_every_problem() {
        let mut config = Config::default();
        config.processes.port_range_start = 5000;
        config.processes.port_range_end = 4000;
        config.processes.health_timeout = Duration::ZERO;
        config.canary.steps = vec![50, 10];
        config.canary.max_error_rate = 2.0;
        config.canary.failure_limit = 0;
        config.canary.memory.max_growth_mib_per_s = 0.0;
        config.canary.memory.max_excess_mib = f64::NAN;
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let problems = problems.into_vec();
        for needle in [
            "port_range_start",
            "health_timeout",
            "steps must increase",
            "must end at 100",
            "max_error_rate",
            "failure_limit",
            "max_growth_mib_per_s",
            "max_excess_mib",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} missing from {problems:#?}"
            );
        }
    }
}
