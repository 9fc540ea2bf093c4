//! `docker-compose.yml` as data: each service's command and environment, and the rewriting
//! that runs them on this machine (compose hostnames and `0.0.0.0` become `127.0.0.1`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The parts of a compose file the tests read.
#[derive(Debug, Deserialize)]
pub struct ComposeFile {
    pub services: BTreeMap<String, ComposeService>,
}

/// One compose service.
#[derive(Debug, Deserialize)]
pub struct ComposeService {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Option<CommandLine>,
    #[serde(default)]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub ports: Vec<serde_norway::Value>,
    #[serde(default)]
    pub healthcheck: Option<serde_norway::Value>,
}

/// `command:` as a string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Line(String),
    Args(Vec<String>),
}

/// `environment:` as a map or a list of `KEY=VALUE`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Environment {
    Map(BTreeMap<String, Option<serde_norway::Value>>),
    List(Vec<String>),
}

impl ComposeFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("cannot parse {}", path.display()))
    }

    /// Parses compose YAML (anchors and `<<` merge keys included).
    pub fn parse(text: &str) -> Result<Self> {
        let mut value: serde_norway::Value = serde_norway::from_str(text)?;
        value.apply_merge()?;
        Ok(serde_norway::from_value(value)?)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Result<&ComposeService> {
        self.services
            .get(name)
            .with_context(|| format!("docker-compose.yml has no service {name:?}"))
    }

    /// Every service name: the hostnames containers reach each other by.
    pub fn hostnames(&self) -> BTreeSet<String> {
        self.services.keys().cloned().collect()
    }
}

impl ComposeService {
    /// The command as arguments (a string command is split on whitespace, as compose does
    /// for unquoted words).
    pub fn args(&self) -> Vec<String> {
        match &self.command {
            None => Vec::new(),
            Some(CommandLine::Line(line)) => line.split_whitespace().map(str::to_owned).collect(),
            Some(CommandLine::Args(args)) => args.clone(),
        }
    }

    /// The environment as name → value; a variable without a value is an error (it would be
    /// taken from the host running compose, which the tests cannot reproduce).
    pub fn env(&self) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        match &self.environment {
            None => {}
            Some(Environment::Map(map)) => {
                for (name, value) in map {
                    let value = match value {
                        Some(serde_norway::Value::String(s)) => s.clone(),
                        Some(serde_norway::Value::Number(n)) => n.to_string(),
                        Some(serde_norway::Value::Bool(b)) => b.to_string(),
                        Some(other) => bail!("{name} has a value that is not a scalar: {other:?}"),
                        None => bail!("{name} has no value (it would come from the host)"),
                    };
                    env.insert(name.clone(), value);
                }
            }
            Some(Environment::List(list)) => {
                for entry in list {
                    let Some((name, value)) = entry.split_once('=') else {
                        bail!("{entry} has no value (it would come from the host)");
                    };
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Ok(env)
    }

    /// The published ports as `HOST:CONTAINER` strings.
    pub fn port_mappings(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter_map(|port| match port {
                serde_norway::Value::String(s) => Some(s.clone()),
                serde_norway::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect()
    }
}

/// Where a value that names a host points once rewritten for loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub value: String,
    /// The compose host that was replaced (`None` for `0.0.0.0` binds and plain values).
    pub host: Option<String>,
    /// The port after the host, when there is one.
    pub port: Option<u16>,
}

/// Rewrites `value` for this machine when it is an address: `scheme://HOST:port…` or
/// `HOST:port` whose HOST is a compose service or `0.0.0.0`, or a bare `0.0.0.0`, gets
/// `127.0.0.1` instead.
/// Anything else (durations, names, log filters) comes back unchanged.
pub fn rewrite_for_loopback(value: &str, hostnames: &BTreeSet<String>) -> Rewritten {
    let (scheme, rest) = match value.find("://") {
        Some(index) => value.split_at(index + 3),
        None => ("", value),
    };
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let port = tail
        .strip_prefix(':')
        .map(|after| after.split('/').next().unwrap_or(after))
        .and_then(|digits| digits.parse::<u16>().ok());
    if value == "0.0.0.0" {
        return Rewritten {
            value: "127.0.0.1".to_owned(),
            host: None,
            port: None,
        };
    }
    let is_address = !scheme.is_empty() || port.is_some();
    let unchanged = Rewritten {
        value: value.to_owned(),
        host: None,
        port,
    };
    if !is_address {
        return unchanged;
    }
    if host == "0.0.0.0" {
        return Rewritten {
            value: format!("{scheme}127.0.0.1{tail}"),
            host: None,
            port,
        };
    }
    if hostnames.contains(host) {
        return Rewritten {
            value: format!("{scheme}127.0.0.1{tail}"),
            host: Some(host.to_owned()),
            port,
        };
    }
    unchanged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> BTreeSet<String> {
        ["redis", "detector", "jaeger", "safety-gate"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn rewrites_compose_hosts_and_wildcard_binds_only() {
        let hosts = hosts();
        let cases = [
            ("http://detector:50052", "http://127.0.0.1:50052"),
            ("redis://redis:6379/0", "redis://127.0.0.1:6379/0"),
            ("http://safety-gate:50055", "http://127.0.0.1:50055"),
            ("0.0.0.0:50052", "127.0.0.1:50052"),
            ("0.0.0.0", "127.0.0.1"),
            ("http://jaeger:4317", "http://127.0.0.1:4317"),
            ("detector", "detector"),
            ("selfheal-detector", "selfheal-detector"),
            ("10s", "10s"),
            ("info,h2=warn", "info,h2=warn"),
            ("http://example.com:80", "http://example.com:80"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                rewrite_for_loopback(input, &hosts).value,
                expected,
                "{input}"
            );
        }
        let redis = rewrite_for_loopback("redis://redis:6379", &hosts);
        assert_eq!(redis.host.as_deref(), Some("redis"));
        assert_eq!(redis.port, Some(6379));
    }

    #[test]
    fn parses_both_environment_and_command_forms_with_merge_keys() {
        let compose = ComposeFile::parse(
            "x-common: &common\n  image: selfheal:latest\nservices:\n  a:\n    <<: *common\n    command: selfheal-a --flag\n    environment:\n      SELFHEAL_X__Y: 3\n      B: \"text\"\n  b:\n    command: [\"selfheal-b\"]\n    environment: [\"K=V=W\"]\n",
        )
        .unwrap();
        let a = compose.service("a").unwrap();
        assert_eq!(a.image.as_deref(), Some("selfheal:latest"));
        assert_eq!(a.args(), ["selfheal-a", "--flag"]);
        assert_eq!(a.env().unwrap()["SELFHEAL_X__Y"], "3");
        let b = compose.service("b").unwrap();
        assert_eq!(b.args(), ["selfheal-b"]);
        assert_eq!(b.env().unwrap()["K"], "V=W");
    }
}
