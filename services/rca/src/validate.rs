//! Checks on what callers send: names, sizes and times. Everything a request may carry is
//! bounded here, before any work is done; a failure is INVALID_ARGUMENT naming the field.

use std::time::SystemTime;

use prost::Message;
use selfheal_proto::v1::{AnalyzeRequest, Deployment, Evidence, RecordFixRequest};

use crate::analysis::AnalyzeQuery;
use crate::analysis::collect::deployment_record;
use crate::analysis::time::from_timestamp;
use crate::config::AnalysisConfig;
use crate::error::Error;
use crate::graph::{CallEdge, CauseKind, DeploymentRecord, FixRecord, MAX_TOPOLOGY_EDGES};

/// The longest service, version or incident name.
const MAX_NAME_BYTES: usize = 256;
/// The longest repository location.
const MAX_REPOSITORY_BYTES: usize = 4096;
/// Most items of each kind in inline evidence.
const MAX_EVIDENCE_ITEMS: usize = 200_000;
/// Most series points in inline evidence, all series together.
const MAX_SERIES_POINTS: usize = 1_000_000;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A service, version or incident name: non-empty, short, printable, no whitespace.
pub(crate) fn name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, more than {MAX_NAME_BYTES}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

fn optional_name(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        Ok(())
    } else {
        name(field, value)
    }
}

