//! Evidence collection for an incident: the deployer (captured logs, deployed versions), the
//! detector (metric windows), Jaeger (spans), an Elasticsearch log index, the dependency graph
//! (topology, deployments, commits) and git (the commits since the last good one).
//!
//! Every source has a deadline. A source that is not configured or fails adds a sentence to
//! `gaps` and the rest goes on: collection itself never fails. Log text is held by a
//! [`LogKeeper`] per service, so memory stays bounded whatever a source streams.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::detector_client::DetectorClient;
use selfheal_proto::v1::{
    CallEdge, Commit, Deployment, Evidence, Incident, LogLine, LogsRequest, QuerySeriesRequest,
    Span, StatusRequest, VersionStatus,
};
use selfheal_telemetry::{InjectTraceContext, TracedChannel};
use tonic::transport::Endpoint;

use super::logs::LogKeeper;
use super::time::{from_timestamp, micros, millis, timestamp};
use crate::config::SourcesConfig;
use crate::graph::{CommitRecord, DeploymentRecord, GraphStore};
use crate::localize::git::{CommitInfo, GitRepo};

/// The most bytes of log text read from one service's stream before it is cut.
const MAX_LOG_READ_BYTES: u64 = 512 * 1024 * 1024;
/// The most bytes of a Jaeger or Elasticsearch answer read.
const MAX_HTTP_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Lines asked of the deployer's log buffer.
const LOG_TAIL_LINES: u32 = 100_000;
/// Commits described from git between the last good and the deployed one.
const MAX_RANGE_COMMITS: usize = 20;

/// What to collect for.
#[derive(Clone, Debug)]
pub struct CollectRequest {
    pub incident: Incident,
    pub t0: SystemTime,
    /// Repository and deployed commit of the incident's service.
    pub repository: Option<String>,
    pub commit: Option<String>,
    pub last_good_commit: Option<String>,
}

/// Collects evidence from the configured sources.
#[derive(Clone, Debug)]
pub struct Collector {
    settings: SourcesConfig,
    graph: Arc<dyn GraphStore>,
    deployer: Option<TracedChannel>,
    detector: Option<TracedChannel>,
    http: reqwest::Client,
    git_timeout: Duration,
}

/// A channel that carries the analysis's trace context to the source, so one trace covers it.
fn lazy_channel(url: &str, timeout: Duration) -> Option<TracedChannel> {
    if url.is_empty() {
        return None;
    }
    match Endpoint::from_shared(url.to_owned()) {
        Ok(endpoint) => Some(InjectTraceContext::new(
            endpoint
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_lazy(),
        )),
        Err(error) => {
            tracing::warn!(%url, %error, "source address is not usable");
            None
        }
    }
}

/// A gRPC failure in words, without internal detail beyond the status message.
fn status_text(status: &tonic::Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {message}", status.code())
    }
}

impl Collector {
    pub fn new(settings: SourcesConfig, graph: Arc<dyn GraphStore>, git_timeout: Duration) -> Self {
        let deployer = lazy_channel(&settings.deployer, settings.timeout);
        let detector = lazy_channel(&settings.detector, settings.timeout);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Collector {
            settings,
            graph,
            deployer,
            detector,
            http,
            git_timeout,
        }
    }

    /// The graph store analyses read and write.
    pub fn graph(&self) -> &Arc<dyn GraphStore> {
        &self.graph
    }

