//! Errors of the audit service and their gRPC status codes, in one place.

use selfheal_service::ServeError;

use crate::chain::checkpoint::KeyError;
use crate::log::LogError;
use crate::store::StoreError;

/// Everything that can go wrong in the audit service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A required field of a request is absent.
    #[error("missing field {field}")]
    MissingField { field: String },
    /// A field of a request has a value the service cannot take.
    #[error("invalid field {field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{field} is {size} bytes of JSON, more than the limit of {limit} bytes")]
    PayloadTooLarge {
        field: String,
        size: usize,
        limit: usize,
    },
    #[error("checkpoint signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    #[error("audit log: {0}")]
    Log(#[from] LogError),
}

impl Error {
    fn store_status(error: &StoreError) -> tonic::Status {
        match error {
            StoreError::Conflict { .. } => {
                tracing::error!(%error, "audit chain conflict");
                tonic::Status::aborted(
                    "the audit chain in the store was written by someone else; see the service log",
                )
            }
            StoreError::Corrupt { .. } => {
                tracing::error!(%error, "audit store holds an unreadable record");
                tonic::Status::data_loss(
                    "the audit store holds an unreadable record; run Verify for details",
                )
            }
            error if error.is_unreachable() => {
                tonic::Status::unavailable(format!("audit store unavailable: {error}"))
            }
            _ => {
                tracing::error!(%error, "audit store error");
                tonic::Status::internal("internal error")
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::MissingField { .. }
            | Error::InvalidField { .. }
            | Error::PayloadTooLarge { .. } => tonic::Status::invalid_argument(error.to_string()),
            Error::Store(store) => Error::store_status(store),
            Error::Log(LogError::Store(store)) => Error::store_status(store),
            Error::Log(LogError::Stopped) => {
                tonic::Status::unavailable("the audit service is shutting down")
            }
            Error::Log(LogError::Encode(_)) | Error::Serve(_) | Error::SigningKey(_) => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
