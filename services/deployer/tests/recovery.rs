//! The deployer binary killed with SIGKILL in the middle of a canary, then started again on the
//! same data directory: the stable serves again behind the same public address, the processes
//! the crash orphaned are gone, the interrupted rollout answers as rolled back, and repeated
//! Deploy and Rollback calls get their first answers.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Load, SERVICE, eventually, example_target_dir};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::RolloutEventKind as Kind;
use selfheal_proto::v1::deployer_client::DeployerClient;
use tonic::transport::Channel;

/// One run of the `selfheal-deployer` binary.
struct Deployer {
    child: tokio::process::Child,
    client: DeployerClient<Channel>,
}

impl Deployer {
    async fn start(grpc: SocketAddr, data: &Path) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_selfheal-deployer"))
            .args([
                "--grpc-addr",
                &grpc.to_string(),
                "--http-addr",
                "127.0.0.1:0",
            ])
            .args(["--set", &format!("data_dir={}", data.display())])
            .args([
                "--set",
                &format!("build.target_dir={}", example_target_dir().display()),
            ])
            .args(["--set", "processes.health_timeout=20s"])
            .args(["--set", "processes.drain_timeout=1s"])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("the deployer binary starts");
        let url = format!("http://{grpc}");
        let mut client = None;
        eventually(
            Duration::from_secs(60),
            "the deployer answers",
            async || {
                if let Ok(mut c) = DeployerClient::connect(url.clone()).await
                    && c.status(pb::StatusRequest::default()).await.is_ok()
                {
                    client = Some(c);
                    return true;
                }
                false
            },
        )
        .await;
        Self {
            child,
            client: client.expect("connected"),
        }
    }

    async fn status(&mut self) -> pb::ServiceStatus {
        self.client
            .status(pb::StatusRequest {
                service: SERVICE.into(),
            })
            .await
            .expect("status answers")
            .into_inner()
            .services
            .into_iter()
            .next()
            .expect("the service is known")
    }

    /// Every event of a Deploy, and how its stream ended.
    async fn deploy(&mut self, request: pb::DeployRequest) -> (Vec<pb::RolloutEvent>, String) {
        let mut stream = self
            .client
            .deploy(request)
            .await
            .expect("deploy accepted")
            .into_inner();
        let mut events = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(response)) => events.extend(response.event),
                Ok(None) => return (events, "ended".into()),
                Err(status) => return (events, status.to_string()),
            }
        }
    }

    /// SIGKILL: the deployer cannot stop its versions.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let _ = self.child.wait().await;
    }

    /// SIGTERM: the deployer stops its versions and exits.
    async fn stop(mut self) {
        let pid = self
            .child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw)
            .expect("the deployer runs");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sent");
        let exited = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(
            exited.is_ok_and(|status| status.is_ok_and(|s| s.success())),
            "the deployer stops cleanly on SIGTERM"
        );
    }
}

fn request(repo: &Path, commit: &str, strategy: pb::RolloutStrategy) -> pb::DeployRequest {
    pb::DeployRequest {
        service: SERVICE.into(),
        source: Some(pb::SourceRef {
            repository: repo.display().to_string(),
            commit: commit.into(),
        }),
        strategy: strategy.into(),
        ..Default::default()
    }
}

