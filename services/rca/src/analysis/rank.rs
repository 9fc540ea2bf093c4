//! Ranking causes from evidence: plain functions, no I/O.
//!
//! 1. Per-service anomaly, 0..1: metric series after `first_bad_at` against the baseline before
//!    it (error rate, p99 latency, memory, availability), error lines and stack traces in the
//!    logs, and spans that failed on their own (an error span none of whose children failed).
//!    The three are combined as a noisy-or.
//! 2. Propagation, as in MicroRCA: a personalised PageRank over the anomalous subgraph of the
//!    `CALLS` topology (plus edges seen in spans). A walker at a service moves to its callees in
//!    proportion to their anomaly, back to its callers only weakly, and stays in proportion to the
//!    anomaly its dependencies do not explain. Rank so gathers where anomalies end: a symptom
//!    upstream of an anomalous dependency ranks below it.
//! 3. Change: a deployment of the service shortly before `first_bad_at`.
//! 4. Code: a stack trace in the service's own code, localised to a line and a culprit commit.
//!
//! The score is a weighted sum of the four; confidence comes from how many independent kinds of
//! evidence agree on the first cause, how far it stands ahead of the second, and what evidence
//! was missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use selfheal_proto::v1::{
    CallEdge, CauseKind, CodeLocation, Commit, Decision, DecisionAlternative, DecisionFactor,
    DecisionInput, DecisionKind, Deployment, Evidence, Incident, RootCause, Series,
};

use super::logs::{self, BlockTracker, Importance};
use super::time::{from_timestamp, timestamp};

/// Weights of the four factors in a cause's score.
pub const WEIGHT_ANOMALY: f64 = 0.40;
pub const WEIGHT_PROPAGATION: f64 = 0.30;
pub const WEIGHT_CHANGE: f64 = 0.15;
pub const WEIGHT_CODE: f64 = 0.15;

/// Services below this anomaly are not candidates (unless the incident names them).
const CANDIDATE_ANOMALY: f64 = 0.1;
/// PageRank damping and iterations.
const DAMPING: f64 = 0.85;
const ITERATIONS: usize = 60;
/// How much of a caller's anomaly a walker may follow back up.
const BACKWARD: f64 = 0.1;
/// A deployment up to this long after `first_bad_at` still counts (scrape and clock lag).
const CHANGE_TOLERANCE: Duration = Duration::from_secs(30);

/// A stack trace localised in a service's own code.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeEvidence {
    pub location: CodeLocation,
    pub culprit: Commit,
    pub culprit_in_range: bool,
    pub message: String,
    pub trace_text: String,
}

/// What one service's evidence shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSignals {
    pub service: String,
    /// 0..1 each, with what they are based on.
    pub error_rate: f64,
    pub latency: f64,
    pub memory: f64,
    pub down: f64,
    pub metric_notes: Vec<String>,
    pub log_lines: u64,
    pub error_lines: u64,
    pub stack_traces: u64,
    pub resource_lines: u64,
    pub configuration_lines: u64,
    pub spans: u64,
    pub error_spans: u64,
    pub own_error_spans: u64,
    pub span_refs: Vec<String>,
    /// The latest deployment at or before `first_bad_at` (plus tolerance).
    pub deployment: Option<Deployment>,
    /// The deployment before that one.
    pub previous_deployment: Option<Deployment>,
    /// Stack-trace blocks of the service's kept logs, newest first.
    pub trace_blocks: Vec<String>,
}

impl ServiceSignals {
    pub fn metric(&self) -> f64 {
        self.error_rate
            .max(self.latency)
            .max(self.memory)
            .max(self.down)
    }

    pub fn log(&self) -> f64 {
        let traces: f64 = if self.stack_traces > 0 { 0.9 } else { 0.0 };
        let errors = (self.error_lines as f64 / 10.0).min(1.0) * 0.6;
        traces.max(errors)
    }

