//! Fetching `/metrics` bodies: the [`MetricsSource`] trait and its HTTP implementation with a
//! per-scrape timeout and a body size limit.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::target::TargetSpec;

/// Why a scrape failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    #[error("scrape timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("endpoint answered http {0}")]
    Status(u16),
    #[error("body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("body is not utf-8")]
    NotUtf8,
    #[error("request failed: {0}")]
    Request(String),
}

impl ScrapeError {
    /// A short label value for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "status",
            ScrapeError::BodyTooLarge { .. } => "too_large",
            ScrapeError::NotUtf8 => "not_utf8",
            ScrapeError::Request(_) => "request",
        }
    }
}

/// Where scrape bodies come from.
pub trait MetricsSource: Send + Sync + 'static {
    fn fetch<'a>(&'a self, target: &'a TargetSpec) -> BoxFuture<'a, Result<String, ScrapeError>>;
}

/// Scrapes over HTTP with reqwest.
#[derive(Clone, Debug)]
pub struct HttpSource {
    client: reqwest::Client,
    timeout: Duration,
    max_body_bytes: usize,
}

impl HttpSource {
    pub fn new(timeout: Duration, max_body_bytes: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2)
            .build()?;
        Ok(Self {
            client,
            timeout,
            max_body_bytes,
        })
    }

    async fn fetch_body(&self, target: &TargetSpec) -> Result<String, ScrapeError> {
        let mut response = self
            .client
            .get(target.url())
            .header(
                reqwest::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .send()
            .await
            .map_err(|error| self.classify(&error))?;
        if !response.status().is_success() {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let limit = self.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(ScrapeError::BodyTooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.classify(&error))?
        {
            if body.len() + chunk.len() > limit {
                return Err(ScrapeError::BodyTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)
    }

    fn classify(&self, error: &reqwest::Error) -> ScrapeError {
        if error.is_timeout() {
            ScrapeError::Timeout(self.timeout)
        } else if error.is_connect() {
            ScrapeError::Connect(error_chain(error))
        } else {
            ScrapeError::Request(error_chain(error))
        }
    }
}

impl MetricsSource for HttpSource {
    fn fetch<'a>(&'a self, target: &'a TargetSpec) -> BoxFuture<'a, Result<String, ScrapeError>> {
        Box::pin(async move {
            // One deadline for connect, headers and body: a target that trickles bytes is cut off.
            match tokio::time::timeout(self.timeout, self.fetch_body(target)).await {
                Ok(result) => result,
                Err(_) => Err(ScrapeError::Timeout(self.timeout)),
            }
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
