//! Root-cause analysis of one incident: evidence (collected from the configured sources, or given
//! inline for a replay), per-service signals, code localisation of stack traces in a service's
//! own code, ranking, confidence and the decision record.
//!
//! Evidence and reports are the contract's own messages (`Evidence`, `RootCauseReport`): an
//! analysis is replayed from exactly the evidence it returned, so it keeps that form throughout.
//! The ranking itself ([`rank`]) and log handling ([`logs`]) are plain functions without I/O;
//! [`collect`] does all the reading, each source under a deadline.

pub mod collect;
pub mod logs;
pub mod rank;
pub mod time;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use selfheal_proto::v1::{
    AnalyzeResponse, CodeLocation, Evidence, Incident, PastFix, RootCauseReport, SignalKind,
};
use tokio::sync::Semaphore;

use self::collect::{CollectRequest, Collector, commit_of_info};
use self::rank::{CodeEvidence, RankInputs, ServiceSignals};
use self::time::{from_timestamp, timestamp};
use crate::config::AnalysisConfig;
use crate::graph::{CauseKind as StoredKind, FixQuery, GraphStore, IncidentRecord};
use crate::localize::{LocalizeQuery, Localizer};

/// Services whose stack traces are localised per analysis, most anomalous first.
const MAX_LOCALIZED_SERVICES: usize = 4;
/// Distinct stack traces tried per service.
const MAX_TRACES_TRIED: usize = 3;

/// One analysis to run.
#[derive(Clone, Debug)]
pub struct AnalyzeQuery {
    pub incident: Incident,
    /// Inline evidence: analyse exactly this and collect nothing.
    pub evidence: Option<Evidence>,
    pub repository: Option<String>,
    pub commit: Option<String>,
    pub last_good_commit: Option<String>,
}

/// Runs analyses.
#[derive(Debug)]
pub struct Analyzer {
    collector: Collector,
    localizer: Arc<Localizer>,
    settings: AnalysisConfig,
    permits: Semaphore,
}

impl Analyzer {
    pub fn new(collector: Collector, localizer: Arc<Localizer>, settings: AnalysisConfig) -> Self {
        let permits = Semaphore::new(settings.max_concurrent.max(1));
        Analyzer {
            collector,
            localizer,
            settings,
            permits,
        }
    }

    /// The graph store analyses read and the `Record*` calls write.
    pub fn graph(&self) -> &Arc<dyn GraphStore> {
        self.collector.graph()
    }