    pub fn span(&self) -> f64 {
        let own = (self.own_error_spans as f64 / 5.0).min(1.0) * 0.9;
        let any: f64 = if self.error_spans > 0 { 0.2 } else { 0.0 };
        own.max(any)
    }

    pub fn anomaly(&self) -> f64 {
        1.0 - (1.0 - self.metric()) * (1.0 - self.log()) * (1.0 - self.span())
    }
}

/// The instant the analysis is centred on: `first_bad_at`, else `opened_at`, else `now`.
pub fn incident_time(incident: &Incident, now: SystemTime) -> SystemTime {
    incident
        .first_bad_at
        .as_ref()
        .or(incident.opened_at.as_ref())
        .and_then(from_timestamp)
        .unwrap_or(now)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Splits a series' values at `t0`: (before, at or after).
fn split(series: &Series, t0: SystemTime) -> (Vec<f64>, Vec<f64>) {
    let mut before = Vec::new();
    let mut after = Vec::new();
    for point in &series.points {
        if !point.value.is_finite() {
            continue;
        }
        match point.at.as_ref().and_then(from_timestamp) {
            Some(at) if at < t0 => before.push(point.value),
            Some(_) => after.push(point.value),
            None => {}
        }
    }
    (before, after)
}

fn score_series(signals: &mut ServiceSignals, series: &Series, t0: SystemTime) {
    let (before, after) = split(series, t0);
    let Some(now) = mean(&after) else { return };
    let base = mean(&before);
    let note = |name: &str, base: Option<f64>, now: f64, score: f64| {
        format!(
            "{name} {} → {now:.3} (score {score:.2})",
            base.map_or("no baseline".to_owned(), |b| format!("{b:.3}"))
        )
    };
    let score = match series.name.as_str() {
        "error_rate" => {
            let score = clamp01((now - base.unwrap_or(0.0)) / 0.10);
            signals.error_rate = signals.error_rate.max(score);
            score
        }
        "latency_p99" => {
            let Some(base) = base.filter(|b| *b > 0.0) else {
                return;
            };
            let score = clamp01((now / base - 1.5) / 2.5);
            signals.latency = signals.latency.max(score);
            score
        }
        "memory_bytes" => {
            let Some(base) = base.filter(|b| *b > 0.0) else {
                return;
            };
            let peak = after.iter().copied().fold(now, f64::max);
            let score = clamp01((peak / base - 1.2) / 0.8);
            signals.memory = signals.memory.max(score);
            score
        }
        "up" => {
            let low = after.iter().copied().fold(1.0, f64::min);
            let score = clamp01(1.0 - low);
            signals.down = signals.down.max(score);
            score
        }
        _ => return,
    };
    if score > 0.0 {
        signals
            .metric_notes
            .push(note(&series.name, base, now, score));
    }
}

/// Everything the evidence says about each service.
pub fn service_signals(
    incident: &Incident,
    evidence: &Evidence,
    t0: SystemTime,
) -> BTreeMap<String, ServiceSignals> {
    let mut all: BTreeMap<String, ServiceSignals> = BTreeMap::new();
    fn entry<'a>(
        all: &'a mut BTreeMap<String, ServiceSignals>,
        service: &str,
    ) -> &'a mut ServiceSignals {
        all.entry(service.to_owned())
            .or_insert_with(|| ServiceSignals {
                service: service.to_owned(),
                ..ServiceSignals::default()
            })
    }
    if !incident.service.is_empty() {
        entry(&mut all, &incident.service);
    }
    for edge in &evidence.topology {
        entry(&mut all, &edge.caller);
        entry(&mut all, &edge.callee);
    }
    for series in &evidence.series {
        score_series(entry(&mut all, &series.service), series, t0);
    }

    // Logs: counts from the collector's statistics when it sent them, else from the lines.
    let mut by_service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in &evidence.logs {
        by_service
            .entry(line.service.as_str())
            .or_default()
            .push(line.text.as_str());
    }
    for (service, lines) in &by_service {
        let signals = entry(&mut all, service);
        let mut tracker = BlockTracker::default();
        for line in lines {
            let seen = tracker.classify(line);
            signals.log_lines += 1;
            if seen.starts_block {
                signals.stack_traces += 1;
            }
            if seen.importance >= Importance::Error && logs::is_error_line(line) {
                signals.error_lines += 1;
            }
            if logs::is_resource_line(line) {
                signals.resource_lines += 1;
            }
            if logs::is_configuration_line(line) {
                signals.configuration_lines += 1;
            }
        }
        let mut blocks = logs::trace_blocks(lines.iter().copied());
        blocks.reverse();
        signals.trace_blocks = blocks;
    }
    for stats in &evidence.log_stats {
        let signals = entry(&mut all, &stats.service);
        signals.log_lines = signals.log_lines.max(stats.lines_seen);
        signals.error_lines = signals.error_lines.max(stats.error_lines);
        signals.stack_traces = signals.stack_traces.max(stats.stack_traces);
    }

    // Spans: an error span none of whose children failed is an error of its own service.
    let mut failed_children: HashMap<(&str, &str), bool> = HashMap::new();
    for span in &evidence.spans {
        if span.error && !span.parent_span_id.is_empty() {
            failed_children.insert((span.trace_id.as_str(), span.parent_span_id.as_str()), true);
        }
    }
    for span in &evidence.spans {
        let signals = entry(&mut all, &span.service);
        signals.spans += 1;
        if span.error {
            signals.error_spans += 1;
            if !failed_children.contains_key(&(span.trace_id.as_str(), span.span_id.as_str())) {
                signals.own_error_spans += 1;
                if signals.span_refs.len() < 3 {
                    signals
                        .span_refs
                        .push(format!("span:{}/{}", span.trace_id, span.span_id));
                }
            }
        }
    }

    // Deployments: the latest at or before t0 (with tolerance), and the one before it.
    let cutoff = t0 + CHANGE_TOLERANCE;
    let mut deployments: Vec<&Deployment> = evidence.deployments.iter().collect();
    deployments.sort_by_key(|d| std::cmp::Reverse(d.deployed_at.as_ref().and_then(from_timestamp)));
    for d in deployments {
        let Some(at) = d.deployed_at.as_ref().and_then(from_timestamp) else {
            continue;
        };
        if at > cutoff {
            continue;
        }
        let signals = entry(&mut all, &d.service);
        if signals.deployment.is_none() {
            signals.deployment = Some(d.clone());
        } else if signals.previous_deployment.is_none()
            && signals
                .deployment
                .as_ref()
                .is_some_and(|l| l.commit != d.commit)
        {
            signals.previous_deployment = Some(d.clone());
        }
    }
    all
}

