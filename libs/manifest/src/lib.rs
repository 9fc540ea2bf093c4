//! The target service's `selfheal.toml`: how to build, run and test it, and the policy a generated
//! fix must keep. Shared by the deployer (build and run) and the safety gate (build, test, run,
//! policy).
//!
//! The manifest is always parsed from the checked-out tree it describes, so it matches the code.
//! This crate only parses and validates text; it never runs anything.
//!
//! ```
//! let text = r#"
//! [service]
//! name = "payment-service"
//! [build]
//! command = ["cargo", "build", "--locked"]
//! artifact = "target/debug/payment-service"
//! [run]
//! command = ["{artifact}"]
//! port_env = "PORT"
//! health_path = "/healthz"
//! "#;
//! let manifest = selfheal_manifest::Manifest::parse(text, "selfheal.toml".as_ref())?;
//! assert_eq!(manifest.service, "payment-service");
//! # Ok::<(), selfheal_manifest::ManifestError>(())
//! ```

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The file name of the manifest at the repository root.
pub const MANIFEST_FILE: &str = "selfheal.toml";

/// The placeholder in `run.command` replaced by the artifact path.
pub const ARTIFACT_PLACEHOLDER: &str = "{artifact}";

/// A manifest that cannot be read or is invalid; `path` names the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("manifest {} is invalid: {reason}", path.display())]
pub struct ManifestError {
    /// The manifest file, as given to the parser.
    pub path: PathBuf,
    /// Every problem found, joined with "; ".
    pub reason: String,
}

/// A parsed and validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `[service] name`.
    pub service: String,
    /// `[service] language`, e.g. `rust` or `python`, when given.
    pub language: Option<String>,
    /// `[build] command`: argv run in the repository root, no shell.
    pub build_command: Vec<String>,
    /// `[build] artifact`: relative to the repository root; `target/...` resolves against
    /// `CARGO_TARGET_DIR` (see [`Manifest::artifact_path`]).
    pub artifact: PathBuf,
    /// `[run] command`: argv; [`ARTIFACT_PLACEHOLDER`] is replaced by the artifact path.
    pub run_command: Vec<String>,
    /// `[run] port_env`: the variable through which the service is given its port.
    pub port_env: String,
    /// `[run] health_path`: answers 200 once the service is ready.
    pub health_path: String,
    /// `[test] command`: argv of the test suite, run in the repository root; exit 0 means pass.
    /// `None` when the manifest has no `[test]` section.
    pub test_command: Option<Vec<String>>,
    /// `[policy]`: limits on generated fixes.
    pub policy: Policy,
}

/// The `[policy]` section: what a generated fix may change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Files, or directories ending in `/`, a fix may not touch.
    pub forbidden_paths: Vec<String>,
    /// When not empty, the only files or directories (ending in `/`) a fix may touch.
    pub allowed_paths: Vec<String>,
    /// The largest diff (added plus removed lines) a fix may have.
    pub max_changed_lines: Option<u32>,
}

#[derive(Deserialize)]
struct Raw {
    service: RawService,
    build: RawBuild,
    run: RawRun,
    test: Option<RawTest>,
    #[serde(default)]
    policy: RawPolicy,
}