    /// Everything the sources have about `request`'s incident.
    pub async fn collect(&self, request: &CollectRequest) -> Evidence {
        let service = request.incident.service.clone();
        let from = request.t0 - self.settings.window_before;
        let to = (request.t0 + self.settings.window_after).min(SystemTime::now().max(request.t0));
        let mut evidence = Evidence::default();
        let mut gaps: Vec<String> = Vec::new();

        // The graph first: its topology decides whose evidence to collect.
        let mut graph_up = true;
        match self.graph.topology().await {
            Ok(edges) => {
                evidence.topology = edges
                    .into_iter()
                    .map(|e| CallEdge {
                        caller: e.caller,
                        callee: e.callee,
                    })
                    .collect();
            }
            Err(error) => {
                graph_up = false;
                gaps.push(format!(
                    "graph store unreachable: {error}; no topology, recorded deployments or past fixes"
                ));
            }
        }
        let services = neighbourhood(&service, &evidence.topology, self.settings.max_services);

        let (logs, deployments, series, spans, indexed) = tokio::join!(
            self.deployer_logs(&services),
            self.deployer_status(&services),
            self.detector_series(&services, from, to),
            self.jaeger_spans(&services, from, to),
            self.indexed_logs(&services, from, to),
        );

        let (mut keepers, log_gaps) = logs;
        gaps.extend(log_gaps);
        match indexed {
            Ok(lines) => {
                for line in lines {
                    keeper_for(&mut keepers, &line.service, &self.settings, services.len())
                        .push(line);
                }
            }
            Err(gap) => gaps.push(gap),
        }
        for (_, keeper) in keepers {
            let (lines, stats) = keeper.finish();
            evidence.logs.extend(lines);
            evidence.log_stats.extend(stats);
        }

        let (status_deployments, status_gap) = deployments;
        gaps.extend(status_gap);
        let (series, series_gaps) = series;
        evidence.series = series;
        gaps.extend(series_gaps);
        match spans {
            Ok(spans) => evidence.spans = spans,
            Err(gap) => gaps.push(gap),
        }

        // Deployments the deployer runs now are recorded in the graph (idempotent), then the
        // graph's window and latest-before answers are added.
        let mut deployments: Vec<Deployment> = status_deployments;
        if graph_up {
            for d in &deployments {
                if let Some(record) = deployment_record(d)
                    && let Err(error) = self.graph.record_deployment(&record, None).await
                {
                    graph_up = false;
                    gaps.push(format!(
                        "graph store unreachable: {error}; deployments not recorded"
                    ));
                    break;
                }
            }
        }
        if graph_up {
            match self.graph_deployments(&services, from, request.t0).await {
                Ok(found) => deployments.extend(found),
                Err(error) => {
                    graph_up = false;
                    gaps.push(format!(
                        "graph store unreachable: {error}; no recorded deployments"
                    ));
                }
            }
        }
        dedup_deployments(&mut deployments);
        evidence.deployments = deployments;

        // Commits: those git knows between the last good and the deployed one, and those the
        // graph recorded for the deployments.
        let mut commits = self.git_commits(request, &mut gaps).await;
        if graph_up {
            let shas: Vec<String> = evidence
                .deployments
                .iter()
                .map(|d| d.commit.clone())
                .filter(|sha| !sha.is_empty() && !commits.iter().any(|c| c.sha == *sha))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            match self.graph.commits(&shas).await {
                Ok(found) => commits.extend(found.into_iter().map(commit_of_record)),
                Err(error) => gaps.push(format!("graph store unreachable: {error}; no commits")),
            }
        }
        evidence.commits = commits;
        evidence.gaps = gaps;
        evidence
    }

    async fn deployer_logs(&self, services: &[String]) -> (Vec<(String, LogKeeper)>, Vec<String>) {
        let Some(channel) = &self.deployer else {
            return (
                Vec::new(),
                vec!["deployer not configured: no captured logs or deployed versions".to_owned()],
            );
        };
        let reads = services.iter().map(|service| {
            let client = DeployerClient::new(channel.clone());
            let keeper = LogKeeper::new(
                share(self.settings.max_log_lines, services.len(), 100),
                share(self.settings.max_log_bytes, services.len(), 16 * 1024),
            );
            self.read_logs(client, service.clone(), keeper)
        });
        let results = futures::future::join_all(reads).await;
        let mut keepers = Vec::new();
        let mut gaps = Vec::new();
        let mut unreachable = false;
        for (service, keeper, problem) in results {
            keepers.push((service.clone(), keeper));
            match problem {
                None => {}
                Some(LogProblem::NotFound) if service != services[0] => {}
                Some(LogProblem::Unreachable(text)) if unreachable => {
                    tracing::debug!(%service, %text, "deployer logs unavailable");
                }
                Some(LogProblem::Unreachable(text)) => {
                    unreachable = true;
                    gaps.push(format!(
                        "deployer at {} unreachable: {text}; no captured logs",
                        self.settings.deployer
                    ));
                }
                Some(LogProblem::NotFound) => {
                    gaps.push(format!("deployer has no captured logs of {service}"))
                }
                Some(LogProblem::Cut(text)) => gaps.push(text),
            }
        }
        (keepers, gaps)
    }

