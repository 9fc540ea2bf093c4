//! Building a version: a commit of the target's repository, checked out in its own git worktree,
//! optionally patched, built with the manifest's command into a shared `CARGO_TARGET_DIR`, and
//! its artifact copied out so later builds cannot overwrite a running binary. Completed builds are
//! kept by commit and patch digest next to the target directory, so deploying the same input again
//! (a rollback, a retried saga step) starts in milliseconds.
//!
//! Every external step is a child process (`tokio::process`); nothing blocks the runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sha2::Digest;
use tokio::process::Command;

use crate::error::Error;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::model::SourceRef;

/// What to build.
#[derive(Clone, Debug)]
pub(crate) struct BuildSpec {
    pub(crate) version: String,
    pub(crate) source: SourceRef,
    /// The full commit id, as resolved by [`VersionBuilder::resolve`].
    pub(crate) commit: String,
    pub(crate) patch: Option<String>,
}

/// A built version, ready to run.
#[derive(Clone, Debug)]
pub(crate) struct BuiltVersion {
    pub(crate) version: String,
    pub(crate) commit: String,
    /// The repository the version was built from.
    pub(crate) repository: PathBuf,
    /// The diff applied on top of the commit, if any.
    pub(crate) patch: Option<String>,
    pub(crate) manifest: Manifest,
    /// The deployer's own copy of the artifact, which no later build overwrites.
    pub(crate) artifact: PathBuf,
    /// Whether an earlier build of the same commit and patch was reused.
    pub(crate) cached: bool,
}

/// Turns source references into runnable artifacts.
#[async_trait::async_trait]
pub(crate) trait VersionBuilder: Send + Sync {
    /// The full commit id `source` names; a clear error for an unknown commit or repository.
    async fn resolve(&self, source: &SourceRef) -> Result<String, Error>;
    /// Builds `spec`.
    async fn build(&self, spec: &BuildSpec) -> Result<BuiltVersion, Error>;
}

/// Builds in git worktrees on this machine.
#[derive(Debug)]
pub(crate) struct LocalBuilder {
    data_dir: PathBuf,
    target_dir: PathBuf,
    timeout: Duration,
    log_tail_lines: usize,
}

/// The directory under the target directory that keeps completed builds.
const CACHE_DIR: &str = "selfheal-builds";