    /// Analyses `query`'s incident. Never fails: what is missing lowers confidence and is
    /// named in the report's gaps.
    pub async fn analyze(&self, query: AnalyzeQuery) -> AnalyzeResponse {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the analyzer never closes its semaphore");
        let now = SystemTime::now();
        let incident = query.incident.clone();
        let t0 = rank::incident_time(&incident, now);
        let replay = query.evidence.is_some();
        let mut evidence = match query.evidence.clone() {
            Some(evidence) => evidence,
            None => {
                self.collector
                    .collect(&CollectRequest {
                        incident: incident.clone(),
                        t0,
                        repository: query.repository.clone(),
                        commit: query.commit.clone(),
                        last_good_commit: query.last_good_commit.clone(),
                    })
                    .await
            }
        };
        let graph_down = evidence.gaps.iter().any(|g| g.starts_with("graph store"));
        if !replay && !graph_down && !incident.id.is_empty() {
            let record = IncidentRecord {
                id: incident.id.clone(),
                service: incident.service.clone(),
                signal: signal_name(incident.signal()),
                first_bad_at: incident.first_bad_at.as_ref().and_then(from_timestamp),
            };
            if let Err(error) = self.graph().record_incident(&record).await {
                tracing::warn!(%error, incident = %incident.id, "incident not recorded in the graph");
            }
        }

        let signals = rank::service_signals(&incident, &evidence, t0);
        let mut analysis_gaps = Vec::new();
        let code = self
            .localize_traces(&query, &signals, &mut analysis_gaps)
            .await;
        let scored = rank::score(RankInputs {
            incident: &incident,
            evidence: &evidence,
            t0,
            signals,
            code,
            change_window: self.settings.change_window,
        });
        let causes: Vec<_> = scored
            .iter()
            .map(|candidate| rank::root_cause(candidate, &evidence))
            .collect();

        // Past fixes of the first cause's service or kind: from the graph when collecting, from
        // the evidence when replaying.
        let top = causes
            .first()
            .map(|c| (c.service.clone(), StoredKind::from(c.kind())));
        if !replay
            && !graph_down
            && let Some((service, kind)) = &top
        {
            let query = FixQuery {
                service: Some(service.clone()),
                cause_kind: Some(*kind),
                limit: self.settings.max_past_fixes,
            };
            match self.graph().past_fixes(&query).await {
                Ok(fixes) => {
                    evidence.past_fixes = fixes
                        .into_iter()
                        .map(|f| PastFix {
                            incident_id: f.incident_id,
                            service: f.service,
                            cause_kind: selfheal_proto::v1::CauseKind::from(f.cause_kind).into(),
                            strategy: f.strategy,
                            commit: f.commit,
                            recorded_at: Some(timestamp(f.recorded_at)),
                            template: f.template,
                        })
                        .collect();
                }
                Err(error) => evidence
                    .gaps
                    .push(format!("graph store unreachable: {error}; no past fixes")),
            }
        }
        let past_fixes = relevant_fixes(
            &evidence.past_fixes,
            top.as_ref(),
            self.settings.max_past_fixes,
        );

        let mut gaps = evidence.gaps.clone();
        gaps.extend(analysis_gaps);
        let confidence = rank::confidence(&scored, &gaps);
        let decision = rank::decision(
            &incident,
            &evidence,
            &scored,
            &causes,
            &confidence,
            &gaps,
            now,
        );
        tracing::info!(
            incident = %incident.id,
            service = %incident.service,
            top = causes.first().map_or("", |c| c.service.as_str()),
            confidence = confidence.value,
            gaps = gaps.len(),
            replay,
            "analysis finished"
        );
        AnalyzeResponse {
            report: Some(RootCauseReport {
                incident_id: incident.id.clone(),
                causes,
                confidence: confidence.value,
                decision: Some(decision),
                gaps,
                past_fixes,
            }),
            evidence: Some(evidence),
        }
    }

    /// Localises the stack traces of the most anomalous services that have one, in the
    /// repository each was deployed from. Failures become gaps.
    async fn localize_traces(
        &self,
        query: &AnalyzeQuery,
        signals: &std::collections::BTreeMap<String, ServiceSignals>,
        gaps: &mut Vec<String>,
    ) -> HashMap<String, CodeEvidence> {
        let mut with_traces: Vec<&ServiceSignals> = signals
            .values()
            .filter(|s| !s.trace_blocks.is_empty())
            .collect();
        with_traces.sort_by(|a, b| {
            let own = |s: &ServiceSignals| s.service == query.incident.service;
            own(b)
                .cmp(&own(a))
                .then_with(|| b.anomaly().total_cmp(&a.anomaly()))
                .then_with(|| a.service.cmp(&b.service))
        });
        with_traces.truncate(MAX_LOCALIZED_SERVICES);
        let jobs = with_traces
            .into_iter()
            .map(|s| self.localize_service(query, s));
        let mut found = HashMap::new();
        for (service, result) in futures::future::join_all(jobs).await {
            match result {
                Ok(Some(code)) => {
                    found.insert(service, code);
                }
                Ok(None) => {}
                Err(gap) => gaps.push(gap),
            }
        }
        found
    }

