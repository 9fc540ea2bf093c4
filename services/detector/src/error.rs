//! Errors of the detector service and their gRPC status codes, in one place.

use selfheal_service::ServeError;

/// Everything that can go wrong in the detector service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("cannot register detector metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot build the scrape client: {0}")]
    ScrapeClient(#[from] reqwest::Error),
    #[error("invalid orchestrator url {url:?}: {source}")]
    OrchestratorUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidTarget(_) | Error::MissingField(_) | Error::InvalidField { .. } => {
                tonic::Status::invalid_argument(error.to_string())
            }
            Error::NotFound { .. } => tonic::Status::not_found(error.to_string()),
            Error::Serve(_)
            | Error::Metrics(_)
            | Error::ScrapeClient(_)
            | Error::OrchestratorUrl { .. } => {
                tracing::error!(%error, "internal error");
                tonic::Status::internal("internal error")
            }
        }
    }
}