/// One build at a time per target directory (and so per repository): builds sharing a
/// `CARGO_TARGET_DIR` write the same artifact path, which must be copied out before the next
/// build starts. Process-wide, because several deployers in one process may share a directory.
static BUILD_LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl LocalBuilder {
    pub(crate) fn new(
        data_dir: PathBuf,
        target_dir: PathBuf,
        timeout: Duration,
        log_tail_lines: usize,
    ) -> Self {
        Self {
            data_dir,
            target_dir,
            timeout,
            log_tail_lines,
        }
    }

    fn build_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = BUILD_LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(self.target_dir.clone()).or_default())
    }

    async fn build_in(&self, spec: &BuildSpec, worktree: &Path) -> Result<BuiltVersion, Error> {
        let repo = &spec.source.repository;
        let worktree_arg = worktree.to_string_lossy().into_owned();
        git(
            repo,
            &[
                "worktree",
                "add",
                "--detach",
                "--force",
                &worktree_arg,
                &spec.commit,
            ],
        )
        .await?
        .map_err(|stderr| Error::Repository {
            path: repo.clone(),
            reason: format!("cannot check out {}: {stderr}", spec.commit),
        })?;

        if let Some(patch) = &spec.patch {
            let patch_file = worktree.with_extension("patch");
            tokio::fs::write(&patch_file, patch)
                .await
                .map_err(Error::io("cannot write the patch"))?;
            let patch_arg = patch_file.to_string_lossy().into_owned();
            let applied = git(worktree, &["apply", "--whitespace=nowarn", &patch_arg]).await?;
            let _ = tokio::fs::remove_file(&patch_file).await;
            applied.map_err(|stderr| Error::PatchRejected {
                commit: spec.commit.clone(),
                stderr,
            })?;
        }

        let manifest_path = worktree.join(MANIFEST_FILE);
        let text = tokio::fs::read_to_string(&manifest_path)
            .await
            .map_err(|e| Error::Manifest {
                path: PathBuf::from(MANIFEST_FILE),
                reason: format!("cannot be read at {}: {e}", spec.commit),
            })?;
        let manifest = Manifest::parse(&text, Path::new(MANIFEST_FILE))?;

        let logs = self.data_dir.join("builds");
        tokio::fs::create_dir_all(&logs)
            .await
            .map_err(Error::io("cannot create the build log directory"))?;
        let log_path = logs.join(format!("{}.log", spec.version));
        let log =
            std::fs::File::create(&log_path).map_err(Error::io("cannot create the build log"))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("cannot share the build log"))?;

        let (program, args) =
            manifest
                .build_command
                .split_first()
                .ok_or_else(|| Error::Manifest {
                    path: PathBuf::from(MANIFEST_FILE),
                    reason: "build.command must not be empty".into(),
                })?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(worktree)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::BuildFailed {
                version: spec.version.clone(),
                status: format!("cannot start {program:?}: {e}"),
                log_tail: String::new(),
            })?;
        tracing::info!(version = %spec.version, commit = %spec.commit, log = %log_path.display(), "build started");
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => status.map_err(Error::io("cannot wait for the build"))?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(Error::BuildTimedOut {
                    version: spec.version.clone(),
                    timeout: self.timeout,
                });
            }
        };
        if !status.success() {
            return Err(Error::BuildFailed {
                version: spec.version.clone(),
                status: status.to_string(),
                log_tail: tail_of_file(&log_path, self.log_tail_lines).await,
            });
        }

        let built = manifest.artifact_path(worktree, &self.target_dir);
        let file_name =
            built
                .file_name()
                .map(ToOwned::to_owned)
                .ok_or_else(|| Error::ArtifactMissing {
                    version: spec.version.clone(),
                    path: built.clone(),
                })?;
        // Store the artifact and its manifest as an immutable cache entry, made visible by one
        // rename once complete.
        let entry = self.cache_entry(spec);
        let staging = entry.with_extension(format!("staging-{}", spec.version));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let bin = staging.join("bin");
        tokio::fs::create_dir_all(&bin)
            .await
            .map_err(Error::io("cannot create the artifact directory"))?;
        tokio::fs::copy(&built, bin.join(&file_name))
            .await
            .map_err(|_| Error::ArtifactMissing {
                version: spec.version.clone(),
                path: manifest.artifact.clone(),
            })?;
        tokio::fs::write(staging.join(MANIFEST_FILE), &text)
            .await
            .map_err(Error::io("cannot store the manifest"))?;
        let _ = tokio::fs::remove_dir_all(&entry).await;
        tokio::fs::rename(&staging, &entry)
            .await
            .map_err(Error::io("cannot store the build"))?;
        Ok(BuiltVersion {
            version: spec.version.clone(),
            commit: spec.commit.clone(),
            repository: spec.source.repository.clone(),
            patch: spec.patch.clone(),
            manifest,
            artifact: entry.join("bin").join(file_name),
            cached: false,
        })
    }

    /// Where the build of `spec`'s commit and patch is kept. A commit id names a tree exactly, so
    /// commit plus patch digest names the build's input.
    fn cache_entry(&self, spec: &BuildSpec) -> PathBuf {
        let patch = spec.patch.as_deref().map_or_else(
            || "clean".to_owned(),
            |p| hex::encode(&sha2::Sha256::digest(p.as_bytes())[..8]),
        );
        self.target_dir
            .join(CACHE_DIR)
            .join(format!("{}-{patch}", spec.commit))
    }

    /// A completed earlier build of the same input, if one is kept.
    async fn cached(&self, spec: &BuildSpec) -> Option<BuiltVersion> {
        let entry = self.cache_entry(spec);
        let text = tokio::fs::read_to_string(entry.join(MANIFEST_FILE))
            .await
            .ok()?;
        let manifest = Manifest::parse(&text, Path::new(MANIFEST_FILE)).ok()?;
        let file_name = manifest.artifact.file_name()?.to_owned();
        let artifact = entry.join("bin").join(file_name);
        tokio::fs::metadata(&artifact).await.ok()?;
        Some(BuiltVersion {
            version: spec.version.clone(),
            commit: spec.commit.clone(),
            repository: spec.source.repository.clone(),
            patch: spec.patch.clone(),
            manifest,
            artifact,
            cached: true,
        })
    }
}

