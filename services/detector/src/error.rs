//! Errors of the detector service and their gRPC status codes, in one place.

use selfheal_service::ServeError;

/// Everything that can go wrong in the detector service.
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
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::NotBuilt { .. } => tonic::Status::unimplemented(error.to_string()),
            Error::Serve(_) => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
