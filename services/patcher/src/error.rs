//! Errors of the patcher and their gRPC status codes, in one place.

use selfheal_service::ServeError;

/// Everything that can go wrong in the patcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The request is malformed or unsafe (missing field, hostile path, unknown revision shape).
    #[error("{0}")]
    InvalidInput(String),
    /// Something the request names does not exist: the repository, a commit, a file at a commit.
    #[error("{0}")]
    NotFound(String),
    /// A git command failed: a broken repository, a timeout.
    #[error("git {command} failed: {message}")]
    Git { command: String, message: String },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidInput(_) => tonic::Status::invalid_argument(error.to_string()),
            Error::NotFound(_) => tonic::Status::not_found(error.to_string()),
            Error::Git { .. } => tonic::Status::failed_precondition(error.to_string()),
            Error::Serve(_) => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
