//! The service binaries next to the test executable, and local processes that die with
//! their guard (also when a test panics).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{SERVICES, repo_root};

/// `target/<profile>/` of the running test executable (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the test executable has no path")?;
    let deps = exe
        .parent()
        .context("the test executable has no directory")?;
    let profile = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().context("deps/ has no parent")?
    } else {
        deps
    };
    Ok(profile.to_path_buf())
}

/// Builds the seven service binaries into the test's own target directory and profile (a
/// no-op when they are fresh) and returns that directory. Cargo's lock on the build directory
/// is free while tests run, so a nested cargo works here.
pub fn build_service_binaries() -> Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let target_dir = profile_dir
        .parent()
        .context("the profile directory has no parent")?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("the profile directory has no name")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(repo_root())
        .args(["build", "--quiet", "--bins", "--target-dir"])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    for service in SERVICES {
        command.args(["-p", &service.package()]);
    }
    let output = command
        .output()
        .context("cannot run cargo to build the service binaries")?;
    if !output.status.success() {
        bail!(
            "building the service binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for service in SERVICES {
        let binary = profile_dir.join(service.binary());
        if !binary.is_file() {
            bail!("{} was not built at {}", service.binary(), binary.display());
        }
    }
    Ok(profile_dir)
}

/// A `Command` for `binary` with a clean selfheal environment: inherited `SELFHEAL_*` and
/// `OTEL_*` variables are removed so that only `env` configures it.
pub fn service_command(binary: &Path, args: &[String], env: &BTreeMap<String, String>) -> Command {
    let mut command = Command::new(binary);
    command.args(args);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("SELFHEAL_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.envs(env);
    command
}

/// One running process and where its output goes.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

/// Processes killed (and reaped) when the guard is dropped, panics included.
#[derive(Debug, Default)]
pub struct ProcessGuard {
    running: Vec<Running>,
}

impl ProcessGuard {
    /// Starts `command` as `name`, its stdout and stderr going to `log`.
    pub fn spawn(&mut self, name: &str, mut command: Command, log: PathBuf) -> Result<()> {
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.running.push(Running {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    /// Fails, with the end of its log, if a process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for running in &mut self.running {
            if let Some(status) = running.child.try_wait()? {
                bail!(
                    "{} exited early ({status}); end of its log:\n{}",
                    running.name,
                    log_tail(&running.log, 40)
                );
            }
        }
        Ok(())
    }

    /// The end of every process's log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.running
            .iter()
            .map(|running| {
                format!(
                    "--- {} ({}) ---\n{}",
                    running.name,
                    running.log.display(),
                    log_tail(&running.log, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        for running in &mut self.running {
            let _ = running.child.kill();
        }
        for running in &mut self.running {
            let _ = running.child.wait();
        }
    }
}

/// The last `lines` lines of `path`.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh directory for this run's logs under the system temp directory.
pub fn log_dir(label: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("selfheal-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Polls `check` every 200 ms until it succeeds or `deadline` passes; the failure carries the
/// last reason `check` gave.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = std::time::Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if started.elapsed() > deadline {
            bail!("{what}: not within {deadline:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
