//! Running a built version as a supervised child process: on its own port, restarted with
//! backoff when it crashes, its stdout/stderr captured into the service's bounded log buffer, and
//! its health path probed until it answers 200.
//!
//! Each process is owned by one supervisor task on the deployer's tracker; stopping is cancelling
//! that task's token, and the child is killed before the task ends. Every process carries its
//! deployer's owner id in its environment, so one that outlived a crashed deployer is found and
//! stopped by the next start ([`stop_orphans`]).

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::BuiltVersion;
use crate::error::Error;
use crate::model::LogLine;

/// The HTTP client the deployer uses for health probes and for proxying.
pub(crate) type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// A new pooled HTTP/1 client.
pub(crate) fn http_client() -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// The longest line kept; longer lines are cut.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// The captured output of every version of one service, newest last.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    live: broadcast::Sender<LogLine>,
}

impl LogBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            live: broadcast::channel(1024).0,
        }
    }

    pub(crate) fn push(&self, version: &str, stream: &'static str, text: String) {
        let line = LogLine {
            version: version.to_owned(),
            stream,
            at: SystemTime::now(),
            text,
        };
        {
            let mut lines = self.lock();
            if lines.len() == self.capacity {
                lines.pop_front();
            }
            lines.push_back(line.clone());
        }
        // No receivers is normal: nobody follows.
        let _ = self.live.send(line);
    }

    /// The last `tail` lines (all kept lines when 0) of `version` (every version when `None`),
    /// and a receiver for lines pushed afterwards.
    pub(crate) fn snapshot(
        &self,
        version: Option<&str>,
        tail: usize,
    ) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let lines = self.lock();
        let receiver = self.live.subscribe();
        let matching: Vec<LogLine> = lines
            .iter()
            .filter(|l| version.is_none_or(|v| l.version == v))
            .cloned()
            .collect();
        let skip = if tail == 0 {
            0
        } else {
            matching.len().saturating_sub(tail)
        };
        (matching.into_iter().skip(skip).collect(), receiver)
    }

    /// The last `n` lines of `version`, joined, for error messages.
    pub(crate) fn tail_text(&self, version: &str, n: usize) -> String {
        self.snapshot(Some(version), n)
            .0
            .into_iter()
            .map(|l| format!("[{}] {}", l.stream, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LogLine>> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Picks a port in `start..=end` that can be bound now and is not in `taken`.
pub(crate) fn pick_port(start: u16, end: u16, taken: &HashSet<u16>) -> Result<u16, Error> {
    let span = u32::from(end - start) + 1;
    let offset = fastrand::u32(0..span);
    for i in 0..span {
        let port = start + u16::try_from((offset + i) % span).unwrap_or(0);
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort { start, end })
}

/// What the supervisor publishes about its process.
#[derive(Debug, Default)]
struct Observed {
    pid: AtomicU32,
    restarts: AtomicU32,
}

/// A version running as a supervised child process.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) addr: SocketAddr,
    observed: Arc<Observed>,
    healthy: watch::Receiver<bool>,
    exits: watch::Receiver<u32>,
    stop: CancellationToken,
    stopped: watch::Receiver<bool>,
}

/// Everything a supervisor needs besides the version.
#[derive(Clone, Debug)]
pub(crate) struct Supervision {
    pub(crate) logs: Arc<LogBuffer>,
    pub(crate) client: HttpClient,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) max_backoff: Duration,
    /// The data directory's owner id, given to every process in [`OWNER_ENV`].
    pub(crate) owner: String,
}

/// The environment variable that marks a version process with its deployer's owner id.
pub(crate) const OWNER_ENV: &str = "SELFHEAL_DEPLOYER_OWNER";

/// Kills every process of this machine whose environment carries `owner` in [`OWNER_ENV`]:
/// versions a crashed deployer of the same data directory left running. Returns their pids.
/// Only `/proc` is read; elsewhere nothing is found.
pub(crate) async fn stop_orphans(owner: String) -> Vec<u32> {
    tokio::task::spawn_blocking(move || {
        let marker = format!("{OWNER_ENV}={owner}");
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut killed = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == own {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let marked = environ
                .split(|b| *b == 0)
                .any(|variable| variable == marker.as_bytes());
            let target = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if marked
                && let Some(target) = target
                && rustix::process::kill_process(target, rustix::process::Signal::KILL).is_ok()
            {
                killed.push(pid);
            }
        }
        killed
    })
    .await
    .unwrap_or_default()
}

impl Process {
    /// Starts `built` on `port`; returns once the first child is spawned.
    pub(crate) async fn start(
        built: &BuiltVersion,
        port: u16,
        sup: Supervision,
    ) -> Result<Arc<Self>, Error> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let artifact = built.artifact.to_string_lossy().into_owned();
        let argv: Vec<String> = built
            .manifest
            .run_command
            .iter()
            .map(|a| a.replace("{artifact}", &artifact))
            .collect();
        let workdir = built
            .artifact
            .parent()
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        let spawn = {
            let argv = argv.clone();
            let port_env = built.manifest.port_env.clone();
            let version = built.version.clone();
            let owner = sup.owner.clone();
            move || -> Result<tokio::process::Child, Error> {
                let (program, args) = argv.split_first().ok_or_else(|| Error::Spawn {
                    version: version.clone(),
                    reason: "run.command is empty".into(),
                })?;
                Command::new(program)
                    .args(args)
                    .current_dir(&workdir)
                    .env(&port_env, port.to_string())
                    .env(OWNER_ENV, &owner)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| Error::Spawn {
                        version: version.clone(),
                        reason: format!("{program}: {e}"),
                    })
            }
        };
        let first = spawn()?;

        let observed = Arc::new(Observed::default());
        let (healthy_tx, healthy) = watch::channel(false);
        let (exits_tx, exits) = watch::channel(0u32);
        let (stopped_tx, stopped) = watch::channel(false);
        let stop = sup.shutdown.child_token();
        let process = Arc::new(Self {
            addr,
            observed: Arc::clone(&observed),
            healthy,
            exits,
            stop: stop.clone(),
            stopped,
        });
        let health_uri: hyper::Uri = format!("http://{addr}{}", built.manifest.health_path)
            .parse()
            .map_err(|e| Error::Spawn {
                version: built.version.clone(),
                reason: format!("health path is not a valid URI: {e}"),
            })?;
        let version = built.version.clone();
        let tracker = sup.tracker.clone();
        sup.tracker.spawn(async move {
            let mut child = Some(first);
            let mut backoff = Duration::from_millis(100);
            loop {
                let mut current = match child.take() {
                    Some(c) => c,
                    None => match spawn() {
                        Ok(c) => c,
                        Err(error) => {
                            sup.logs.push(
                                &version,
                                "supervisor",
                                format!("restart failed: {error}"),
                            );
                            if sleep_or_stop(&stop, backoff).await {
                                break;
                            }
                            backoff = (backoff * 2).min(sup.max_backoff);
                            continue;
                        }
                    },
                };
                observed
                    .pid
                    .store(current.id().unwrap_or(0), Ordering::SeqCst);
                if let Some(out) = current.stdout.take() {
                    tracker.spawn(capture(
                        out,
                        Arc::clone(&sup.logs),
                        version.clone(),
                        "stdout",
                    ));
                }
                if let Some(err) = current.stderr.take() {
                    tracker.spawn(capture(
                        err,
                        Arc::clone(&sup.logs),
                        version.clone(),
                        "stderr",
                    ));
                }
                let probe = probe_until_healthy(&sup.client, &health_uri, &healthy_tx);
                tokio::pin!(probe);
                let status = tokio::select! {
                    status = current.wait() => status,
                    () = stop.cancelled() => {
                        let _ = current.kill().await;
                        break;
                    }
                    () = &mut probe => unreachable_pending(),
                };
                healthy_tx.send_replace(false);
                exits_tx.send_modify(|n| *n += 1);
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                sup.logs
                    .push(&version, "supervisor", format!("process exited ({status})"));
                tracing::warn!(%version, %status, "version process exited; restarting");
                if sleep_or_stop(&stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(sup.max_backoff);
                observed.restarts.fetch_add(1, Ordering::SeqCst);
            }
            healthy_tx.send_replace(false);
            observed.pid.store(0, Ordering::SeqCst);
            stopped_tx.send_replace(true);
        });
        Ok(process)
    }

    /// Waits until the health path answers 200, at most `timeout`.
    pub(crate) async fn wait_healthy(&self, timeout: Duration) -> bool {
        let mut healthy = self.healthy.clone();
        tokio::time::timeout(timeout, healthy.wait_for(|h| *h))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.observed.pid.load(Ordering::SeqCst)
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.observed.restarts.load(Ordering::SeqCst)
    }

    /// A receiver of the number of times the process has exited.
    pub(crate) fn exits(&self) -> watch::Receiver<u32> {
        self.exits.clone()
    }

    /// Kills the process and waits until its supervisor has finished.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }
}

