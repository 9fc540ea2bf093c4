//! The gRPC edge of the audit service: decode, call the domain, encode. Nothing else.
//!
//! The conversions between protobuf and domain types live here too, and the ones a client
//! needs (records and verification results back into domain types, for reports) are public.

use std::collections::BTreeMap;

use prost_types::value::Kind;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_server::Audit;
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::chain::verify::{BreakReason, ChainBreak, VerifyReport};
use crate::chain::{
    ChainHead, Decision, DecisionAlternative, DecisionFactor, DecisionInput, DecisionKind,
    NewRecord, Record, RecordKind, RecordTime,
};
use crate::error::Error;
use crate::log::AuditLog;
use crate::metrics::AuditMetrics;
use crate::store::{Durability, RecordFilter};

/// Most records one Append may carry.
pub(crate) const MAX_APPEND_RECORDS: usize = 10_000;
/// Records a Query returns when it names no limit, and the most it returns.
pub(crate) const DEFAULT_QUERY_LIMIT: usize = 1_000;
pub(crate) const MAX_QUERY_LIMIT: usize = 10_000;

/// Implements `selfheal.v1.Audit`.
#[derive(Debug, Clone)]
pub(crate) struct AuditApi {
    log: AuditLog,
    payload_limit: usize,
    metrics: AuditMetrics,
}

impl AuditApi {
    pub(crate) fn new(log: AuditLog, payload_limit: usize, metrics: AuditMetrics) -> Self {
        Self {
            log,
            payload_limit,
            metrics,
        }
    }
}

#[tonic::async_trait]
impl Audit for AuditApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let request = request.into_inner();
        if request.records.is_empty() {
            return Err(Error::MissingField {
                field: "records".into(),
            }
            .into());
        }
        if request.records.len() > MAX_APPEND_RECORDS {
            return Err(Error::InvalidField {
                field: "records".into(),
                reason: format!(
                    "{} records is more than {MAX_APPEND_RECORDS} in one request",
                    request.records.len()
                ),
            }
            .into());
        }
        let records = request
            .records
            .into_iter()
            .enumerate()
            .map(|(index, record)| new_record_from_proto(index, record, self.payload_limit))
            .collect::<Result<Vec<_>, Error>>()?;
        let appended = self.log.append(records).await.map_err(Error::from)?;
        let durability = match appended.durability {
            Durability::Stored => "stored",
            Durability::Spooled => "spooled",
        };
        self.metrics.appended(
            durability,
            appended.records.len(),
            self.log.head().sequence,
            self.log.spooled(),
        );
        Ok(Response::new(pb::AppendResponse {
            records: appended.records.iter().map(record_to_proto).collect(),
            durability: match appended.durability {
                Durability::Stored => pb::Durability::Stored,
                Durability::Spooled => pb::Durability::Spooled,
            }
            .into(),
        }))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let request = request.into_inner();
        check_id("saga_id", &request.saga_id)?;
        check_id("incident_id", &request.incident_id)?;
        let filter = match (request.saga_id.is_empty(), request.incident_id.is_empty()) {
            (true, true) => None,
            (false, true) => Some(RecordFilter::Saga(request.saga_id)),
            (true, false) => Some(RecordFilter::Incident(request.incident_id)),
            (false, false) => {
                return Err(Error::InvalidField {
                    field: "incident_id".into(),
                    reason: "give saga_id or incident_id, not both".into(),
                }
                .into());
            }
        };
        let limit = match request.limit as usize {
            0 => DEFAULT_QUERY_LIMIT,
            n => n.min(MAX_QUERY_LIMIT),
        };
        let records = self
            .log
            .query(filter.as_ref(), request.from_sequence, limit)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::QueryResponse {
            records: records.iter().map(record_to_proto).collect(),
        }))
    }

    async fn verify(
        &self,
        _request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let report = self.log.verify().await.map_err(Error::from)?;
        self.metrics.verified(report.is_ok());
        self.metrics
            .observe(self.log.head().sequence, self.log.spooled());
        if let Some(broken) = &report.broken {
            tracing::error!(
                sequence = broken.sequence,
                reason = broken.reason.label(),
                detail = %broken.detail,
                "audit chain verification failed"
            );
        }
        Ok(Response::new(verify_report_to_proto(&report)))
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let incident_id = request.into_inner().incident_id;
        if incident_id.is_empty() {
            return Err(Error::MissingField {
                field: "incident_id".into(),
            }
            .into());
        }
        check_id("incident_id", &incident_id)?;
        let records = self
            .log
            .decisions(&incident_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListDecisionsResponse {
            records: records.iter().map(record_to_proto).collect(),
        }))
    }
}

