//! The repository at a commit, read through the `git` CLI run as a child process.
//!
//! Commands run with a cleared environment (only `PATH`, plus settings that pin behaviour): the
//! user's and the system's configuration are ignored, repository discovery stops at the directory
//! given (so a path inside another repository never reads that one), and settings that could run
//! programs (`core.fsmonitor`, hooks) are switched off on the command line, which outranks the
//! repository's own configuration. Only object-database commands are used (`ls-tree`,
//! `cat-file`, `blame <commit>`, `show -s`, `diff-tree`, `merge-base`): nothing reads or writes the
//! working tree. Each command has a deadline and is killed when it passes or when the caller goes
//! away.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::error::LocalizeError;
use super::paths::RepoTree;

/// A commit as blame found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub author: String,
    pub author_email: String,
    /// Unix seconds of the author date.
    pub time: i64,
    pub message: String,
    pub files: Vec<String>,
}

/// The most files listed for one commit.
const MAX_COMMIT_FILES: usize = 1000;

/// A local git repository.
#[derive(Clone, Debug)]
pub struct GitRepo {
    root: PathBuf,
    timeout: Duration,
}

impl GitRepo {
    /// Opens the repository at `path`, which must be an absolute path to a directory.
    pub async fn open(path: &str, timeout: Duration) -> Result<Self, LocalizeError> {
        let given = Path::new(path);
        if !given.is_absolute() {
            return Err(LocalizeError::InvalidRepository {
                repository: path.to_owned(),
                reason: "the path must be absolute",
            });
        }
        let root = tokio::fs::canonicalize(given).await.map_err(|_| {
            LocalizeError::RepositoryNotFound {
                repository: path.to_owned(),
                detail: "no such directory".to_owned(),
            }
        })?;
        let repo = GitRepo { root, timeout };
        let output = repo.run(&["rev-parse", "--git-dir"]).await?;
        if !output.status.success() {
            return Err(LocalizeError::RepositoryNotFound {
                repository: path.to_owned(),
                detail: stderr_line(&output.stderr),
            });
        }
        Ok(repo)
    }

    /// The canonical path of the repository.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full id of the commit `revision` names.
    pub async fn resolve_commit(
        &self,
        field: &'static str,
        revision: &str,
    ) -> Result<String, LocalizeError> {
        check_revision(field, revision)?;
        let spec = format!("{revision}^{{commit}}");
        let output = self
            .run(&[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ])
            .await?;
        let sha = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || sha.is_empty() {
            return Err(LocalizeError::CommitNotFound {
                field,
                revision: revision.to_owned(),
            });
        }
        Ok(sha)
    }

    /// Every entry of the tree of `commit` (a full id).
    pub async fn tree(&self, commit: &str) -> Result<RepoTree, LocalizeError> {
        let output = self
            .checked(&["ls-tree", "-r", "-l", "-z", "--full-tree", commit])
            .await?;
        Ok(RepoTree::from_ls_tree(&output))
    }

    /// The contents of the blob `object`.
    pub async fn blob(&self, object: &str) -> Result<Vec<u8>, LocalizeError> {
        self.checked(&["cat-file", "blob", object]).await
    }

