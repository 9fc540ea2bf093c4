//! `selfheal incidents`: the sagas the orchestrator runs, as tables and timelines.

use std::time::{Duration, SystemTime};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use serde::Serialize;

use crate::demo::saga_state;

/// Errors from asking the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum IncidentsError {
    #[error("invalid orchestrator address {address:?}: {message}")]
    Address { address: String, message: String },
    #[error(
        "cannot reach the orchestrator at {address}: {message}\nhint: start the mesh with `selfheal up`, or pass --orchestrator"
    )]
    Unreachable { address: String, message: String },
    #[error("no saga or incident {0:?}\nhint: `selfheal incidents list` shows the known ones")]
    NotFound(String),
    #[error("the orchestrator refused: {0}")]
    Refused(String),
}

/// One saga, flattened for tables and JSON.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SagaView {
    pub id: String,
    pub service: String,
    pub state: String,
    pub incidents: Vec<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub fencing_token: u64,
    pub outcome: String,
    pub steps: Vec<StepView>,
    pub decisions: Vec<DecisionView>,
}

/// One step of a saga.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepView {
    pub name: String,
    pub status: String,
    pub attempt: u32,
    pub started_at: Option<String>,
    pub duration_seconds: f64,
    pub summary: String,
    pub error: String,
    pub fencing_token: u64,
}

/// One decision of a saga.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DecisionView {
    pub kind: String,
    pub subject: String,
    pub outcome: String,
    pub confidence: f64,
    pub reasoning: String,
}

type Client = OrchestratorClient<selfheal_telemetry::TracedChannel>;

fn client(address: &str, timeout: Duration) -> Result<Client, IncidentsError> {
    selfheal_telemetry::connect_lazy(address, timeout)
        .map(OrchestratorClient::new)
        .map_err(|error| IncidentsError::Address {
            address: address.to_owned(),
            message: error.to_string(),
        })
}

fn status_error(address: &str, id: &str) -> impl Fn(tonic::Status) -> IncidentsError {
    let address = address.to_owned();
    let id = id.to_owned();
    move |status| match status.code() {
        tonic::Code::NotFound => IncidentsError::NotFound(id.clone()),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            IncidentsError::Unreachable {
                address: address.clone(),
                message: status.message().to_owned(),
            }
        }
        _ => IncidentsError::Refused(format!("{}: {}", status.code(), status.message())),
    }
}

/// Sagas of `service` (all when empty) in `state` (all when `None`), newest first.
pub async fn list(
    address: &str,
    service: &str,
    state: Option<pb::SagaState>,
    limit: u32,
    timeout: Duration,
) -> Result<Vec<SagaView>, IncidentsError> {
    let mut client = client(address, timeout)?;
    let mut request = tonic::Request::new(pb::ListSagasRequest {
        service: service.to_owned(),
        state: state.map_or(0, |s| s as i32),
        limit,
    });
    request.set_timeout(timeout);
    let sagas = client
        .list_sagas(request)
        .await
        .map_err(status_error(address, ""))?
        .into_inner()
        .sagas;
    Ok(sagas.iter().map(view).collect())
}

/// One saga, by saga id or incident id.
pub async fn show(address: &str, id: &str, timeout: Duration) -> Result<SagaView, IncidentsError> {
    let mut client = client(address, timeout)?;
    let mut request = tonic::Request::new(pb::GetSagaRequest { id: id.to_owned() });
    request.set_timeout(timeout);
    client
        .get_saga(request)
        .await
        .map_err(status_error(address, id))?
        .into_inner()
        .saga
        .map(|saga| view(&saga))
        .ok_or_else(|| IncidentsError::NotFound(id.to_owned()))
}

