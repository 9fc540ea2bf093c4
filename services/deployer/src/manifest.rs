//! The target's `selfheal.toml`: how to build and run it. Parsed from the built worktree, so the
//! manifest always matches the code it describes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// The file name of the manifest at the repository root.
pub(crate) const MANIFEST_FILE: &str = "selfheal.toml";

/// What the deployer needs from a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) service: String,
    pub(crate) build_command: Vec<String>,
    /// Relative to the repository root; `target/...` resolves against `CARGO_TARGET_DIR`.
    pub(crate) artifact: PathBuf,
    /// argv; `{artifact}` is replaced by the artifact path.
    pub(crate) run_command: Vec<String>,
    pub(crate) port_env: String,
    pub(crate) health_path: String,
}

#[derive(Deserialize)]
struct Raw {
    service: RawService,
    build: RawBuild,
    run: RawRun,
}

#[derive(Deserialize)]
struct RawService {
    name: String,
}

#[derive(Deserialize)]
struct RawBuild {
    command: Vec<String>,
    artifact: PathBuf,
}

#[derive(Deserialize)]
struct RawRun {
    command: Vec<String>,
    port_env: String,
    health_path: String,
}

impl Manifest {
    /// Parses manifest text; `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let mut problems = Vec::new();
        if raw.service.name.trim().is_empty() {
            problems.push("service.name must not be empty");
        }
        if raw.build.command.is_empty() {
            problems.push("build.command must not be empty");
        }
        if raw.run.command.is_empty() {
            problems.push("run.command must not be empty");
        }
        if raw.build.artifact.is_absolute()
            || raw
                .build
                .artifact
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            problems.push("build.artifact must be a relative path inside the repository");
        }
        if raw.run.port_env.is_empty() {
            problems.push("run.port_env must not be empty");
        }
        if !raw.run.health_path.starts_with('/') {
            problems.push("run.health_path must start with /");
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(Self {
            service: raw.service.name,
            build_command: raw.build.command,
            artifact: raw.build.artifact,
            run_command: raw.run.command,
            port_env: raw.run.port_env,
            health_path: raw.run.health_path,
        })
    }

    /// Where the build leaves the artifact, given the worktree and the shared target dir.
    pub(crate) fn artifact_path(&self, worktree: &Path, target_dir: &Path) -> PathBuf {
        match self.artifact.strip_prefix("target") {
            Ok(rest) => target_dir.join(rest),
            Err(_) => worktree.join(&self.artifact),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[service]
name = "payment-service"
[build]
command = ["cargo", "build", "--locked"]
artifact = "target/debug/payment-service"
[run]
command = ["{artifact}"]
port_env = "PORT"
health_path = "/healthz"
"#;

    #[test]
    fn parses_the_example_manifest() {
        let m = Manifest::parse(EXAMPLE, Path::new("selfheal.toml")).unwrap();
        assert_eq!(m.service, "payment-service");
        assert_eq!(m.port_env, "PORT");
        assert_eq!(
            m.artifact_path(Path::new("/w"), Path::new("/t")),
            Path::new("/t/debug/payment-service")
        );
    }

    #[test]
    fn malformed_toml_names_the_file() {
        let err = Manifest::parse("[service\nname=", Path::new("x/selfheal.toml")).unwrap_err();
        assert!(err.to_string().contains("x/selfheal.toml"), "{err}");
    }

    #[test]
    fn lists_every_semantic_problem() {
        let text = EXAMPLE
            .replace("\"/healthz\"", "\"healthz\"")
            .replace("[\"{artifact}\"]", "[]");
        let err = Manifest::parse(&text, Path::new("selfheal.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("health_path") && text.contains("run.command"),
            "{text}"
        );
    }

    #[test]
    fn missing_section_is_reported() {
        let err = Manifest::parse("[service]\nname = \"a\"\n", Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("build"), "{err}");
    }
}
