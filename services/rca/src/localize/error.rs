//! What can go wrong while localising a failure. Mapped to gRPC codes in `crate::error`.

use std::time::Duration;

/// Errors of code localisation.
#[derive(Debug, thiserror::Error)]
pub enum LocalizeError {
    #[error("the trace text is {size} bytes, more than the {limit} allowed")]
    TraceTooLarge { size: usize, limit: usize },
    #[error("no stack frame found in the trace")]
    NoStackFrame,
    #[error(
        "no frame of the {language} trace ({frames} frames) is in the repository's own code: {detail}"
    )]
    NoAppFrame {
        language: &'static str,
        frames: usize,
        detail: String,
    },
    #[error("{field} {revision:?} is not a valid revision")]
    InvalidRevision {
        field: &'static str,
        revision: String,
    },
    #[error("repository {repository:?} is not usable: {reason}")]
    InvalidRepository {
        repository: String,
        reason: &'static str,
    },
    #[error("repository {repository:?} not found: {detail}")]
    RepositoryNotFound { repository: String, detail: String },
    #[error("{field} {revision:?} is not a commit of the repository")]
    CommitNotFound {
        field: &'static str,
        revision: String,
    },
    #[error(
        "{file}:{line} is past the end of the file ({lines} lines) at {commit}: the trace does not match the deployed commit"
    )]
    LineOutOfRange {
        file: String,
        line: u32,
        lines: usize,
        commit: String,
    },
    #[error("git {command} did not finish within {after:?}")]
    GitTimeout { command: String, after: Duration },
    #[error("git {command} failed ({status}): {stderr}")]
    Git {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("git {command} printed something unexpected: {detail}")]
    GitOutput {
        command: &'static str,
        detail: String,
    },
    #[error("git could not be started")]
    GitSpawn {
        #[source]
        source: std::io::Error,
    },
    #[error("the trace parser stopped unexpectedly")]
    ParserStopped,
}