/// Every `CALLS` edge: the topology and what the spans show (parent service → child service).
pub fn call_edges(evidence: &Evidence) -> BTreeSet<(String, String)> {
    let mut edges: BTreeSet<(String, String)> = evidence
        .topology
        .iter()
        .map(|CallEdge { caller, callee }| (caller.clone(), callee.clone()))
        .collect();
    let owner: HashMap<(&str, &str), &str> = evidence
        .spans
        .iter()
        .map(|s| {
            (
                (s.trace_id.as_str(), s.span_id.as_str()),
                s.service.as_str(),
            )
        })
        .collect();
    for span in &evidence.spans {
        if let Some(parent) = owner.get(&(span.trace_id.as_str(), span.parent_span_id.as_str()))
            && *parent != span.service
        {
            edges.insert(((*parent).to_owned(), span.service.clone()));
        }
    }
    edges.retain(|(a, b)| a != b);
    edges
}

/// Personalised PageRank on the anomalous subgraph; each node's rank over the highest (0..1).
pub fn propagate(
    anomaly: &BTreeMap<String, f64>,
    edges: &BTreeSet<(String, String)>,
) -> BTreeMap<String, f64> {
    let nodes: Vec<&String> = anomaly.keys().collect();
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let n = nodes.len();
    if n == 0 {
        return BTreeMap::new();
    }
    let a: Vec<f64> = nodes.iter().map(|s| anomaly[*s]).collect();
    let mut out: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    let mut max_callee = vec![0.0_f64; n];
    for (caller, callee) in edges {
        let (Some(&u), Some(&v)) = (index.get(caller.as_str()), index.get(callee.as_str())) else {
            continue;
        };
        out[u].push((v, a[v]));
        out[v].push((u, BACKWARD * a[u]));
        max_callee[u] = max_callee[u].max(a[v]);
    }
    for u in 0..n {
        let stay = (a[u] - max_callee[u]).max(0.0);
        out[u].push((u, stay));
        let total: f64 = out[u].iter().map(|(_, w)| w).sum();
        if total <= f64::EPSILON {
            out[u] = vec![(u, 1.0)];
        } else {
            for (_, w) in &mut out[u] {
                *w /= total;
            }
        }
    }
    let sum: f64 = a.iter().sum();
    let personal: Vec<f64> = if sum > 0.0 {
        a.iter().map(|x| x / sum).collect()
    } else {
        vec![1.0 / n as f64; n]
    };
    let mut rank = personal.clone();
    for _ in 0..ITERATIONS {
        let mut next: Vec<f64> = personal.iter().map(|p| (1.0 - DAMPING) * p).collect();
        for u in 0..n {
            for &(v, w) in &out[u] {
                next[v] += DAMPING * rank[u] * w;
            }
        }
        rank = next;
    }
    let top = rank.iter().copied().fold(0.0, f64::max);
    nodes
        .into_iter()
        .zip(rank)
        .map(|(s, r)| (s.clone(), if top > 0.0 { r / top } else { 0.0 }))
        .collect()
}

