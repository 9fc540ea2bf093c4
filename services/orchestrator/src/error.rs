//! Errors of the orchestrator and their gRPC status codes, in one place.

use selfheal_service::ServeError;

use crate::lock::LockError;

/// Everything that can go wrong in the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("peer {peer} has an invalid address {address:?}: {source}")]
    PeerAddress {
        peer: &'static str,
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot set up the lock store: {0}")]
    LockStore(#[source] LockError),
    #[error("{field} {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{field} is required")]
    MissingField { field: String },
    #[error("no saga or incident {id:?}")]
    NotFound { id: String },
    #[error("{reason}")]
    FailedPrecondition { reason: String },
    #[error("{reason}")]
    Unavailable { reason: String },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument { .. } | Error::MissingField { .. } => {
                tonic::Status::invalid_argument(error.to_string())
            }
            Error::NotFound { .. } => tonic::Status::not_found(error.to_string()),
            Error::FailedPrecondition { .. } => {
                tonic::Status::failed_precondition(error.to_string())
            }
            Error::Unavailable { .. } => tonic::Status::unavailable(error.to_string()),
            Error::Serve(_) | Error::PeerAddress { .. } | Error::LockStore(_) => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
