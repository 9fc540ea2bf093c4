//! Helpers shared by the patcher's integration tests: small git repositories, `git apply`
//! checks in throwaway worktrees, the patcher started in-process, and the inventory-service
//! scenario history replayed with git.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use selfheal_patcher::Config;
use selfheal_proto::v1::patcher_client::PatcherClient;
use selfheal_service::testkit::{ServiceUnderTest, channel};
use tonic::transport::Channel;

/// Runs git in `dir` with a fixed identity and no user configuration; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir).args(args).output().expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com");
    command
}

/// A repository whose history is one commit per entry of `commits`, each writing its files.
/// Returns the commit ids, oldest first.
pub fn repository(dir: &Path, commits: &[(&str, &[(&str, &str)])]) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    let mut ids = Vec::new();
    for (date, (message, files)) in commits.iter().enumerate() {
        for (path, text) in *files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(dir, &["add", "--all"]);
        let date = format!("2025-01-0{}T10:00:00Z", date + 1);
        let status = git_command(dir)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(["commit", "--quiet", "-m", message])
            .status()
            .unwrap();
        assert!(status.success());
        ids.push(git(dir, &["rev-parse", "HEAD"]).trim().to_owned());
    }
    ids
}

/// A detached worktree of `repo` at `commit` in a new temporary directory.
pub struct Worktree {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Worktree {
    pub fn new(repo: &Path, commit: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wt");
        git(
            repo,
            &[
                "worktree",
                "add",
                "--detach",
                "--quiet",
                path.to_str().unwrap(),
                commit,
            ],
        );
        Self { _dir: dir, path }
    }

    /// `git apply [--check]` of `diff` in this worktree.
    pub fn apply(&self, diff: &str, check_only: bool) -> Result<(), String> {
        let patch = self.path.join(".candidate.diff");
        std::fs::write(&patch, diff).unwrap();
        let mut command = git_command(&self.path);
        command.arg("apply");
        if check_only {
            command.arg("--check");
        }
        let output = command.arg(&patch).output().unwrap();
        std::fs::remove_file(&patch).unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// Whether `diff` passes `git apply --check` at `commit`, with git's complaint when not.
pub fn applies(repo: &Path, commit: &str, diff: &str) -> Result<(), String> {
    Worktree::new(repo, commit).apply(diff, true)
}

/// The patcher started in-process with `config`, and a client of it.
pub async fn patcher(
    config: Config,
) -> (
    ServiceUnderTest<selfheal_patcher::Error>,
    PatcherClient<Channel>,
) {
    let service = ServiceUnderTest::start(|l, s| selfheal_patcher::run(config, l, s)).await;
    let client = PatcherClient::new(channel(service.grpc_addr).await.unwrap());
    (service, client)
}

/// The inventory-service example's scenario history, built by `selfheal-scenario`.
pub fn python_scenario(dest: &Path) -> selfheal_scenario::Scenario {
    selfheal_scenario::build(&inventory_example(), dest).expect("the inventory scenario builds")
}

/// The `examples` directory of the checkout these tests were built from.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives at <root>/services/patcher")
        .join("examples")
}

pub fn inventory_example() -> PathBuf {
    examples_dir().join("inventory-service")
}