#[derive(Deserialize)]
struct RawService {
    name: String,
    language: Option<String>,
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

#[derive(Deserialize)]
struct RawTest {
    command: Vec<String>,
}

#[derive(Default, Deserialize)]
struct RawPolicy {
    #[serde(default)]
    forbidden_paths: Vec<String>,
    #[serde(default)]
    allowed_paths: Vec<String>,
    max_changed_lines: Option<u32>,
}

impl Manifest {
    /// Parses manifest text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let invalid = |reason: String| ManifestError {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let mut problems = Vec::new();
        if raw.service.name.trim().is_empty() {
            problems.push("service.name must not be empty".to_owned());
        }
        if raw.build.command.is_empty() {
            problems.push("build.command must not be empty".to_owned());
        }
        if raw.run.command.is_empty() {
            problems.push("run.command must not be empty".to_owned());
        }
        if !is_inside_repository(&raw.build.artifact) {
            problems
                .push("build.artifact must be a relative path inside the repository".to_owned());
        }
        if raw.run.port_env.is_empty() {
            problems.push("run.port_env must not be empty".to_owned());
        }
        if !raw.run.health_path.starts_with('/') {
            problems.push("run.health_path must start with /".to_owned());
        }
        if raw.test.as_ref().is_some_and(|t| t.command.is_empty()) {
            problems.push("test.command must not be empty".to_owned());
        }
        if raw.policy.max_changed_lines == Some(0) {
            problems.push("policy.max_changed_lines must be at least 1".to_owned());
        }
        for (key, paths) in [
            ("policy.forbidden_paths", &raw.policy.forbidden_paths),
            ("policy.allowed_paths", &raw.policy.allowed_paths),
        ] {
            for p in paths {
                if p.is_empty() || !is_inside_repository(Path::new(p)) {
                    problems.push(format!("{key} entry {p:?} must be a relative path"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(invalid(problems.join("; ")));
        }
        Ok(Self {
            service: raw.service.name,
            language: raw.service.language,
            build_command: raw.build.command,
            artifact: raw.build.artifact,
            run_command: raw.run.command,
            port_env: raw.run.port_env,
            health_path: raw.run.health_path,
            test_command: raw.test.map(|t| t.command),
            policy: Policy {
                forbidden_paths: raw.policy.forbidden_paths,
                allowed_paths: raw.policy.allowed_paths,
                max_changed_lines: raw.policy.max_changed_lines,
            },
        })
    }

    /// Reads and parses `<repository>/selfheal.toml`; errors name the file relative to the
    /// repository.
    pub fn load(repository: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(repository.join(MANIFEST_FILE)).map_err(|e| ManifestError {
                path: PathBuf::from(MANIFEST_FILE),
                reason: format!("cannot be read: {e}"),
            })?;
        Self::parse(&text, Path::new(MANIFEST_FILE))
    }

    /// Where the build leaves the artifact, given the worktree and the shared target dir.
    pub fn artifact_path(&self, worktree: &Path, target_dir: &Path) -> PathBuf {
        match self.artifact.strip_prefix("target") {
            Ok(rest) => target_dir.join(rest),
            Err(_) => worktree.join(&self.artifact),
        }
    }

    /// The run command's argv with [`ARTIFACT_PLACEHOLDER`] replaced by `artifact`.
    pub fn run_argv(&self, artifact: &Path) -> Vec<String> {
        let artifact = artifact.to_string_lossy();
        self.run_command
            .iter()
            .map(|a| a.replace(ARTIFACT_PLACEHOLDER, &artifact))
            .collect()
    }
}

impl Policy {
    /// The forbidden entry that `path` (relative to the repository) falls under, if any.
    pub fn forbidden_entry(&self, path: &str) -> Option<&str> {
        self.forbidden_paths
            .iter()
            .map(String::as_str)
            .find(|entry| path_matches(entry, path))
    }

    /// Whether `path` may be touched under `allowed_paths` (always, when that list is empty).
    pub fn allows(&self, path: &str) -> bool {
        self.allowed_paths.is_empty()
            || self
                .allowed_paths
                .iter()
                .any(|entry| path_matches(entry, path))
    }
}

/// Whether a policy entry (a file, or a directory ending in `/`) covers `path`.
///
/// A file entry without a `/` matches that file name in any directory, so `Cargo.lock` also
/// covers a nested crate's lockfile.
pub fn path_matches(entry: &str, path: &str) -> bool {
    if let Some(dir) = entry.strip_suffix('/') {
        return path == dir
            || path.starts_with(entry)
            || path.split('/').any(|component| component == dir) && !dir.contains('/');
    }
    if entry.contains('/') {
        return path == entry;
    }
    path.rsplit('/').next() == Some(entry)
}

/// Relative, and without `..` components.
fn is_inside_repository(path: &Path) -> bool {
    !path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[service]
name = "payment-service"
language = "rust"
[build]
command = ["cargo", "build", "--locked"]
artifact = "target/debug/payment-service"
[run]
command = ["{artifact}"]
port_env = "PORT"
health_path = "/healthz"
[test]
command = ["cargo", "test", "--locked"]
[policy]
forbidden_paths = ["Cargo.toml", "Cargo.lock", "selfheal.toml", ".git/"]
max_changed_lines = 40
"#;

    #[test]
    fn parses_the_example_manifest() {
        let m = Manifest::parse(EXAMPLE, Path::new("selfheal.toml")).unwrap();
        assert_eq!(m.service, "payment-service");
        assert_eq!(m.language.as_deref(), Some("rust"));
        assert_eq!(m.port_env, "PORT");
        assert_eq!(
            m.artifact_path(Path::new("/w"), Path::new("/t")),
            Path::new("/t/debug/payment-service")
        );
        assert_eq!(
            m.test_command.as_deref(),
            Some(&["cargo".to_owned(), "test".into(), "--locked".into()][..])
        );
        assert_eq!(m.policy.max_changed_lines, Some(40));
        assert_eq!(m.run_argv(Path::new("/a/bin")), vec!["/a/bin".to_owned()]);
    }

    #[test]
    fn parses_the_real_example_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/payment-service/selfheal.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let m = Manifest::parse(&text, &path).unwrap();
        assert!(m.test_command.is_some());
        assert_eq!(m.policy.forbidden_entry("Cargo.lock"), Some("Cargo.lock"));
    }

    #[test]
    fn test_and_policy_sections_are_optional() {
        let text: String = EXAMPLE.split("[test]").next().unwrap().to_owned();
        let m = Manifest::parse(&text, Path::new("selfheal.toml")).unwrap();
        assert_eq!(m.test_command, None);
        assert_eq!(m.policy, Policy::default());
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
            .replace("[\"{artifact}\"]", "[]")
            .replace("\".git/\"", "\"../x\"");
        let err = Manifest::parse(&text, Path::new("selfheal.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("health_path") && text.contains("run.command") && text.contains("../x"),
            "{text}"
        );
    }

    #[test]
    fn missing_section_is_reported() {
        let err = Manifest::parse("[service]\nname = \"a\"\n", Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("build"), "{err}");
    }

    #[test]
    fn policy_entries_cover_files_anywhere_and_directories() {
        let policy = Policy {
            forbidden_paths: vec!["Cargo.lock".into(), ".git/".into(), "deploy/prod/".into()],
            allowed_paths: vec!["src/".into()],
            max_changed_lines: None,
        };
        assert_eq!(policy.forbidden_entry("Cargo.lock"), Some("Cargo.lock"));
        assert_eq!(policy.forbidden_entry("sub/Cargo.lock"), Some("Cargo.lock"));
        assert_eq!(policy.forbidden_entry("src/Cargo.lock.rs"), None);
        assert_eq!(policy.forbidden_entry(".git/config"), Some(".git/"));
        assert_eq!(policy.forbidden_entry("a/.git/config"), Some(".git/"));
        assert_eq!(
            policy.forbidden_entry("deploy/prod/x.yaml"),
            Some("deploy/prod/")
        );
        assert_eq!(policy.forbidden_entry("other/deploy/prod/x"), None);
        assert!(policy.allows("src/payments.rs"));
        assert!(!policy.allows("build.rs"));
    }
}