    async fn read_logs(
        &self,
        mut client: DeployerClient<TracedChannel>,
        service: String,
        mut keeper: LogKeeper,
    ) -> (String, LogKeeper, Option<LogProblem>) {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut request = tonic::Request::new(LogsRequest {
            service: service.clone(),
            version: String::new(),
            follow: false,
            tail: LOG_TAIL_LINES,
        });
        request.set_timeout(self.settings.timeout);
        let mut stream = match tokio::time::timeout_at(deadline, client.logs(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                return (service, keeper, Some(LogProblem::NotFound));
            }
            Ok(Err(status)) => {
                return (
                    service,
                    keeper,
                    Some(LogProblem::Unreachable(status_text(&status))),
                );
            }
            Err(_) => {
                return (
                    service,
                    keeper,
                    Some(LogProblem::Unreachable(format!(
                        "no answer within {:?}",
                        self.settings.timeout
                    ))),
                );
            }
        };
        let mut read: u64 = 0;
        let mut lines: u64 = 0;
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return (
                        service.clone(),
                        keeper,
                        Some(LogProblem::Cut(format!(
                            "deployer logs of {service} cut at the {:?} deadline after {lines} lines",
                            self.settings.timeout
                        ))),
                    );
                }
            };
            match next {
                None => break,
                Some(Ok(line)) => {
                    read += line.text.len() as u64;
                    lines += 1;
                    keeper.push(LogLine {
                        service: service.clone(),
                        at: line.at,
                        stream: line.stream,
                        text: line.text,
                    });
                    if read > MAX_LOG_READ_BYTES {
                        return (
                            service.clone(),
                            keeper,
                            Some(LogProblem::Cut(format!(
                                "deployer logs of {service} cut after {MAX_LOG_READ_BYTES} bytes"
                            ))),
                        );
                    }
                }
                Some(Err(status)) => {
                    return (
                        service.clone(),
                        keeper,
                        Some(LogProblem::Cut(format!(
                            "deployer logs of {service} broke off after {lines} lines: {}",
                            status_text(&status)
                        ))),
                    );
                }
            }
        }
        (service, keeper, None)
    }

    async fn deployer_status(&self, services: &[String]) -> (Vec<Deployment>, Option<String>) {
        let Some(channel) = &self.deployer else {
            return (Vec::new(), None);
        };
        let mut client = DeployerClient::new(channel.clone());
        let mut request = tonic::Request::new(StatusRequest {
            service: String::new(),
        });
        request.set_timeout(self.settings.timeout);
        let answer = match tokio::time::timeout(self.settings.timeout, client.status(request)).await
        {
            Ok(Ok(answer)) => answer.into_inner(),
            Ok(Err(status)) => {
                return (
                    Vec::new(),
                    Some(format!(
                        "deployer at {} unreachable: {}; no deployed versions",
                        self.settings.deployer,
                        status_text(&status)
                    )),
                );
            }
            Err(_) => {
                return (
                    Vec::new(),
                    Some(format!(
                        "deployer at {} unreachable: no answer within {:?}; no deployed versions",
                        self.settings.deployer, self.settings.timeout
                    )),
                );
            }
        };
        let mut deployments = Vec::new();
        for status in answer.services {
            if !services.contains(&status.service) {
                continue;
            }
            for version in [&status.previous_stable, &status.stable, &status.canary]
                .into_iter()
                .flatten()
            {
                if let Some(d) = deployment_of_version(&status.service, version) {
                    deployments.push(d);
                }
            }
        }
        (deployments, None)
    }

    async fn detector_series(
        &self,
        services: &[String],
        from: SystemTime,
        to: SystemTime,
    ) -> (Vec<selfheal_proto::v1::Series>, Vec<String>) {
        let Some(channel) = &self.detector else {
            return (
                Vec::new(),
                vec!["detector not configured: no metric series".to_owned()],
            );
        };
        let queries = services.iter().map(|service| {
            let mut client = DetectorClient::new(channel.clone());
            let mut request = tonic::Request::new(QuerySeriesRequest {
                service: service.clone(),
                names: Vec::new(),
                start: Some(timestamp(from)),
                end: Some(timestamp(to)),
                step: None,
            });
            request.set_timeout(self.settings.timeout);
            async move {
                let answer =
                    tokio::time::timeout(self.settings.timeout, client.query_series(request)).await;
                (service.clone(), answer)
            }
        });
        let mut series = Vec::new();
        let mut gaps = Vec::new();
        for (service, answer) in futures::future::join_all(queries).await {
            match answer {
                Ok(Ok(found)) => {
                    series.extend(found.into_inner().series.into_iter().map(|mut s| {
                        s.service.clone_from(&service);
                        s
                    }))
                }
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => {
                    if service == services[0] {
                        gaps.push(format!(
                            "detector does not watch {service}: no metric series"
                        ));
                    }
                }
                Ok(Err(status)) => {
                    gaps.push(format!(
                        "detector at {} unreachable: {}; no metric series",
                        self.settings.detector,
                        status_text(&status)
                    ));
                    break;
                }
                Err(_) => {
                    gaps.push(format!(
                        "detector at {} unreachable: no answer within {:?}; no metric series",
                        self.settings.detector, self.settings.timeout
                    ));
                    break;
                }
            }
        }
        (series, gaps)
    }

    async fn jaeger_spans(
        &self,
        services: &[String],
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<Span>, String> {
        let base = self.settings.jaeger_query_url.trim_end_matches('/');
        if base.is_empty() {
            return Err("jaeger query not configured: no spans".to_owned());
        }
        let mut spans = Vec::new();
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        for service in services {
            let url = format!("{base}/api/traces");
            let limit = (self.settings.max_spans / 10).clamp(1, 1000).to_string();
            let request = self.http.get(&url).query(&[
                ("service", service.as_str()),
                ("start", &micros(from).to_string()),
                ("end", &micros(to).to_string()),
                ("limit", &limit),
            ]);
            let body = match read_json(request).await {
                Ok(body) => body,
                Err(error) => {
                    return Err(format!(
                        "jaeger query at {base} unreachable: {error}; no spans"
                    ));
                }
            };
            for span in jaeger_spans_of(&body) {
                if spans.len() >= self.settings.max_spans {
                    break;
                }
                if seen.insert((span.trace_id.clone(), span.span_id.clone())) {
                    spans.push(span);
                }
            }
        }
        Ok(spans)
    }

    async fn indexed_logs(
        &self,
        services: &[String],
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<LogLine>, String> {
        let base = self.settings.elasticsearch_url.trim_end_matches('/');
        if base.is_empty() {
            return Err("log index not configured: no indexed logs".to_owned());
        }
        let s = &self.settings;
        let size = s.max_log_lines.min(10_000);
        let should: Vec<serde_json::Value> = services
            .iter()
            .map(|service| serde_json::json!({"match_phrase": {&s.elasticsearch_service_field: service}}))
            .collect();
        let query = serde_json::json!({
            "size": size,
            "sort": [{&s.elasticsearch_time_field: {"order": "desc"}}],
            "query": {"bool": {
                "filter": [{"range": {&s.elasticsearch_time_field: {
                    "gte": millis(from).to_string(),
                    "lte": millis(to).to_string(),
                    "format": "epoch_millis"
                }}}],
                "should": should,
                "minimum_should_match": 1
            }}
        });
        let url = format!("{base}/{}/_search", s.elasticsearch_index);
        let body = read_json(self.http.post(&url).json(&query))
            .await
            .map_err(|error| {
                format!("log index at {base} unreachable: {error}; no indexed logs")
            })?;
        let mut lines: Vec<LogLine> = body["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|hit| {
                let source = &hit["_source"];
                let service = source[&s.elasticsearch_service_field].as_str()?.to_owned();
                let text = source[&s.elasticsearch_message_field].as_str()?.to_owned();
                let at = source[&s.elasticsearch_time_field]
                    .as_str()
                    .and_then(parse_rfc3339)
                    .or_else(|| {
                        source[&s.elasticsearch_time_field]
                            .as_u64()
                            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                    });
                Some(LogLine {
                    service,
                    at: at.map(timestamp),
                    stream: s.elasticsearch_index.clone(),
                    text,
                })
            })
            .collect();
        lines.reverse();
        Ok(lines)
    }

    async fn graph_deployments(
        &self,
        services: &[String],
        from: SystemTime,
        t0: SystemTime,
    ) -> Result<Vec<Deployment>, crate::graph::GraphError> {
        let per_service = services.iter().map(|service| async move {
            let (in_window, latest) = tokio::try_join!(
                self.graph
                    .deployments(service, from, t0 + Duration::from_secs(30)),
                self.graph.latest_deployment_before(service, t0),
            )?;
            Ok::<_, crate::graph::GraphError>(in_window.into_iter().chain(latest))
        });
        let found = futures::future::try_join_all(per_service).await?;
        Ok(found
            .into_iter()
            .flatten()
            .map(deployment_of_record)
            .collect())
    }

    async fn git_commits(&self, request: &CollectRequest, gaps: &mut Vec<String>) -> Vec<Commit> {
        let (Some(repository), Some(commit)) = (&request.repository, &request.commit) else {
            return Vec::new();
        };
        let described = async {
            let repo = GitRepo::open(repository, self.git_timeout).await?;
            let deployed = repo.resolve_commit("source.commit", commit).await?;
            let mut shas = vec![deployed.clone()];
            if let Some(good) = &request.last_good_commit {
                let good = repo.resolve_commit("last_good_commit", good).await?;
                shas = repo
                    .commits_between(&good, &deployed, MAX_RANGE_COMMITS)
                    .await?;
                shas.push(good);
            }
            let mut commits = Vec::new();
            for sha in shas {
                commits.push(commit_of_info(repo.commit(&sha).await?));
            }
            Ok::<_, crate::localize::LocalizeError>(commits)
        };
        match described.await {
            Ok(commits) => commits,
            Err(error) => {
                gaps.push(format!("commits of {repository} not read: {error}"));
                Vec::new()
            }
        }
    }
}

