//! Rebuilding sagas from the journal at start-up: finished ones become history (and an
//! unacknowledged escalation pauses its service again); unfinished ones continue from their last
//! finished step, re-running a started-but-unfinished step with the same idempotency key, or
//! compensate when a stop was journaled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use selfheal_proto::v1::{AuditRecord, Incident, RecordKind};
use serde_json::Value;

use super::journal::{decode, from_struct};
use super::model::state_from_name;
use super::runner::Resume;
use super::{Inner, SagaHandle, StepStatus, StepView};
use crate::saga::SagaState;

/// Reads the journal (retrying until it answers or the engine shuts down) and rebuilds sagas.
pub(crate) async fn recover(inner: &Arc<Inner>) {
    let mut backoff = Duration::from_millis(200);
    let records = loop {
        let read = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            read = inner.journal.read_all() => read,
        };
        match read {
            Ok(records) => break records,
            Err(error) => {
                tracing::warn!(%error, ?backoff, "cannot read the saga journal yet; retrying");
            }
        }
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    };
    let mut order: Vec<String> = Vec::new();
    let mut by_saga: HashMap<String, Vec<AuditRecord>> = HashMap::new();
    for record in records {
        if !by_saga.contains_key(&record.saga_id) {
            order.push(record.saga_id.clone());
        }
        by_saga
            .entry(record.saga_id.clone())
            .or_default()
            .push(record);
    }
    let mut resumed = 0;
    for saga_id in order {
        let records = by_saga.remove(&saga_id).unwrap_or_default();
        if saga_id == super::HALT_ID {
            // Acknowledgements of halts: a restart verifies the chain afresh.
            continue;
        }
        let Some(rebuilt) = rebuild(&saga_id, &records) else {
            tracing::warn!(%saga_id, "journal records of a saga without its incident; skipped");
            continue;
        };
        let saga = Arc::new(rebuilt.handle);
        let state = saga.state();
        let mut registry = inner.registry();
        inner.insert(&mut registry, Arc::clone(&saga));
        if state.is_final() {
            if state.pauses_automation() && !rebuilt.acknowledged {
                registry
                    .blocked
                    .insert(saga.service.clone(), saga.id.clone());
            } else if rebuilt.acknowledged && registry.blocked.contains_key(&saga.service) {
                registry.blocked.remove(&saga.service);
            }
            continue;
        }
        registry
            .running
            .insert(saga.service.clone(), saga.id.clone());
        drop(registry);
        if inner.chain.halted().is_some() {
            tracing::warn!(%saga_id, state = ?state, "automation halted: saga kept until the halt is acknowledged");
            saga.event(
                "",
                None,
                "not resumed: automation is halted until the broken audit chain is acknowledged",
                None,
            );
            inner.chain.defer(saga, rebuilt.resume);
            continue;
        }
        resumed += 1;
        tracing::info!(%saga_id, state = ?state, "resuming saga from the journal");
        saga.event("", None, "resumed from the journal after a restart", None);
        inner.spawn_saga(saga, rebuilt.resume);
    }
    tracing::info!(resumed, "saga journal read");
}

struct Rebuilt {
    handle: SagaHandle,
    resume: Resume,
    acknowledged: bool,
}

fn time_of(record: &AuditRecord) -> SystemTime {
    record
        .time
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now)
}

