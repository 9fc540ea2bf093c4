//! `selfheal audit verify` and `selfheal explain`: the audit trail, for people and programs.

use std::time::Duration;

use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_proto::v1::{ListDecisionsRequest, VerifyChainRequest, VerifyChainResponse};
use selfheal_telemetry::TracedChannel;
use serde::Serialize;

/// Errors from asking the audit service.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    #[error("invalid audit address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "the audit service at {address} answered: {message}\nhint: is the mesh up (`selfheal status`)?"
    )]
    Call { address: String, message: String },
    #[error("a stored record cannot be read: {0}")]
    Record(String),
}

/// The verification result as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    pub records_checked: u64,
    pub checkpoints_checked: u64,
    pub first_broken_sequence: Option<u64>,
    pub reason: Option<String>,
    pub detail: String,
    pub head_hash: String,
}

fn client(address: &str, timeout: Duration) -> Result<AuditClient<TracedChannel>, AuditCliError> {
    let channel = selfheal_telemetry::connect_lazy(address, timeout).map_err(|source| {
        AuditCliError::Address {
            address: address.to_owned(),
            source,
        }
    })?;
    Ok(AuditClient::new(channel))
}

/// Asks the audit service to walk the chain; returns the raw answer and its human rendering.
pub async fn verify(
    address: &str,
    timeout: Duration,
) -> Result<(VerifyOutcome, String), AuditCliError> {
    let mut request = tonic::Request::new(VerifyChainRequest {});
    request.set_timeout(timeout);
    let response: VerifyChainResponse = client(address, timeout)?
        .verify(request)
        .await
        .map_err(|status| AuditCliError::Call {
            address: address.to_owned(),
            message: status.message().to_owned(),
        })?
        .into_inner();
    let rendered =
        selfheal_audit::render_verify_report(&selfheal_audit::verify_report_from_proto(&response));
    let outcome = VerifyOutcome {
        ok: response.ok,
        records_checked: response.records_checked,
        checkpoints_checked: response.checkpoints_checked,
        first_broken_sequence: (!response.ok).then_some(response.first_broken_sequence),
        reason: (!response.ok).then(|| response.reason().as_str_name().to_owned()),
        detail: response.detail,
        head_hash: response.head_hash,
    };
    Ok((outcome, rendered))
}

/// Every decision recorded for `incident`, as JSON records and as a readable report.
pub async fn explain(
    address: &str,
    incident: &str,
    timeout: Duration,
) -> Result<(Vec<serde_json::Value>, String), AuditCliError> {
    let mut request = tonic::Request::new(ListDecisionsRequest {
        incident_id: incident.to_owned(),
    });
    request.set_timeout(timeout);
    let records = client(address, timeout)?
        .list_decisions(request)
        .await
        .map_err(|status| AuditCliError::Call {
            address: address.to_owned(),
            message: status.message().to_owned(),
        })?
        .into_inner()
        .records
        .into_iter()
        .map(|record| {
            selfheal_audit::record_from_proto(record)
                .map_err(|error| AuditCliError::Record(error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json = records
        .iter()
        .map(|record| serde_json::to_value(record).unwrap_or(serde_json::Value::Null))
        .collect();
    Ok((json, selfheal_audit::render_decision_report(&records)))
}
