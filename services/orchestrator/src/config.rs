//! Configuration of the orchestrator.

use std::time::Duration;

use selfheal_service::{Problems, ServerConfig, ServiceConfig, Validate};
use serde::{Deserialize, Serialize};

/// Default gRPC port; the HTTP (metrics) port is this plus 10.
pub const DEFAULT_GRPC_PORT: u16 = 50051;

/// gRPC addresses of the other services of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Peers {
    pub detector: String,
    pub rca: String,
    pub patcher: String,
    pub safety_gate: String,
    pub deployer: String,
    pub audit: String,
    /// Deadline of one call to a peer.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Deadline for establishing a connection to a peer.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            detector: "http://127.0.0.1:50052".into(),
            rca: "http://127.0.0.1:50053".into(),
            patcher: "http://127.0.0.1:50054".into(),
            safety_gate: "http://127.0.0.1:50055".into(),
            deployer: "http://127.0.0.1:50056".into(),
            audit: "http://127.0.0.1:50057".into(),
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl Peers {
    /// Each peer as (component name, gRPC address).
    pub fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("detector", self.detector.as_str()),
            ("rca", self.rca.as_str()),
            ("patcher", self.patcher.as_str()),
            ("safety-gate", self.safety_gate.as_str()),
            ("deployer", self.deployer.as_str()),
            ("audit", self.audit.as_str()),
        ]
    }
}

/// Everything the orchestrator reads at start-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub peers: Peers,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::loopback(DEFAULT_GRPC_PORT),
            peers: Peers::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.server.validate_into("server", problems);
        for (name, address) in self.peers.named() {
            let key = name.replace('-', "_");
            problems.check(
                address.starts_with("http://") || address.starts_with("https://"),
                || format!("peers.{key} must be an http:// or https:// URL (got {address:?})"),
            );
        }
        problems.check(!self.peers.call_timeout.is_zero(), || {
            "peers.call_timeout must be greater than zero".into()
        });
        problems.check(!self.peers.connect_timeout.is_zero(), || {
            "peers.connect_timeout must be greater than zero".into()
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
