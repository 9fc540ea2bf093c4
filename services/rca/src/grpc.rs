//! The gRPC edge of the rca service: decode, call the domain, encode. Nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use selfheal_proto::v1::rca_server::Rca;
use selfheal_proto::v1::{
    AnalyzeRequest, AnalyzeResponse, CodeLocation, Commit, LocalizeRequest, LocalizeResponse,
    RecordDeploymentRequest, RecordDeploymentResponse, RecordFixRequest, RecordFixResponse,
    RecordTopologyRequest, RecordTopologyResponse, StackFrame, TraceLanguage,
};
use tonic::{Request, Response, Status};

use crate::analysis::Analyzer;
use crate::analysis::collect::record_of_info;
use crate::config::AnalysisConfig;
use crate::error::Error;
use crate::graph;
use crate::localize::git::{CommitInfo, GitRepo};
use crate::localize::{self, Language, Localization, LocalizeQuery, Localizer};
use crate::validate;

/// Implements `selfheal.v1.Rca`.
#[derive(Debug)]
pub(crate) struct RcaApi {
    localizer: Arc<Localizer>,
    analyzer: Arc<Analyzer>,
    limits: AnalysisConfig,
    git_timeout: Duration,
}

impl RcaApi {
    pub(crate) fn new(
        localizer: Arc<Localizer>,
        analyzer: Arc<Analyzer>,
        limits: AnalysisConfig,
        git_timeout: Duration,
    ) -> Self {
        RcaApi {
            localizer,
            analyzer,
            limits,
            git_timeout,
        }
    }
}

#[tonic::async_trait]
impl Rca for RcaApi {
    async fn analyze(
        &self,
        request: Request<AnalyzeRequest>,
    ) -> Result<Response<AnalyzeResponse>, Status> {
        let query = validate::analyze_query(request.into_inner(), &self.limits)?;
        Ok(Response::new(self.analyzer.analyze(query).await))
    }

    async fn localize(
        &self,
        request: Request<LocalizeRequest>,
    ) -> Result<Response<LocalizeResponse>, Status> {
        let query = LocalizeQuery::try_from(request.into_inner())?;
        let localization = self.localizer.localize(query).await.map_err(Error::from)?;
        Ok(Response::new(localization.into()))
    }

    async fn record_topology(
        &self,
        request: Request<RecordTopologyRequest>,
    ) -> Result<Response<RecordTopologyResponse>, Status> {
        let edges = validate::edges(&request.into_inner().edges)?;
        self.analyzer
            .graph()
            .record_calls(&edges)
            .await
            .map_err(Error::from)?;
        let distinct: BTreeSet<&graph::CallEdge> = edges.iter().collect();
        Ok(Response::new(RecordTopologyResponse {
            edges: u32::try_from(distinct.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn record_deployment(
        &self,
        request: Request<RecordDeploymentRequest>,
    ) -> Result<Response<RecordDeploymentResponse>, Status> {
        let deployment = request
            .into_inner()
            .deployment
            .ok_or(Error::MissingField("deployment"))?;
        let record = validate::deployment(&deployment)?;
        // The commit's details come from git when the repository is a local one; a deployment
        // is recorded either way.
        let commit = match GitRepo::open(&record.repository, self.git_timeout).await {
            Ok(repo) => match repo
                .resolve_commit("deployment.commit", &record.commit)
                .await
            {
                Ok(sha) => repo
                    .commit(&sha)
                    .await
                    .ok()
                    .filter(|c| c.sha == record.commit),
                Err(_) => None,
            },
            Err(_) => None,
        };
        self.analyzer
            .graph()
            .record_deployment(&record, commit.as_ref().map(record_of_info).as_ref())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(RecordDeploymentResponse {}))
    }

    async fn record_fix(
        &self,
        request: Request<RecordFixRequest>,
    ) -> Result<Response<RecordFixResponse>, Status> {
        let fix = validate::fix(request.into_inner())?;
        self.analyzer
            .graph()
            .record_fix(&fix)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(RecordFixResponse {}))
    }
}

impl TryFrom<LocalizeRequest> for LocalizeQuery {
    type Error = Error;

    fn try_from(request: LocalizeRequest) -> Result<Self, Error> {
        let source = request.source.ok_or(Error::MissingField("source"))?;
        if request.trace_text.is_empty() {
            return Err(Error::MissingField("trace_text"));
        }
        if source.repository.is_empty() {
            return Err(Error::MissingField("source.repository"));
        }
        if source.commit.is_empty() {
            return Err(Error::MissingField("source.commit"));
        }
        Ok(LocalizeQuery {
            service: request.service,
            trace_text: request.trace_text,
            repository: source.repository,
            commit: source.commit,
            last_good_commit: Some(request.last_good_commit).filter(|c| !c.is_empty()),
        })
    }
}

impl From<Localization> for LocalizeResponse {
    fn from(localization: Localization) -> Self {
        let location = localization.location;
        LocalizeResponse {
            language: TraceLanguage::from(localization.language).into(),
            message: localization.message,
            frames: localization
                .frames
                .into_iter()
                .map(StackFrame::from)
                .collect(),
            location: Some(CodeLocation {
                file: location.file,
                line: location.line,
                end_line: location.end_line,
                column: location.column,
                function: location.function,
                snippet: location.snippet,
            }),
            culprit: Some(localization.culprit.into()),
            culprit_in_range: localization.culprit_in_range,
        }
    }
}

impl From<Language> for TraceLanguage {
    fn from(language: Language) -> Self {
        match language {
            Language::Rust => TraceLanguage::Rust,
            Language::Python => TraceLanguage::Python,
            Language::Java => TraceLanguage::Java,
            Language::Go => TraceLanguage::Go,
            Language::Node => TraceLanguage::Node,
        }
    }
}

impl From<localize::Frame> for StackFrame {
    fn from(frame: localize::Frame) -> Self {
        StackFrame {
            function: frame.function,
            file: frame.file,
            line: frame.line,
            column: frame.column,
            in_app: frame.in_app,
        }
    }
}

impl From<CommitInfo> for Commit {
    fn from(commit: CommitInfo) -> Self {
        Commit {
            sha: commit.sha,
            author: commit.author,
            author_email: commit.author_email,
            message: commit.message,
            time: Some(prost_types::Timestamp {
                seconds: commit.time,
                nanos: 0,
            }),
            files: commit.files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_proto::v1::SourceRef;

    fn request() -> LocalizeRequest {
        LocalizeRequest {
            service: "payment-service".into(),
            trace_text: "panic".into(),
            source: Some(SourceRef {
                repository: "/repo".into(),
                commit: "HEAD".into(),
            }),
            last_good_commit: String::new(),
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let mut no_source = request();
        no_source.source = None;
        let error = LocalizeQuery::try_from(no_source).expect_err("no source");
        assert_eq!(error.to_string(), "missing field source");
        let mut no_commit = request();
        if let Some(source) = no_commit.source.as_mut() {
            source.commit.clear();
        }
        let error = LocalizeQuery::try_from(no_commit).expect_err("no commit");
        assert_eq!(error.to_string(), "missing field source.commit");
        let query = LocalizeQuery::try_from(request()).expect("valid");
        assert_eq!(query.last_good_commit, None);
    }
}