enum LogProblem {
    NotFound,
    Unreachable(String),
    Cut(String),
}

/// `total` split between `parts`, at least `floor`.
fn share(total: usize, parts: usize, floor: usize) -> usize {
    (total / parts.max(1)).max(floor).min(total.max(floor))
}

fn keeper_for<'a>(
    keepers: &'a mut Vec<(String, LogKeeper)>,
    service: &str,
    settings: &SourcesConfig,
    services: usize,
) -> &'a mut LogKeeper {
    let index = match keepers.iter().position(|(s, _)| s == service) {
        Some(index) => index,
        None => {
            keepers.push((
                service.to_owned(),
                LogKeeper::new(
                    share(settings.max_log_lines, services, 100),
                    share(settings.max_log_bytes, services, 16 * 1024),
                ),
            ));
            keepers.len() - 1
        }
    };
    &mut keepers[index].1
}

/// The incident's service first, then its callers and callees breadth first, at most `max`.
pub fn neighbourhood(service: &str, topology: &[CallEdge], max: usize) -> Vec<String> {
    let mut order = vec![service.to_owned()];
    let mut queue = VecDeque::from([service.to_owned()]);
    while let Some(current) = queue.pop_front() {
        for edge in topology {
            let next = if edge.caller == current {
                &edge.callee
            } else if edge.callee == current {
                &edge.caller
            } else {
                continue;
            };
            if order.len() >= max {
                return order;
            }
            if !order.contains(next) {
                order.push(next.clone());
                queue.push_back(next.clone());
            }
        }
    }
    order
}