fn check_id(field: &str, value: &str) -> Result<(), Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidField {
            field: field.to_owned(),
            reason: "must not contain control characters".into(),
        });
    }
    if value.len() > 1024 {
        return Err(Error::InvalidField {
            field: field.to_owned(),
            reason: format!("is {} bytes, more than 1024", value.len()),
        });
    }
    Ok(())
}

fn record_kind_from_proto(field: &str, value: i32) -> Result<RecordKind, Error> {
    let kind = pb::RecordKind::try_from(value).map_err(|_| Error::InvalidField {
        field: field.to_owned(),
        reason: format!("{value} is not a RecordKind"),
    })?;
    Ok(match kind {
        pb::RecordKind::Unspecified => {
            return Err(Error::MissingField {
                field: field.to_owned(),
            });
        }
        pb::RecordKind::StepStarted => RecordKind::StepStarted,
        pb::RecordKind::StepFinished => RecordKind::StepFinished,
        pb::RecordKind::StepFailed => RecordKind::StepFailed,
        pb::RecordKind::Compensation => RecordKind::Compensation,
        pb::RecordKind::Decision => RecordKind::Decision,
        pb::RecordKind::SagaState => RecordKind::SagaState,
        pb::RecordKind::Checkpoint => RecordKind::Checkpoint,
        pb::RecordKind::Note => RecordKind::Note,
    })
}

fn record_kind_to_proto(kind: RecordKind) -> pb::RecordKind {
    match kind {
        RecordKind::StepStarted => pb::RecordKind::StepStarted,
        RecordKind::StepFinished => pb::RecordKind::StepFinished,
        RecordKind::StepFailed => pb::RecordKind::StepFailed,
        RecordKind::Compensation => pb::RecordKind::Compensation,
        RecordKind::Decision => pb::RecordKind::Decision,
        RecordKind::SagaState => pb::RecordKind::SagaState,
        RecordKind::Checkpoint => pb::RecordKind::Checkpoint,
        RecordKind::Note => pb::RecordKind::Note,
    }
}

/// Decodes the `index`-th record of an Append.
fn new_record_from_proto(
    index: usize,
    record: pb::NewRecord,
    payload_limit: usize,
) -> Result<NewRecord, Error> {
    let field = |name: &str| format!("records[{index}].{name}");
    let kind = record_kind_from_proto(&field("kind"), record.kind)?;
    if kind == RecordKind::Checkpoint {
        return Err(Error::InvalidField {
            field: field("kind"),
            reason: "checkpoints are written by the audit service only".into(),
        });
    }
    for (name, value) in [
        ("saga_id", &record.saga_id),
        ("incident_id", &record.incident_id),
        ("step", &record.step),
        ("actor", &record.actor),
        ("idempotency_key", &record.idempotency_key),
    ] {
        check_id(&field(name), value)?;
    }
    let payload = match record.payload {
        Some(payload) => Value::Object(struct_to_json(&field("payload"), payload)?),
        None => Value::Null,
    };
    let size = serde_json::to_vec(&payload).map_or(0, |bytes| bytes.len());
    if size > payload_limit {
        return Err(Error::PayloadTooLarge {
            field: field("payload"),
            size,
            limit: payload_limit,
        });
    }
    let decision = match record.decision {
        Some(decision) => Some(decision_from_proto(&field("decision"), decision)?),
        None if kind == RecordKind::Decision => {
            return Err(Error::MissingField {
                field: field("decision"),
            });
        }
        None => None,
    };
    Ok(NewRecord {
        kind,
        saga_id: record.saga_id,
        incident_id: record.incident_id,
        step: record.step,
        actor: record.actor,
        fencing_token: record.fencing_token,
        payload,
        decision,
        idempotency_key: Some(record.idempotency_key).filter(|key| !key.is_empty()),
    })
}

fn struct_to_json(
    field: &str,
    value: prost_types::Struct,
) -> Result<serde_json::Map<String, Value>, Error> {
    value
        .fields
        .into_iter()
        .map(|(key, item)| {
            let item = value_to_json(&format!("{field}.{key}"), item)?;
            Ok((key, item))
        })
        .collect()
}

fn value_to_json(field: &str, value: prost_types::Value) -> Result<Value, Error> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| Error::InvalidField {
                field: field.to_owned(),
                reason: format!("{n} is not a finite number"),
            })?,
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(field, s)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, item)| value_to_json(&format!("{field}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_to_struct(map: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn unit_interval(field: String, value: f64) -> Result<f64, Error> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::InvalidField {
            field,
            reason: format!("{value} is not within 0..1"),
        })
    }
}

