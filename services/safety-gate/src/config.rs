//! Configuration of the safety-gate service: where it works, the sandbox, limits and thresholds.

use std::path::PathBuf;
use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50055;

/// Everything the safety-gate service reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub gate: GateConfig,
}

/// Whether build, test and the replayed process run in the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Use the network sandbox when this machine supports it; otherwise record a warning and
    /// never approve without a human.
    Auto,
    /// Refuse to start when the network sandbox is unavailable.
    Require,
    /// Never isolate the network (limits, temp dir and environment scrubbing still apply);
    /// every verdict carries a warning and needs a human at best.
    Off,
}

/// The `[gate]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// Worktrees, baseline artifacts and per-stage temp dirs live here.
    pub work_dir: PathBuf,
    /// `CARGO_TARGET_DIR` shared by every build, so a warm gate run is incremental. Unset: the
    /// environment's `CARGO_TARGET_DIR`, else `<work_dir>/target`.
    pub target_dir: Option<PathBuf>,
    /// Risk at or below this approves a candidate whose checks all pass.
    pub approve_threshold: f64,
    /// Risk above this rejects a candidate even when its checks pass.
    pub reject_threshold: f64,
    pub sandbox: SandboxMode,
    /// Wall-time limit of one build.
    #[serde(with = "humantime_serde")]
    pub build_timeout: Duration,
    /// Wall-time limit of one test run.
    #[serde(with = "humantime_serde")]
    pub test_timeout: Duration,
    /// How long the patched service may take to answer its health path.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Wall-time limit of one replayed request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Address-space limit (RLIMIT_AS) of builds and tests, in MiB.
    pub build_memory_mib: u64,
    /// Address-space limit (RLIMIT_AS) of the replayed service, in MiB.
    pub run_memory_mib: u64,
    /// Candidates beyond this many (in the order given) are not evaluated.
    pub max_candidates: usize,
    /// Paths (files, or directories ending in `/`) no fix may touch, on top of the target's
    /// manifest `[policy] forbidden_paths`.
    pub forbidden_paths: Vec<String>,
    /// When not empty, the only paths a fix may touch (together with the manifest's list).
    pub allowed_paths: Vec<String>,
    /// The largest diff (added plus removed lines) when the manifest sets no limit; the
    /// smaller of the two applies when both do.
    pub max_changed_lines: u32,
    /// Environment variables passed to sandboxed processes besides the built-in allowlist
    /// (PATH, HOME, CARGO_HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN, LANG, LC_ALL, USER); names that
    /// look like secrets are dropped anyway.
    pub env_allow: Vec<String>,
    /// How many lines of a failing stage's output its check carries.
    pub log_tail_lines: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            gate: GateConfig::default(),
        }
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            work_dir: std::env::temp_dir().join("selfheal-safety-gate"),
            target_dir: None,
            approve_threshold: 0.3,
            reject_threshold: 0.7,
            sandbox: SandboxMode::Auto,
            build_timeout: Duration::from_secs(600),
            test_timeout: Duration::from_secs(600),
            startup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            build_memory_mib: 8192,
            run_memory_mib: 4096,
            max_candidates: 5,
            forbidden_paths: Vec::new(),
            allowed_paths: Vec::new(),
            max_changed_lines: 200,
            env_allow: Vec::new(),
            log_tail_lines: 40,
        }
    }
}

impl GateConfig {
    /// The `CARGO_TARGET_DIR` builds share.
    pub fn build_target_dir(&self) -> PathBuf {
        self.target_dir
            .clone()
            .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
            .unwrap_or_else(|| self.work_dir.join("target"))
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        let g = &self.gate;
        problems.check((0.0..=1.0).contains(&g.approve_threshold), || {
            "gate.approve_threshold must be within 0..1".into()
        });
        problems.check((0.0..=1.0).contains(&g.reject_threshold), || {
            "gate.reject_threshold must be within 0..1".into()
        });
        problems.check(g.approve_threshold <= g.reject_threshold, || {
            "gate.approve_threshold must not exceed gate.reject_threshold".into()
        });
        for (key, value) in [
            ("gate.build_timeout", g.build_timeout),
            ("gate.test_timeout", g.test_timeout),
            ("gate.startup_timeout", g.startup_timeout),
            ("gate.request_timeout", g.request_timeout),
        ] {
            problems.check(!value.is_zero(), || {
                format!("{key} must be greater than zero")
            });
        }
        problems.check(g.build_memory_mib >= 64 && g.run_memory_mib >= 64, || {
            "gate.build_memory_mib and gate.run_memory_mib must be at least 64".into()
        });
        problems.check(g.max_candidates > 0, || {
            "gate.max_candidates must be at least 1".into()
        });
        problems.check(g.max_changed_lines > 0, || {
            "gate.max_changed_lines must be at least 1".into()
        });
        problems.check(g.work_dir.is_absolute(), || {
            format!("gate.work_dir must be absolute: {}", g.work_dir.display())
        });
        for path in g.forbidden_paths.iter().chain(&g.allowed_paths) {
            problems.check(
                !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
                || format!("gate path entry {path:?} must be relative to the repository"),
            );
        }
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
    fn defaults_are_valid() {
        assert_eq!(problems(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn reports_every_bad_setting() {
        let mut config = Config::default();
        config.gate.approve_threshold = 0.9;
        config.gate.reject_threshold = 0.5;
        config.gate.max_candidates = 0;
        config.gate.forbidden_paths = vec!["../etc".into()];
        let problems = problems(&config).join("\n");
        for key in ["approve_threshold", "max_candidates", "../etc"] {
            assert!(problems.contains(key), "{problems}");
        }
    }
}
