//! The error type of scenario building.

use std::path::PathBuf;

use thiserror::Error;

/// Why a scenario could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// A file or directory could not be read, created or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `read` or `create directory`.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The scenario file or the example's manifest is not valid TOML or does not match its schema.
    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },

    /// The scenario file parsed but describes an impossible history.
    #[error("invalid scenario {}: {reason}", path.display())]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The example has no scenario file for the requested variant.
    #[error(
        "example {} has no scenario variant {variant:?} (no {}); available: {}",
        example.display(),
        file.display(),
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    UnknownVariant {
        /// The example directory given to [`crate::build_variant`].
        example: PathBuf,
        /// The variant asked for.
        variant: String,
        /// The scenario file that would describe it.
        file: PathBuf,
        /// The variants the example has, sorted, as [`crate::variants`] lists them.
        available: Vec<String>,
    },

    /// The destination exists and is not an empty directory.
    #[error("destination {} exists and is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination given to [`crate::build`].
        path: PathBuf,
    },

    /// The `git` executable could not be started.
    #[error("cannot run `git {command}`: {source}")]
    GitSpawn {
        /// The git arguments, space-separated.
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A git command exited unsuccessfully.
    #[error("`git {command}` failed with {status}: {stderr}")]
    Git {
        /// The git arguments, space-separated.
        command: String,
        /// The exit status, as printed by the standard library.
        status: String,
        /// Everything git wrote to stderr, trimmed.
        stderr: String,
    },

    /// The recorded bug location does not match the built history.
    #[error("bug location {}:{line} does not match the history: {reason}", file.display())]
    BugLocation {
        /// The recorded bug file, relative to the repository.
        file: PathBuf,
        /// The recorded 1-based bug line.
        line: u32,
        /// What was found instead.
        reason: String,
    },
}