/// Lets a paused saga continue, or acknowledges an escalation; returns the new state.
pub async fn approve(
    address: &str,
    saga_id: &str,
    approver: &str,
    comment: &str,
    timeout: Duration,
) -> Result<String, IncidentsError> {
    let mut client = client(address, timeout)?;
    let mut request = tonic::Request::new(pb::ApproveRequest {
        saga_id: saga_id.to_owned(),
        approver: approver.to_owned(),
        comment: comment.to_owned(),
    });
    request.set_timeout(timeout);
    let state = client
        .approve(request)
        .await
        .map_err(status_error(address, saga_id))?
        .into_inner()
        .state;
    Ok(saga_state(state))
}

/// Stops a saga and runs its compensations; returns the new state.
pub async fn abort(
    address: &str,
    saga_id: &str,
    actor: &str,
    reason: &str,
    timeout: Duration,
) -> Result<String, IncidentsError> {
    let mut client = client(address, timeout)?;
    let mut request = tonic::Request::new(pb::AbortRequest {
        saga_id: saga_id.to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    });
    request.set_timeout(timeout);
    let state = client
        .abort(request)
        .await
        .map_err(status_error(address, saga_id))?
        .into_inner()
        .state;
    Ok(saga_state(state))
}

fn time(at: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    at.and_then(|t| SystemTime::try_from(*t).ok())
}

fn rfc3339(at: Option<SystemTime>) -> Option<String> {
    at.map(|t| humantime::format_rfc3339_millis(t).to_string())
}