/// How strongly a deployment at `deployed` suggests a change caused a failure at `t0`.
pub fn change_score(deployed: SystemTime, t0: SystemTime, window: Duration) -> f64 {
    if deployed > t0 + CHANGE_TOLERANCE {
        return 0.0;
    }
    let age = t0.duration_since(deployed).unwrap_or_default();
    if age > window {
        return 0.0;
    }
    clamp01(1.0 - age.as_secs_f64() / window.as_secs_f64()).max(0.3)
}

/// One candidate, scored.
#[derive(Clone, Debug)]
pub struct Scored {
    pub signals: ServiceSignals,
    pub anomaly: f64,
    pub propagation: f64,
    pub change: f64,
    pub code: f64,
    pub score: f64,
    pub code_evidence: Option<CodeEvidence>,
    /// The highest-ranked anomalous service this one calls, when that one ranks above it.
    pub blamed_dependency: Option<String>,
}

/// The inputs of the final ranking.
#[derive(Debug)]
pub struct RankInputs<'a> {
    pub incident: &'a Incident,
    pub evidence: &'a Evidence,
    pub t0: SystemTime,
    pub signals: BTreeMap<String, ServiceSignals>,
    pub code: HashMap<String, CodeEvidence>,
    pub change_window: Duration,
}

/// Scores every candidate, best first.
pub fn score(inputs: RankInputs<'_>) -> Vec<Scored> {
    let RankInputs {
        incident,
        evidence,
        t0,
        signals,
        mut code,
        change_window,
    } = inputs;
    let anomaly: BTreeMap<String, f64> = signals
        .iter()
        .map(|(s, sig)| (s.clone(), sig.anomaly()))
        .filter(|(s, a)| *a >= CANDIDATE_ANOMALY || *s == incident.service || code.contains_key(s))
        .collect();
    let edges = call_edges(evidence);
    let propagation = propagate(&anomaly, &edges);
    let mut scored: Vec<Scored> = Vec::new();
    for (service, a) in &anomaly {
        let sig = signals[service].clone();
        let change = sig
            .deployment
            .as_ref()
            .and_then(|d| d.deployed_at.as_ref().and_then(from_timestamp))
            .map_or(0.0, |at| change_score(at, t0, change_window));
        let code_evidence = code.remove(service);
        let code_score = match &code_evidence {
            Some(c) if c.culprit_in_range => 1.0,
            Some(_) => 0.8,
            None => 0.0,
        };
        let p = propagation.get(service).copied().unwrap_or(0.0);
        let total = WEIGHT_ANOMALY * a
            + WEIGHT_PROPAGATION * p
            + WEIGHT_CHANGE * change
            + WEIGHT_CODE * code_score;
        scored.push(Scored {
            signals: sig,
            anomaly: *a,
            propagation: p,
            change,
            code: code_score,
            score: clamp01(total),
            code_evidence,
            blamed_dependency: None,
        });
    }
    scored.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then_with(|| x.signals.service.cmp(&y.signals.service))
    });
    // A service whose (transitive) callee ranks above it shows that callee's failure.
    let position: HashMap<String, usize> = scored
        .iter()
        .enumerate()
        .map(|(i, s)| (s.signals.service.clone(), i))
        .collect();
    for i in 0..scored.len() {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![scored[i].signals.service.clone()];
        let mut best: Option<usize> = None;
        while let Some(service) = frontier.pop() {
            for (caller, callee) in &edges {
                if *caller == service && seen.insert(callee.clone()) {
                    if let Some(&j) = position.get(callee)
                        && j < i
                        && best.is_none_or(|b| j < b)
                    {
                        best = Some(j);
                    }
                    frontier.push(callee.clone());
                }
            }
        }
        scored[i].blamed_dependency = best.map(|j| scored[j].signals.service.clone());
    }
    scored
}