    /// The commit that last changed `line` of `path` as of `commit`.
    pub async fn blame_line(
        &self,
        commit: &str,
        path: &str,
        line: u32,
    ) -> Result<String, LocalizeError> {
        let range = format!("{line},{line}");
        let output = self
            .checked(&["blame", "--porcelain", "-L", &range, commit, "--", path])
            .await?;
        let text = String::from_utf8_lossy(&output);
        text.lines()
            .next()
            .and_then(|header| header.split_whitespace().next())
            .filter(|sha| sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .ok_or_else(|| LocalizeError::GitOutput {
                command: "blame --porcelain",
                detail: "no commit header".to_owned(),
            })
    }

    /// Author, date, message and changed files of `commit`.
    pub async fn commit(&self, commit: &str) -> Result<CommitInfo, LocalizeError> {
        let show_args = [
            "show",
            "-s",
            "--no-show-signature",
            "--format=%H%x00%an%x00%ae%x00%at%x00%B",
            commit,
        ];
        let files_args = [
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "-r",
            "-z",
            "--root",
            commit,
        ];
        let (output, files) =
            tokio::try_join!(self.checked(&show_args), self.checked(&files_args))?;
        let text = String::from_utf8_lossy(&output);
        let mut fields = text.splitn(5, '\0');
        let (Some(sha), Some(author), Some(email), Some(time), Some(message)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(LocalizeError::GitOutput {
                command: "show -s",
                detail: "fewer fields than asked for".to_owned(),
            });
        };
        let files = files
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .take(MAX_COMMIT_FILES)
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        Ok(CommitInfo {
            sha: sha.trim().to_owned(),
            author: author.to_owned(),
            author_email: email.to_owned(),
            time: time.trim().parse().unwrap_or(0),
            message: message.trim_end().to_owned(),
            files,
        })
    }

    /// Full ids of the commits reachable from `to` and not from `from` (both full ids), newest
    /// first, at most `limit`.
    pub async fn commits_between(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<String>, LocalizeError> {
        let range = format!("{from}..{to}");
        let max = format!("--max-count={limit}");
        let output = self
            .checked(&["rev-list", &max, "--end-of-options", &range])
            .await?;
        Ok(String::from_utf8_lossy(&output)
            .lines()
            .map(str::trim)
            .filter(|sha| !sha.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub async fn is_ancestor(
        &self,
        ancestor: &str,
        descendant: &str,
    ) -> Result<bool, LocalizeError> {
        let output = self
            .run(&["merge-base", "--is-ancestor", ancestor, descendant])
            .await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failure("merge-base --is-ancestor", &output)),
        }
    }

    /// Runs git and returns stdout, or an error when it fails.
    async fn checked(&self, args: &[&str]) -> Result<Vec<u8>, LocalizeError> {
        let output = self.run(args).await?;
        if !output.status.success() {
            return Err(failure(args.first().copied().unwrap_or("git"), &output));
        }
        Ok(output.stdout)
    }

    async fn run(&self, args: &[&str]) -> Result<std::process::Output, LocalizeError> {
        let command_name = args.first().copied().unwrap_or("git");
        let mut command = Command::new("git");
        command
            .current_dir(&self.root)
            .env_clear()
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .args([
                "-c",
                "core.fsmonitor=false",
                "-c",
                "core.hooksPath=/dev/null",
                "--no-pager",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(parent) = self.root.parent() {
            command.env("GIT_CEILING_DIRECTORIES", parent);
        }
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let output = command.output();
        match tokio::time::timeout(self.timeout, output).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(LocalizeError::GitSpawn { source }),
            Err(_) => Err(LocalizeError::GitTimeout {
                command: command_name.to_owned(),
                after: self.timeout,
            }),
        }
    }
}

/// Rejects revisions that git could read as options or that hold odd characters.
fn check_revision(field: &'static str, revision: &str) -> Result<(), LocalizeError> {
    let valid = !revision.is_empty()
        && revision.len() <= 256
        && !revision.starts_with('-')
        && revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/~^@{}-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(LocalizeError::InvalidRevision {
            field,
            revision: revision.chars().take(64).collect(),
        })
    }
}

fn failure(command: &str, output: &std::process::Output) -> LocalizeError {
    LocalizeError::Git {
        command: command.to_owned(),
        status: output.status.to_string(),
        stderr: stderr_line(&output.stderr),
    }
}

/// The first line of git's stderr, bounded.
fn stderr_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_that_look_like_options_are_invalid() {
        assert!(check_revision("commit", "--output=/tmp/x").is_err());
        assert!(check_revision("commit", "HEAD; rm -rf /").is_err());
        assert!(check_revision("commit", "").is_err());
        assert!(check_revision("commit", "main~2").is_ok());
        assert!(check_revision("commit", "0123abcd").is_ok());
    }
}
