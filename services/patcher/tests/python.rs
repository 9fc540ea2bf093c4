//! The inventory-service (Python) scenario end to end: the bug commit really crashes with an
//! `AttributeError` on some requests while its tests pass; the patcher's guard candidate applies,
//! the example's unittest suite passes with it, and the patched service answers the crashing
//! request. Everything runs for real: git, python3, the service's own build and HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Worktree, applies, patcher, python_scenario};
use selfheal_proto::v1::{
    CauseKind, CodeLocation, Commit, GenerateCandidatesRequest, PatchStrategy, SourceRef,
};

const DEADLINE: Duration = Duration::from_secs(30);
/// In-house items have no supplier; `sku-0020` is one of them.
const IN_HOUSE_SKU: &str = "sku-0020";
const SUPPLIED_SKU: &str = "sku-0048";

fn manifest(dir: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(dir.join("selfheal.toml")).unwrap()).unwrap()
}

fn argv(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Runs a manifest command in `dir`; returns whether it succeeded, with its output.
fn run_in(dir: &Path, command: &[String]) -> (bool, String) {
    let output = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The service built and started the way its manifest says, on a free port.
struct Running {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(dir: &Path) -> Self {
        let manifest = manifest(dir);
        let (built, log) = run_in(dir, &argv(&manifest["build"]["command"]));
        assert!(built, "build: {log}");
        let artifact = dir.join(manifest["build"]["artifact"].as_str().unwrap());
        assert!(
            artifact.is_file(),
            "the build leaves {}",
            artifact.display()
        );
        let command: Vec<String> = argv(&manifest["run"]["command"])
            .into_iter()
            .map(|a| a.replace("{artifact}", artifact.to_str().unwrap()))
            .collect();
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            // The deployer runs the artifact from its own directory.
            .current_dir(artifact.parent().unwrap())
            .env(manifest["run"]["port_env"].as_str().unwrap(), "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut running = Self {
            child,
            base: String::new(),
            stderr,
        };
        let line = running.wait_for("listening on http://");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        running.base = format!("http://{addr}");
        running
    }

    /// Waits until stderr holds `needle`; returns the stderr line holding it.
    fn wait_for(&mut self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the service exited with {status}: {}", self.stderr());
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no {needle:?} on stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last frame of a Python traceback: (path as printed, line).
fn last_frame(trace: &str) -> (String, u32) {
    trace
        .lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("File \""))
        .filter_map(|rest| {
            let (path, rest) = rest.split_once("\", line ")?;
            let line = rest.split(',').next()?.parse().ok()?;
            Some((path.to_owned(), line))
        })
        .next()
        .unwrap()
}

#[tokio::test]
async fn the_none_crash_gets_a_guard_that_passes_the_tests_and_stops_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = python_scenario(&dir.path().join("repo"));

    // The bug commit: its tests pass, and the in-house lookup crashes with a real traceback.
    let bad = Worktree::new(&scenario.repo, &scenario.bad_commit);
    let test_command = argv(&manifest(&bad.path)["test"]["command"]);
    let (passed, log) = run_in(&bad.path, &test_command);
    assert!(passed, "the bug commit's own tests pass: {log}");
    let (trace, message) = {
        let mut service = Running::start(&bad.path);
        let (status, _) = service.get(&format!("/items/{SUPPLIED_SKU}")).await;
        assert_eq!(status, 200);
        let (status, _) = service.get(&format!("/items/{IN_HOUSE_SKU}")).await;
        assert_eq!(status, 500);
        let message = service.wait_for("AttributeError");
        let stderr = service.stderr();
        let trace = stderr[stderr.rfind("Traceback").unwrap()..].to_owned();
        (trace, message)
    };
    assert!(
        message.contains("'NoneType' object has no attribute 'lead_time_days'"),
        "{message}"
    );
    let (printed, line) = last_frame(&trace);
    let bug_file = scenario.bug_file.display().to_string();
    assert!(printed.ends_with(&bug_file), "{printed}");
    assert_eq!(
        line, scenario.bug_line,
        "the traceback points at the recorded bug line"
    );

    let (service, mut client) = patcher(Default::default()).await;
    let response = client
        .generate_candidates(GenerateCandidatesRequest {
            incident_id: "inc-inventory".into(),
            service: scenario.service.clone(),
            source: Some(SourceRef {
                repository: scenario.repo.display().to_string(),
                commit: scenario.bad_commit.clone(),
            }),
            location: Some(CodeLocation {
                file: bug_file.clone(),
                line,
                ..Default::default()
            }),
            culprit: Some(Commit {
                sha: scenario.bad_commit.clone(),
                ..Default::default()
            }),
            failure_message: message.clone(),
            trace_text: trace.clone(),
            cause_kind: CauseKind::CodeDefect.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    service.stop().await.unwrap();

    let best = &response.candidates[0];
    assert_eq!(
        best.strategy(),
        PatchStrategy::Template,
        "{:?}",
        response.candidates
    );
    assert_eq!(best.template, "python.none_attribute.guard_default");
    assert!(
        best.diff.contains(
            "+    lead_days = item.supplier.lead_time_days if item.supplier is not None else DEFAULT_LEAD_TIME_DAYS"
        ),
        "{}",
        best.diff
    );
    assert!(
        response
            .candidates
            .iter()
            .any(|c| c.template == "python.none_attribute.guard_none"),
        "{:?}",
        response.candidates
    );
    assert!(
        response
            .candidates
            .iter()
            .any(|c| c.strategy() == PatchStrategy::PartialRevert)
    );
    for candidate in &response.candidates {
        applies(&scenario.repo, &scenario.bad_commit, &candidate.diff)
            .unwrap_or_else(|e| panic!("{e}\n{}", candidate.diff));
    }

    // The guard, applied in a fresh worktree: the suite passes and the crash is gone.
    let fixed = Worktree::new(&scenario.repo, &scenario.bad_commit);
    fixed.apply(&best.diff, false).unwrap();
    let (passed, log) = run_in(&fixed.path, &test_command);
    assert!(passed, "the patched suite passes: {log}");
    let service = Running::start(&fixed.path);
    let (status, body) = service.get(&format!("/items/{IN_HOUSE_SKU}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restock_lead_days"], 14, "{body}");
    let (status, body) = service.get(&format!("/items/{SUPPLIED_SKU}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["restock_lead_days"], 5,
        "suppliers' lead times still count: {body}"
    );
    assert!(
        !service.stderr().contains("Traceback"),
        "{}",
        service.stderr()
    );
}

#[tokio::test]
async fn the_good_commit_serves_every_item_and_metrics_like_the_payment_service() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = python_scenario(&dir.path().join("repo"));
    let good = Worktree::new(&scenario.repo, &scenario.good_commit);
    let service = Running::start(&good.path);
    let (status, body) = service.get(&format!("/items/{IN_HOUSE_SKU}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = service.get("/items/not-a-sku").await;
    assert_eq!(status, 400);
    let metrics = reqwest::get(format!("{}/metrics", service.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"http_requests_total{method="GET",route="/items/{sku}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/items/{sku}",status="400"} 1"#,
        r#"http_request_duration_seconds_bucket{route="/items/{sku}",le="+Inf"} 2"#,
        r#"http_request_duration_seconds_count{route="/items/{sku}"} 2"#,
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    let (status, _) = service.get("/healthz").await;
    assert_eq!(status, 200);
}
