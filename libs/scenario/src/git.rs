//! Running the `git` CLI in a clean, reproducible environment.
//!
//! Every command starts from an empty environment: only `PATH` is inherited (to find `git`), the
//! user's and the system's git configuration are ignored, and the settings that could change
//! commit contents (default branch, signing, line-ending conversion) are pinned on the command
//! line. Author and committer identity and dates come from the scenario, never from the machine.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ScenarioError;

/// Configuration pinned on every git command line.
const PINNED_CONFIG: &[&str] = &[
    "-c",
    "init.defaultBranch=main",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "core.autocrlf=false",
    "-c",
    "core.safecrlf=false",
    "-c",
    "core.fileMode=true",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "advice.detachedHead=false",
];

/// The identity and date of one commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity<'a> {
    /// Author and committer name.
    pub(crate) name: &'a str,
    /// Author and committer email.
    pub(crate) email: &'a str,
    /// Author and committer date, in a format git parses without looking at the clock.
    pub(crate) date: &'a str,
}

/// A git repository driven through the CLI.
#[derive(Debug, Clone)]
pub(crate) struct Git {
    repo: PathBuf,
}

impl Git {
    /// Commands run with `repo` as their working directory.
    pub(crate) fn new(repo: &Path) -> Self {
        Git {
            repo: repo.to_path_buf(),
        }
    }

    /// Runs `git <args>` and returns its stdout.
    pub(crate) fn run<I, S>(&self, args: I) -> Result<String, ScenarioError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_as(args, None)
    }

    /// Runs `git <args>`, with `identity` as author and committer when given, and returns stdout.
    pub(crate) fn run_as<I, S>(
        &self,
        args: I,
        identity: Option<Identity<'_>>,
    ) -> Result<String, ScenarioError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let command_line = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");

        let mut command = Command::new("git");
        command
            .current_dir(&self.repo)
            .env_clear()
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("HOME", &self.repo)
            .env("XDG_CONFIG_HOME", &self.repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(PINNED_CONFIG)
            .args(&args);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        if let Some(id) = identity {
            command
                .env("GIT_AUTHOR_NAME", id.name)
                .env("GIT_AUTHOR_EMAIL", id.email)
                .env("GIT_AUTHOR_DATE", id.date)
                .env("GIT_COMMITTER_NAME", id.name)
                .env("GIT_COMMITTER_EMAIL", id.email)
                .env("GIT_COMMITTER_DATE", id.date);
        }

        let output = command.output().map_err(|source| ScenarioError::GitSpawn {
            command: command_line.clone(),
            source,
        })?;
        if !output.status.success() {
            return Err(ScenarioError::Git {
                command: command_line,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The full id of the commit `rev` names.
    pub(crate) fn rev_parse(&self, rev: &str) -> Result<String, ScenarioError> {
        let verify = format!("{rev}^{{commit}}");
        Ok(self
            .run(["rev-parse", "--verify", "--quiet", verify.as_str()])?
            .trim()
            .to_owned())
    }
}