/// A probe future never completes (it ends pending once healthy); this satisfies `select!`.
fn unreachable_pending() -> std::io::Result<std::process::ExitStatus> {
    Err(std::io::Error::other("health probe ended"))
}

/// Sleeps `delay`; true when `stop` fired first.
async fn sleep_or_stop(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}

/// Polls `uri` until it answers 200, marks the process healthy, then stays pending.
async fn probe_until_healthy(client: &HttpClient, uri: &hyper::Uri, healthy: &watch::Sender<bool>) {
    loop {
        let request =
            hyper::Request::get(uri.clone()).body(http_body_util::Full::new(Bytes::new()));
        if let Ok(request) = request {
            let answer =
                tokio::time::timeout(Duration::from_secs(1), client.request(request)).await;
            if let Ok(Ok(response)) = answer
                && response.status().is_success()
            {
                healthy.send_replace(true);
                return std::future::pending().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Copies lines of a child's output into the log buffer until it closes.
async fn capture(
    stream: impl AsyncRead + Unpin,
    logs: Arc<LogBuffer>,
    version: String,
    name: &'static str,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                line.truncate(MAX_LINE_BYTES);
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                logs.push(&version, name, text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buffer_is_bounded_and_filters_by_version() {
        let logs = LogBuffer::new(3);
        for i in 0..5 {
            logs.push(
                if i % 2 == 0 { "a" } else { "b" },
                "stdout",
                format!("line {i}"),
            );
        }
        let (all, _) = logs.snapshot(None, 0);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].text, "line 2");
        let (a, _) = logs.snapshot(Some("a"), 1);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].text, "line 4");
    }

    #[tokio::test]
    async fn orphans_of_this_owner_are_killed_and_others_are_not() {
        let owner = uuid::Uuid::new_v4().to_string();
        let spawn = |owner: &str| {
            std::process::Command::new("sleep")
                .arg("30")
                .env(OWNER_ENV, owner)
                .spawn()
                .expect("sleep starts")
        };
        let (mut mine, mut other) = (spawn(&owner), spawn("someone-else"));
        let killed = stop_orphans(owner).await;
        assert_eq!(killed, [mine.id()]);
        let status = mine.wait().unwrap();
        assert!(!status.success(), "{status}");
        assert!(
            other.try_wait().unwrap().is_none(),
            "another owner's process runs on"
        );
        other.kill().unwrap();
        let _ = other.wait();
    }

    #[test]
    fn picks_a_free_port_outside_the_taken_set() {
        let taken: HashSet<u16> = [42001].into();
        let port = pick_port(42000, 42002, &taken).unwrap();
        assert_ne!(port, 42001);
    }
}
