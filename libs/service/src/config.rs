//! Layered configuration: defaults → TOML file → `SELFHEAL_*` environment → command line,
//! then validation that reports every problem at once.
//!
//! Environment keys use `__` between nesting levels: `SELFHEAL_SERVER__GRPC_ADDR` sets
//! `server.grpc_addr`. Variables without `__` (such as `SELFHEAL_CONFIG`) are not settings
//! and are ignored. The environment is read through [`EnvSource`] so tests can pass a map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where the gRPC and HTTP servers of a service listen, and how long shutdown may take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for `/metrics` and `/healthz` (and service-specific routes).
    pub http_addr: SocketAddr,
    /// How long in-flight calls may run after shutdown begins.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Loopback addresses for a service whose gRPC port is `grpc_port`; HTTP is `grpc_port + 10`.
    pub fn loopback(grpc_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port.saturating_add(10))),
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// Adds this section's problems under `section`.
    pub fn validate_into(&self, section: &str, problems: &mut Problems) {
        if self.grpc_addr.port() != 0 && self.grpc_addr == self.http_addr {
            problems.push(format!(
                "{section}.http_addr must differ from {section}.grpc_addr ({})",
                self.grpc_addr
            ));
        }
        if self.shutdown_grace.is_zero() {
            problems.push(format!(
                "{section}.shutdown_grace must be greater than zero"
            ));
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            problems.push(format!("{section}.shutdown_grace must be at most 10m"));
        }
    }
}

/// Collected validation problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Records one problem, phrased as what must hold.
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Records `problem` when `ok` is false.
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems, in order.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// A configuration that can check itself after loading.
pub trait Validate {
    /// Adds every problem found; adds nothing when the configuration is usable.
    fn validate(&self, problems: &mut Problems);
}

/// Errors from loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {} cannot be read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("command-line setting {0:?} must look like key=value")]
    BadOverride(String),
    #[error("invalid configuration:\n{}", bullet_list(.0))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every problem this error stands for, one per line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("  - {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where environment variables come from.
pub trait EnvSource {
    /// All variables, as name/value pairs.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for Vec<(String, String)> {
    fn vars(&self) -> Vec<(String, String)> {
        self.clone()
    }
}

/// The layers above the defaults.
pub struct ConfigSources<'a> {
    /// TOML file; a missing file is an error (it was asked for).
    pub file: Option<&'a Path>,
    /// Prefix of the environment variables, e.g. `SELFHEAL_` or `SELFHEAL_DETECTOR__`.
    pub env_prefix: &'a str,
    pub env: &'a dyn EnvSource,
    /// `key=value` settings from the command line; dotted keys (`server.grpc_addr=…`).
    pub overrides: Vec<String>,
    /// Focus on one table of the file (the `[detector]` table when one file configures all).
    pub file_table: Option<&'a str>,
}

impl std::fmt::Debug for ConfigSources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSources")
            .field("file", &self.file)
            .field("env_prefix", &self.env_prefix)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Loads `C` from `defaults` and `sources` (later layers win) and validates it.
pub fn load<C>(defaults: &C, sources: &ConfigSources<'_>) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned + Validate,
{
    let file = match sources.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            })?;
            let file = Figment::from(Toml::string(&text));
            Some(match sources.file_table {
                Some(table) => file.focus(table),
                None => file,
            })
        }
        None => None,
    };
    let env = env_dict(sources.env_prefix, sources.env);
    let mut overrides = Dict::new();
    for setting in &sources.overrides {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| ConfigError::BadOverride(setting.clone()))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(ConfigError::BadOverride(setting.clone()));
        }
        overrides = merge_nested(overrides, key, value);
    }

    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = &file {
        figment = figment.merge(file.clone());
    }
    let figment = figment
        .merge(Serialized::defaults(env.clone()))
        .merge(Serialized::defaults(overrides.clone()));
    let config: C = figment.extract().map_err(|error| {
        ConfigError::Invalid(error.into_iter().map(|e| e.to_string()).collect())
    })?;

    let unknown = unknown_keys::<C>(&figment);
    if !unknown.is_empty() {
        let origin = |key: &str| {
            if Figment::from(Serialized::defaults(overrides.clone()))
                .find_value(key)
                .is_ok()
            {
                format!("`{key}` (on the command line)")
            } else if Figment::from(Serialized::defaults(env.clone()))
                .find_value(key)
                .is_ok()
            {
                format!(
                    "`{key}` (environment variable {}{})",
                    sources.env_prefix,
                    key.replace('.', "__").to_ascii_uppercase()
                )
            } else if let (Some(file), Some(path)) = (&file, sources.file) {
                let table = sources
                    .file_table
                    .map_or_else(String::new, |table| format!(" table [{table}]"));
                if file.find_value(key).is_ok() {
                    format!("`{key}` (in {}{table})", path.display())
                } else {
                    format!("`{key}`")
                }
            } else {
                format!("`{key}`")
            }
        };
        let known = known_keys(defaults);
        return Err(ConfigError::Invalid(
            unknown
                .iter()
                .map(|key| {
                    let parent = key.rsplit_once('.').map_or("", |(parent, _)| parent);
                    let siblings = known
                        .iter()
                        .filter_map(|known| {
                            let rest = if parent.is_empty() {
                                known.as_str()
                            } else {
                                known.strip_prefix(parent)?.strip_prefix('.')?
                            };
                            Some(rest.split('.').next().unwrap_or(rest))
                        })
                        .collect::<std::collections::BTreeSet<_>>();
                    let place = if parent.is_empty() {
                        "at the top level".to_owned()
                    } else {
                        format!("under `{parent}`")
                    };
                    format!(
                        "unknown setting {}: nothing reads it; the settings {place} are {}",
                        origin(key),
                        siblings.into_iter().collect::<Vec<_>>().join(", ")
                    )
                })
                .collect(),
        ));
    }

    let mut problems = Problems::default();
    config.validate(&mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems.into_vec()))
    }
}