fn deployment_of_version(service: &str, version: &VersionStatus) -> Option<Deployment> {
    if version.commit.is_empty() {
        return None;
    }
    Some(Deployment {
        service: service.to_owned(),
        version: version.version.clone(),
        commit: version.commit.clone(),
        deployed_at: version.deployed_at,
        repository: version.repository.clone(),
    })
}

/// The graph's record of a deployment, when it has a time and names a version or commit.
pub fn deployment_record(d: &Deployment) -> Option<DeploymentRecord> {
    let deployed_at = d.deployed_at.as_ref().and_then(from_timestamp)?;
    let version = if d.version.is_empty() {
        d.commit.clone()
    } else {
        d.version.clone()
    };
    (!d.service.is_empty() && !version.is_empty()).then(|| DeploymentRecord {
        service: d.service.clone(),
        version,
        commit: d.commit.clone(),
        repository: d.repository.clone(),
        deployed_at,
    })
}

fn deployment_of_record(d: DeploymentRecord) -> Deployment {
    Deployment {
        service: d.service,
        version: d.version,
        commit: d.commit,
        deployed_at: Some(timestamp(d.deployed_at)),
        repository: d.repository,
    }
}

fn dedup_deployments(deployments: &mut Vec<Deployment>) {
    let mut seen = BTreeSet::new();
    deployments.retain(|d| seen.insert((d.service.clone(), d.version.clone())));
    deployments.sort_by(|a, b| {
        a.service.cmp(&b.service).then_with(|| {
            b.deployed_at
                .map(|t| t.seconds)
                .cmp(&a.deployed_at.map(|t| t.seconds))
        })
    });
}

