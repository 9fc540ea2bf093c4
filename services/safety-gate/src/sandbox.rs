//! The sandbox every untrusted process runs in: builds, tests and the replayed service.
//!
//! A sandboxed process gets
//! - no network: its own network namespace (`unshare --net`) with only loopback up, so it cannot
//!   reach anything outside, not even listeners on the host's 127.0.0.1;
//! - a memory limit: `RLIMIT_AS` set by the wrapper shell (`ulimit -v`) before it execs the
//!   command, so the limit is in place before the first instruction of the command runs;
//! - a wall-time limit: it leads its own process group, and the whole group is killed when the
//!   limit passes (and after it exits, so no stray child outlives it);
//! - its own `TMPDIR`, and an environment rebuilt from an allowlist with anything that looks
//!   like a secret dropped.
//!
//! Whether the network sandbox works is probed once at start-up ([`Sandbox::probe`]); when it does
//! not, the gate still runs with the other limits and every verdict carries a warning.
//!
//! The replay driver joins the service's namespace from a dedicated thread (`setns`), so requests
//! are sent over the namespace's own loopback and the service stays cut off from the network.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::config::SandboxMode;
use crate::error::Error;

/// Variables passed through to sandboxed processes (when set and not secret-looking).
const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "LANG",
    "LC_ALL",
    "USER",
];

/// Exit code of the wrapper when it cannot set the sandbox up.
const WRAPPER_FAILED: i32 = 125;

/// Whether a variable name looks like it holds a secret.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.ends_with("_KEY")
        || upper.ends_with("_TOKEN")
        || upper.contains("SECRET")
        || upper.contains("PASSWORD")
        || upper.contains("PASSWD")
        || upper.contains("CREDENTIAL")
        || upper.starts_with("AWS_")
        || upper == "TOKEN"
        || upper == "KEY"
}

/// How untrusted processes are isolated on this machine.
#[derive(Clone, Debug)]
pub(crate) struct Sandbox {
    shell: PathBuf,
    /// `unshare` and `ip` when the network sandbox works; `None` with the reason otherwise.
    network: Result<(PathBuf, PathBuf), String>,
    env: Vec<(OsString, OsString)>,
}

/// Limits of one sandboxed run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) wall: Duration,
    pub(crate) memory_mib: u64,
}

/// How a sandboxed run ended.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) timed_out: bool,
    /// Whether the wrapper could not set the sandbox up (exit 125 with its message).
    pub(crate) sandbox_failed: bool,
}

impl RunOutcome {
    pub(crate) fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// "exit status: 101", "killed after the 600s wall-time limit", ...
    pub(crate) fn describe(&self, limits: &Limits) -> String {
        if self.timed_out {
            return format!(
                "killed after the {} wall-time limit",
                humantime::format_duration(limits.wall)
            );
        }
        match self.status {
            Some(status) => status.to_string(),
            None => "no exit status".into(),
        }
    }
}

impl Sandbox {
    /// Finds the tools and checks, by really using it, whether the network sandbox works here.
    /// `require` fails when it does not; `off` never tries.
    pub(crate) async fn probe(mode: SandboxMode, env_allow: &[String]) -> Result<Self, Error> {
        let env = scrubbed_env(env_allow);
        let shell = find_program("sh").unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let mut sandbox = Self {
            shell,
            network: Err(
                "the network sandbox is disabled by configuration (gate.sandbox = off)".into(),
            ),
            env,
        };
        if mode == SandboxMode::Off {
            return Ok(sandbox);
        }
        let network = match (find_program("unshare"), find_program("ip")) {
            (Some(unshare), Some(ip)) => {
                sandbox.network = Ok((unshare, ip));
                sandbox.check_network().await
            }
            (None, _) => Err("`unshare` is not installed".to_owned()),
            (_, None) => Err("`ip` is not installed".to_owned()),
        };
        match network {
            Ok(()) => Ok(sandbox),
            Err(reason) => {
                let reason = format!("the network sandbox is unavailable: {reason}");
                if mode == SandboxMode::Require {
                    return Err(Error::SandboxUnavailable(reason));
                }
                tracing::warn!(%reason, "running without the network sandbox");
                sandbox.network = Err(reason);
                Ok(sandbox)
            }
        }
    }

