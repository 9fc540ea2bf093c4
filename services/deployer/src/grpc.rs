//! The gRPC edge of the deployer service: decode, call the domain, encode. Nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::deployer_server::Deployer as DeployerRpc;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};

use crate::config::CanaryDefaults;
use crate::deployer::Deployer;
use crate::error::Error;
use crate::model::{
    CanaryPlan, Decision, DecisionKind, DeployRequest, FencingToken, LogLine, ReplaySample,
    RollbackRequest, RolloutEvent, RolloutEventKind, SourceRef, Strategy, VerifyRequest,
    VersionStatus,
};

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Default Verify window when the request has none.
const DEFAULT_VERIFY_WINDOW: Duration = Duration::from_secs(10);
/// The longest Verify window accepted.
const MAX_VERIFY_WINDOW: Duration = Duration::from_secs(600);
/// Samples returned when FailingRequests gives no limit.
const DEFAULT_SAMPLE_LIMIT: usize = 20;

/// Implements `selfheal.v1.Deployer`.
#[derive(Debug)]
pub(crate) struct DeployerApi {
    deployer: Arc<Deployer>,
}

impl DeployerApi {
    pub(crate) fn new(deployer: Arc<Deployer>) -> Self {
        Self { deployer }
    }
}

fn missing(field: &'static str) -> Error {
    Error::InvalidArgument {
        field,
        reason: "missing".into(),
    }
}

fn non_empty(value: String, field: &'static str) -> Result<String, Error> {
    if value.trim().is_empty() {
        Err(missing(field))
    } else {
        Ok(value)
    }
}

fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn duration(
    value: Option<prost_types::Duration>,
    field: &'static str,
) -> Result<Option<Duration>, Error> {
    value
        .map(|d| {
            Duration::try_from(d).map_err(|e| Error::InvalidArgument {
                field,
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// A decoded Deploy whose plan fields may still be unset (zero in proto3).
struct DeployCall {
    request: DeployRequest,
}

impl TryFrom<pb::DeployRequest> for DeployCall {
    type Error = Error;

    fn try_from(value: pb::DeployRequest) -> Result<Self, Error> {
        let strategy = match value.strategy() {
            pb::RolloutStrategy::Direct => Strategy::Direct,
            pb::RolloutStrategy::Canary => Strategy::Canary,
            pb::RolloutStrategy::Unspecified => return Err(missing("strategy")),
        };
        let source = value.source.ok_or_else(|| missing("source"))?;
        let plan = value.plan.unwrap_or_default();
        Ok(Self {
            request: DeployRequest {
                service: non_empty(value.service, "service")?,
                source: SourceRef {
                    repository: PathBuf::from(non_empty(source.repository, "source.repository")?),
                    commit: non_empty(source.commit, "source.commit")?,
                },
                strategy,
                plan: CanaryPlan {
                    steps: plan.steps,
                    analysis_window: duration(plan.analysis_window, "plan.analysis_window")?
                        .unwrap_or_default(),
                    min_requests: plan.min_requests,
                    max_error_rate: plan.max_error_rate,
                    failure_limit: plan.failure_limit,
                },
                fencing_token: FencingToken(value.fencing_token),
                idempotency_key: optional(value.idempotency_key),
                patch: optional(value.patch),
            },
        })
    }
}

impl DeployCall {
    /// Fills every unset plan field from the configured defaults.
    fn with_defaults(mut self, defaults: &CanaryDefaults) -> DeployRequest {
        let plan = &mut self.request.plan;
        if plan.steps.is_empty() {
            plan.steps.clone_from(&defaults.steps);
        }
        if plan.analysis_window.is_zero() {
            plan.analysis_window = defaults.analysis_window;
        }
        if plan.min_requests == 0 {
            plan.min_requests = defaults.min_requests;
        }
        if plan.max_error_rate == 0.0 {
            plan.max_error_rate = defaults.max_error_rate;
        }
        if plan.failure_limit == 0 {
            plan.failure_limit = defaults.failure_limit;
        }
        self.request
    }
}

impl TryFrom<pb::RollbackRequest> for RollbackRequest {
    type Error = Error;

    fn try_from(value: pb::RollbackRequest) -> Result<Self, Error> {
        Ok(Self {
            service: non_empty(value.service, "service")?,
            fencing_token: FencingToken(value.fencing_token),
            reason: value.reason,
            idempotency_key: optional(value.idempotency_key),
        })
    }
}

impl TryFrom<pb::VerifyRequest> for VerifyRequest {
    type Error = Error;

    fn try_from(value: pb::VerifyRequest) -> Result<Self, Error> {
        let window = duration(value.window, "window")?
            .filter(|w| !w.is_zero())
            .unwrap_or(DEFAULT_VERIFY_WINDOW);
        if window > MAX_VERIFY_WINDOW {
            return Err(Error::InvalidArgument {
                field: "window",
                reason: format!("must be at most {MAX_VERIFY_WINDOW:?}"),
            });
        }
        if !(0.0..=1.0).contains(&value.max_error_rate) {
            return Err(Error::InvalidArgument {
                field: "max_error_rate",
                reason: "must be within 0..=1".into(),
            });
        }
        Ok(Self {
            service: non_empty(value.service, "service")?,
            window,
            min_requests: value.min_requests,
            max_error_rate: value.max_error_rate,
        })
    }
}

impl From<DecisionKind> for pb::DecisionKind {
    fn from(kind: DecisionKind) -> Self {
        match kind {
            DecisionKind::CanaryAnalysis => Self::CanaryAnalysis,
            DecisionKind::Promotion => Self::Promotion,
            DecisionKind::Rollback => Self::Rollback,
            DecisionKind::Verification => Self::Verification,
        }
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        Self {
            id: d.id,
            kind: pb::DecisionKind::from(d.kind).into(),
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
            factors: d
                .factors
                .into_iter()
                .map(|f| pb::DecisionFactor {
                    name: f.name,
                    weight: f.weight,
                    score: f.score,
                    explanation: f.explanation,
                })
                .collect(),
            constraints: d.constraints,
            alternatives: Vec::new(),
            outcome: d.outcome,
            reasoning: d.reasoning,
            confidence: d.confidence,
            decided_at: Some(d.decided_at.into()),
        }
    }
}

impl From<RolloutEventKind> for pb::RolloutEventKind {
    fn from(kind: RolloutEventKind) -> Self {
        match kind {
            RolloutEventKind::BuildStarted => Self::BuildStarted,
            RolloutEventKind::BuildFinished => Self::BuildFinished,
            RolloutEventKind::Started => Self::Started,
            RolloutEventKind::Healthy => Self::Healthy,
            RolloutEventKind::Step => Self::Step,
            RolloutEventKind::Analysis => Self::Analysis,
            RolloutEventKind::Promoted => Self::Promoted,
            RolloutEventKind::RolledBack => Self::RolledBack,
            RolloutEventKind::Failed => Self::Failed,
        }
    }
}

impl From<RolloutEvent> for pb::RolloutEvent {
    fn from(e: RolloutEvent) -> Self {
        Self {
            kind: pb::RolloutEventKind::from(e.kind).into(),
            at: Some(e.at.into()),
            version: e.version,
            canary_weight: e.canary_weight,
            message: e.message,
            decision: e.decision.map(Into::into),
        }
    }
}

impl From<VersionStatus> for pb::VersionStatus {
    fn from(v: VersionStatus) -> Self {
        Self {
            version: v.version,
            commit: v.commit,
            pid: v.pid,
            address: v.address,
            healthy: v.healthy,
            restarts: v.restarts,
            weight: v.weight,
            requests: v.requests,
            errors: v.errors,
            repository: v.repository,
            deployed_at: v.deployed_at.map(Into::into),
        }
    }
}

impl From<LogLine> for pb::LogsResponse {
    fn from(l: LogLine) -> Self {
        Self {
            version: l.version,
            stream: l.stream.to_owned(),
            at: Some(l.at.into()),
            text: l.text,
        }
    }
}

impl From<ReplaySample> for pb::ReplayRequest {
    fn from(s: ReplaySample) -> Self {
        Self {
            method: s.method,
            path: s.path,
            headers: s.headers.into_iter().collect(),
            body: s.body,
            observed_status: u32::from(s.observed_status),
        }
    }
}

#[tonic::async_trait]
impl DeployerRpc for DeployerApi {
    type DeployStream = BoxStream<pb::DeployResponse>;

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let request = DeployCall::try_from(request.into_inner())?
            .with_defaults(self.deployer.canary_defaults());
        let log = self.deployer.deploy(request).await?;
        let stream = log.stream().map(|item| match item {
            Ok(event) => Ok(pb::DeployResponse {
                event: Some(event.into()),
            }),
            Err(error) => Err(Status::from(&*error)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let request = RollbackRequest::try_from(request.into_inner())?;
        let outcome = self.deployer.rollback(request).await?;
        Ok(Response::new(pb::RollbackResponse {
            stable_version: outcome.stable_version,
            rolled_back: outcome.rolled_back,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let service = optional(request.into_inner().service);
        let services = self.deployer.status(service.as_deref()).await?;
        Ok(Response::new(pb::StatusResponse {
            services: services
                .into_iter()
                .map(|s| pb::ServiceStatus {
                    service: s.service,
                    public_address: s.public_address,
                    stable: s.stable.map(Into::into),
                    canary: s.canary.map(Into::into),
                    previous_stable: s.previous_stable.map(Into::into),
                    highest_fencing_token: s.highest_fencing_token,
                })
                .collect(),
        }))
    }

    type LogsStream = BoxStream<pb::LogsResponse>;

    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let request = request.into_inner();
        let service = non_empty(request.service, "service")?;
        let version = optional(request.version);
        let (kept, live) = self
            .deployer
            .logs(&service, version.as_deref(), request.tail as usize)
            .await?;
        let kept = futures::stream::iter(kept.into_iter().map(|l| Ok(l.into())));
        if !request.follow {
            return Ok(Response::new(Box::pin(kept)));
        }
        let shutdown = self.deployer.shutdown_token();
        let live = BroadcastStream::new(live)
            .filter_map(move |line| {
                let wanted = line
                    .ok()
                    .filter(|l| version.as_deref().is_none_or(|v| l.version == v));
                async move { wanted.map(|l| Ok(l.into())) }
            })
            .take_until(shutdown.cancelled_owned());
        Ok(Response::new(Box::pin(kept.chain(live))))
    }

    async fn failing_requests(
        &self,
        request: Request<pb::FailingRequestsRequest>,
    ) -> Result<Response<pb::FailingRequestsResponse>, Status> {
        let request = request.into_inner();
        let service = non_empty(request.service, "service")?;
        let limit = match request.limit {
            0 => DEFAULT_SAMPLE_LIMIT,
            n => n as usize,
        };
        let (failing, passing) = self.deployer.failing_requests(&service, limit).await?;
        Ok(Response::new(pb::FailingRequestsResponse {
            failing: failing.into_iter().map(Into::into).collect(),
            passing: passing.into_iter().map(Into::into).collect(),
        }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let request = VerifyRequest::try_from(request.into_inner())?;
        let outcome = self.deployer.verify(request).await?;
        Ok(Response::new(pb::VerifyResponse {
            healthy: outcome.healthy,
            error_rate: outcome.error_rate,
            requests: outcome.requests,
            errors: outcome.errors,
            decision: Some(outcome.decision.into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_request() -> pb::DeployRequest {
        pb::DeployRequest {
            service: "payment-service".into(),
            source: Some(pb::SourceRef {
                repository: "/repo".into(),
                commit: "abc".into(),
            }),
            strategy: pb::RolloutStrategy::Canary.into(),
            ..Default::default()
        }
    }

    #[test]
    fn missing_fields_are_invalid_arguments() {
        let mut request = deploy_request();
        request.source = None;
        let status = Status::from(DeployCall::try_from(request).err().unwrap());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("source"), "{status}");

        let mut request = deploy_request();
        request.strategy = 0;
        let status = Status::from(DeployCall::try_from(request).err().unwrap());
        assert!(status.message().contains("strategy"), "{status}");
    }

    #[test]
    fn unset_plan_fields_take_the_defaults() {
        let mut request = deploy_request();
        request.plan = Some(pb::CanaryPlan {
            min_requests: 7,
            ..Default::default()
        });
        let decoded = DeployCall::try_from(request)
            .ok()
            .unwrap()
            .with_defaults(&CanaryDefaults::default());
        assert_eq!(decoded.plan.steps, vec![10, 50, 100]);
        assert_eq!(decoded.plan.min_requests, 7);
        assert_eq!(decoded.plan.failure_limit, 1);
    }
}
