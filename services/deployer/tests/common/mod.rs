//! Shared helpers: a deployer started in-process, the payment-service scenario, patches made with
//! git, and a bounded loopback load generator.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use selfheal_deployer::{Config, Error};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_scenario::Scenario;
use selfheal_service::testkit::ServiceUnderTest;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const SERVICE: &str = "payment-service";

pub use selfheal_scenario::example_target_dir;

/// A deployer running in the test's runtime with its own data directory.
pub struct Harness {
    pub service: ServiceUnderTest<Error>,
    pub client: DeployerClient<Channel>,
    pub scenario: Scenario,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_variant(selfheal_scenario::DEFAULT_VARIANT, tweak).await
    }

    /// A deployer over `variant` of the payment-service history (e.g. `leak`).
    pub async fn start_variant(variant: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let scenario = selfheal_scenario::build_variant(
            &selfheal_scenario::examples_dir().join(SERVICE),
            variant,
            &dir.path().join("repo"),
        )
        .expect("scenario builds");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.build.target_dir = Some(example_target_dir());
        config.processes.health_timeout = Duration::from_secs(20);
        config.processes.drain_timeout = Duration::from_secs(1);
        tweak(&mut config);
        let service = ServiceUnderTest::start(|listeners, shutdown| {
            selfheal_deployer::run(config, listeners, shutdown)
        })
        .await;
        selfheal_service::testkit::wait_serving(
            service.grpc_addr,
            selfheal_proto::service_names::DEPLOYER,
        )
        .await;
        let client = DeployerClient::connect(service.grpc_url())
            .await
            .expect("deployer answers");
        Self {
            service,
            client,
            scenario,
            _dir: dir,
        }
    }

    pub fn request(
        &self,
        commit: &str,
        strategy: pb::RolloutStrategy,
        token: u64,
    ) -> pb::DeployRequest {
        pb::DeployRequest {
            service: SERVICE.into(),
            source: Some(pb::SourceRef {
                repository: self.scenario.repo.to_string_lossy().into_owned(),
                commit: commit.into(),
            }),
            strategy: strategy.into(),
            fencing_token: token,
            ..Default::default()
        }
    }

    /// Runs a Deploy to its end: every event and the final error, if any.
    pub async fn deploy(&self, request: pb::DeployRequest) -> Rollout {
        let mut client = self.client.clone();
        let mut stream = match client.deploy(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return Rollout {
                    events: Vec::new(),
                    error: Some(status),
                };
            }
        };
        let mut events = Vec::new();
        let mut error = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => panic!("rollout did not finish; events so far: {events:#?}"),
                Ok(None) => break,
                Ok(Some(Ok(response))) => events.push(response.event.expect("event set")),
                Ok(Some(Err(status))) => {
                    error = Some(status);
                    break;
                }
            }
        }
        Rollout { events, error }
    }

    /// Deploys `commit` DIRECT and asserts it becomes stable.
    pub async fn deploy_stable(&self, commit: &str, token: u64) -> Rollout {
        let rollout = self
            .deploy(self.request(commit, pb::RolloutStrategy::Direct, token))
            .await;
        assert!(
            rollout.error.is_none(),
            "direct deploy failed: {rollout:#?}"
        );
        assert_eq!(
            rollout.last_kind(),
            pb::RolloutEventKind::Promoted,
            "{rollout:#?}"
        );
        rollout
    }

    pub async fn status(&self) -> pb::ServiceStatus {
        let mut client = self.client.clone();
        client
            .status(pb::StatusRequest {
                service: SERVICE.into(),
            })
            .await
            .expect("status answers")
            .into_inner()
            .services
            .into_iter()
            .next()
            .expect("one service")
    }

    pub async fn public_addr(&self) -> SocketAddr {
        self.status()
            .await
            .public_address
            .parse()
            .expect("public address parses")
    }

    /// A unified diff of `edits` (file, from, to) applied to `commit`, made with git.
    pub fn patch(&self, commit: &str, edits: &[(&str, &str, &str)]) -> String {
        make_patch(&self.scenario.repo, commit, edits)
    }

    /// The one-line fix of the scenario's bug.
    pub fn fix_patch(&self) -> String {
        let file = self.scenario.bug_file.to_string_lossy().into_owned();
        let text = git(
            &self.scenario.repo,
            &["show", &format!("{}:{file}", self.scenario.bad_commit)],
        );
        let line = text
            .lines()
            .nth(self.scenario.bug_line as usize - 1)
            .expect("bug line exists")
            .to_owned();
        let fixed = line.replace(".unwrap()", ".unwrap_or(DEFAULT_METHOD)");
        self.patch(&self.scenario.bad_commit.clone(), &[(&file, &line, &fixed)])
    }
}