/// A commit from git.
pub fn commit_of_info(info: CommitInfo) -> Commit {
    Commit {
        sha: info.sha,
        author: info.author,
        author_email: info.author_email,
        message: info.message,
        time: Some(prost_types::Timestamp {
            seconds: info.time,
            nanos: 0,
        }),
        files: info.files,
    }
}

/// The graph's record of a commit from git.
pub fn record_of_info(info: &CommitInfo) -> CommitRecord {
    CommitRecord {
        sha: info.sha.clone(),
        author: info.author.clone(),
        author_email: info.author_email.clone(),
        message: info.message.clone(),
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(info.time.max(0).unsigned_abs()),
        files: info.files.clone(),
    }
}

fn commit_of_record(c: CommitRecord) -> Commit {
    Commit {
        sha: c.sha,
        author: c.author,
        author_email: c.author_email,
        message: c.message,
        time: Some(timestamp(c.time)),
        files: c.files,
    }
}

/// Sends `request` and reads at most [`MAX_HTTP_BODY_BYTES`] of a JSON answer.
async fn read_json(request: reqwest::RequestBuilder) -> Result<serde_json::Value, String> {
    let mut response = request
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_HTTP_BODY_BYTES {
            return Err(format!("answer larger than {MAX_HTTP_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(200).collect();
        return Err(format!("HTTP {status}: {text}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))
}

/// Spans of a Jaeger `/api/traces` answer.
pub fn jaeger_spans_of(body: &serde_json::Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        let processes = &trace["processes"];
        for span in trace["spans"].as_array().into_iter().flatten() {
            let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
            let service = span["processID"]
                .as_str()
                .and_then(|p| processes[p]["serviceName"].as_str())
                .unwrap_or_default()
                .to_owned();
            let parent = span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"].as_str() == Some("CHILD_OF"))
                .and_then(|r| r["spanID"].as_str())
                .unwrap_or_default()
                .to_owned();
            let tags = span["tags"].as_array().into_iter().flatten();
            let error = tags.into_iter().any(|tag| {
                let key = tag["key"].as_str().unwrap_or_default();
                let value = &tag["value"];
                (key == "error"
                    && (value.as_bool() == Some(true) || value.as_str() == Some("true")))
                    || (key == "otel.status_code" && value.as_str() == Some("ERROR"))
                    || (key == "http.status_code" && value.as_i64().is_some_and(|c| c >= 500))
                    || (key == "http.response.status_code"
                        && value.as_i64().is_some_and(|c| c >= 500))
            });
            let start = span["startTime"].as_u64().unwrap_or_default();
            let duration = span["duration"].as_u64().unwrap_or_default();
            spans.push(Span {
                trace_id: text("traceID"),
                span_id: text("spanID"),
                parent_span_id: parent,
                service,
                operation: text("operationName"),
                start: Some(timestamp(
                    SystemTime::UNIX_EPOCH + Duration::from_micros(start),
                )),
                duration: Some(prost_types::Duration {
                    seconds: i64::try_from(duration / 1_000_000).unwrap_or(0),
                    nanos: i32::try_from((duration % 1_000_000) * 1000).unwrap_or(0),
                }),
                error,
            });
        }
    }
    spans
}

/// An RFC 3339 time such as `2025-03-11T11:02:00.123Z` (UTC or with an offset).
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let (date, rest) = text.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (year, month, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset_seconds) = if let Some(clock) = rest.strip_suffix('Z') {
        (clock, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (clock, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset[1..].split_once(':')?;
        (
            clock,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut t = hms.splitn(3, ':');
    let (h, m, s): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + m * 60 + s - offset_seconds;
    let digits: String = fraction.chars().take(9).collect();
    let nanos: u64 = format!("{digits:0<9}").parse().ok()?;
    let seconds = u64::try_from(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_with_offsets_and_fractions() {
        let at = |s| {
            parse_rfc3339(s)
                .expect(s)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        };
        assert_eq!(at("1970-01-01T00:00:01Z"), 1000);
        assert_eq!(at("2025-03-11T11:02:00.5+01:00"), 1_741_687_320_500);
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn neighbourhood_is_breadth_first_and_bounded() {
        let edges = vec![
            CallEdge {
                caller: "checkout".into(),
                callee: "payment".into(),
            },
            CallEdge {
                caller: "payment".into(),
                callee: "customer".into(),
            },
            CallEdge {
                caller: "payment".into(),
                callee: "fraud".into(),
            },
        ];
        assert_eq!(
            neighbourhood("payment", &edges, 10),
            vec!["payment", "checkout", "customer", "fraud"]
        );
        assert_eq!(
            neighbourhood("payment", &edges, 2),
            vec!["payment", "checkout"]
        );
        assert_eq!(neighbourhood("lonely", &edges, 10), vec!["lonely"]);
    }

    #[test]
    fn jaeger_answers_become_spans_with_parents_and_errors() {
        let body = serde_json::json!({"data": [{
            "traceID": "t1",
            "processes": {"p1": {"serviceName": "checkout"}, "p2": {"serviceName": "payment"}},
            "spans": [
                {"traceID": "t1", "spanID": "a", "operationName": "GET /buy", "references": [],
                 "startTime": 1_000_000u64, "duration": 2500u64, "processID": "p1",
                 "tags": [{"key": "otel.status_code", "type": "string", "value": "ERROR"}]},
                {"traceID": "t1", "spanID": "b", "operationName": "POST /pay",
                 "references": [{"refType": "CHILD_OF", "traceID": "t1", "spanID": "a"}],
                 "startTime": 1_000_100u64, "duration": 2000u64, "processID": "p2",
                 "tags": [{"key": "error", "type": "bool", "value": true}]}
            ]
        }]});
        let spans = jaeger_spans_of(&body);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].service, "payment");
        assert_eq!(spans[1].parent_span_id, "a");
        assert!(spans[0].error && spans[1].error);
    }
}
