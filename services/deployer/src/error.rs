//! Errors of the deployer service and their gRPC status codes, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use selfheal_service::ServeError;

/// Everything that can go wrong in the deployer service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A request field is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("service {0:?} is not deployed")]
    UnknownService(String),
    #[error("repository {} cannot be used: {reason}", path.display())]
    Repository { path: PathBuf, reason: String },
    #[error("commit {commit:?} does not exist in {}", repository.display())]
    UnknownCommit { repository: PathBuf, commit: String },
    #[error("patch does not apply to {commit}: {stderr}")]
    PatchRejected { commit: String, stderr: String },
    #[error("manifest {} is invalid: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("build of {version} failed ({status}); last lines of the log:\n{log_tail}")]
    BuildFailed {
        version: String,
        status: String,
        log_tail: String,
    },
    #[error("build of {version} did not finish within {timeout:?}")]
    BuildTimedOut { version: String, timeout: Duration },
    #[error("build of {version} produced no artifact at {}", path.display())]
    ArtifactMissing { version: String, path: PathBuf },
    #[error("cannot start {version}: {reason}")]
    Spawn { version: String, reason: String },
    #[error("public address {addr} of {service} cannot be bound: {reason}")]
    PortInUse {
        service: String,
        addr: SocketAddr,
        reason: String,
    },
    #[error("no free port in {start}..={end} for a new version")]
    NoFreePort { start: u16, end: u16 },
    #[error(
        "{version} did not become healthy within {timeout:?}; last lines of its output:\n{log_tail}"
    )]
    NeverHealthy {
        version: String,
        timeout: Duration,
        log_tail: String,
    },
    #[error(
        "fencing token {token} for {service} is stale: a holder with token {highest} has acted since"
    )]
    StaleFencingToken {
        service: String,
        token: u64,
        highest: u64,
    },
    #[error("a rollout of {service} is in progress")]
    RolloutInProgress { service: String },
    #[error("{service} has no running stable version; deploy it DIRECT first")]
    NoStable { service: String },
    #[error("{service} has nothing to roll back to")]
    NothingToRollBack { service: String },
    /// A rollout stopped before it changed traffic, by Rollback or shutdown.
    #[error("rollout cancelled: {reason}")]
    RolloutCancelled { reason: String },
    #[error("the deployer is shutting down")]
    ShuttingDown,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<&Error> for tonic::Status {
    fn from(error: &Error) -> Self {
        use tonic::Status;
        let message = error.to_string();
        match error {
            Error::InvalidArgument { .. } => Status::invalid_argument(message),
            Error::UnknownService(_) | Error::UnknownCommit { .. } => Status::not_found(message),
            Error::Repository { .. }
            | Error::PatchRejected { .. }
            | Error::Manifest { .. }
            | Error::BuildFailed { .. }
            | Error::ArtifactMissing { .. }
            | Error::NeverHealthy { .. }
            | Error::PortInUse { .. }
            | Error::StaleFencingToken { .. }
            | Error::NoStable { .. }
            | Error::NothingToRollBack { .. }
            | Error::Spawn { .. } => Status::failed_precondition(message),
            Error::RolloutInProgress { .. } | Error::RolloutCancelled { .. } => {
                Status::aborted(message)
            }
            Error::BuildTimedOut { .. } => Status::deadline_exceeded(message),
            Error::NoFreePort { .. } | Error::ShuttingDown => Status::unavailable(message),
            Error::Io { .. } | Error::Serve(_) | Error::Metrics(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}