/// The kind of cause a scored candidate is.
pub fn kind_of(candidate: &Scored) -> CauseKind {
    let s = &candidate.signals;
    if candidate.code_evidence.is_some() {
        return CauseKind::CodeDefect;
    }
    if candidate.blamed_dependency.is_some() {
        return CauseKind::Dependency;
    }
    if s.configuration_lines > 0 {
        return CauseKind::Configuration;
    }
    if s.memory >= 0.5 || s.resource_lines > 0 {
        return CauseKind::Resource;
    }
    if candidate.change > 0.0 {
        return CauseKind::BadDeploy;
    }
    if s.stack_traces > 0 {
        return CauseKind::CodeDefect;
    }
    if s.latency >= 0.5 || s.down >= 0.5 {
        return CauseKind::Resource;
    }
    CauseKind::Unspecified
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn kind_name(kind: CauseKind) -> &'static str {
    match kind {
        CauseKind::CodeDefect => "code defect",
        CauseKind::BadDeploy => "bad deploy",
        CauseKind::Dependency => "dependency",
        CauseKind::Resource => "resource",
        CauseKind::Configuration => "configuration",
        CauseKind::Unspecified => "unclassified fault",
    }
}

/// A `RootCause` for a scored candidate.
pub fn root_cause(candidate: &Scored, evidence: &Evidence) -> RootCause {
    let s = &candidate.signals;
    let kind = kind_of(candidate);
    let mut why: Vec<String> = Vec::new();
    let mut refs: Vec<String> = Vec::new();
    if !s.metric_notes.is_empty() {
        why.push(format!("metrics: {}", s.metric_notes.join("; ")));
        for series in evidence.series.iter().filter(|x| x.service == s.service) {
            refs.push(format!("series:{}/{}", s.service, series.name));
        }
    }
    if s.stack_traces > 0 || s.error_lines > 0 {
        why.push(format!(
            "logs: {} stack trace(s) and {} error line(s) in {} line(s) read",
            s.stack_traces, s.error_lines, s.log_lines
        ));
        refs.push(format!("logs:{}", s.service));
    }
    if s.own_error_spans > 0 || s.error_spans > 0 {
        why.push(format!(
            "traces: {} of {} span(s) failed, {} on their own",
            s.error_spans, s.spans, s.own_error_spans
        ));
        refs.extend(s.span_refs.iter().cloned());
    }
    if let Some(dependency) = &candidate.blamed_dependency {
        why.push(format!(
            "it calls {dependency}, which ranks higher: its errors follow from that failure"
        ));
    }
    if let (Some(d), true) = (&s.deployment, candidate.change > 0.0) {
        why.push(format!(
            "deployed {} (commit {}) shortly before the failure began",
            d.version,
            short(&d.commit)
        ));
        refs.push(format!("deployment:{}@{}", d.service, d.version));
    }
    let mut location = None;
    let mut culprit = None;
    let mut failure_message = String::new();
    let mut trace_text = String::new();
    if let Some(code) = &candidate.code_evidence {
        why.push(format!(
            "a stack trace points into its own code at {}:{}{}; git blame names commit {} by {}{}",
            code.location.file,
            code.location.line,
            if code.location.function.is_empty() {
                String::new()
            } else {
                format!(" in {}", code.location.function)
            },
            short(&code.culprit.sha),
            code.culprit.author,
            if code.culprit_in_range {
                ", which is new since the last good version"
            } else {
                ""
            }
        ));
        refs.push(format!(
            "location:{}:{}",
            code.location.file, code.location.line
        ));
        refs.push(format!("commit:{}", code.culprit.sha));
        location = Some(code.location.clone());
        culprit = Some(code.culprit.clone());
        failure_message.clone_from(&code.message);
        trace_text.clone_from(&code.trace_text);
    } else if let Some(block) = s.trace_blocks.first() {
        trace_text = block.clone();
        failure_message = block.lines().nth(1).unwrap_or_default().trim().to_owned();
    }
    if culprit.is_none()
        && kind == CauseKind::BadDeploy
        && let Some(d) = &s.deployment
    {
        culprit = evidence.commits.iter().find(|c| c.sha == d.commit).cloned();
    }
    if why.is_empty() {
        why.push("named by the incident; no evidence of a fault was found".to_owned());
    }
    RootCause {
        service: s.service.clone(),
        kind: kind.into(),
        score: candidate.score,
        explanation: format!("{} in {}: {}", kind_name(kind), s.service, why.join("; ")),
        evidence_refs: refs,
        deployment: s.deployment.clone(),
        location,
        culprit,
        failure_message,
        trace_text,
    }
}

