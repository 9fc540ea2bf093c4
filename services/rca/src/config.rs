//! Configuration of the rca service.

use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

use crate::localize::LocalizeSettings;

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50053;

/// The largest `max_trace_bytes` accepted: gRPC refuses messages over 4 MiB by default.
const MAX_TRACE_BYTES_CEILING: usize = 4 * 1024 * 1024;

/// Everything the rca service reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub localize: LocalizeConfig,
}

/// Limits of code localisation (`[localize]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalizeConfig {
    /// Trace texts longer than this many bytes are refused with INVALID_ARGUMENT.
    pub max_trace_bytes: usize,
    /// Deadline of each git command.
    #[serde(with = "humantime_serde")]
    pub git_timeout: Duration,
    /// Localisations running at once; more wait their turn.
    pub max_concurrent: usize,
}

impl Default for LocalizeConfig {
    fn default() -> Self {
        let settings = LocalizeSettings::default();
        Self {
            max_trace_bytes: settings.max_trace_bytes,
            git_timeout: settings.git_timeout,
            max_concurrent: settings.max_concurrent,
        }
    }
}

impl LocalizeConfig {
    /// The domain's view of this section.
    pub fn settings(&self) -> LocalizeSettings {
        LocalizeSettings {
            max_trace_bytes: self.max_trace_bytes,
            git_timeout: self.git_timeout,
            max_concurrent: self.max_concurrent,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            localize: LocalizeConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        let max = self.localize.max_trace_bytes;
        problems.check(max > 0 && max <= MAX_TRACE_BYTES_CEILING, || {
            format!(
                "localize.max_trace_bytes must be between 1 and {MAX_TRACE_BYTES_CEILING}, not {max}"
            )
        });
        problems.check(!self.localize.git_timeout.is_zero(), || {
            "localize.git_timeout must be more than zero".to_owned()
        });
        problems.check(self.localize.max_concurrent > 0, || {
            "localize.max_concurrent must be at least 1".to_owned()
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
    fn defaults_are_valid_and_a_zero_limit_is_not() {
        let problems = |config: &Config| {
            let mut problems = Problems::default();
            config.validate(&mut problems);
            problems.into_vec()
        };
        assert!(problems(&Config::default()).is_empty());
        let mut config = Config::default();
        config.localize.max_trace_bytes = 0;
        config.localize.git_timeout = Duration::ZERO;
        config.localize.max_concurrent = 0;
        assert_eq!(problems(&config).len(), 3);
    }
}