/// The dotted keys of the merged layers that no field of `C` reads (a misspelt setting would
/// otherwise be dropped without a word).
fn unknown_keys<C: DeserializeOwned>(figment: &Figment) -> Vec<String> {
    let Ok(merged) = figment.extract::<Value>() else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    let _: Result<C, _> = serde_ignored::deserialize(&merged, |path| {
        unknown.push(path.to_string());
    });
    unknown.sort();
    unknown.dedup();
    unknown
}

/// Every dotted key of `defaults` that holds a value, for naming the settings there are.
fn known_keys<C: Serialize>(defaults: &C) -> Vec<String> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value.as_dict() {
            Some(dict) if !dict.is_empty() => {
                for (key, value) in dict {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    if let Ok(value) = Figment::from(Serialized::defaults(defaults)).extract::<Value>() {
        walk("", &value, &mut out);
    }
    out
}

fn env_dict(prefix: &str, env: &dyn EnvSource) -> Dict {
    let mut dict = Dict::new();
    let mut vars = env.vars();
    vars.sort();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if !rest.contains("__") || rest.split("__").any(str::is_empty) {
            continue;
        }
        let key = rest
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>()
            .join(".");
        dict = merge_nested(dict, &key, &value);
    }
    dict
}

fn merge_nested(dict: Dict, dotted_key: &str, raw: &str) -> Dict {
    // `Value::from_str` is infallible: anything that is not a number, bool or array is a string.
    let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.to_owned()));
    match figment::util::nest(dotted_key, value).into_dict() {
        Some(nested) => merge_dicts(dict, nested),
        None => dict,
    }
}

fn merge_dicts(mut base: Dict, other: Dict) -> Dict {
    for (key, value) in other {
        let merged = match (base.remove(&key), value) {
            (Some(Value::Dict(_, left)), Value::Dict(tag, right)) => {
                Value::Dict(tag, merge_dicts(left, right))
            }
            (_, value) => value,
        };
        base.insert(key, merged);
    }
    base
}

