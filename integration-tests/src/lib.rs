//! Helpers for the whole-mesh tests: the compose file as data, the service binaries, local
//! processes that are killed with their guard, and the checks that real servers are up.
//!
//! The tests themselves are in `tests/`; they need the real servers of
//! `scripts/backends.sh start` and fail, naming that command, when one is missing.

pub mod backends;
pub mod compose;
pub mod processes;

use std::path::PathBuf;

/// The seven services of the mesh: compose/service name, binary, gRPC port, gRPC service name.
/// The HTTP port (`/metrics`, `/healthz`) is the gRPC port + 10.
pub const SERVICES: [Service; 7] = [
    Service::new("orchestrator", 50051, "selfheal.v1.Orchestrator"),
    Service::new("detector", 50052, "selfheal.v1.Detector"),
    Service::new("rca", 50053, "selfheal.v1.Rca"),
    Service::new("patcher", 50054, "selfheal.v1.Patcher"),
    Service::new("safety-gate", 50055, "selfheal.v1.SafetyGate"),
    Service::new("deployer", 50056, "selfheal.v1.Deployer"),
    Service::new("audit", 50057, "selfheal.v1.Audit"),
];

/// One selfheal service as the stack knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// The compose service name and hostname (`safety-gate`).
    pub name: &'static str,
    pub grpc_port: u16,
    /// Fully qualified gRPC service (`selfheal.v1.SafetyGate`).
    pub grpc_service: &'static str,
}

impl Service {
    const fn new(name: &'static str, grpc_port: u16, grpc_service: &'static str) -> Self {
        Self {
            name,
            grpc_port,
            grpc_service,
        }
    }

    /// The port of `/metrics` and `/healthz`.
    pub const fn http_port(&self) -> u16 {
        self.grpc_port + 10
    }

    /// The binary, and the `OTEL_SERVICE_NAME` the stack gives it: `selfheal-<name>`.
    pub fn binary(&self) -> String {
        format!("selfheal-{}", self.name)
    }

    /// The cargo package that builds [`Self::binary`].
    pub fn package(&self) -> String {
        self.binary()
    }
}

/// The repository root (this crate lives in `<root>/integration-tests`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// What to tell a reader when a real server is missing.
pub const START_BACKENDS: &str = "start the real servers with `bash scripts/backends.sh start` \
(and `eval \"$(bash scripts/backends.sh env)\"` for the SELFHEAL_TEST_* variables)";
