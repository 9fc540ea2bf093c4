//! Configuration of the patcher service.

use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50054;

/// Everything the patcher service reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    /// Candidates returned when a request does not say.
    pub max_candidates: usize,
    /// Deadline of one git command.
    #[serde(with = "humantime_serde")]
    pub git_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            max_candidates: 8,
            git_timeout: Duration::from_secs(20),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        problems.check((1..=100).contains(&self.max_candidates), || {
            "max_candidates must be between 1 and 100".into()
        });
        problems.check(!self.git_timeout.is_zero(), || {
            "git_timeout must be greater than zero".into()
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
