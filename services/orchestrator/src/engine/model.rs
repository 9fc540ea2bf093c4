//! What the engine knows about a saga, as plain Rust: its view (state, steps, decisions) and the
//! events a watcher sees. Converted to protobuf at the gRPC edge only.

use std::time::{Duration, SystemTime};

use selfheal_proto::v1::Decision;

use crate::saga::SagaState;

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepStatus {
    Running,
    Succeeded,
    Failed,
    Compensated,
}

/// One step of a saga as people see it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StepView {
    pub(crate) name: String,
    pub(crate) status: StepStatus,
    pub(crate) attempt: u32,
    pub(crate) started_at: SystemTime,
    pub(crate) duration: Option<Duration>,
    pub(crate) summary: String,
    pub(crate) error: String,
    pub(crate) fencing_token: u64,
}

/// A saga as people see it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SagaView {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) state: SagaState,
    /// The incident that started the saga, then those that joined it.
    pub(crate) incident_ids: Vec<String>,
    pub(crate) steps: Vec<StepView>,
    pub(crate) decisions: Vec<Decision>,
    pub(crate) fencing_token: u64,
    pub(crate) started_at: SystemTime,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) outcome: String,
}

/// Something that happened to a saga, in order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EventView {
    pub(crate) saga_id: String,
    pub(crate) at: SystemTime,
    pub(crate) state: SagaState,
    pub(crate) step: String,
    pub(crate) step_status: Option<StepStatus>,
    pub(crate) message: String,
    pub(crate) decision: Option<Decision>,
}

/// The name a state has in the journal and in reports.
pub fn state_name(state: SagaState) -> &'static str {
    match state {
        SagaState::Detected => "DETECTED",
        SagaState::Locked => "LOCKED",
        SagaState::Analyzing => "ANALYZING",
        SagaState::Planning => "PLANNING",
        SagaState::Patching => "PATCHING",
        SagaState::Gating => "GATING",
        SagaState::AwaitingApproval => "AWAITING_APPROVAL",
        SagaState::Deploying => "DEPLOYING",
        SagaState::Verifying => "VERIFYING",
        SagaState::Resolved => "RESOLVED",
        SagaState::RolledBack => "ROLLED_BACK",
        SagaState::Escalated => "ESCALATED",
        SagaState::Aborted => "ABORTED",
    }
}

/// The state named `name` in the journal.
pub fn state_from_name(name: &str) -> Option<SagaState> {
    const ALL: [SagaState; 13] = [
        SagaState::Detected,
        SagaState::Locked,
        SagaState::Analyzing,
        SagaState::Planning,
        SagaState::Patching,
        SagaState::Gating,
        SagaState::AwaitingApproval,
        SagaState::Deploying,
        SagaState::Verifying,
        SagaState::Resolved,
        SagaState::RolledBack,
        SagaState::Escalated,
        SagaState::Aborted,
    ];
    ALL.into_iter().find(|state| state_name(*state) == name)
}
