//! The gate's domain types. `grpc.rs` converts the protobuf messages to and from these, so the
//! gate itself never sees prost or tonic.

use std::path::PathBuf;
use std::time::Duration;

/// How a candidate was produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    Template,
    PartialRevert,
    FullRevert,
    Mutation,
    Llm,
    Unspecified,
}

impl Strategy {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Strategy::Template => "template",
            Strategy::PartialRevert => "partial revert",
            Strategy::FullRevert => "full revert",
            Strategy::Mutation => "mutation",
            Strategy::Llm => "llm",
            Strategy::Unspecified => "unspecified",
        }
    }
}

/// One proposed fix.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    pub(crate) strategy: Strategy,
    pub(crate) diff: String,
    pub(crate) rationale: String,
    pub(crate) confidence: f64,
    pub(crate) template: String,
}

/// A captured request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) observed_status: u32,
}

impl ReplayRequest {
    pub(crate) fn label(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(80).collect();
        if body.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {} {}", self.method, self.path, body)
        }
    }
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub(crate) struct Evaluation {
    pub(crate) incident_id: String,
    pub(crate) service: String,
    pub(crate) repository: PathBuf,
    pub(crate) commit: String,
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) failing: Vec<ReplayRequest>,
    pub(crate) passing: Vec<ReplayRequest>,
    pub(crate) criticality: f64,
    pub(crate) dependents: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CheckStatus {
    Passed,
    Failed,
    Skipped,
}

/// One stage of the gate for one candidate.
#[derive(Clone, Debug)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: CheckStatus,
    pub(crate) detail: String,
    pub(crate) duration: Duration,
    pub(crate) log_tail: String,
}

/// A named, weighted contribution to a candidate's risk.
#[derive(Clone, Debug)]
pub(crate) struct Factor {
    pub(crate) name: &'static str,
    pub(crate) weight: f64,
    /// 0..1 before weighting.
    pub(crate) value: f64,
    pub(crate) explanation: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Approve,
    Reject,
    NeedsHuman,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Approve => "approve",
            Outcome::Reject => "reject",
            Outcome::NeedsHuman => "needs a human",
        }
    }
}

/// An input a decision looked at.
#[derive(Clone, Debug)]
pub(crate) struct Input {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) note: String,
}

/// An option not taken.
#[derive(Clone, Debug)]
pub(crate) struct Alternative {
    pub(crate) option: String,
    pub(crate) why_not: String,
    pub(crate) score: f64,
}

/// Why the gate decided what it did.
#[derive(Clone, Debug)]
pub(crate) struct Decision {
    pub(crate) id: String,
    pub(crate) subject: String,
    pub(crate) inputs: Vec<Input>,
    pub(crate) factors: Vec<Factor>,
    pub(crate) constraints: Vec<String>,
    pub(crate) alternatives: Vec<Alternative>,
    pub(crate) outcome: String,
    pub(crate) reasoning: String,
    pub(crate) confidence: f64,
}

/// The gate's answer for one candidate.
#[derive(Clone, Debug)]
pub(crate) struct Verdict {
    pub(crate) candidate_id: String,
    pub(crate) strategy: Strategy,
    pub(crate) outcome: Outcome,
    pub(crate) risk: f64,
    pub(crate) factors: Vec<Factor>,
    pub(crate) checks: Vec<Check>,
    pub(crate) decision: Decision,
    pub(crate) warnings: Vec<String>,
    /// Passing requests whose answer the candidate changed, described.
    pub(crate) behaviour_changes: Vec<String>,
}

impl Verdict {
    /// The first failed check, if any.
    pub(crate) fn failed_check(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.status == CheckStatus::Failed)
    }
}

/// The gate's answer for a whole request.
#[derive(Clone, Debug)]
pub(crate) struct Evaluated {
    pub(crate) verdicts: Vec<Verdict>,
    pub(crate) selected: Option<String>,
    /// The candidate a human is asked to approve when none is approved outright.
    pub(crate) recommended: Option<String>,
    pub(crate) outcome: Outcome,
    pub(crate) decision: Decision,
}