/// The events and outcome of one Deploy.
#[derive(Debug)]
pub struct Rollout {
    pub events: Vec<pb::RolloutEvent>,
    pub error: Option<tonic::Status>,
}

impl Rollout {
    pub fn kinds(&self) -> Vec<pb::RolloutEventKind> {
        self.events.iter().map(|e| e.kind()).collect()
    }

    pub fn last_kind(&self) -> pb::RolloutEventKind {
        self.events
            .last()
            .map_or(pb::RolloutEventKind::Unspecified, |e| e.kind())
    }

    pub fn version(&self) -> String {
        self.events
            .first()
            .map(|e| e.version.clone())
            .unwrap_or_default()
    }

    pub fn of_kind(&self, kind: pb::RolloutEventKind) -> Vec<&pb::RolloutEvent> {
        self.events.iter().filter(|e| e.kind() == kind).collect()
    }
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "advice.detachedHead=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("git output is utf-8")
}

fn make_patch(repo: &Path, commit: &str, edits: &[(&str, &str, &str)]) -> String {
    let scratch = tempfile::tempdir().expect("temp dir");
    let tree = scratch.path().join("tree");
    let tree_arg = tree.to_string_lossy().into_owned();
    git(repo, &["worktree", "add", "--detach", &tree_arg, commit]);
    for (file, from, to) in edits {
        let path = tree.join(file);
        let text = std::fs::read_to_string(&path).expect("file to patch exists");
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("patched file written");
    }
    let diff = git(&tree, &["diff"]);
    git(repo, &["worktree", "remove", "--force", &tree_arg]);
    diff
}

/// Statuses the load generator saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub server_errors: AtomicU64,
    pub other: AtomicU64,
}

impl Tally {
    pub fn snapshot(&self) -> (u64, u64) {
        let errors = self.server_errors.load(Ordering::SeqCst);
        let total = self.ok.load(Ordering::SeqCst) + errors + self.other.load(Ordering::SeqCst);
        (total, errors)
    }
}

/// Steady POST /pay traffic against a loopback address, bounded in count and time.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    pub fn start(addr: SocketAddr, concurrency: usize) -> Self {
        const MAX_REQUESTS: u64 = 200_000;
        const MAX_DURATION: Duration = Duration::from_secs(120);
        let tally = Arc::new(Tally::default());
        let stop = CancellationToken::new();
        let next = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client builds");
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (tally, stop, next, client) = (
                Arc::clone(&tally),
                stop.clone(),
                Arc::clone(&next),
                client.clone(),
            );
            tasks.spawn(async move {
                while !stop.is_cancelled() && started.elapsed() < MAX_DURATION {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= MAX_REQUESTS {
                        return;
                    }
                    let body = format!(
                        r#"{{"customer_id":"cust-{:04}","amount_cents":1234}}"#,
                        n % 1000
                    );
                    let sent = client
                        .post(format!("http://{addr}/pay"))
                        .header("content-type", "application/json")
                        .header("authorization", "Bearer secret-token")
                        .body(body)
                        .send()
                        .await;
                    let counter = match sent {
                        Ok(r) if r.status().is_success() => &tally.ok,
                        Ok(r) if r.status().is_server_error() => &tally.server_errors,
                        _ => &tally.other,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        Self { tally, stop, tasks }
    }

    /// Waits until at least `n` more requests were answered, at most `timeout`.
    pub async fn wait_for(&self, n: u64, timeout: Duration) -> (u64, u64) {
        let (start, start_errors) = self.tally.snapshot();
        let deadline = Instant::now() + timeout;
        loop {
            let (total, errors) = self.tally.snapshot();
            if total - start >= n {
                return (total - start, errors - start_errors);
            }
            assert!(
                Instant::now() < deadline,
                "load made {} of {n} requests in {timeout:?}",
                total - start
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) -> (u64, u64) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.tally.snapshot()
    }
}

/// Polls `check` until it returns true, at most `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
