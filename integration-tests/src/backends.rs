//! Checks that the real servers the tests need are up, failing with the command that starts
//! them — never skipping.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::START_BACKENDS;

/// Jaeger's query API (`SELFHEAL_TEST_JAEGER_QUERY_URL`, default `http://127.0.0.1:16686`).
pub fn jaeger_query_url() -> String {
    env_or("SELFHEAL_TEST_JAEGER_QUERY_URL", "http://127.0.0.1:16686")
}

/// Prometheus (`SELFHEAL_TEST_PROMETHEUS_URL`, default `http://127.0.0.1:9090`).
pub fn prometheus_url() -> String {
    env_or("SELFHEAL_TEST_PROMETHEUS_URL", "http://127.0.0.1:9090")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Fails unless something accepts TCP connections on `127.0.0.1:port`.
pub fn require_tcp(what: &str, port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => Ok(()),
        Err(error) => bail!("{what} is not reachable at {addr} ({error}): {START_BACKENDS}"),
    }
}

/// Fails unless `GET url` answers with a success status.
pub async fn require_http(what: &str, url: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => bail!(
            "{what} answered {} at {url}: {START_BACKENDS}",
            response.status()
        ),
        Err(error) => bail!("{what} is not reachable at {url} ({error}): {START_BACKENDS}"),
    }
}

/// Whether anything listens on `127.0.0.1:port` (a port the mesh needs that is taken).
pub fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The grpcurl to use: `SELFHEAL_TEST_GRPCURL`, the one `backends.sh` installs, or `grpcurl`
/// on `PATH`.
pub fn grpcurl() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("SELFHEAL_TEST_GRPCURL")
        && !path.trim().is_empty()
    {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "SELFHEAL_TEST_GRPCURL={} does not exist: {START_BACKENDS}",
            path.display()
        );
    }
    let state = std::env::var_os("SELFHEAL_BACKENDS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/selfheal/backends"))
        });
    if let Some(state) = state {
        let installed = state.join("bin/grpcurl");
        if installed.is_file() {
            return Ok(installed);
        }
    }
    if let Some(found) = find_on_path("grpcurl") {
        return Ok(found);
    }
    bail!("grpcurl is not installed: {START_BACKENDS} (it installs grpcurl too)")
}

/// `name` in one of the `PATH` directories.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
