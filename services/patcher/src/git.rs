//! The git CLI, run as a child process with a deadline (never on the async runtime's threads),
//! confined to one repository.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::error::Error;

/// One repository on disk.
#[derive(Clone, Debug)]
pub(crate) struct Repo {
    root: PathBuf,
    timeout: Duration,
}

impl Repo {
    pub(crate) fn open(root: &Path, timeout: Duration) -> Result<Self, Error> {
        if !root.exists() {
            return Err(Error::NotFound(format!(
                "repository {} does not exist",
                root.display()
            )));
        }
        if !root.join(".git").exists() {
            return Err(Error::InvalidInput(format!(
                "{} is not a git repository",
                root.display()
            )));
        }
        Ok(Self {
            root: root.to_owned(),
            timeout,
        })
    }

    /// Runs `git args…` in the repository and returns its stdout.
    pub(crate) async fn git(&self, args: &[&str]) -> Result<String, Error> {
        self.git_with(args, &[], None).await
    }

    /// Runs `git args…` with extra environment variables and, when given, `input` on stdin.
    pub(crate) async fn git_with(
        &self,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        input: Option<&[u8]>,
    ) -> Result<String, Error> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt;

        let failed = |message: String| Error::Git {
            command: args.join(" "),
            message,
        };
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(&self.root)
            .args(["-c", "core.quotepath=off", "-c", "color.ui=never"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let run = async {
            let mut child = command.spawn()?;
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin.write_all(input).await?;
                drop(stdin);
            }
            child.wait_with_output().await
        };
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| failed(format!("timed out after {:?}", self.timeout)))?
            .map_err(|error| failed(error.to_string()))?;
        if !output.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        String::from_utf8(output.stdout).map_err(|_| failed("output is not UTF-8".into()))
    }

    /// A full commit id for `rev`, or an error naming it.
    pub(crate) async fn resolve(&self, rev: &str) -> Result<String, Error> {
        if rev.is_empty() || rev.starts_with('-') || rev.len() > 200 {
            return Err(Error::InvalidInput(format!("{rev:?} is not a revision")));
        }
        let spec = format!("{rev}^{{commit}}");
        match self.git(&["rev-parse", "--verify", "--quiet", &spec]).await {
            Ok(sha) => Ok(sha.trim().to_owned()),
            Err(Error::Git { message, .. }) if message.is_empty() => Err(Error::NotFound(format!(
                "commit {rev} is not in repository {}",
                self.root.display()
            ))),
            Err(error) => Err(error),
        }
    }

    /// The content of `path` at `commit` (read from git objects, never from the work tree).
    pub(crate) async fn show(&self, commit: &str, path: &RepoPath) -> Result<String, Error> {
        let object = format!("{commit}:{}", path.as_str());
        let kind = self.git(&["cat-file", "-t", &object]).await.map_err(|_| {
            Error::NotFound(format!(
                "file {} does not exist at commit {commit}",
                path.as_str()
            ))
        })?;
        if kind.trim() != "blob" {
            return Err(Error::InvalidInput(format!(
                "{} is a {} at commit {commit}, not a file",
                path.as_str(),
                kind.trim()
            )));
        }
        self.git(&["cat-file", "blob", &object]).await
    }
}

/// A path relative to a repository root that cannot escape it: no `..`, no absolute path, no
/// empty or control-character components. Untrusted paths from stack traces and requests pass
/// through here before any use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoPath(String);

impl RepoPath {
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let trimmed = raw.trim().trim_start_matches("./");
        let path = Path::new(trimmed);
        let escapes = path
            .components()
            .any(|component| !matches!(component, Component::Normal(_)));
        if trimmed.is_empty()
            || escapes
            || trimmed.chars().any(char::is_control)
            || trimmed.len() > 4096
        {
            return Err(Error::InvalidInput(format!(
                "path {raw:?} must be relative to the repository and stay inside it"
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::RepoPath;

    #[test]
    fn rejects_paths_that_leave_the_repository() {
        for hostile in [
            "../../etc/passwd",
            "/etc/passwd",
            "src/../../x",
            "",
            "a\0b",
            "src/\nx",
        ] {
            assert!(RepoPath::parse(hostile).is_err(), "{hostile:?}");
        }
        assert_eq!(
            RepoPath::parse("./src/payments.rs").unwrap().as_str(),
            "src/payments.rs"
        );
    }
}
