//! The gRPC edge of the safety-gate service: decode, call the domain, encode. Nothing else.

use std::path::PathBuf;
use std::sync::Arc;

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::safety_gate_server::SafetyGate;
use selfheal_proto::v1::{EvaluateRequest, EvaluateResponse};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::gate::Gate;
use crate::model::{
    Candidate, Check, CheckStatus, Decision, Evaluated, Evaluation, Factor, Outcome, ReplayRequest,
    Strategy, Verdict,
};

/// Implements `selfheal.v1.SafetyGate`.
#[derive(Debug)]
pub(crate) struct SafetyGateApi {
    gate: Arc<Gate>,
    tracker: tokio_util::task::TaskTracker,
}

impl SafetyGateApi {
    pub(crate) fn new(gate: Arc<Gate>, tracker: tokio_util::task::TaskTracker) -> Self {
        Self { gate, tracker }
    }
}

#[tonic::async_trait]
impl SafetyGate for SafetyGateApi {
    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        let evaluation = Evaluation::try_from(request.into_inner())?;
        // The evaluation runs in a task the service owns: a client that goes away does not
        // leave a half-built worktree behind, and shutdown waits for it.
        let gate = Arc::clone(&self.gate);
        let task = self
            .tracker
            .spawn(async move { gate.evaluate(evaluation).await });
        let evaluated = task
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "evaluation task failed");
                Status::internal("internal error")
            })?
            .map_err(Status::from)?;
        Ok(Response::new(evaluated.into()))
    }
}

impl TryFrom<EvaluateRequest> for Evaluation {
    type Error = Error;

    fn try_from(request: EvaluateRequest) -> Result<Self, Error> {
        let source = request.source.ok_or_else(|| Error::InvalidArgument {
            field: "source".into(),
            reason: "missing".into(),
        })?;
        Ok(Self {
            incident_id: request.incident_id,
            service: request.service,
            repository: PathBuf::from(source.repository),
            commit: source.commit,
            candidates: request
                .candidates
                .into_iter()
                .map(Candidate::from)
                .collect(),
            failing: request
                .failing_requests
                .into_iter()
                .map(ReplayRequest::from)
                .collect(),
            passing: request
                .passing_requests
                .into_iter()
                .map(ReplayRequest::from)
                .collect(),
            criticality: request.service_criticality,
            dependents: request.dependents,
        })
    }
}

impl From<pb::CandidatePatch> for Candidate {
    fn from(c: pb::CandidatePatch) -> Self {
        let strategy = match c.strategy() {
            pb::PatchStrategy::Template => Strategy::Template,
            pb::PatchStrategy::PartialRevert => Strategy::PartialRevert,
            pb::PatchStrategy::FullRevert => Strategy::FullRevert,
            pb::PatchStrategy::Mutation => Strategy::Mutation,
            pb::PatchStrategy::Llm => Strategy::Llm,
            pb::PatchStrategy::Unspecified => Strategy::Unspecified,
        };
        Self {
            id: c.id,
            strategy,
            diff: c.diff,
            rationale: c.rationale,
            confidence: c.confidence,
            template: c.template,
        }
    }
}

impl From<pb::ReplayRequest> for ReplayRequest {
    fn from(r: pb::ReplayRequest) -> Self {
        let mut headers: Vec<(String, String)> = r.headers.into_iter().collect();
        headers.sort();
        Self {
            method: r.method,
            path: r.path,
            headers,
            body: r.body,
            observed_status: r.observed_status,
        }
    }
}

impl From<Evaluated> for EvaluateResponse {
    fn from(e: Evaluated) -> Self {
        Self {
            verdicts: e.verdicts.into_iter().map(pb::GateVerdict::from).collect(),
            selected_candidate_id: e.selected.unwrap_or_default(),
            decision: Some(e.decision.into()),
            outcome: outcome(e.outcome) as i32,
            recommended_candidate_id: e.recommended.unwrap_or_default(),
        }
    }
}

fn outcome(o: Outcome) -> pb::GateOutcome {
    match o {
        Outcome::Approve => pb::GateOutcome::Approve,
        Outcome::Reject => pb::GateOutcome::Reject,
        Outcome::NeedsHuman => pb::GateOutcome::NeedsHuman,
    }
}

impl From<Verdict> for pb::GateVerdict {
    fn from(v: Verdict) -> Self {
        Self {
            candidate_id: v.candidate_id,
            outcome: outcome(v.outcome) as i32,
            risk_score: v.risk,
            factors: v
                .factors
                .iter()
                .map(|f| pb::RiskFactor {
                    name: f.name.into(),
                    weight: f.weight,
                    value: f.value,
                    explanation: f.explanation.clone(),
                })
                .collect(),
            checks: v.checks.into_iter().map(pb::GateCheck::from).collect(),
            decision: Some(v.decision.into()),
            warnings: v.warnings,
            behaviour_changes: v.behaviour_changes,
        }
    }
}

impl From<Check> for pb::GateCheck {
    fn from(c: Check) -> Self {
        Self {
            name: c.name.into(),
            status: match c.status {
                CheckStatus::Passed => pb::CheckStatus::Passed,
                CheckStatus::Failed => pb::CheckStatus::Failed,
                CheckStatus::Skipped => pb::CheckStatus::Skipped,
            } as i32,
            detail: c.detail,
            duration: prost_types::Duration::try_from(c.duration).ok(),
            log_tail: c.log_tail,
        }
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        Self {
            id: d.id,
            kind: pb::DecisionKind::SafetyGate as i32,
            subject: d.subject,
            inputs: d
                .inputs
                .into_iter()
                .map(|i| pb::DecisionInput {
                    name: i.name,
                    value: i.value,
                    note: i.note,
                })
                .collect(),
            factors: d.factors.iter().map(decision_factor).collect(),
            constraints: d.constraints,
            alternatives: d
                .alternatives
                .into_iter()
                .map(|a| pb::DecisionAlternative {
                    option: a.option,
                    why_not: a.why_not,
                    score: a.score,
                })
                .collect(),
            outcome: d.outcome,
            reasoning: d.reasoning,
            confidence: d.confidence,
            decided_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        }
    }
}

fn decision_factor(f: &Factor) -> pb::DecisionFactor {
    pb::DecisionFactor {
        name: f.name.into(),
        weight: f.weight,
        score: f.value,
        explanation: f.explanation.clone(),
    }
}