/// Whether `pid` is gone (or only a zombie waiting for its new parent to reap it).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The scenario repository, the deployer's data directory and its fixed gRPC address, the same
/// for every run of the binary in one test.
struct Fixture {
    _dir: tempfile::TempDir,
    scenario: selfheal_scenario::Scenario,
    data: std::path::PathBuf,
    grpc: SocketAddr,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let scenario = selfheal_scenario::build(
            &selfheal_scenario::examples_dir().join(SERVICE),
            &dir.path().join("repo"),
        )
        .expect("scenario builds");
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Self {
            data: dir.path().join("data"),
            _dir: dir,
            scenario,
            grpc,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_killed_mid_canary_restores_stable_and_closes_the_rollout_as_rolled_back() {
    let Fixture {
        _dir,
        scenario,
        data,
        grpc,
    } = Fixture::new();

    let mut first = Deployer::start(grpc, &data).await;
    let mut direct = request(
        &scenario.repo,
        &scenario.good_commit,
        pb::RolloutStrategy::Direct,
    );
    direct.fencing_token = 1;
    let (events, _) = first.deploy(direct).await;
    assert_eq!(events.last().map(|e| e.kind()), Some(Kind::Promoted));
    let before = first.status().await;
    let stable = before.stable.clone().expect("stable runs");
    let public: SocketAddr = before.public_address.parse().unwrap();
    let load = Load::start(public, 2);
    load.wait_for(50, Duration::from_secs(30)).await;

    // A canary that would take minutes, with the key a saga would give it.
    let mut canary = request(
        &scenario.repo,
        &scenario.bad_commit,
        pb::RolloutStrategy::Canary,
    );
    canary.fencing_token = 2;
    canary.idempotency_key = "saga-7:deploy".into();
    canary.plan = Some(pb::CanaryPlan {
        steps: vec![50, 100],
        analysis_window: Some(Duration::from_secs(120).try_into().unwrap()),
        min_requests: 10,
        max_error_rate: 0.5,
        failure_limit: 1,
    });
    let stream = tokio::spawn({
        let mut client = first.client.clone();
        let canary = canary.clone();
        async move {
            let mut stream = client.deploy(canary).await.unwrap().into_inner();
            while let Ok(Some(_)) = stream.message().await {}
        }
    });
    let mut running = None;
    eventually(
        Duration::from_secs(120),
        "the canary takes traffic",
        async || {
            running = first
                .status()
                .await
                .canary
                .filter(|c| c.weight == 50 && c.healthy);
            running.is_some()
        },
    )
    .await;
    let running = running.unwrap();

    first.kill().await;
    tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the caller's stream ends with the deployer")
        .unwrap();
    let ok_before_restart = load.tally.ok.load(Ordering::SeqCst);

    let mut second = Deployer::start(grpc, &data).await;
    let after = second.status().await;
    assert_eq!(after.public_address, before.public_address, "{after:#?}");
    let restored = after.stable.clone().expect("stable restored");
    assert_eq!(
        (restored.version.as_str(), restored.commit.as_str()),
        (stable.version.as_str(), stable.commit.as_str())
    );
    assert!(
        restored.healthy && restored.pid != stable.pid,
        "{restored:?}"
    );
    assert_eq!(restored.weight, 100);
    assert!(after.canary.is_none(), "{after:#?}");
    assert_eq!(after.highest_fencing_token, 2);
    for (what, pid) in [("stable", stable.pid), ("canary", running.pid)] {
        assert!(gone(pid), "the orphaned {what} (pid {pid}) still runs");
    }

    // Traffic flows to the restored stable through the same address.
    eventually(
        Duration::from_secs(30),
        "requests succeed again",
        async || load.tally.ok.load(Ordering::SeqCst) >= ok_before_restart + 50,
    )
    .await;

    // The saga's retry of its Deploy learns the canary was rolled back.
    let (replay, end) = second.deploy(canary).await;
    assert_eq!(end, "ended");
    assert_eq!(replay.len(), 1, "{replay:#?}");
    let last = &replay[0];
    assert_eq!(last.kind(), Kind::RolledBack);
    assert_eq!(last.version, running.version);
    assert!(last.message.contains("restarted"), "{}", last.message);
    assert!(last.decision.is_some());

    // New versions keep counting past the ones before the crash.
    let mut next = request(
        &scenario.repo,
        &scenario.good_commit,
        pb::RolloutStrategy::Direct,
    );
    next.fencing_token = 3;
    let (events, _) = second.deploy(next).await;
    let promoted = events.last().expect("events");
    assert_eq!(promoted.kind(), Kind::Promoted, "{events:#?}");
    let sequence = |v: &str| -> u64 { v[1..v.find('-').unwrap()].parse().unwrap() };
    assert!(
        sequence(&promoted.version) > sequence(&running.version),
        "{} after {}",
        promoted.version,
        running.version
    );
    load.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_and_rollbacks_are_remembered_across_restarts() {
    let Fixture {
        _dir,
        scenario,
        data,
        grpc,
    } = Fixture::new();
    let mut first = Deployer::start(grpc, &data).await;
    let mut good = request(
        &scenario.repo,
        &scenario.good_commit,
        pb::RolloutStrategy::Direct,
    );
    good.idempotency_key = "release-1".into();
    let (events, _) = first.deploy(good.clone()).await;
    let promoted = events.last().cloned().expect("events");
    let mut bad = request(
        &scenario.repo,
        &scenario.bad_commit,
        pb::RolloutStrategy::Direct,
    );
    bad.idempotency_key = "release-2".into();
    first.deploy(bad).await;
    first.kill().await;

    let mut second = Deployer::start(grpc, &data).await;
    let (replay, _) = second.deploy(good).await;
    assert_eq!(replay.len(), 1, "{replay:#?}");
    assert_eq!(replay[0].kind(), Kind::Promoted);
    assert_eq!(replay[0].version, promoted.version);
    let status = second.status().await;
    assert_eq!(status.stable.unwrap().commit, scenario.bad_commit);
    // The previous stable is still there to return to.
    assert_eq!(
        status.previous_stable.map(|p| p.commit),
        Some(scenario.good_commit.clone())
    );
    let rollback_request = pb::RollbackRequest {
        service: SERVICE.into(),
        reason: "after a restart".into(),
        idempotency_key: "saga-9:rollback".into(),
        ..Default::default()
    };
    let rollback = second
        .client
        .rollback(rollback_request.clone())
        .await
        .expect("rollback answers")
        .into_inner();
    assert!(rollback.rolled_back);
    let restored = second.status().await.stable.unwrap();
    assert_eq!(restored.commit, scenario.good_commit);
    second.kill().await;

    // A caller retrying its rollback after another crash gets the first answer; nothing is
    // rolled back twice (there is no previous stable left to go to).
    let mut third = Deployer::start(grpc, &data).await;
    let again = third
        .client
        .rollback(rollback_request)
        .await
        .expect("the repeated rollback is answered, not refused")
        .into_inner();
    assert_eq!(again, rollback);
    let status = third.status().await;
    assert_eq!(status.stable.as_ref().unwrap().version, restored.version);
    assert!(status.previous_stable.is_none(), "{status:#?}");
    third.stop().await;
}