fn text<'a>(payload: &'a Value, field: &str) -> &'a str {
    payload
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// One saga from its records, oldest first.
fn rebuild(saga_id: &str, records: &[AuditRecord]) -> Option<Rebuilt> {
    let payloads: Vec<Value> = records
        .iter()
        .map(|r| r.payload.as_ref().map(from_struct).unwrap_or(Value::Null))
        .collect();
    let (first, first_payload) = records
        .iter()
        .zip(&payloads)
        .find(|(r, p)| r.kind() == RecordKind::SagaState && text(p, "state") == "DETECTED")?;
    let incident: Incident = decode(first_payload, "incident")?;
    let handle = SagaHandle::new(saga_id.to_owned(), incident, time_of(first));
    let mut resume = Resume::default();
    resume.visited.insert(SagaState::Detected);
    let mut acknowledged = false;
    for (record, payload) in records.iter().zip(&payloads) {
        let step = record.step.clone();
        let at = time_of(record);
        handle.update(|data| {
            data.view.fencing_token = data.view.fencing_token.max(record.fencing_token);
        });
        match record.kind() {
            RecordKind::SagaState => {
                let Some(state) = state_from_name(text(payload, "state")) else {
                    continue;
                };
                resume.visited.insert(state);
                let reason = text(payload, "reason").to_owned();
                handle.update(|data| {
                    data.view.state = state;
                    if state.is_final() {
                        data.view.outcome = reason.clone();
                        data.view.finished_at = Some(at);
                    }
                });
                handle.event(
                    "",
                    None,
                    format!("{}: {reason}", text(payload, "state")),
                    None,
                );
            }
            RecordKind::StepStarted => {
                resume.started.insert(step.clone());
                handle.update(|data| {
                    data.view.steps.retain(|s| s.name != step);
                    data.view.steps.push(StepView {
                        name: step.clone(),
                        status: StepStatus::Running,
                        attempt: 0,
                        started_at: at,
                        duration: None,
                        summary: String::new(),
                        error: String::new(),
                        fencing_token: record.fencing_token,
                    });
                });
                handle.event(
                    &step,
                    Some(StepStatus::Running),
                    format!("{step} started"),
                    None,
                );
            }
            RecordKind::StepFinished => {
                let summary = text(payload, "summary").to_owned();
                let duration = payload
                    .get("duration_ms")
                    .and_then(Value::as_f64)
                    .unwrap_or_default();
                let attempts = payload.get("attempts").and_then(Value::as_u64).unwrap_or(1);
                handle.update(|data| {
                    if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                        view.status = StepStatus::Succeeded;
                        view.summary = summary.clone();
                        view.attempt = u32::try_from(attempts).unwrap_or(u32::MAX);
                        view.duration = Some(Duration::from_secs_f64(duration.max(0.0) / 1000.0));
                    }
                });
                handle.event(&step, Some(StepStatus::Succeeded), summary, None);
                resume.finished.insert(step, payload.clone());
            }
            RecordKind::StepFailed => {
                let error = text(payload, "error").to_owned();
                handle.update(|data| {
                    if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                        view.status = StepStatus::Failed;
                        view.error = error.clone();
                    }
                });
                handle.event(&step, Some(StepStatus::Failed), error, None);
            }
            RecordKind::Compensation => {
                resume.compensated.insert(step.clone());
                let ok = payload.get("ok").and_then(Value::as_bool).unwrap_or(false);
                if ok {
                    handle.update(|data| {
                        if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                            view.status = StepStatus::Compensated;
                        }
                    });
                }
                handle.event(
                    &step,
                    Some(StepStatus::Compensated),
                    format!("compensated {step}"),
                    None,
                );
            }
            RecordKind::Decision => {
                if let Some(decision) = record.decision.clone() {
                    handle.update(|data| data.view.decisions.push(decision.clone()));
                    handle.event(
                        &step,
                        None,
                        format!("decision: {}", decision.outcome),
                        Some(decision),
                    );
                }
            }
            RecordKind::Note => {
                if let Some(joined) = payload.get("joined_incident").and_then(Value::as_str) {
                    let joined = joined.to_owned();
                    handle.update(|data| {
                        if !data.view.incident_ids.contains(&joined) {
                            data.view.incident_ids.push(joined.clone());
                        }
                    });
                }
                if payload.get("approved_by").is_some() {
                    resume.approved = true;
                }
                if payload.get("acknowledged_by").is_some() {
                    acknowledged = true;
                }
                if let Some(reason) = payload.get("stopping").and_then(Value::as_str) {
                    resume.stopping = Some(reason.to_owned());
                }
            }
            _ => {}
        }
    }
    Some(Rebuilt {
        handle,
        resume,
        acknowledged,
    })
}