/// How sure the analysis is of its first cause, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Confidence {
    pub value: f64,
    /// What raised or lowered it, in words.
    pub reasons: Vec<String>,
}

/// Lowers confidence for each gap: a missing optional source a little, a failed one more.
pub fn gap_penalty(gap: &str) -> f64 {
    if gap.contains("not configured") {
        0.02
    } else {
        0.07
    }
}

/// Confidence in `scored[0]` given the gaps in the evidence and the analysis.
pub fn confidence(scored: &[Scored], gaps: &[String]) -> Confidence {
    let mut reasons = Vec::new();
    let Some(top) = scored.first() else {
        return Confidence {
            value: 0.0,
            reasons: vec!["no candidate: the evidence names no service".to_owned()],
        };
    };
    let s = &top.signals;
    let mut value = 0.2;
    let mut agree = |present: bool, weight: f64, what: &str| {
        if present {
            value += weight;
            reasons.push(format!("+{weight:.2} {what}"));
        }
    };
    agree(
        s.metric() >= 0.5,
        0.12,
        "its metrics moved past their baseline",
    );
    agree(s.log() >= 0.5, 0.12, "its logs show errors or stack traces");
    agree(s.span() >= 0.5, 0.08, "its spans failed on their own");
    agree(top.change > 0.0, 0.13, "it was deployed shortly before");
    agree(
        top.code_evidence.is_some(),
        0.2,
        "a stack trace localises to its own code",
    );
    agree(
        top.code_evidence
            .as_ref()
            .is_some_and(|c| c.culprit_in_range),
        0.1,
        "the culprit commit is new since the last good version",
    );
    let second = scored.get(1).map_or(0.0, |c| c.score);
    let margin = clamp01((top.score - second) / 0.3);
    value += 0.15 * margin;
    reasons.push(format!(
        "+{:.2} it leads the next candidate by {:.2}",
        0.15 * margin,
        top.score - second
    ));
    if let Some(next) = scored.get(1)
        && next.score > 0.85 * top.score
    {
        value -= 0.1;
        reasons.push(format!(
            "-0.10 conflicting evidence: {} scores almost as high ({:.2} against {:.2})",
            next.signals.service, next.score, top.score
        ));
    }
    if top.anomaly < 0.2 {
        value -= 0.2;
        reasons.push("-0.20 little evidence of a fault in the first candidate itself".to_owned());
    }
    for gap in gaps {
        let penalty = gap_penalty(gap);
        value -= penalty;
        reasons.push(format!("-{penalty:.2} {gap}"));
    }
    Confidence {
        value: clamp01(value).min(0.97),
        reasons,
    }
}

