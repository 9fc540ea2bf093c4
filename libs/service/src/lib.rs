//! The common skeleton of a selfheal gRPC service.
//!
//! Every service crate uses this to load its layered configuration ([`config`]), to host its
//! gRPC server with health, reflection (v1 and v1alpha) and per-RPC telemetry, and to serve
//! `/metrics` and `/healthz` over HTTP ([`host`]), with graceful shutdown on a cancellation
//! token ([`shutdown`]). It owns no domain logic.

pub mod binary;
pub mod cli;
pub mod config;
pub mod host;
pub mod link;
pub mod shutdown;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use binary::{ServiceConfig, service_main};
pub use cli::{ConfigArgs, EX_CONFIG, load_or_exit};
pub use config::{
    ConfigError, ConfigSources, EnvSource, Problems, ProcessEnv, ServerConfig, Validate, load,
};
pub use host::{Listeners, Readiness, ServeError, ServiceHost};
pub use link::CuttableLink;
pub use shutdown::{ctrl_c_or_sigterm, shutdown_token_on_signal};