    /// Spawns a sleeper in the sandbox, joins its namespace from a thread and binds loopback
    /// there: exactly what builds and replay need.
    async fn check_network(&self) -> Result<(), String> {
        let tmp = std::env::temp_dir();
        let mut child = self
            .command(
                &["sleep".into(), "30".into()],
                &tmp,
                &tmp,
                &[],
                Limits {
                    wall: Duration::from_secs(30),
                    memory_mib: 256,
                },
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start unshare: {e}"))?;
        let result = async {
            let pid = child.id().ok_or("the probe exited at once")?;
            let netns = namespace_of(pid, &mut child, Duration::from_secs(5)).await?;
            run_in_namespace(Some(netns), || async {
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("cannot bind loopback inside the namespace: {e}"))
            })
            .await?
        }
        .await;
        kill_group(child.id());
        let _ = child.kill().await;
        if result.is_err()
            && let Ok(out) = child.wait_with_output().await
        {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.trim().is_empty() {
                return result.map_err(|e| format!("{e} ({})", stderr.trim()));
            }
        }
        result
    }

    /// Whether processes get their own network namespace.
    pub(crate) fn isolates_network(&self) -> bool {
        self.network.is_ok()
    }

    /// Why the network is not isolated, when it is not.
    pub(crate) fn warning(&self) -> Option<&str> {
        self.network.as_ref().err().map(String::as_str)
    }