/// The decision record of an analysis.
pub fn decision(
    incident: &Incident,
    evidence: &Evidence,
    scored: &[Scored],
    causes: &[RootCause],
    confidence: &Confidence,
    gaps: &[String],
    now: SystemTime,
) -> Decision {
    let count = |n: usize, what: &str, note: &str| DecisionInput {
        name: what.to_owned(),
        value: n.to_string(),
        note: note.to_owned(),
    };
    let mut inputs = vec![
        DecisionInput {
            name: "incident".to_owned(),
            value: format!("{} ({})", incident.id, incident.service),
            note: incident.summary.clone(),
        },
        count(
            evidence.series.len(),
            "series",
            "metric windows compared before and after first_bad_at",
        ),
        count(
            evidence.logs.len(),
            "log lines kept",
            "stack traces and error lines are kept first",
        ),
        count(
            evidence.spans.len(),
            "spans",
            "error spans without failing children count as a service's own",
        ),
        count(
            evidence.topology.len(),
            "calls edges",
            "propagation runs over these and the spans' edges",
        ),
        count(
            evidence.deployments.len(),
            "deployments",
            "a deployment shortly before first_bad_at is a suspect change",
        ),
        count(
            evidence.commits.len(),
            "commits",
            "commits of the deployments and since the last good one",
        ),
        count(gaps.len(), "gaps", &gaps.join("; ")),
    ];
    let lines_seen: u64 = evidence.log_stats.iter().map(|s| s.lines_seen).sum();
    if lines_seen > 0 {
        inputs.push(count(
            usize::try_from(lines_seen).unwrap_or(usize::MAX),
            "log lines read",
            "all lines read by collection, kept or not",
        ));
    }
    let factors = match scored.first() {
        Some(top) => vec![
            DecisionFactor {
                name: "anomaly".to_owned(),
                weight: WEIGHT_ANOMALY,
                score: top.anomaly,
                explanation: "metrics, error logs and failing spans of the service itself"
                    .to_owned(),
            },
            DecisionFactor {
                name: "propagation".to_owned(),
                weight: WEIGHT_PROPAGATION,
                score: top.propagation,
                explanation:
                    "personalised PageRank on the anomalous CALLS subgraph: where anomalies end"
                        .to_owned(),
            },
            DecisionFactor {
                name: "change".to_owned(),
                weight: WEIGHT_CHANGE,
                score: top.change,
                explanation: "a deployment shortly before first_bad_at".to_owned(),
            },
            DecisionFactor {
                name: "code".to_owned(),
                weight: WEIGHT_CODE,
                score: top.code,
                explanation:
                    "a stack trace localised in the service's own code, culprit commit in range"
                        .to_owned(),
            },
        ],
        None => Vec::new(),
    };
    let alternatives = scored
        .iter()
        .zip(causes)
        .skip(1)
        .take(10)
        .map(|(candidate, cause)| {
            let top = &scored[0];
            let why_not = match &candidate.blamed_dependency {
                Some(dependency) => format!(
                    "its errors are explained by {dependency}, which it calls and which ranks higher"
                ),
                None => format!(
                    "scores {:.2} against {:.2}: anomaly {:.2}/{:.2}, propagation {:.2}/{:.2}, change {:.2}/{:.2}, code {:.2}/{:.2}",
                    candidate.score,
                    top.score,
                    candidate.anomaly,
                    top.anomaly,
                    candidate.propagation,
                    top.propagation,
                    candidate.change,
                    top.change,
                    candidate.code,
                    top.code
                ),
            };
            DecisionAlternative {
                option: format!("{} ({})", cause.service, kind_name(cause.kind())),
                why_not,
                score: candidate.score,
            }
        })
        .collect();
    let outcome = match causes.first() {
        Some(cause) => {
            let mut text = format!(
                "root cause: {} ({})",
                cause.service,
                kind_name(cause.kind())
            );
            if let Some(location) = &cause.location {
                text.push_str(&format!(" at {}:{}", location.file, location.line));
            }
            if let Some(culprit) = &cause.culprit {
                text.push_str(&format!(", commit {}", short(&culprit.sha)));
            }
            text
        }
        None => "no root cause found".to_owned(),
    };
    let reasoning = match causes.first() {
        Some(cause) => format!(
            "{}. Confidence {:.2}: {}.",
            cause.explanation,
            confidence.value,
            confidence.reasons.join("; ")
        ),
        None => format!(
            "No service shows a fault. {}",
            confidence.reasons.join("; ")
        ),
    };
    Decision {
        id: format!(
            "rca-{}-{}",
            incident.id,
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ),
        kind: DecisionKind::RootCause.into(),
        subject: incident.service.clone(),
        inputs,
        factors,
        constraints: vec![
            "paths from stack traces resolve only to files of the repository's commit tree"
                .to_owned(),
            "log collection keeps a bounded number of lines and bytes".to_owned(),
            "a source that fails lowers confidence; it never fails the analysis".to_owned(),
        ],
        alternatives,
        outcome,
        reasoning,
        confidence: confidence.value,
        decided_at: Some(timestamp(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomalies(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(s, a)| ((*s).to_owned(), *a)).collect()
    }

    fn chain(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn rank_gathers_at_the_end_of_an_anomalous_chain() {
        let ranks = propagate(
            &anomalies(&[("checkout", 0.8), ("payment", 0.7), ("customer", 0.7)]),
            &chain(&[("checkout", "payment"), ("payment", "customer")]),
        );
        assert_eq!(ranks["customer"], 1.0);
        assert!(ranks["payment"] < ranks["customer"]);
        assert!(ranks["checkout"] < ranks["customer"], "{ranks:?}");
    }

    #[test]
    fn a_healthy_dependency_does_not_take_the_rank() {
        let ranks = propagate(
            &anomalies(&[("checkout", 0.9), ("payment", 0.05)]),
            &chain(&[("checkout", "payment")]),
        );
        assert_eq!(ranks["checkout"], 1.0);
        assert!(ranks["payment"] < 0.5, "{ranks:?}");
    }

    #[test]
    fn change_scores_recent_deployments_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert!(change_score(t0 - Duration::from_secs(60), t0, hour) > 0.95);
        assert_eq!(change_score(t0 - 2 * hour, t0, hour), 0.0);
        assert_eq!(change_score(t0 + Duration::from_secs(600), t0, hour), 0.0);
        assert!(change_score(t0 - hour + Duration::from_secs(1), t0, hour) >= 0.3);
    }

    #[test]
    fn gaps_of_unconfigured_sources_cost_less_than_failures() {
        assert!(
            gap_penalty("jaeger query not configured") < gap_penalty("graph store unreachable: x")
        );
    }
}
