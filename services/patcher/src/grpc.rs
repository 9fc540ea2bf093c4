//! The gRPC edge of the patcher: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::patcher_server::Patcher;
use selfheal_proto::v1::{
    CandidatePatch, GenerateCandidatesRequest, GenerateCandidatesResponse, PatchStrategy,
};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::error::Error;
use crate::strategy::{Candidate, FixRequest, Strategy, generate};

/// Implements `selfheal.v1.Patcher`.
#[derive(Debug)]
pub(crate) struct PatcherApi {
    config: Config,
}

impl PatcherApi {
    pub(crate) fn new(config: Config) -> Self {
        Self { config }
    }
}

#[tonic::async_trait]
impl Patcher for PatcherApi {
    async fn generate_candidates(
        &self,
        request: Request<GenerateCandidatesRequest>,
    ) -> Result<Response<GenerateCandidatesResponse>, Status> {
        let fix = decode(request.into_inner(), self.config.max_candidates)?;
        let found = generate(&fix, self.config.git_timeout).await?;
        Ok(Response::new(GenerateCandidatesResponse {
            candidates: found.candidates.into_iter().map(encode).collect(),
            notes: found.notes,
        }))
    }
}

fn decode(request: GenerateCandidatesRequest, default_max: usize) -> Result<FixRequest, Error> {
    let missing = |field: &str| Error::InvalidInput(format!("missing field {field}"));
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
    let exclude = request
        .exclude
        .iter()
        .filter_map(|value| match PatchStrategy::try_from(*value) {
            Ok(PatchStrategy::Template) => Some(Strategy::Template),
            Ok(PatchStrategy::PartialRevert) => Some(Strategy::PartialRevert),
            Ok(PatchStrategy::FullRevert) => Some(Strategy::FullRevert),
            _ => None,
        })
        .collect();
    let culprit = request
        .culprit
        .map(|commit| commit.sha)
        .filter(|sha| !sha.is_empty());
    Ok(FixRequest {
        repository: source.repository.into(),
        commit: source.commit,
        file: location.file,
        line: location.line,
        culprit,
        failure_message: request.failure_message,
        max_candidates: if request.max_candidates == 0 {
            default_max
        } else {
            request.max_candidates as usize
        },
        exclude,
    })
}

fn encode(candidate: Candidate) -> CandidatePatch {
    let strategy = match candidate.strategy {
        Strategy::Template => PatchStrategy::Template,
        Strategy::PartialRevert => PatchStrategy::PartialRevert,
        Strategy::FullRevert => PatchStrategy::FullRevert,
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