fn repository(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_REPOSITORY_BYTES {
        return Err(invalid(
            field,
            format!("is longer than {MAX_REPOSITORY_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn revision(field: &str, value: &str) -> Result<(), Error> {
    name(field, value)?;
    if value.starts_with('-') {
        return Err(invalid(field, "must not start with '-'"));
    }
    Ok(())
}

fn time(field: &str, at: Option<&prost_types::Timestamp>) -> Result<Option<SystemTime>, Error> {
    match at {
        None => Ok(None),
        Some(at) => from_timestamp(at)
            .map(Some)
            .ok_or_else(|| invalid(field, "is not a valid time")),
    }
}

fn count(field: &str, n: usize, max: usize) -> Result<(), Error> {
    if n > max {
        return Err(invalid(field, format!("has {n} items, more than {max}")));
    }
    Ok(())
}

/// An `AnalyzeRequest` checked and turned into a query.
pub(crate) fn analyze_query(
    request: AnalyzeRequest,
    limits: &AnalysisConfig,
) -> Result<AnalyzeQuery, Error> {
    let size = request.encoded_len();
    if size > limits.max_request_bytes {
        return Err(invalid(
            "request",
            format!(
                "is {size} bytes, more than the {} allowed",
                limits.max_request_bytes
            ),
        ));
    }
    let incident = request.incident.ok_or(Error::MissingField("incident"))?;
    name("incident.service", &incident.service)?;
    optional_name("incident.id", &incident.id)?;
    time("incident.first_bad_at", incident.first_bad_at.as_ref())?;
    time("incident.opened_at", incident.opened_at.as_ref())?;
    let (repository_, commit) = match request.source {
        Some(source) => {
            if source.repository.is_empty() {
                return Err(Error::MissingField("source.repository"));
            }
            repository("source.repository", &source.repository)?;
            revision("source.commit", &source.commit)?;
            (Some(source.repository), Some(source.commit))
        }
        None => (None, None),
    };
    let last_good_commit = if request.last_good_commit.is_empty() {
        None
    } else {
        revision("last_good_commit", &request.last_good_commit)?;
        Some(request.last_good_commit)
    };
    if let Some(evidence) = &request.evidence {
        self::evidence(evidence)?;
    }
    Ok(AnalyzeQuery {
        incident,
        evidence: request.evidence,
        repository: repository_,
        commit,
        last_good_commit,
    })
}

/// Inline evidence: bounded counts, names and valid times.
fn evidence(evidence: &Evidence) -> Result<(), Error> {
    count("evidence.series", evidence.series.len(), MAX_EVIDENCE_ITEMS)?;
    count("evidence.logs", evidence.logs.len(), MAX_EVIDENCE_ITEMS)?;
    count("evidence.spans", evidence.spans.len(), MAX_EVIDENCE_ITEMS)?;
    count(
        "evidence.topology",
        evidence.topology.len(),
        MAX_TOPOLOGY_EDGES,
    )?;
    count(
        "evidence.deployments",
        evidence.deployments.len(),
        MAX_EVIDENCE_ITEMS,
    )?;
    count(
        "evidence.commits",
        evidence.commits.len(),
        MAX_EVIDENCE_ITEMS,
    )?;
    count("evidence.gaps", evidence.gaps.len(), 10_000)?;
    let points: usize = evidence.series.iter().map(|s| s.points.len()).sum();
    count("evidence.series points", points, MAX_SERIES_POINTS)?;
    for (i, series) in evidence.series.iter().enumerate() {
        name(&format!("evidence.series[{i}].service"), &series.service)?;
        for point in &series.points {
            time(
                &format!("evidence.series[{i}].points.at"),
                point.at.as_ref(),
            )?;
        }
    }
    for (i, line) in evidence.logs.iter().enumerate() {
        name(&format!("evidence.logs[{i}].service"), &line.service)?;
        time(&format!("evidence.logs[{i}].at"), line.at.as_ref())?;
    }
    for (i, span) in evidence.spans.iter().enumerate() {
        name(&format!("evidence.spans[{i}].service"), &span.service)?;
        time(&format!("evidence.spans[{i}].start"), span.start.as_ref())?;
    }
    for (i, edge) in evidence.topology.iter().enumerate() {
        name(&format!("evidence.topology[{i}].caller"), &edge.caller)?;
        name(&format!("evidence.topology[{i}].callee"), &edge.callee)?;
    }
    for (i, d) in evidence.deployments.iter().enumerate() {
        name(&format!("evidence.deployments[{i}].service"), &d.service)?;
        repository(
            &format!("evidence.deployments[{i}].repository"),
            &d.repository,
        )?;
        time(
            &format!("evidence.deployments[{i}].deployed_at"),
            d.deployed_at.as_ref(),
        )?;
    }
    Ok(())
}

/// `CALLS` edges to record.
pub(crate) fn edges(edges: &[selfheal_proto::v1::CallEdge]) -> Result<Vec<CallEdge>, Error> {
    if edges.is_empty() {
        return Err(Error::MissingField("edges"));
    }
    count("edges", edges.len(), MAX_TOPOLOGY_EDGES)?;
    edges
        .iter()
        .enumerate()
        .map(|(i, e)| {
            name(&format!("edges[{i}].caller"), &e.caller)?;
            name(&format!("edges[{i}].callee"), &e.callee)?;
            if e.caller == e.callee {
                return Err(invalid(
                    format!("edges[{i}]"),
                    "a service does not call itself",
                ));
            }
            Ok(CallEdge::new(&e.caller, &e.callee))
        })
        .collect()
}

/// A deployment to record: service, commit and time are required; the version defaults to the
/// commit.
pub(crate) fn deployment(d: &Deployment) -> Result<DeploymentRecord, Error> {
    name("deployment.service", &d.service)?;
    revision("deployment.commit", &d.commit)?;
    optional_name("deployment.version", &d.version)?;
    repository("deployment.repository", &d.repository)?;
    if d.deployed_at.is_none() {
        return Err(Error::MissingField("deployment.deployed_at"));
    }
    time("deployment.deployed_at", d.deployed_at.as_ref())?;
    deployment_record(d).ok_or(Error::MissingField("deployment.deployed_at"))
}

/// A fix to record, stamped now.
pub(crate) fn fix(request: RecordFixRequest) -> Result<FixRecord, Error> {
    name("incident_id", &request.incident_id)?;
    name("service", &request.service)?;
    name("strategy", &request.strategy)?;
    optional_name("template", &request.template)?;
    optional_name("commit", &request.commit)?;
    let kind = selfheal_proto::v1::CauseKind::try_from(request.cause_kind).map_err(|_| {
        invalid(
            "cause_kind",
            format!("{} is not a cause kind", request.cause_kind),
        )
    })?;
    Ok(FixRecord {
        incident_id: request.incident_id,
        service: request.service,
        cause_kind: CauseKind::from(kind),
        strategy: request.strategy,
        template: request.template,
        commit: request.commit,
        recorded_at: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(name("service", "payment-service").is_ok());
        assert!(name("service", "").is_err());
        assert!(name("service", "pay ment").is_err());
        assert!(name("service", "pay\u{0}").is_err());
        assert!(name("service", &"x".repeat(300)).is_err());
        assert!(revision("commit", "--output=/tmp/x").is_err());
    }
}
