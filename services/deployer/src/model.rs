//! Domain types of the deployer: what is deployed, the events of a rollout, and the decisions
//! that explain each traffic move. Plain Rust; the gRPC edge converts them to and from protobuf.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The fencing token of the lock a caller holds on a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FencingToken(pub u64);

/// How a version replaces the stable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Stable is replaced as soon as the new version is healthy.
    Direct,
    /// Traffic moves in steps, each followed by an analysis of canary against stable.
    Canary,
}

/// The steps and thresholds of a canary rollout.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CanaryPlan {
    /// Canary traffic percentages, increasing, ending at 100.
    pub(crate) steps: Vec<u32>,
    pub(crate) analysis_window: Duration,
    /// Canary requests an analysis needs before it may pass.
    pub(crate) min_requests: u64,
    /// Absolute ceiling on the canary's error rate, 0..1.
    pub(crate) max_error_rate: f64,
    /// Failed analyses tolerated before rollback.
    pub(crate) failure_limit: u32,
}

/// A git repository and revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceRef {
    pub(crate) repository: PathBuf,
    pub(crate) commit: String,
}

/// A validated Deploy request.
#[derive(Clone, Debug)]
pub(crate) struct DeployRequest {
    pub(crate) service: String,
    pub(crate) source: SourceRef,
    pub(crate) strategy: Strategy,
    pub(crate) plan: CanaryPlan,
    pub(crate) fencing_token: FencingToken,
    pub(crate) idempotency_key: Option<String>,
    /// A unified diff applied on top of the commit before building.
    pub(crate) patch: Option<String>,
}

/// A validated Rollback request.
#[derive(Clone, Debug)]
pub(crate) struct RollbackRequest {
    pub(crate) service: String,
    pub(crate) fencing_token: FencingToken,
    pub(crate) reason: String,
    pub(crate) idempotency_key: Option<String>,
}

/// What a Rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RollbackOutcome {
    pub(crate) stable_version: String,
    pub(crate) rolled_back: bool,
}

/// The kinds of rollout events, in the order a successful rollout emits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RolloutEventKind {
    BuildStarted,
    BuildFinished,
    Started,
    Healthy,
    Step,
    Analysis,
    Promoted,
    RolledBack,
    Failed,
}

/// One step of a rollout, streamed to the caller.
#[derive(Clone, Debug)]
pub(crate) struct RolloutEvent {
    pub(crate) kind: RolloutEventKind,
    pub(crate) at: SystemTime,
    pub(crate) version: String,
    pub(crate) canary_weight: u32,
    pub(crate) message: String,
    pub(crate) decision: Option<Decision>,
}

impl RolloutEvent {
    pub(crate) fn new(kind: RolloutEventKind, version: &str, weight: u32, message: String) -> Self {
        Self {
            kind,
            at: SystemTime::now(),
            version: version.to_owned(),
            canary_weight: weight,
            message,
            decision: None,
        }
    }

    pub(crate) fn with_decision(mut self, decision: Decision) -> Self {
        self.decision = Some(decision);
        self
    }
}

/// What kind of choice a [`Decision`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecisionKind {
    CanaryAnalysis,
    Promotion,
    Rollback,
    Verification,
}

/// One input a decision looked at.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecisionInput {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) note: String,
}

/// A weighted factor of a decision; weight and score are 0..1.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DecisionFactor {
    pub(crate) name: String,
    pub(crate) weight: f64,
    pub(crate) score: f64,
    pub(crate) explanation: String,
}

/// Why an automated choice was made.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decision {
    pub(crate) id: String,
    pub(crate) kind: DecisionKind,
    pub(crate) subject: String,
    pub(crate) inputs: Vec<DecisionInput>,
    pub(crate) factors: Vec<DecisionFactor>,
    /// Thresholds the decision was held to.
    pub(crate) constraints: Vec<String>,
    pub(crate) outcome: String,
    pub(crate) reasoning: String,
    /// 0..1
    pub(crate) confidence: f64,
    pub(crate) decided_at: SystemTime,
}

impl Decision {
    pub(crate) fn new(kind: DecisionKind, subject: String) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            subject,
            inputs: Vec::new(),
            factors: Vec::new(),
            constraints: Vec::new(),
            outcome: String::new(),
            reasoning: String::new(),
            confidence: 0.0,
            decided_at: SystemTime::now(),
        }
    }

    pub(crate) fn input(mut self, name: &str, value: impl ToString, note: &str) -> Self {
        self.inputs.push(DecisionInput {
            name: name.to_owned(),
            value: value.to_string(),
            note: note.to_owned(),
        });
        self
    }
}

/// One running (or last run) version of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VersionStatus {
    pub(crate) version: String,
    pub(crate) commit: String,
    pub(crate) pid: u32,
    pub(crate) address: String,
    pub(crate) healthy: bool,
    pub(crate) restarts: u32,
    pub(crate) weight: u32,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// The repository the version was built from.
    pub(crate) repository: String,
    /// When the version started serving; unknown for a retired version restored from cache.
    pub(crate) deployed_at: Option<SystemTime>,
}

/// A service as the deployer runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServiceStatus {
    pub(crate) service: String,
    pub(crate) public_address: String,
    pub(crate) stable: Option<VersionStatus>,
    pub(crate) canary: Option<VersionStatus>,
    /// The stable before the current one: the last known good when the current one is bad.
    pub(crate) previous_stable: Option<VersionStatus>,
    pub(crate) highest_fencing_token: u64,
}

/// One captured line of a process's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) version: String,
    /// `stdout`, `stderr` or `supervisor`.
    pub(crate) stream: &'static str,
    pub(crate) at: SystemTime,
    pub(crate) text: String,
}

/// A request the router saw, kept so it can be replayed against a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplaySample {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Headers minus credentials.
    pub(crate) headers: BTreeMap<String, String>,
    /// The body, capped.
    pub(crate) body: Vec<u8>,
    pub(crate) observed_status: u16,
}

/// A Verify request.
#[derive(Clone, Debug)]
pub(crate) struct VerifyRequest {
    pub(crate) service: String,
    pub(crate) window: Duration,
    pub(crate) min_requests: u64,
    pub(crate) max_error_rate: f64,
}

/// What Verify found.
#[derive(Clone, Debug)]
pub(crate) struct VerifyOutcome {
    pub(crate) healthy: bool,
    pub(crate) error_rate: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) decision: Decision,
}
