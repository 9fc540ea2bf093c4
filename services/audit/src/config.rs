//! Configuration of the audit service.
//!
//! ```toml
//! store = "file"                 # or "elasticsearch"
//! checkpoint_interval = 100      # records per signed checkpoint
//! payload_limit = 262144         # bytes of JSON per record payload
//! # signing_key = "<64 hex digits>"      # Ed25519 seed; or:
//! # signing_key_file = "/path/to/key"    # default: signing.key beside the store
//!
//! [file]
//! path = "~/.local/share/selfheal/audit"
//!
//! [elasticsearch]
//! url = "http://127.0.0.1:9200"
//! index = "selfheal-audit"
//! timeout = "5s"
//! spool_dir = "~/.local/share/selfheal/audit-spool"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

use crate::chain::checkpoint::CheckpointSigner;

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50057;

/// Default limit on one record's payload: 256 KiB of JSON.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 256 * 1024;

/// Largest payload limit accepted: what fits a default gRPC message.
const MAX_PAYLOAD_LIMIT: usize = 4 * 1024 * 1024 - 64 * 1024;

/// The signing key's file name beside the store when none is configured.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Which store keeps the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The JSON-lines file (embedded default).
    File,
    /// Elasticsearch (or OpenSearch 2), with a local spool.
    Elasticsearch,
}

/// The JSON-lines store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileStoreConfig {
    /// Directory of the records file (and of a generated signing key).
    pub path: PathBuf,
}

impl Default for FileStoreConfig {
    fn default() -> Self {
        Self {
            path: data_dir().join("audit"),
        }
    }
}

/// The Elasticsearch store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ElasticsearchStoreConfig {
    pub url: String,
    pub index: String,
    /// Timeout of every request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Directory of the spool (and of a generated signing key).
    pub spool_dir: PathBuf,
}

impl Default for ElasticsearchStoreConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".to_owned(),
            index: "selfheal-audit".to_owned(),
            timeout: Duration::from_secs(5),
            spool_dir: data_dir().join("audit-spool"),
        }
    }
}

/// Everything the audit service reads at start-up.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreKind,
    pub file: FileStoreConfig,
    pub elasticsearch: ElasticsearchStoreConfig,
    /// A signed checkpoint is written after this many records.
    pub checkpoint_interval: u64,
    /// Hex Ed25519 seed. Never written out by `--dump-config`.
    #[serde(skip_serializing)]
    pub signing_key: Option<String>,
    /// File holding the hex seed; generated at first start when absent.
    pub signing_key_file: Option<PathBuf>,
    /// Most bytes of JSON one record's payload may have.
    pub payload_limit: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("store", &self.store)
            .field("file", &self.file)
            .field("elasticsearch", &self.elasticsearch)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("signing_key_file", &self.signing_key_file)
            .field("payload_limit", &self.payload_limit)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            store: StoreKind::File,
            file: FileStoreConfig::default(),
            elasticsearch: ElasticsearchStoreConfig::default(),
            checkpoint_interval: 100,
            signing_key: None,
            signing_key_file: None,
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        }
    }
}

impl Config {
    /// A file-store configuration rooted at `dir`, for tests and embedding.
    pub fn with_file_store(dir: impl Into<PathBuf>) -> Self {
        Self {
            file: FileStoreConfig { path: dir.into() },
            ..Self::default()
        }
    }

    /// The directory beside which a generated signing key is kept.
    pub fn store_dir(&self) -> &Path {
        match self.store {
            StoreKind::File => &self.file.path,
            StoreKind::Elasticsearch => &self.elasticsearch.spool_dir,
        }
    }

    /// Where the signing key file is (configured, or beside the store).
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.store_dir().join(SIGNING_KEY_FILE))
    }
}

/// `$XDG_DATA_HOME/selfheal`, else `$HOME/.local/share/selfheal`, else `./.selfheal`.
fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("selfheal");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/share/selfheal");
    }
    PathBuf::from(".selfheal")
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        problems.check((1..=100_000).contains(&self.checkpoint_interval), || {
            format!(
                "checkpoint_interval must be between 1 and 100000 (got {})",
                self.checkpoint_interval
            )
        });
        problems.check(
            (1..=MAX_PAYLOAD_LIMIT).contains(&self.payload_limit),
            || {
                format!(
                    "payload_limit must be between 1 and {MAX_PAYLOAD_LIMIT} bytes (got {})",
                    self.payload_limit
                )
            },
        );
        if let Some(seed) = &self.signing_key {
            problems.check(CheckpointSigner::from_hex(seed).is_ok(), || {
                "signing_key must be 64 hex digits (a 32-byte Ed25519 seed)".to_owned()
            });
            problems.check(self.signing_key_file.is_none(), || {
                "set signing_key or signing_key_file, not both".to_owned()
            });
        }
        match self.store {
            StoreKind::File => {
                problems.check(!self.file.path.as_os_str().is_empty(), || {
                    "file.path must not be empty".to_owned()
                });
            }
            StoreKind::Elasticsearch => self.validate_elasticsearch(problems),
        }
    }
}

impl Config {
    fn validate_elasticsearch(&self, problems: &mut Problems) {
        let es = &self.elasticsearch;
        problems.check(
            es.url.starts_with("http://") || es.url.starts_with("https://"),
            || {
                format!(
                    "elasticsearch.url must start with http:// or https:// (got {:?})",
                    es.url
                )
            },
        );
        let index_ok = !es.index.is_empty()
            && es.index.len() <= 255
            && es.index == es.index.to_lowercase()
            && !es.index.starts_with(['_', '-', '+'])
            && !es
                .index
                .contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']);
        problems.check(index_ok, || {
            format!(
                "elasticsearch.index must be a lowercase index name without spaces or \\/*?\"<>|,#: (got {:?})",
                es.index
            )
        });
        problems.check(
            !es.timeout.is_zero() && es.timeout <= Duration::from_secs(600),
            || "elasticsearch.timeout must be greater than zero and at most 10m".to_owned(),
        );
        problems.check(!es.spool_dir.as_os_str().is_empty(), || {
            "elasticsearch.spool_dir must not be empty".to_owned()
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
    fn defaults_are_valid_and_use_the_file_store() {
        let config = Config::default();
        let mut problems = Problems::default();
        config.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.store, StoreKind::File);
        assert!(config.signing_key_path().ends_with("audit/signing.key"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = Config {
            store: StoreKind::Elasticsearch,
            checkpoint_interval: 0,
            payload_limit: 0,
            signing_key: Some("xyz".into()),
            elasticsearch: ElasticsearchStoreConfig {
                url: "localhost:9200".into(),
                index: "Bad Index".into(),
                timeout: Duration::ZERO,
                spool_dir: PathBuf::new(),
            },
            ..Config::default()
        };
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let problems = problems.into_vec();
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }

    #[test]
    fn the_signing_key_is_never_dumped_or_debug_printed() {
        let config = Config {
            signing_key: Some("11".repeat(32)),
            ..Config::default()
        };
        let dumped = selfheal_service::config::to_toml(&config).unwrap();
        assert!(!dumped.contains(&"11".repeat(32)), "{dumped}");
        assert!(!format!("{config:?}").contains(&"11".repeat(32)));
    }
}
