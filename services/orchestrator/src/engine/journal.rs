//! The saga journal in the audit service: every record the engine appends, and reading them back
//! at start-up. Appends retry under the journal deadline; when they still fail the caller fails
//! closed (the saga does not proceed past the step).

use prost_types::value::Kind;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::{
    AppendRequest, AuditRecord, Decision, NewRecord, QueryRequest, RecordKind,
};
use selfheal_telemetry::TracedChannel;
use serde_json::Value;

use crate::saga::{RetryPolicy, StepError, retry_step};

/// Records read per Query page.
const PAGE: u32 = 1_000;

/// Appends and reads saga records.
#[derive(Clone, Debug)]
pub(crate) struct Journal {
    client: AuditClient<TracedChannel>,
    actor: String,
    policy: RetryPolicy,
}

/// One record to append.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) kind: RecordKind,
    pub(crate) step: String,
    pub(crate) payload: Value,
    pub(crate) decision: Option<Decision>,
    /// Unique per record: a repeated key returns the existing record.
    pub(crate) key: String,
}

impl Journal {
    pub(crate) fn new(channel: TracedChannel, actor: String, policy: RetryPolicy) -> Self {
        Self {
            client: AuditClient::new(channel).max_decoding_message_size(64 * 1024 * 1024),
            actor,
            policy,
        }
    }

    /// Appends one record of `saga_id`, retrying transient failures under the journal deadline.
    pub(crate) async fn append(
        &self,
        saga_id: &str,
        incident_id: &str,
        fencing_token: u64,
        entry: Entry,
    ) -> Result<(), StepError> {
        self.append_all(saga_id, incident_id, vec![(entry, fencing_token)])
            .await
    }

    /// Appends records of `saga_id` in one request (one write for the audit service), in order,
    /// each with the fencing token it was made under.
    pub(crate) async fn append_all(
        &self,
        saga_id: &str,
        incident_id: &str,
        entries: Vec<(Entry, u64)>,
    ) -> Result<(), StepError> {
        let records: Vec<NewRecord> = entries
            .into_iter()
            .map(|(entry, fencing_token)| NewRecord {
                kind: entry.kind.into(),
                saga_id: saga_id.to_owned(),
                incident_id: incident_id.to_owned(),
                step: entry.step,
                actor: self.actor.clone(),
                fencing_token,
                payload: Some(to_struct(&entry.payload)),
                decision: entry.decision,
                idempotency_key: entry.key,
                ..Default::default()
            })
            .collect();
        retry_step(self.policy, |_, left| {
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(AppendRequest {
                records: records.clone(),
                ..Default::default()
            });
            request.set_timeout(left);
            async move {
                client
                    .append(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| StepError::from_status(&status))
            }
        })
        .await
        .map(|_| ())
    }

    /// Every record of every saga, oldest first, read page by page.
    pub(crate) async fn read_all(&self) -> Result<Vec<AuditRecord>, StepError> {
        let mut records = Vec::new();
        let mut from = 0;
        loop {
            let (page, _) = retry_step(self.policy, |_, left| {
                let mut client = self.client.clone();
                let mut request = tonic::Request::new(QueryRequest {
                    from_sequence: from,
                    limit: PAGE,
                    ..Default::default()
                });
                request.set_timeout(left);
                async move {
                    client
                        .query(request)
                        .await
                        .map(|response| response.into_inner().records)
                        .map_err(|status| StepError::from_status(&status))
                }
            })
            .await?;
            let Some(last) = page.last() else {
                return Ok(records);
            };
            from = last.sequence + 1;
            let full = page.len() >= PAGE as usize;
            records.extend(page.into_iter().filter(|record| !record.saga_id.is_empty()));
            if !full {
                return Ok(records);
            }
        }
    }
}

/// JSON object → protobuf Struct (non-objects are wrapped as `{"value": …}`).
pub(crate) fn to_struct(value: &Value) -> prost_types::Struct {
    match value {
        Value::Object(map) => prost_types::Struct {
            fields: map
                .iter()
                .map(|(key, item)| (key.clone(), to_value(item)))
                .collect(),
        },
        other => prost_types::Struct {
            fields: [("value".to_owned(), to_value(other))].into(),
        },
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Protobuf Struct → JSON object.
pub(crate) fn from_struct(value: &prost_types::Struct) -> Value {
    Value::Object(
        value
            .fields
            .iter()
            .map(|(key, item)| (key.clone(), from_value(item)))
            .collect(),
    )
}

fn from_value(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A protobuf message as hex, so a restarted orchestrator rebuilds a step's output exactly.
pub(crate) fn encode<M: prost::Message>(message: &M) -> Value {
    Value::String(hex::encode(message.encode_to_vec()))
}

/// The message [`encode`] wrote under `field` of `payload`.
pub(crate) fn decode<M: prost::Message + Default>(payload: &Value, field: &str) -> Option<M> {
    let text = payload.get(field)?.as_str()?;
    let bytes = hex::decode(text).ok()?;
    M::decode(bytes.as_slice()).ok()
}

/// Hex SHA-256 of a value's JSON, naming a step's inputs without copying them.
pub(crate) fn digest(value: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_survives_the_struct_round_trip() {
        let value = serde_json::json!({
            "step": "deploy", "ok": true, "n": 3.5, "none": null,
            "list": [1.0, "two", {"three": false}],
        });
        assert_eq!(from_struct(&to_struct(&value)), value);
    }

    #[test]
    fn messages_survive_the_hex_round_trip() {
        let source = selfheal_proto::v1::SourceRef {
            repository: "/repo".into(),
            commit: "abc".into(),
        };
        let payload = serde_json::json!({ "source": encode(&source) });
        assert_eq!(
            decode::<selfheal_proto::v1::SourceRef>(&payload, "source"),
            Some(source)
        );
        assert_eq!(
            decode::<selfheal_proto::v1::SourceRef>(&payload, "missing"),
            None
        );
    }
}
