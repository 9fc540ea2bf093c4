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
    /// The optional LLM provider; off unless `enabled`.
    pub llm: LlmConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            max_candidates: 8,
            git_timeout: Duration::from_secs(20),
            llm: LlmConfig::default(),
        }
    }
}

/// `[llm]`: a model behind an OpenAI-compatible chat-completions API
/// (`POST {base_url}/chat/completions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmConfig {
    pub enabled: bool,
    /// e.g. `https://api.openai.com/v1` or a local server's `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// The name of the environment variable holding the bearer key (never the key itself);
    /// empty for servers without authentication.
    pub api_key_env: String,
    /// Deadline of one completion, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub max_tokens: u32,
    /// The largest diff (added plus removed lines) asked for and accepted.
    pub max_changed_lines: u32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(30),
            max_tokens: 1024,
            max_changed_lines: 20,
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
        if self.llm.enabled {
            let llm = &self.llm;
            problems.check(
                llm.base_url.starts_with("http://") || llm.base_url.starts_with("https://"),
                || {
                    format!(
                        "llm.base_url must be an http(s) URL, not {:?}",
                        llm.base_url
                    )
                },
            );
            problems.check(!llm.model.trim().is_empty(), || {
                "llm.model must not be empty".into()
            });
            problems.check(
                llm.api_key_env
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                || "llm.api_key_env must be an environment variable name".into(),
            );
            problems.check(!llm.timeout.is_zero(), || {
                "llm.timeout must be greater than zero".into()
            });
            problems.check((1..=32_768).contains(&llm.max_tokens), || {
                "llm.max_tokens must be between 1 and 32768".into()
            });
            problems.check((1..=1000).contains(&llm.max_changed_lines), || {
                "llm.max_changed_lines must be between 1 and 1000".into()
            });
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

    #[test]
    fn the_llm_is_off_by_default_and_checked_only_when_enabled() {
        let mut config = Config::default();
        config.llm.base_url = "ftp://x".into();
        let mut problems = Problems::default();
        config.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");

        config.llm.enabled = true;
        config.llm.model = " ".into();
        config.llm.api_key_env = "A KEY".into();
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let text = format!("{problems:?}");
        for key in ["llm.base_url", "llm.model", "llm.api_key_env"] {
            assert!(text.contains(key), "{text}");
        }
    }
}
