//! Errors of the rca service and their gRPC status codes, in one place.

use selfheal_service::ServeError;

use crate::graph::GraphError;
use crate::localize::LocalizeError;

/// Everything that can go wrong in the rca service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// An RPC whose behaviour is not built yet; names what is missing.
    #[error("{rpc} is not available yet: it needs {missing}")]
    NotBuilt {
        rpc: &'static str,
        missing: &'static str,
    },
    /// A request without a field it needs.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A request field with a value that cannot be used.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// The dependency graph could not be read or written (analysis degrades instead).
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Localize(#[from] LocalizeError),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use LocalizeError as L;
        use tonic::Status;
        let message = error.to_string();
        match &error {
            Error::NotBuilt { .. } => Status::unimplemented(message),
            Error::MissingField(_) | Error::InvalidField { .. } => {
                Status::invalid_argument(message)
            }
            Error::Graph(_) => {
                tracing::warn!(%error, "graph store failed");
                Status::unavailable(message)
            }
            Error::Localize(localize) => match localize {
                L::TraceTooLarge { .. }
                | L::InvalidRevision { .. }
                | L::InvalidRepository { .. } => Status::invalid_argument(message),
                L::NoStackFrame
                | L::NoAppFrame { .. }
                | L::RepositoryNotFound { .. }
                | L::CommitNotFound { .. } => Status::not_found(message),
                L::LineOutOfRange { .. } => Status::failed_precondition(message),
                L::GitTimeout { .. } => Status::deadline_exceeded(message),
                L::Git { .. } | L::GitOutput { .. } | L::GitSpawn { .. } | L::ParserStopped => {
                    tracing::error!(%error, "localisation failed");
                    Status::internal("internal error")
                }
            },
            Error::Serve(_) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_localisation_errors_to_codes_and_hides_internal_detail() {
        let status = tonic::Status::from(Error::Localize(LocalizeError::NoStackFrame));
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no stack frame found in the trace");
        let status = tonic::Status::from(Error::MissingField("source"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = tonic::Status::from(Error::Localize(LocalizeError::Git {
            command: "blame".into(),
            status: "exit status: 128".into(),
            stderr: "fatal: secret detail".into(),
        }));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