    /// The names of the variables a sandboxed process inherits (for the decision record).
    pub(crate) fn inherited_env_names(&self) -> Vec<String> {
        self.env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    /// A command that runs `argv` in the sandbox, in `cwd`, with `tmp` as its temp dir and
    /// `extra_env` on top of the scrubbed environment. It leads its own process group.
    pub(crate) fn command(
        &self,
        argv: &[String],
        cwd: &Path,
        tmp: &Path,
        extra_env: &[(String, String)],
        limits: Limits,
    ) -> Command {
        let kib = (limits.memory_mib.saturating_mul(1024)).to_string();
        let mut command = match &self.network {
            Ok((unshare, ip)) => {
                let mut c = Command::new(unshare);
                c.arg("--net").arg("--").arg(&self.shell).args([
                    "-c",
                    "ip=$1; kib=$2; shift 2; \"$ip\" link set lo up || { echo 'sandbox: cannot bring loopback up' >&2; exit 125; }; ulimit -v \"$kib\" || { echo 'sandbox: cannot limit memory' >&2; exit 125; }; exec \"$@\"",
                    "sandbox",
                ]);
                c.arg(ip);
                c
            }
            Err(_) => {
                let mut c = Command::new(&self.shell);
                c.args([
                    "-c",
                    "kib=$1; shift; ulimit -v \"$kib\" || { echo 'sandbox: cannot limit memory' >&2; exit 125; }; exec \"$@\"",
                    "sandbox",
                ]);
                c
            }
        };
        command
            .arg(kib)
            .args(argv)
            .current_dir(cwd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TMPDIR", tmp)
            .env("CARGO_NET_OFFLINE", "true")
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// Runs `argv` in the sandbox to completion or its wall-time limit, output to `log`.
    pub(crate) async fn run(
        &self,
        argv: &[String],
        cwd: &Path,
        tmp: &Path,
        extra_env: &[(String, String)],
        limits: Limits,
        log: &Path,
    ) -> Result<RunOutcome, Error> {
        let out = File::create(log).map_err(Error::io("cannot create a stage log"))?;
        let err = out
            .try_clone()
            .map_err(Error::io("cannot share a stage log"))?;
        let mut child = self
            .command(argv, cwd, tmp, extra_env, limits)
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| Error::Spawn {
                program: argv.first().cloned().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        let pid = child.id();
        let waited = tokio::time::timeout(limits.wall, child.wait()).await;
        // Whatever happened, nothing the command started may outlive it.
        kill_group(pid);
        let (status, timed_out) = match waited {
            Ok(status) => (
                Some(status.map_err(Error::io("cannot wait for a sandboxed process"))?),
                false,
            ),
            Err(_) => {
                let _ = child.kill().await;
                (child.wait().await.ok(), true)
            }
        };
        let sandbox_failed = !timed_out
            && status.and_then(|s| s.code()) == Some(WRAPPER_FAILED)
            && std::fs::read_to_string(log).is_ok_and(|t| t.contains("sandbox: "));
        Ok(RunOutcome {
            status,
            timed_out,
            sandbox_failed,
        })
    }
}

/// Kills the process group led by `pid` (ignoring a group that is already gone).
pub(crate) fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The network namespace of `pid` once it differs from ours (the wrapper has unshared it), at
/// most `within`; fails early when the process exits.
pub(crate) async fn namespace_of(
    pid: u32,
    child: &mut Child,
    within: Duration,
) -> Result<File, String> {
    let ours = std::fs::read_link("/proc/self/ns/net")
        .map_err(|e| format!("cannot read our own network namespace: {e}"))?;
    let link = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let deadline = Instant::now() + within;
    loop {
        if let Ok(theirs) = std::fs::read_link(&link)
            && theirs != ours
        {
            // Opened by path: the process may exit in between; then the open fails.
            return File::open(&link).map_err(|e| format!("cannot open {}: {e}", link.display()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the sandboxed process exited early ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the sandboxed process had no network namespace of its own after {within:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `work` on a thread of its own that has joined `netns` (or stays in ours when `None`),
/// on a single-threaded runtime, and returns its result.
pub(crate) async fn run_in_namespace<F, Fut, T>(netns: Option<File>, work: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gate-replay".into())
        .spawn(move || {
            let result = (|| {
                if let Some(ns) = &netns {
                    use std::os::fd::AsFd;
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| format!("cannot join the sandbox's network namespace: {e}"))?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the replay runtime: {e}"))?;
                Ok(runtime.block_on(work()))
            })();
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the replay thread: {e}"))?;
    rx.await
        .map_err(|_| "the replay thread ended without an answer".to_owned())?
}

/// The allowlisted part of our environment, without secret-looking names.
fn scrubbed_env(extra: &[String]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let name = k.to_string_lossy();
            (ENV_ALLOWLIST.contains(&name.as_ref()) || extra.iter().any(|e| *e == name))
                && !is_secret_name(&name)
        })
        .collect()
}

/// `name` on PATH or in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names_are_recognised() {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "client_secret",
            "OPENAI_API_KEY",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["PATH", "HOME", "CARGO_HOME", "LANG"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[tokio::test]
    async fn sandboxed_processes_see_a_scrubbed_environment_and_their_own_tmpdir() {
        let sandbox = Sandbox::probe(SandboxMode::Auto, &[]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("env.log");
        let outcome = sandbox
            .run(
                &["env".into()],
                dir.path(),
                dir.path(),
                &[("EXTRA".into(), "1".into())],
                Limits {
                    wall: Duration::from_secs(10),
                    memory_mib: 256,
                },
                &log,
            )
            .await
            .unwrap();
        assert!(outcome.success(), "{outcome:?}");
        let env = std::fs::read_to_string(&log).unwrap();
        assert!(
            env.contains(&format!("TMPDIR={}", dir.path().display())),
            "{env}"
        );
        assert!(env.contains("EXTRA=1"));
        for line in env.lines() {
            let name = line.split('=').next().unwrap_or_default();
            assert!(!is_secret_name(name), "{line}");
        }
    }

    #[tokio::test]
    async fn a_process_over_its_wall_time_is_killed_with_its_children() {
        let sandbox = Sandbox::probe(SandboxMode::Auto, &[]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survivor");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let limits = Limits {
            wall: Duration::from_millis(300),
            memory_mib: 256,
        };
        let outcome = sandbox
            .run(
                &["sh".into(), "-c".into(), script],
                dir.path(),
                dir.path(),
                &[],
                limits,
                &dir.path().join("log"),
            )
            .await
            .unwrap();
        assert!(outcome.timed_out);
        assert!(outcome.describe(&limits).contains("wall-time"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the background child was killed too");
    }

    #[tokio::test]
    async fn memory_beyond_the_limit_cannot_be_allocated() {
        let sandbox = Sandbox::probe(SandboxMode::Auto, &[]).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        // 64 MiB of address space is far too little for python's 200 MiB string.
        let outcome = sandbox
            .run(
                &[
                    "python3".into(),
                    "-c".into(),
                    "x = 'a' * (200 * 1024 * 1024)".into(),
                ],
                dir.path(),
                dir.path(),
                &[],
                Limits {
                    wall: Duration::from_secs(10),
                    memory_mib: 64,
                },
                &dir.path().join("log"),
            )
            .await
            .unwrap();
        assert!(!outcome.success(), "{outcome:?}");
    }
}
