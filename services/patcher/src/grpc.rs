//! The gRPC edge of the patcher: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::patcher_server::Patcher as PatcherRpc;
use selfheal_proto::v1::{
    CandidatePatch, CauseKind as ProtoCauseKind, GenerateCandidatesRequest,
    GenerateCandidatesResponse, PatchStrategy,
};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::strategy::{Candidate, CauseKind, FixRequest, PastFix, Patcher, Strategy};

/// The most candidates one request may ask for.
const MAX_CANDIDATES: usize = 100;

/// Implements `selfheal.v1.Patcher`.
#[derive(Debug)]
pub(crate) struct PatcherApi {
    patcher: Patcher,
    default_max: usize,
}

impl PatcherApi {
    pub(crate) fn new(patcher: Patcher, default_max: usize) -> Self {
        Self {
            patcher,
            default_max,
        }
    }
}

#[tonic::async_trait]
impl PatcherRpc for PatcherApi {
    async fn generate_candidates(
        &self,
        request: Request<GenerateCandidatesRequest>,
    ) -> Result<Response<GenerateCandidatesResponse>, Status> {
        let fix = decode(request.into_inner(), self.default_max)?;
        let found = self.patcher.generate(&fix).await?;
        Ok(Response::new(GenerateCandidatesResponse {
            candidates: found.candidates.into_iter().map(encode).collect(),
            notes: found.notes,
        }))
    }
}

fn decode(request: GenerateCandidatesRequest, default_max: usize) -> Result<FixRequest, Error> {
    let missing = |field: &str| Error::InvalidInput(format!("missing field {field}"));
    let cause_kind = cause_kind(request.cause_kind());
    let source = request.source.ok_or_else(|| missing("source"))?;
    let location = request.location.ok_or_else(|| missing("location"))?;
    if source.repository.is_empty() {
        return Err(missing("source.repository"));
    }
    if source.commit.is_empty() {
        return Err(missing("source.commit"));
    }
    if location.file.is_empty() {
        return Err(missing("location.file"));
    }
    if location.line == 0 {
        return Err(missing("location.line"));
    }
    let exclude = request
        .exclude
        .iter()
        .filter_map(|value| PatchStrategy::try_from(*value).ok().and_then(strategy))
        .collect();
    let culprit = request
        .culprit
        .map(|commit| commit.sha)
        .filter(|sha| !sha.is_empty());
    let past_fixes = request
        .past_fixes
        .into_iter()
        .map(|fix| PastFix {
            cause_kind: cause_kind_of(fix.cause_kind),
            strategy: Strategy::parse(&fix.strategy),
            incident_id: fix.incident_id,
            service: fix.service,
            template: fix.template,
        })
        .collect();
    Ok(FixRequest {
        incident_id: request.incident_id,
        service: request.service,
        repository: source.repository.into(),
        commit: source.commit,
        file: location.file,
        line: location.line,
        end_line: (location.end_line != 0).then_some(location.end_line),
        culprit,
        failure_message: request.failure_message,
        trace_text: request.trace_text,
        cause_kind,
        max_candidates: match request.max_candidates as usize {
            0 => default_max,
            asked => asked.min(MAX_CANDIDATES),
        },
        exclude,
        past_fixes,
    })
}

fn strategy(value: PatchStrategy) -> Option<Strategy> {
    match value {
        PatchStrategy::Unspecified => None,
        PatchStrategy::Template => Some(Strategy::Template),
        PatchStrategy::PartialRevert => Some(Strategy::PartialRevert),
        PatchStrategy::FullRevert => Some(Strategy::FullRevert),
        PatchStrategy::Mutation => Some(Strategy::Mutation),
        PatchStrategy::Llm => Some(Strategy::Llm),
    }
}

fn cause_kind_of(value: i32) -> CauseKind {
    ProtoCauseKind::try_from(value).map_or(CauseKind::Unspecified, cause_kind)
}

fn cause_kind(value: ProtoCauseKind) -> CauseKind {
    match value {
        ProtoCauseKind::Unspecified => CauseKind::Unspecified,
        ProtoCauseKind::CodeDefect => CauseKind::CodeDefect,
        ProtoCauseKind::BadDeploy => CauseKind::BadDeploy,
        ProtoCauseKind::Dependency => CauseKind::Dependency,
        ProtoCauseKind::Resource => CauseKind::Resource,
        ProtoCauseKind::Configuration => CauseKind::Configuration,
    }
}

fn encode(candidate: Candidate) -> CandidatePatch {
    let strategy = match candidate.strategy {
        Strategy::Template => PatchStrategy::Template,
        Strategy::PartialRevert => PatchStrategy::PartialRevert,
        Strategy::FullRevert => PatchStrategy::FullRevert,
        Strategy::Mutation => PatchStrategy::Mutation,
        Strategy::Llm => PatchStrategy::Llm,
    };
    CandidatePatch {
        id: candidate.id,
        strategy: strategy.into(),
        diff: candidate.diff,
        rationale: candidate.rationale,
        confidence: candidate.confidence,
        files: candidate.files,
        lines_added: candidate.lines_added,
        lines_removed: candidate.lines_removed,
        template: candidate.template,
    }
}
