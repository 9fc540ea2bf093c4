//! Configuration of the rca service.
//!
//! ```toml
//! [graph]
//! backend = "embedded"            # or "neo4j"
//! uri = "bolt://127.0.0.1:7687"
//! user = "neo4j"
//! # password = "…"               # never written out by --dump-config
//! namespace = "selfheal"          # every node carries it; installations sharing a server differ
//! query_timeout = "2s"
//! connect_timeout = "10s"         # schema creation at start waits this long, then goes on
//!
//! [sources]
//! deployer = "http://127.0.0.1:50056"   # Logs and Status; "" = not configured
//! detector = "http://127.0.0.1:50052"   # QuerySeries; "" = not configured
//! jaeger_query_url = ""                 # e.g. "http://127.0.0.1:16686"
//! elasticsearch_url = ""                # e.g. "http://127.0.0.1:9200", with elasticsearch_index
//! elasticsearch_index = ""
//! timeout = "5s"
//! window_before = "15m"
//! window_after = "5m"
//! max_log_lines = 5000
//! max_log_bytes = 1048576
//! ```
//!
//! Standalone, `SELFHEAL_GRAPH__BACKEND=neo4j` sets `graph.backend`; inside `selfheal up` the
//! same key is `SELFHEAL_RCA__GRAPH__BACKEND`.

use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

use crate::graph::Neo4jSettings;
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
    pub graph: GraphConfig,
    pub sources: SourcesConfig,
    pub analysis: AnalysisConfig,
}

/// Which dependency graph store to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphBackend {
    /// In memory, in this process (the default).
    Embedded,
    /// Neo4j over Bolt.
    Neo4j,
}

/// The dependency graph (`[graph]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GraphConfig {
    pub backend: GraphBackend,
    /// `bolt://host:port` of Neo4j.
    pub uri: String,
    pub user: String,
    /// Never written out by `--dump-config`.
    #[serde(skip_serializing)]
    pub password: String,
    /// Every node rca writes or reads carries this namespace.
    pub namespace: String,
    /// Deadline of every graph query.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// How long start-up waits for Neo4j to create the schema before serving without it.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bolt connections in the pool.
    pub max_connections: usize,
}

impl std::fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphConfig")
            .field("backend", &self.backend)
            .field("uri", &self.uri)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("query_timeout", &self.query_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            backend: GraphBackend::Embedded,
            uri: "bolt://127.0.0.1:7687".to_owned(),
            user: "neo4j".to_owned(),
            password: String::new(),
            namespace: "selfheal".to_owned(),
            query_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            max_connections: 8,
        }
    }
}

impl GraphConfig {
    /// The Neo4j connection settings of this section.
    pub fn neo4j_settings(&self) -> Neo4jSettings {
        Neo4jSettings {
            uri: self.uri.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            namespace: self.namespace.clone(),
            query_timeout: self.query_timeout,
            max_connections: self.max_connections,
        }
    }
}

/// Where `Analyze` collects evidence when none is sent inline (`[sources]`). An empty address
/// means the source is not configured; analysis then says so in its gaps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourcesConfig {
    /// gRPC address of the deployer (`Logs`, `Status`).
    pub deployer: String,
    /// gRPC address of the detector (`QuerySeries`).
    pub detector: String,
    /// Jaeger's query service (`/api/traces`).
    pub jaeger_query_url: String,
    /// Elasticsearch (or OpenSearch) holding service logs.
    pub elasticsearch_url: String,
    pub elasticsearch_index: String,
    /// Document fields of the log index.
    pub elasticsearch_service_field: String,
    pub elasticsearch_message_field: String,
    pub elasticsearch_time_field: String,
    /// Deadline of each call to a source.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How far before `first_bad_at` evidence is collected (the baseline).
    #[serde(with = "humantime_serde")]
    pub window_before: Duration,
    /// How far after `first_bad_at` evidence is collected.
    #[serde(with = "humantime_serde")]
    pub window_after: Duration,
    /// Log lines kept per analysis (stack traces and error lines first).
    pub max_log_lines: usize,
    /// Bytes of log text kept per analysis.
    pub max_log_bytes: usize,
    /// Spans kept per analysis.
    pub max_spans: usize,
    /// Services whose evidence is collected: the incident's and its neighbours, up to this many.
    pub max_services: usize,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            deployer: "http://127.0.0.1:50056".to_owned(),
            detector: "http://127.0.0.1:50052".to_owned(),
            jaeger_query_url: String::new(),
            elasticsearch_url: String::new(),
            elasticsearch_index: String::new(),
            elasticsearch_service_field: "service".to_owned(),
            elasticsearch_message_field: "message".to_owned(),
            elasticsearch_time_field: "@timestamp".to_owned(),
            timeout: Duration::from_secs(5),
            window_before: Duration::from_secs(15 * 60),
            window_after: Duration::from_secs(5 * 60),
            max_log_lines: 5_000,
            max_log_bytes: 1024 * 1024,
            max_spans: 5_000,
            max_services: 16,
        }
    }
}

