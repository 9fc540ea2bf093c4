//! The dependency graph: services and the `CALLS` edges between them, deployments of each service
//! (version, commit, repository, time), the commits they ran, incidents, and the fixes that
//! resolved them. Cause ranking reads it; `RecordTopology`, `RecordDeployment` and `RecordFix`
//! write it.
//!
//! Everything goes through [`GraphStore`]. Two implementations pass one conformance suite
//! ([`conformance`]): [`EmbeddedGraph`] (in memory, the default for a single process) and
//! [`Neo4jGraph`] (Cypher over Bolt). The store never decides anything about an incident; it
//! only keeps and answers.

mod embedded;
mod neo4j;

#[doc(hidden)]
pub mod conformance;

use std::fmt;
use std::time::SystemTime;

pub use embedded::EmbeddedGraph;
pub use neo4j::{Neo4jGraph, Neo4jSettings};

/// The most `CALLS` edges a topology answer holds; a larger graph is cut (and says so).
pub const MAX_TOPOLOGY_EDGES: usize = 10_000;
/// The most deployments one window query returns (newest first).
pub const MAX_DEPLOYMENTS: usize = 100;
/// The most fixes one query may ask for.
pub const MAX_FIXES: usize = 100;

/// Errors reaching or reading the graph. Analysis degrades without the graph; it never fails on
/// it. Every message names the store it is about.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("graph store {uri} is unavailable: {message}")]
    Unavailable { uri: String, message: String },
    #[error("graph store {uri} answered something unexpected: {message}")]
    Unexpected { uri: String, message: String },
}

/// What kind of fault a cause (or a fix) was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CauseKind {
    Unspecified,
    CodeDefect,
    BadDeploy,
    Dependency,
    Resource,
    Configuration,
}

impl CauseKind {
    /// The stored name, lowercase with underscores.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Unspecified => "unspecified",
            CauseKind::CodeDefect => "code_defect",
            CauseKind::BadDeploy => "bad_deploy",
            CauseKind::Dependency => "dependency",
            CauseKind::Resource => "resource",
            CauseKind::Configuration => "configuration",
        }
    }

    /// The kind a stored name stands for; unknown names are `Unspecified`.
    pub fn parse(name: &str) -> Self {
        match name {
            "code_defect" => CauseKind::CodeDefect,
            "bad_deploy" => CauseKind::BadDeploy,
            "dependency" => CauseKind::Dependency,
            "resource" => CauseKind::Resource,
            "configuration" => CauseKind::Configuration,
            _ => CauseKind::Unspecified,
        }
    }
}

impl fmt::Display for CauseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

/// `caller` calls `callee`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallEdge {
    pub caller: String,
    pub callee: String,
}

impl CallEdge {
    pub fn new(caller: impl Into<String>, callee: impl Into<String>) -> Self {
        CallEdge {
            caller: caller.into(),
            callee: callee.into(),
        }
    }
}

/// One version of a service that was rolled out. `(service, version)` names it: recording the
/// same pair again updates it rather than adding another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub service: String,
    pub version: String,
    pub commit: String,
    pub repository: String,
    pub deployed_at: SystemTime,
}

/// A commit as git describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub sha: String,
    pub author: String,
    pub author_email: String,
    pub message: String,
    pub time: SystemTime,
    pub files: Vec<String>,
}

/// An incident the graph knows of, so fixes can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentRecord {
    pub id: String,
    pub service: String,
    /// The signal that opened it, e.g. `error_rate`.
    pub signal: String,
    pub first_bad_at: Option<SystemTime>,
}

/// A fix that resolved an incident. Recording the same incident, strategy, template and commit
/// again changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixRecord {
    pub incident_id: String,
    pub service: String,
    pub cause_kind: CauseKind,
    pub strategy: String,
    pub template: String,
    pub commit: String,
    pub recorded_at: SystemTime,
}

/// Which past fixes to return: those of `service` or of `cause_kind` (either matching), newest
/// first, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixQuery {
    pub service: Option<String>,
    pub cause_kind: Option<CauseKind>,
    pub limit: usize,
}

/// Keeps and answers the dependency graph. Implementations are safe to share between tasks and
/// bound every call in time.
#[async_trait::async_trait]
pub trait GraphStore: Send + Sync + fmt::Debug {
    /// What this store is, for gaps and logs (`neo4j at bolt://…`, `embedded graph`).
    fn describe(&self) -> String;

    /// Adds the services and `CALLS` edges (existing ones are kept once).
    async fn record_calls(&self, edges: &[CallEdge]) -> Result<(), GraphError>;
    /// Every `CALLS` edge, sorted, at most [`MAX_TOPOLOGY_EDGES`].
    async fn topology(&self) -> Result<Vec<CallEdge>, GraphError>;
    /// The services `service` calls, sorted.
    async fn callees(&self, service: &str) -> Result<Vec<String>, GraphError>;
    /// The services that call `service`, sorted.
    async fn dependents(&self, service: &str) -> Result<Vec<String>, GraphError>;

    /// Records a deployment (idempotent on service and version), and its commit when known.
    async fn record_deployment(
        &self,
        deployment: &DeploymentRecord,
        commit: Option<&CommitRecord>,
    ) -> Result<(), GraphError>;
    /// Deployments of `service` with `from <= deployed_at <= to`, newest first, at most
    /// [`MAX_DEPLOYMENTS`].
    async fn deployments(
        &self,
        service: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<DeploymentRecord>, GraphError>;
    /// The newest deployment of `service` at or before `at`.
    async fn latest_deployment_before(
        &self,
        service: &str,
        at: SystemTime,
    ) -> Result<Option<DeploymentRecord>, GraphError>;
    /// The recorded commits among `shas`, in the order asked (unknown ones left out).
    async fn commits(&self, shas: &[String]) -> Result<Vec<CommitRecord>, GraphError>;

    /// Records an incident (idempotent on its id; later fields win).
    async fn record_incident(&self, incident: &IncidentRecord) -> Result<(), GraphError>;
    /// Records a fix and links it to its incident and service.
    async fn record_fix(&self, fix: &FixRecord) -> Result<(), GraphError>;
    /// Past fixes matching `query`, newest first.
    async fn past_fixes(&self, query: &FixQuery) -> Result<Vec<FixRecord>, GraphError>;
}