fn view(saga: &pb::Saga) -> SagaView {
    let started = time(saga.started_at.as_ref());
    let finished = time(saga.finished_at.as_ref());
    let duration_seconds = match (started, finished) {
        (Some(start), Some(end)) => end.duration_since(start).ok().map(|d| d.as_secs_f64()),
        (Some(start), None) => SystemTime::now()
            .duration_since(start)
            .ok()
            .map(|d| d.as_secs_f64()),
        _ => None,
    };
    SagaView {
        id: saga.id.clone(),
        service: saga.service.clone(),
        state: saga_state(saga.state),
        incidents: saga.incident_ids.clone(),
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        duration_seconds,
        fencing_token: saga.fencing_token,
        outcome: saga.outcome.clone(),
        steps: saga
            .steps
            .iter()
            .map(|step| StepView {
                name: step.name.clone(),
                status: pb::StepStatus::try_from(step.status)
                    .map(|s| {
                        s.as_str_name()
                            .trim_start_matches("STEP_STATUS_")
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_else(|_| "unknown".into()),
                attempt: step.attempt,
                started_at: rfc3339(time(step.started_at.as_ref())),
                duration_seconds: step
                    .duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default()
                    .as_secs_f64(),
                summary: step.summary.clone(),
                error: step.error.clone(),
                fencing_token: step.fencing_token,
            })
            .collect(),
        decisions: saga
            .decisions
            .iter()
            .map(|d| DecisionView {
                kind: pb::DecisionKind::try_from(d.kind)
                    .map(|k| {
                        k.as_str_name()
                            .trim_start_matches("DECISION_KIND_")
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_else(|_| "unknown".into()),
                subject: d.subject.clone(),
                outcome: d.outcome.clone(),
                confidence: d.confidence,
                reasoning: d.reasoning.clone(),
            })
            .collect(),
    }
}

/// The list as a table.
pub fn render_list(sagas: &[SagaView]) -> String {
    if sagas.is_empty() {
        return "no sagas yet".to_owned();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "saga",
        "service",
        "state",
        "incidents",
        "started",
        "duration",
        "outcome",
    ]);
    for saga in sagas {
        table.add_row([
            saga.id.clone(),
            saga.service.clone(),
            saga.state.clone(),
            saga.incidents.join(", "),
            saga.started_at.clone().unwrap_or_default(),
            saga.duration_seconds
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_default(),
            saga.outcome.clone(),
        ]);
    }
    table.to_string()
}

/// One saga as a header, a step timeline and its decisions.
pub fn render_saga(saga: &SagaView) -> String {
    let mut out = format!(
        "saga {} · {} · {}\nincidents: {}\nstarted {} · {} · fencing token {}\n",
        saga.id,
        saga.service,
        saga.state,
        saga.incidents.join(", "),
        saga.started_at.as_deref().unwrap_or("-"),
        saga.duration_seconds
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "-".into()),
        saga.fencing_token,
    );
    if !saga.outcome.is_empty() {
        out.push_str(&format!("outcome: {}\n", saga.outcome));
    }
    let mut steps = Table::new();
    steps
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["step", "status", "attempt", "duration", "token", "summary"]);
    for step in &saga.steps {
        let summary = if step.error.is_empty() {
            step.summary.clone()
        } else {
            format!("{} (error: {})", step.summary, step.error)
        };
        steps.add_row([
            step.name.clone(),
            step.status.clone(),
            step.attempt.to_string(),
            format!("{:.2} s", step.duration_seconds),
            step.fencing_token.to_string(),
            summary,
        ]);
    }
    out.push_str(&steps.to_string());
    out.push('\n');
    if !saga.decisions.is_empty() {
        let mut decisions = Table::new();
        decisions.load_preset(UTF8_FULL_CONDENSED).set_header([
            "decision",
            "subject",
            "outcome",
            "confidence",
        ]);
        for d in &saga.decisions {
            decisions.add_row([
                d.kind.clone(),
                d.subject.clone(),
                d.outcome.clone(),
                format!("{:.2}", d.confidence),
            ]);
        }
        out.push_str(&decisions.to_string());
        out.push('\n');
        out.push_str("(`selfheal explain <incident>` prints every decision in full)\n");
    }
    out
}

/// Parses a state name as typed by a person (`resolved`, `rolled-back`, `AWAITING_APPROVAL`).
pub fn parse_state(text: &str) -> Result<pb::SagaState, String> {
    let wanted = format!(
        "SAGA_STATE_{}",
        text.trim().replace('-', "_").to_ascii_uppercase()
    );
    pb::SagaState::from_str_name(&wanted)
        .filter(|s| *s != pb::SagaState::Unspecified)
        .ok_or_else(|| {
            format!(
                "unknown state {text:?}; one of: detected, locked, analyzing, planning, patching, \
gating, deploying, verifying, awaiting_approval, resolved, rolled_back, escalated, aborted"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_the_way_people_type_them() {
        assert_eq!(parse_state("resolved"), Ok(pb::SagaState::Resolved));
        assert_eq!(parse_state("rolled-back"), Ok(pb::SagaState::RolledBack));
        assert_eq!(
            parse_state("AWAITING_APPROVAL"),
            Ok(pb::SagaState::AwaitingApproval)
        );
        assert!(parse_state("unspecified").is_err());
        assert!(parse_state("healed").unwrap_err().contains("one of"));
    }

    #[test]
    fn a_saga_renders_its_steps_and_decisions() {
        let saga = pb::Saga {
            id: "saga-1".into(),
            service: "payment-service".into(),
            state: pb::SagaState::Resolved as i32,
            incident_ids: vec!["inc-1".into()],
            steps: vec![pb::SagaStep {
                name: "analyze".into(),
                status: pb::StepStatus::Succeeded as i32,
                attempt: 1,
                summary: "payment-service code defect".into(),
                ..Default::default()
            }],
            decisions: vec![pb::Decision {
                kind: pb::DecisionKind::RootCause as i32,
                subject: "inc-1".into(),
                outcome: "code defect".into(),
                confidence: 0.9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_saga(&view(&saga));
        assert!(
            text.contains("saga-1 · payment-service · resolved"),
            "{text}"
        );
        assert!(
            text.contains("analyze") && text.contains("succeeded"),
            "{text}"
        );
        assert!(
            text.contains("root_cause") && text.contains("0.90"),
            "{text}"
        );
        assert_eq!(render_list(&[]), "no sagas yet");
    }
}