/// Renders a configuration as TOML, for `--dump-config`.
pub fn to_toml<C: Serialize>(config: &C) -> Result<String, toml::ser::Error> {
    toml::to_string_pretty(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        server: ServerConfig,
        name: String,
        retries: u32,
    }

    impl Validate for Sample {
        fn validate(&self, problems: &mut Problems) {
            self.server.validate_into("server", problems);
            problems.check(!self.name.is_empty(), || "name must not be empty".into());
            problems.check(self.retries <= 10, || {
                format!("retries must be at most 10 (got {})", self.retries)
            });
        }
    }

    fn defaults() -> Sample {
        Sample {
            server: ServerConfig::loopback(50052),
            name: "default".into(),
            retries: 1,
        }
    }

    fn sources<'a>(
        file: Option<&'a Path>,
        env: &'a dyn EnvSource,
        overrides: &[&str],
    ) -> ConfigSources<'a> {
        ConfigSources {
            file,
            env_prefix: "SELFHEAL_",
            env,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            file_table: None,
        }
    }

    #[test]
    fn later_layers_win_file_then_env_then_cli() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nretries = 2\n[server]\ngrpc_addr = \"127.0.0.1:1000\"\n",
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            (
                "SELFHEAL_SERVER__GRPC_ADDR".to_string(),
                "127.0.0.1:2000".to_string(),
            ),
            (
                "SELFHEAL_RETRIES__".to_string(),
                "ignored-shape".to_string(),
            ),
            ("SELFHEAL_CONFIG".to_string(), "not-a-setting".to_string()),
        ]
        .into();
        let config = load(&defaults(), &sources(Some(&path), &env, &["retries=3"])).unwrap();
        assert_eq!(config.name, "from-file", "file beats defaults");
        assert_eq!(config.server.grpc_addr.port(), 2000, "env beats file");
        assert_eq!(config.retries, 3, "cli beats env and file");
        assert_eq!(
            config.server.http_addr.port(),
            50062,
            "untouched keys keep their defaults"
        );
    }

    #[test]
    fn cli_beats_env_for_the_same_key() {
        let env: BTreeMap<String, String> = [(
            "SELFHEAL_SERVER__SHUTDOWN_GRACE".to_string(),
            "3s".to_string(),
        )]
        .into();
        let config = load(
            &defaults(),
            &sources(None, &env, &["server.shutdown_grace=7s"]),
        )
        .unwrap();
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(7));
    }

    #[test]
    fn reports_every_validation_problem_at_once() {
        let env = BTreeMap::new();
        let error = load(
            &defaults(),
            &sources(
                None,
                &env,
                &[
                    "name=",
                    "retries=99",
                    "server.shutdown_grace=0s",
                    "server.http_addr=127.0.0.1:50052",
                ],
            ),
        )
        .unwrap_err();
        let problems = error.problems();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let text = error.to_string();
        for needle in [
            "name must not be empty",
            "retries must be at most 10",
            "shutdown_grace",
            "http_addr must differ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn type_errors_name_the_key() {
        let env: BTreeMap<String, String> = [(
            "SELFHEAL_SERVER__GRPC_ADDR".to_string(),
            "not an address".to_string(),
        )]
        .into();
        let error = load(&defaults(), &sources(None, &env, &[])).unwrap_err();
        assert!(error.to_string().contains("grpc_addr"), "{error}");
    }

    #[test]
    fn missing_file_and_malformed_override_are_clear_errors() {
        let env = BTreeMap::new();
        let missing = Path::new("/nonexistent/selfheal.toml");
        let error = load(&defaults(), &sources(Some(missing), &env, &[])).unwrap_err();
        assert!(matches!(error, ConfigError::Unreadable { .. }), "{error}");
        let error = load(&defaults(), &sources(None, &env, &["no-equals-sign"])).unwrap_err();
        assert!(matches!(error, ConfigError::BadOverride(_)), "{error}");
    }

    #[test]
    fn focuses_on_a_table_of_a_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.toml");
        std::fs::write(&path, "[detector]\nname = \"det\"\n[rca]\nname = \"rca\"\n").unwrap();
        let env = BTreeMap::new();
        let mut src = sources(Some(&path), &env, &[]);
        src.file_table = Some("rca");
        assert_eq!(load(&defaults(), &src).unwrap().name, "rca");
    }

    #[test]
    fn an_unknown_setting_is_refused_naming_where_it_came_from_and_what_exists() {
        let env = BTreeMap::new();
        let error = load(&defaults(), &sources(None, &env, &["server.grcp_addr=x"])).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("`server.grcp_addr` (on the command line)"),
            "{text}"
        );
        assert!(
            text.contains("grpc_addr, http_addr, shutdown_grace"),
            "{text}"
        );

        let env: BTreeMap<String, String> =
            [("SELFHEAL_RETRYS__".to_string(), "shapeless".to_string())].into();
        assert!(
            load(&defaults(), &sources(None, &env, &[])).is_ok(),
            "not a setting's shape"
        );
        let env: BTreeMap<String, String> =
            [("SELFHEAL_SERVER__NOSUCH".to_string(), "1".to_string())].into();
        let text = load(&defaults(), &sources(None, &env, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("environment variable SELFHEAL_SERVER__NOSUCH"),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.toml");
        std::fs::write(&path, "[rca]\nnmae = \"typo\"\n[detector]\nwhatever = 1\n").unwrap();
        let env = BTreeMap::new();
        let mut src = sources(Some(&path), &env, &[]);
        src.file_table = Some("rca");
        let error = load(&defaults(), &src).unwrap_err();
        let problems = error.problems();
        assert_eq!(
            problems.len(),
            1,
            "only the focused table counts: {problems:#?}"
        );
        assert!(problems[0].contains("`nmae` (in "), "{problems:#?}");
        assert!(problems[0].contains("table [rca]"), "{problems:#?}");
        assert!(
            problems[0].contains("at the top level are name, retries, server"),
            "{problems:#?}"
        );
    }

    #[test]
    fn an_override_with_an_empty_key_segment_is_malformed() {
        let env = BTreeMap::new();
        let error = load(&defaults(), &sources(None, &env, &["server..grpc_addr=1"])).unwrap_err();
        assert!(matches!(error, ConfigError::BadOverride(_)), "{error}");
    }
}