#[async_trait::async_trait]
impl VersionBuilder for LocalBuilder {
    async fn resolve(&self, source: &SourceRef) -> Result<String, Error> {
        let repo = &source.repository;
        if !tokio::fs::metadata(repo).await.is_ok_and(|m| m.is_dir()) {
            return Err(Error::Repository {
                path: repo.clone(),
                reason: "not a directory".into(),
            });
        }
        let commit = &source.commit;
        if commit.is_empty() || commit.starts_with('-') || commit.chars().any(char::is_whitespace) {
            return Err(Error::InvalidArgument {
                field: "source.commit",
                reason: format!("{commit:?} is not a revision"),
            });
        }
        let rev = format!("{commit}^{{commit}}");
        match git(repo, &["rev-parse", "--verify", "--quiet", &rev]).await? {
            Ok(sha) => Ok(sha.trim().to_owned()),
            Err(_) => {
                // Tell "not a repository" apart from "no such commit".
                if git(repo, &["rev-parse", "--git-dir"]).await?.is_err() {
                    return Err(Error::Repository {
                        path: repo.clone(),
                        reason: "not a git repository".into(),
                    });
                }
                Err(Error::UnknownCommit {
                    repository: repo.clone(),
                    commit: commit.clone(),
                })
            }
        }
    }

    async fn build(&self, spec: &BuildSpec) -> Result<BuiltVersion, Error> {
        let lock = self.build_lock();
        let _serialised = lock.lock().await;
        if let Some(built) = self.cached(spec).await {
            return Ok(built);
        }
        let worktrees = self.data_dir.join("worktrees");
        tokio::fs::create_dir_all(&worktrees)
            .await
            .map_err(Error::io("cannot create the worktree directory"))?;
        let worktree = worktrees.join(&spec.version);
        let result = self.build_in(spec, &worktree).await;
        // The worktree is scratch space: remove it whatever happened.
        let worktree_arg = worktree.to_string_lossy().into_owned();
        if let Ok(Err(stderr)) = git(
            &spec.source.repository,
            &["worktree", "remove", "--force", &worktree_arg],
        )
        .await
        {
            tracing::debug!(%stderr, "worktree remove failed; deleting the directory");
            let _ = tokio::fs::remove_dir_all(&worktree).await;
            let _ = git(&spec.source.repository, &["worktree", "prune"]).await;
        }
        result
    }
}

/// Runs git in `dir`: `Ok(Ok(stdout))` on success, `Ok(Err(stderr))` when git refused.
async fn git(dir: &Path, args: &[&str]) -> Result<Result<String, String>, Error> {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(Error::io("cannot run git"))?;
    if output.status.success() {
        Ok(Ok(String::from_utf8_lossy(&output.stdout).into_owned()))
    } else {
        Ok(Err(String::from_utf8_lossy(&output.stderr)
            .trim()
            .to_owned()))
    }
}

/// The last `lines` lines of a file, or a note that it cannot be read.
async fn tail_of_file(path: &Path, lines: usize) -> String {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(build log {} unreadable: {e})", path.display()),
    }
}