fn time_from_proto(field: &str, time: prost_types::Timestamp) -> Result<RecordTime, Error> {
    let nanos = u32::try_from(time.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000);
    nanos
        .and_then(|nanos| RecordTime::from_unix(time.seconds, nanos))
        .ok_or_else(|| Error::InvalidField {
            field: field.to_owned(),
            reason: "is not a valid timestamp".into(),
        })
}

fn time_to_proto(time: &RecordTime) -> prost_types::Timestamp {
    let (seconds, nanos) = time.unix();
    prost_types::Timestamp {
        seconds,
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

fn decision_kind_from_proto(field: &str, value: i32) -> Result<DecisionKind, Error> {
    let kind = pb::DecisionKind::try_from(value).map_err(|_| Error::InvalidField {
        field: field.to_owned(),
        reason: format!("{value} is not a DecisionKind"),
    })?;
    Ok(match kind {
        pb::DecisionKind::Unspecified => DecisionKind::Unspecified,
        pb::DecisionKind::RootCause => DecisionKind::RootCause,
        pb::DecisionKind::FixPlan => DecisionKind::FixPlan,
        pb::DecisionKind::SafetyGate => DecisionKind::SafetyGate,
        pb::DecisionKind::CanaryAnalysis => DecisionKind::CanaryAnalysis,
        pb::DecisionKind::Promotion => DecisionKind::Promotion,
        pb::DecisionKind::Rollback => DecisionKind::Rollback,
        pb::DecisionKind::Verification => DecisionKind::Verification,
        pb::DecisionKind::Escalation => DecisionKind::Escalation,
    })
}

fn decision_kind_to_proto(kind: DecisionKind) -> pb::DecisionKind {
    match kind {
        DecisionKind::Unspecified => pb::DecisionKind::Unspecified,
        DecisionKind::RootCause => pb::DecisionKind::RootCause,
        DecisionKind::FixPlan => pb::DecisionKind::FixPlan,
        DecisionKind::SafetyGate => pb::DecisionKind::SafetyGate,
        DecisionKind::CanaryAnalysis => pb::DecisionKind::CanaryAnalysis,
        DecisionKind::Promotion => pb::DecisionKind::Promotion,
        DecisionKind::Rollback => pb::DecisionKind::Rollback,
        DecisionKind::Verification => pb::DecisionKind::Verification,
        DecisionKind::Escalation => pb::DecisionKind::Escalation,
    }
}

fn decision_from_proto(field: &str, decision: pb::Decision) -> Result<Decision, Error> {
    let factors = decision
        .factors
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(DecisionFactor {
                weight: unit_interval(format!("{field}.factors[{i}].weight"), f.weight)?,
                score: unit_interval(format!("{field}.factors[{i}].score"), f.score)?,
                name: f.name,
                explanation: f.explanation,
            })
        })
        .collect::<Result<_, Error>>()?;
    let alternatives = decision
        .alternatives
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(DecisionAlternative {
                score: unit_interval(format!("{field}.alternatives[{i}].score"), a.score)?,
                option: a.option,
                why_not: a.why_not,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Decision {
        kind: decision_kind_from_proto(&format!("{field}.kind"), decision.kind)?,
        confidence: unit_interval(format!("{field}.confidence"), decision.confidence)?,
        decided_at: decision
            .decided_at
            .map(|t| time_from_proto(&format!("{field}.decided_at"), t))
            .transpose()?,
        id: decision.id,
        subject: decision.subject,
        inputs: decision
            .inputs
            .into_iter()
            .map(|i| DecisionInput {
                name: i.name,
                value: i.value,
                note: i.note,
            })
            .collect(),
        factors,
        constraints: decision.constraints,
        alternatives,
        outcome: decision.outcome,
        reasoning: decision.reasoning,
    })
}

fn decision_to_proto(decision: &Decision) -> pb::Decision {
    pb::Decision {
        id: decision.id.clone(),
        kind: decision_kind_to_proto(decision.kind).into(),
        subject: decision.subject.clone(),
        inputs: decision
            .inputs
            .iter()
            .map(|i| pb::DecisionInput {
                name: i.name.clone(),
                value: i.value.clone(),
                note: i.note.clone(),
            })
            .collect(),
        factors: decision
            .factors
            .iter()
            .map(|f| pb::DecisionFactor {
                name: f.name.clone(),
                weight: f.weight,
                score: f.score,
                explanation: f.explanation.clone(),
            })
            .collect(),
        constraints: decision.constraints.clone(),
        alternatives: decision
            .alternatives
            .iter()
            .map(|a| pb::DecisionAlternative {
                option: a.option.clone(),
                why_not: a.why_not.clone(),
                score: a.score,
            })
            .collect(),
        outcome: decision.outcome.clone(),
        reasoning: decision.reasoning.clone(),
        confidence: decision.confidence,
        decided_at: decision.decided_at.as_ref().map(time_to_proto),
    }
}

/// A stored record as the wire carries it.
pub fn record_to_proto(record: &Record) -> pb::AuditRecord {
    pb::AuditRecord {
        sequence: record.sequence,
        time: Some(time_to_proto(&record.time)),
        kind: record_kind_to_proto(record.kind).into(),
        saga_id: record.saga_id.clone(),
        incident_id: record.incident_id.clone(),
        step: record.step.clone(),
        actor: record.actor.clone(),
        fencing_token: record.fencing_token,
        payload: match &record.payload {
            Value::Object(map) => Some(json_to_struct(map)),
            _ => None,
        },
        decision: record.decision.as_ref().map(decision_to_proto),
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
        idempotency_key: record.idempotency_key.clone().unwrap_or_default(),
    }
}

/// A record received over the wire, back as a domain record (for reports in clients). The
/// hash is carried over as received, not recomputed.
pub fn record_from_proto(record: pb::AuditRecord) -> Result<Record, Error> {
    Ok(Record {
        sequence: record.sequence,
        time: time_from_proto(
            "time",
            record.time.ok_or_else(|| Error::MissingField {
                field: "time".into(),
            })?,
        )?,
        kind: record_kind_from_proto("kind", record.kind)?,
        saga_id: record.saga_id,
        incident_id: record.incident_id,
        step: record.step,
        actor: record.actor,
        fencing_token: record.fencing_token,
        payload: match record.payload {
            Some(payload) => Value::Object(struct_to_json("payload", payload)?),
            None => Value::Null,
        },
        decision: record
            .decision
            .map(|d| decision_from_proto("decision", d))
            .transpose()?,
        idempotency_key: Some(record.idempotency_key).filter(|k| !k.is_empty()),
        prev_hash: record.prev_hash,
        hash: record.hash,
    })
}

/// A verification report as the wire carries it.
pub fn verify_report_to_proto(report: &VerifyReport) -> pb::VerifyChainResponse {
    let mut response = pb::VerifyChainResponse {
        ok: report.is_ok(),
        records_checked: report.records_checked,
        checkpoints_checked: report.checkpoints_checked,
        head_hash: report.head.hash.clone(),
        ..Default::default()
    };
    if let Some(broken) = &report.broken {
        response.first_broken_sequence = broken.sequence;
        response.reason = match broken.reason {
            BreakReason::HashMismatch => pb::BreakReason::HashMismatch,
            BreakReason::PrevHashMismatch => pb::BreakReason::PrevHashMismatch,
            BreakReason::Gap => pb::BreakReason::Gap,
            BreakReason::Reorder => pb::BreakReason::Reorder,
            BreakReason::BadSignature => pb::BreakReason::BadSignature,
        }
        .into();
        response.detail = broken.detail.clone();
    } else if report.spooled > 0 {
        response.detail = format!(
            "{} records at the tail are still in the local spool, awaiting replay",
            report.spooled
        );
    }
    response
}

/// A verification response received over the wire, as a domain report (for
/// [`crate::render_verify_report`] in clients). The head sequence is not on the wire; it is
/// taken as `records_checked`.
pub fn verify_report_from_proto(response: &pb::VerifyChainResponse) -> VerifyReport {
    let reason = match pb::BreakReason::try_from(response.reason) {
        Ok(pb::BreakReason::HashMismatch) => Some(BreakReason::HashMismatch),
        Ok(pb::BreakReason::PrevHashMismatch) => Some(BreakReason::PrevHashMismatch),
        Ok(pb::BreakReason::Gap) => Some(BreakReason::Gap),
        Ok(pb::BreakReason::Reorder) => Some(BreakReason::Reorder),
        Ok(pb::BreakReason::BadSignature) => Some(BreakReason::BadSignature),
        _ => None,
    };
    VerifyReport {
        records_checked: response.records_checked,
        checkpoints_checked: response.checkpoints_checked,
        head: ChainHead {
            sequence: response.records_checked,
            hash: response.head_hash.clone(),
        },
        broken: (!response.ok).then(|| ChainBreak {
            sequence: response.first_broken_sequence,
            reason: reason.unwrap_or(BreakReason::HashMismatch),
            detail: response.detail.clone(),
        }),
        unsigned_tail: 0,
        spooled: 0,
    }
}