    async fn localize_service(
        &self,
        query: &AnalyzeQuery,
        signals: &ServiceSignals,
    ) -> (String, Result<Option<CodeEvidence>, String>) {
        let service = signals.service.clone();
        let own = service == query.incident.service;
        let source = match (&query.repository, &query.commit) {
            (Some(repository), Some(commit)) if own => Some((
                repository.clone(),
                commit.clone(),
                query.last_good_commit.clone(),
            )),
            _ => signals
                .deployment
                .as_ref()
                .filter(|d| !d.repository.is_empty() && !d.commit.is_empty())
                .map(|d| {
                    (
                        d.repository.clone(),
                        d.commit.clone(),
                        signals
                            .previous_deployment
                            .as_ref()
                            .map(|p| p.commit.clone())
                            .or_else(|| own.then(|| query.last_good_commit.clone()).flatten()),
                    )
                }),
        };
        let Some((repository, commit, last_good)) = source else {
            return (
                service.clone(),
                Err(format!(
                    "no repository known for {service}: its stack trace is not localised"
                )),
            );
        };
        let mut tried = BTreeSet::new();
        let mut first_error = None;
        for block in &signals.trace_blocks {
            let key: String = block.lines().take(2).collect::<Vec<_>>().join("\n");
            if !tried.insert(key) {
                continue;
            }
            if tried.len() > MAX_TRACES_TRIED {
                break;
            }
            let localized = self
                .localizer
                .localize(LocalizeQuery {
                    service: service.clone(),
                    trace_text: block.clone(),
                    repository: repository.clone(),
                    commit: commit.clone(),
                    last_good_commit: last_good.clone(),
                })
                .await;
            match localized {
                Ok(found) => {
                    let l = found.location;
                    return (
                        service,
                        Ok(Some(CodeEvidence {
                            location: CodeLocation {
                                file: l.file,
                                line: l.line,
                                end_line: l.end_line,
                                column: l.column,
                                function: l.function,
                                snippet: l.snippet,
                            },
                            culprit: commit_of_info(found.culprit),
                            culprit_in_range: found.culprit_in_range,
                            message: found.message,
                            trace_text: block.clone(),
                        })),
                    );
                }
                Err(error) => {
                    first_error.get_or_insert(error.to_string());
                }
            }
        }
        match first_error {
            Some(error) => (
                service.clone(),
                Err(format!("stack trace of {service} not localised: {error}")),
            ),
            None => (service, Ok(None)),
        }
    }
}

/// Fixes of `top`'s service or kind, newest first, at most `limit`.
fn relevant_fixes(
    fixes: &[PastFix],
    top: Option<&(String, StoredKind)>,
    limit: usize,
) -> Vec<PastFix> {
    let Some((service, kind)) = top else {
        return Vec::new();
    };
    let kind = selfheal_proto::v1::CauseKind::from(*kind);
    let mut found: Vec<PastFix> = fixes
        .iter()
        .filter(|f| f.service == *service || f.cause_kind() == kind)
        .cloned()
        .collect();
    found.sort_by(|a, b| {
        let at = |f: &PastFix| f.recorded_at.map(|t| (t.seconds, t.nanos));
        at(b)
            .cmp(&at(a))
            .then_with(|| a.incident_id.cmp(&b.incident_id))
    });
    found.truncate(limit);
    found
}

fn signal_name(signal: SignalKind) -> String {
    match signal {
        SignalKind::ErrorRate => "error_rate",
        SignalKind::LatencyP99 => "latency_p99",
        SignalKind::MemoryGrowth => "memory_growth",
        SignalKind::Restarts => "restarts",
        SignalKind::TargetDown => "target_down",
        SignalKind::Alert => "alert",
        SignalKind::Unspecified => "",
    }
    .to_owned()
}

impl From<selfheal_proto::v1::CauseKind> for StoredKind {
    fn from(kind: selfheal_proto::v1::CauseKind) -> Self {
        use selfheal_proto::v1::CauseKind as K;
        match kind {
            K::Unspecified => StoredKind::Unspecified,
            K::CodeDefect => StoredKind::CodeDefect,
            K::BadDeploy => StoredKind::BadDeploy,
            K::Dependency => StoredKind::Dependency,
            K::Resource => StoredKind::Resource,
            K::Configuration => StoredKind::Configuration,
        }
    }
}

impl From<StoredKind> for selfheal_proto::v1::CauseKind {
    fn from(kind: StoredKind) -> Self {
        use selfheal_proto::v1::CauseKind as K;
        match kind {
            StoredKind::Unspecified => K::Unspecified,
            StoredKind::CodeDefect => K::CodeDefect,
            StoredKind::BadDeploy => K::BadDeploy,
            StoredKind::Dependency => K::Dependency,
            StoredKind::Resource => K::Resource,
            StoredKind::Configuration => K::Configuration,
        }
    }
}