/// Limits of one analysis (`[analysis]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisConfig {
    /// Encoded `AnalyzeRequest`s larger than this are refused with INVALID_ARGUMENT.
    pub max_request_bytes: usize,
    /// A deployment this long before `first_bad_at` (or less) counts as a suspect change.
    #[serde(with = "humantime_serde")]
    pub change_window: Duration,
    /// Past fixes returned with a report.
    pub max_past_fixes: usize,
    /// Analyses running at once; more wait their turn.
    pub max_concurrent: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024 * 1024,
            change_window: Duration::from_secs(60 * 60),
            max_past_fixes: 10,
            max_concurrent: 4,
        }
    }
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
            graph: GraphConfig::default(),
            sources: SourcesConfig::default(),
            analysis: AnalysisConfig::default(),
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
        self.validate_graph(problems);
        self.validate_sources(problems);
        let analysis = &self.analysis;
        problems.check(
            analysis.max_request_bytes >= 1024 && analysis.max_request_bytes <= MAX_REQUEST_CEILING,
            || {
                format!(
                    "analysis.max_request_bytes must be between 1024 and {MAX_REQUEST_CEILING}, not {}",
                    analysis.max_request_bytes
                )
            },
        );
        problems.check(!analysis.change_window.is_zero(), || {
            "analysis.change_window must be more than zero".to_owned()
        });
        problems.check(analysis.max_past_fixes <= crate::graph::MAX_FIXES, || {
            format!(
                "analysis.max_past_fixes must be at most {}",
                crate::graph::MAX_FIXES
            )
        });
        problems.check(analysis.max_concurrent > 0, || {
            "analysis.max_concurrent must be at least 1".to_owned()
        });
    }
}

/// The largest request accepted: the gRPC server's receive limit is set to this.
const MAX_REQUEST_CEILING: usize = 64 * 1024 * 1024;

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl Config {
    fn validate_graph(&self, problems: &mut Problems) {
        let graph = &self.graph;
        if graph.backend == GraphBackend::Neo4j {
            problems.check(
                [
                    "bolt://",
                    "neo4j://",
                    "bolt+s://",
                    "neo4j+s://",
                    "bolt+ssc://",
                    "neo4j+ssc://",
                ]
                .iter()
                .any(|scheme| graph.uri.starts_with(scheme)),
                || {
                    format!(
                        "graph.uri must be a bolt:// or neo4j:// URI (got {:?})",
                        graph.uri
                    )
                },
            );
        }
        problems.check(!graph.namespace.is_empty(), || {
            "graph.namespace must not be empty".to_owned()
        });
        problems.check(!graph.query_timeout.is_zero(), || {
            "graph.query_timeout must be more than zero".to_owned()
        });
        problems.check(graph.max_connections > 0, || {
            "graph.max_connections must be at least 1".to_owned()
        });
    }

    fn validate_sources(&self, problems: &mut Problems) {
        let sources = &self.sources;
        for (key, url) in [
            ("deployer", &sources.deployer),
            ("detector", &sources.detector),
            ("jaeger_query_url", &sources.jaeger_query_url),
            ("elasticsearch_url", &sources.elasticsearch_url),
        ] {
            problems.check(url.is_empty() || is_http_url(url), || {
                format!("sources.{key} must be empty or an http:// or https:// URL (got {url:?})")
            });
        }
        problems.check(
            sources.elasticsearch_url.is_empty() == sources.elasticsearch_index.is_empty(),
            || "sources.elasticsearch_url and sources.elasticsearch_index go together".to_owned(),
        );
        problems.check(!sources.timeout.is_zero(), || {
            "sources.timeout must be more than zero".to_owned()
        });
        problems.check(
            sources.max_log_lines > 0 && sources.max_log_bytes >= 1024,
            || {
                "sources.max_log_lines must be at least 1 and sources.max_log_bytes at least 1024"
                    .to_owned()
            },
        );
        problems.check(sources.max_spans > 0, || {
            "sources.max_spans must be at least 1".to_owned()
        });
        problems.check(sources.max_services > 0, || {
            "sources.max_services must be at least 1".to_owned()
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

    #[test]
    fn graph_and_sources_settings_are_checked() {
        let problems = |config: &Config| {
            let mut problems = Problems::default();
            config.validate(&mut problems);
            problems.into_vec()
        };
        let mut config = Config::default();
        config.graph.backend = GraphBackend::Neo4j;
        config.graph.uri = "http://127.0.0.1:7474".into();
        config.sources.detector = "127.0.0.1:50052".into();
        config.sources.elasticsearch_url = "http://127.0.0.1:9200".into();
        let found = problems(&config);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].contains("graph.uri"), "{found:#?}");
    }

    #[test]
    fn the_graph_backend_nests_under_its_section_in_the_environment() {
        let env: Vec<(String, String)> = vec![
            ("SELFHEAL_GRAPH__BACKEND".into(), "neo4j".into()),
            ("SELFHEAL_GRAPH__QUERY_TIMEOUT".into(), "750ms".into()),
            (
                "SELFHEAL_SOURCES__JAEGER_QUERY_URL".into(),
                "http://127.0.0.1:16686".into(),
            ),
        ];
        let config = selfheal_service::load(
            &Config::default(),
            &selfheal_service::ConfigSources {
                file: None,
                env_prefix: "SELFHEAL_",
                env: &env,
                overrides: vec!["graph.password=secret".into()],
                file_table: None,
            },
        )
        .expect("valid");
        assert_eq!(config.graph.backend, GraphBackend::Neo4j);
        assert_eq!(config.graph.query_timeout, Duration::from_millis(750));
        assert_eq!(config.graph.password, "secret");
        assert_eq!(config.sources.jaeger_query_url, "http://127.0.0.1:16686");
        let dumped = toml::to_string(&config).expect("serialises");
        assert!(!dumped.contains("secret"), "{dumped}");
        assert!(!format!("{config:?}").contains("secret"));
    }
}
