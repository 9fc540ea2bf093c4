//! The target's `selfheal.toml`, parsed by the shared `selfheal-manifest` crate from the built
//! worktree, so the manifest always matches the code it describes. This module only maps the
//! parser's error into the deployer's.

pub(crate) use selfheal_manifest::{MANIFEST_FILE, Manifest};

use crate::error::Error;

impl From<selfheal_manifest::ManifestError> for Error {
    fn from(error: selfheal_manifest::ManifestError) -> Self {
        Error::Manifest {
            path: error.path,
            reason: error.reason,
        }
    }
}
