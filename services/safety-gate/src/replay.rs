//! Replaying captured requests against a build: start its artifact in the sandbox with the
//! manifest's run command and port variable, wait for its health path, send each request over
//! the sandbox's own loopback, and record the answers. The driver joins the service's network
//! namespace from a thread of its own, so the service never needs a route to the outside.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::model::ReplayRequest;
use crate::sandbox::{self, Limits, Sandbox};

/// The port a service gets inside its own network namespace, where nothing else listens.
const NAMESPACE_PORT: u16 = 18080;

/// The largest answer body kept for comparison.
const MAX_BODY: usize = 1 << 20;

/// What a service answered to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Response {
        status: u16,
        body: Bytes,
    },
    /// No HTTP answer: the connection was refused, reset or closed, or the request timed out.
    Failed(String),
}

impl Answer {
    /// Still failing: a 5xx or no answer at all.
    pub(crate) fn fails(&self) -> bool {
        match self {
            Answer::Response { status, .. } => *status >= 500,
            Answer::Failed(_) => true,
        }
    }

    /// Whether two answers are the same to a client: same status and same body (compared as
    /// JSON when both bodies are JSON, so key order does not matter).
    pub(crate) fn same_as(&self, other: &Answer) -> bool {
        match (self, other) {
            (Answer::Response { status: a, body: x }, Answer::Response { status: b, body: y }) => {
                a == b
                    && (x == y
                        || matches!(
                            (
                                serde_json::from_slice::<serde_json::Value>(x),
                                serde_json::from_slice::<serde_json::Value>(y),
                            ),
                            (Ok(p), Ok(q)) if p == q
                        ))
            }
            _ => false,
        }
    }

    /// "500 thread panicked…", "connection reset".
    pub(crate) fn describe(&self) -> String {
        match self {
            Answer::Response { status, body } => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.chars().take(160).collect();
                format!("{status} {}", text.trim())
            }
            Answer::Failed(reason) => reason.clone(),
        }
    }
}

/// How to start a build for replay.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub(crate) argv: Vec<String>,
    pub(crate) cwd: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) port_env: String,
    pub(crate) health_path: String,
    pub(crate) memory_mib: u64,
    pub(crate) startup_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) log: PathBuf,
}

/// Why a replay could not produce answers.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("the service did not start: {0}")]
    Start(String),
    #[error("the service never answered {path} with 200 within {timeout:?}: {reason}")]
    NeverHealthy {
        path: String,
        timeout: Duration,
        reason: String,
    },
}

/// Starts `launch`, sends `requests` in order, stops the service; the answers in order.
pub(crate) async fn run(
    sandbox: &Sandbox,
    launch: &Launch,
    requests: Vec<ReplayRequest>,
) -> Result<Vec<Answer>, ReplayError> {
    let port = if sandbox.isolates_network() {
        NAMESPACE_PORT
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| ReplayError::Start(format!("no free loopback port: {e}")))?
    };
    let out = std::fs::File::create(&launch.log)
        .map_err(|e| ReplayError::Start(format!("cannot create the service log: {e}")))?;
    let err = out
        .try_clone()
        .map_err(|e| ReplayError::Start(format!("cannot share the service log: {e}")))?;
    let limits = Limits {
        // The driver stops the service; this only bounds a wedged one.
        wall: launch.startup_timeout + launch.request_timeout * 1000,
        memory_mib: launch.memory_mib,
    };
    let mut child = sandbox
        .command(
            &launch.argv,
            &launch.cwd,
            &launch.tmp,
            &[(launch.port_env.clone(), port.to_string())],
            limits,
        )
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| ReplayError::Start(format!("{}: {e}", launch.argv.join(" "))))?;
    let pid = child.id();
    let netns = if sandbox.isolates_network() {
        match sandbox::namespace_of(pid.unwrap_or(0), &mut child, Duration::from_secs(5)).await {
            Ok(ns) => Some(ns),
            Err(reason) => {
                sandbox::kill_group(pid);
                let _ = child.wait().await;
                return Err(ReplayError::Start(format!(
                    "{reason}; log: {}",
                    tail(&launch.log, 10)
                )));
            }
        }
    } else {
        None
    };
    let (exited_tx, exited) = watch::channel(None::<String>);
    let waiter = tokio::spawn(async move {
        let status = child.wait().await;
        let text = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        exited_tx.send_replace(Some(text));
    });
    let health_path = launch.health_path.clone();
    let (startup, per_request) = (launch.startup_timeout, launch.request_timeout);
    let driven = sandbox::run_in_namespace(netns, move || async move {
        drive(port, &health_path, startup, per_request, requests, exited).await
    })
    .await;
    sandbox::kill_group(pid);
    let _ = waiter.await;
    match driven {
        Ok(Ok(answers)) => Ok(answers),
        Ok(Err(reason)) => Err(ReplayError::NeverHealthy {
            path: launch.health_path.clone(),
            timeout: launch.startup_timeout,
            reason: format!("{reason}; log: {}", tail(&launch.log, 10)),
        }),
        Err(reason) => Err(ReplayError::Start(reason)),
    }
}

/// Waits for health, then sends the requests one by one.
async fn drive(
    port: u16,
    health_path: &str,
    startup: Duration,
    per_request: Duration,
    requests: Vec<ReplayRequest>,
    exited: watch::Receiver<Option<String>>,
) -> Result<Vec<Answer>, String> {
    let deadline = Instant::now() + startup;
    let health = ReplayRequest {
        method: "GET".into(),
        path: health_path.to_owned(),
        ..ReplayRequest::default()
    };
    loop {
        if let Some(status) = exited.borrow().clone() {
            return Err(format!("the service exited ({status})"));
        }
        let answer = send(port, &health, Duration::from_secs(1)).await;
        if matches!(answer, Answer::Response { status: 200, .. }) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("last answer: {}", answer.describe()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::with_capacity(requests.len());
    for request in &requests {
        answers.push(send(port, request, per_request).await);
    }
    Ok(answers)
}

/// Sends one request on a fresh connection.
async fn send(port: u16, request: &ReplayRequest, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, exchange(port, request)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => Answer::Failed(reason),
        Err(_) => Answer::Failed(format!("no answer within {timeout:?}")),
    }
}

async fn exchange(port: u16, request: &ReplayRequest) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let method = hyper::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", request.method))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(&request.path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"));
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host"
                | "content-length"
                | "connection"
                | "transfer-encoding"
                | "keep-alive"
                | "upgrade"
        ) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let http_request = builder
        .body(Full::new(Bytes::from(request.body.clone())))
        .map_err(|e| format!("invalid request: {e}"))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(|e| format!("connection reset or closed without an answer: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("answer body cut off: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(Answer::Response { status, body })
}

/// The last `lines` lines of a log file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Answer {
        Answer::Response {
            status,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn answers_compare_by_status_and_body_with_json_key_order_ignored() {
        assert!(response(200, r#"{"a":1,"b":2}"#).same_as(&response(200, r#"{"b":2,"a":1}"#)));
        assert!(!response(200, r#"{"a":1}"#).same_as(&response(200, r#"{"a":2}"#)));
        assert!(!response(200, "x").same_as(&response(201, "x")));
        assert!(!Answer::Failed("reset".into()).same_as(&Answer::Failed("reset".into())));
    }

    #[test]
    fn five_hundreds_and_missing_answers_still_fail() {
        assert!(response(500, "").fails());
        assert!(Answer::Failed("connection reset".into()).fails());
        assert!(!response(422, "").fails());
    }
}
