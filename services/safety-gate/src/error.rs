//! Errors of the safety-gate service and their gRPC status codes, in one place.
//!
//! A candidate that fails a check is not an error: it gets a REJECT verdict. Errors are requests
//! the gate cannot evaluate at all (bad input, unknown commit, a target without a manifest) and
//! failures of the gate itself.

use std::path::PathBuf;

use selfheal_service::ServeError;

/// Everything that can go wrong in the safety-gate service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{field} is invalid: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("repository {} cannot be used: {reason}", path.display())]
    Repository { path: PathBuf, reason: String },
    #[error("commit {commit} does not exist in {}", repository.display())]
    UnknownCommit { repository: PathBuf, commit: String },
    #[error("the target cannot be gated: {0}")]
    Manifest(#[from] selfheal_manifest::ManifestError),
    #[error("{0}")]
    SandboxUnavailable(String),
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Error::Io { action, source }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(error.to_string()),
            Error::UnknownCommit { .. } => tonic::Status::not_found(error.to_string()),
            Error::Repository { .. } | Error::Manifest(_) | Error::SandboxUnavailable(_) => {
                tonic::Status::failed_precondition(error.to_string())
            }
            Error::Serve(_) | Error::Spawn { .. } | Error::Io { .. } => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
