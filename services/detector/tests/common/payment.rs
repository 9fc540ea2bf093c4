//! The example payment-service as a real process: built from the scenario history at a chosen
//! commit, started on a free port, and driven by a load generator whose customer mix can switch
//! between only-good customers and everyone (15% of whom make the buggy build answer 500).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A built payment-service binary, copied out of the shared target directory.
pub struct Build {
    pub binary: PathBuf,
    _dir: tempfile::TempDir,
}

use selfheal_scenario::example_target_dir;

fn git(repo: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .current_dir(repo)
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

/// Builds the scenario history and the binary at its buggy commit (blocking; minutes when cold).
pub fn build_bad() -> Build {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = selfheal_scenario::examples_dir().join("payment-service");
    let scenario =
        selfheal_scenario::build(&example, &dir.path().join("repo")).expect("scenario builds");
    git(
        &scenario.repo,
        &["checkout", "--quiet", &scenario.bad_commit],
    );
    let target_dir = example_target_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(&scenario.repo)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--locked", "--quiet"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "payment-service does not build at the bad commit:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Other builds share the target directory; keep our own copy of the artifact.
    let binary = dir.path().join("payment-service");
    std::fs::copy(target_dir.join("debug").join("payment-service"), &binary)
        .expect("artifact copied");
    Build { binary, _dir: dir }
}

/// A running payment-service.
pub struct PaymentService {
    pub addr: SocketAddr,
    child: Child,
}

impl PaymentService {
    /// Starts `binary` on a free port and waits until `/healthz` answers.
    pub async fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .env("PORT", "0")
            .env("BIND", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("payment-service starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("stderr readable") {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().expect("address printed");
                    return addr.parse::<SocketAddr>().expect("socket address");
                }
            }
            panic!("payment-service exited before listening");
        })
        .await
        .expect("payment-service prints its address");
        // Keep draining stderr (panic messages) so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { addr, child }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Which customers the load generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Customers with a preferred payment method only: every payment succeeds.
    GoodOnly,
    /// Every customer: about 15% hit the bug.
    Everyone,
}

/// Steady traffic to `POST /pay`.
pub struct Load {
    everyone: Arc<AtomicBool>,
    first_failing: Arc<Mutex<Option<(Instant, SystemTime)>>>,
    pub sent: Arc<AtomicU64>,
    pub server_errors: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Sends one request every `period` until stopped.
    pub fn start(addr: SocketAddr, period: Duration) -> Self {
        let everyone = Arc::new(AtomicBool::new(false));
        let first_failing = Arc::new(Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let server_errors = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (everyone, first_failing, sent, server_errors, stop) = (
                everyone.clone(),
                first_failing.clone(),
                sent.clone(),
                server_errors.clone(),
                stop.clone(),
            );
            async move {
                let client = reqwest::Client::new();
                let url = format!("http://{addr}/pay");
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut n: u64 = 0;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    n += 1;
                    let mut customer = n % 1000;
                    let failing = customer % 20 < 3;
                    if failing && !everyone.load(Ordering::SeqCst) {
                        customer += 3;
                    } else if failing {
                        let mut first = first_failing.lock().expect("not poisoned");
                        first.get_or_insert((Instant::now(), SystemTime::now()));
                    }
                    let body = serde_json::json!({
                        "customer_id": format!("cust-{customer:04}"),
                        "amount_cents": 1234,
                    });
                    let request = client.post(&url).json(&body).send();
                    if let Ok(Ok(response)) =
                        tokio::time::timeout(Duration::from_secs(2), request).await
                    {
                        sent.fetch_add(1, Ordering::SeqCst);
                        if response.status().is_server_error() {
                            server_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        Self {
            everyone,
            first_failing,
            sent,
            server_errors,
            stop,
            task,
        }
    }

    /// Switches the customer mix; switching to everyone resets the first-failing mark.
    pub fn set_mix(&self, mix: Mix) {
        if mix == Mix::Everyone {
            *self.first_failing.lock().expect("not poisoned") = None;
        }
        self.everyone.store(mix == Mix::Everyone, Ordering::SeqCst);
    }

    /// When the first request of a failing customer was sent since the mix became `Everyone`.
    pub fn first_failing(&self) -> Option<(Instant, SystemTime)> {
        *self.first_failing.lock().expect("not poisoned")
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
