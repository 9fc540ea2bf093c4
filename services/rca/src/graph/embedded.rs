//! The dependency graph in memory: the default when selfheal runs as one process. Same answers
//! as Neo4j (the conformance suite checks it); nothing survives a restart. Its size is bounded:
//! the oldest deployments of a service and the oldest fixes are forgotten first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::SystemTime;

use super::{
    CallEdge, CommitRecord, DeploymentRecord, FixQuery, FixRecord, GraphError, GraphStore,
    IncidentRecord, MAX_DEPLOYMENTS, MAX_FIXES, MAX_TOPOLOGY_EDGES,
};

/// Deployments kept per service.
const DEPLOYMENTS_PER_SERVICE: usize = 1_000;
/// Commits kept in all.
const MAX_COMMITS: usize = 10_000;
/// Incidents and fixes kept in all.
const MAX_RECORDS: usize = 10_000;

#[derive(Debug, Default)]
struct Inner {
    edges: BTreeSet<CallEdge>,
    /// service → version → deployment.
    deployments: HashMap<String, BTreeMap<String, DeploymentRecord>>,
    commits: HashMap<String, CommitRecord>,
    commit_order: Vec<String>,
    incidents: BTreeMap<String, IncidentRecord>,
    /// In recording order.
    fixes: Vec<FixRecord>,
}

/// The in-memory [`GraphStore`].
#[derive(Debug, Default)]
pub struct EmbeddedGraph {
    inner: RwLock<Inner>,
}

impl EmbeddedGraph {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn remember_commit(inner: &mut Inner, commit: &CommitRecord) {
    if inner
        .commits
        .insert(commit.sha.clone(), commit.clone())
        .is_none()
    {
        inner.commit_order.push(commit.sha.clone());
        if inner.commit_order.len() > MAX_COMMITS {
            let oldest = inner.commit_order.remove(0);
            inner.commits.remove(&oldest);
        }
    }
}

#[async_trait::async_trait]
impl GraphStore for EmbeddedGraph {
    fn describe(&self) -> String {
        "embedded graph".to_owned()
    }

    async fn record_calls(&self, edges: &[CallEdge]) -> Result<(), GraphError> {
        let mut inner = self.write();
        for edge in edges {
            if inner.edges.len() >= MAX_TOPOLOGY_EDGES && !inner.edges.contains(edge) {
                return Err(GraphError::Unexpected {
                    uri: self.describe(),
                    message: format!("the graph holds {MAX_TOPOLOGY_EDGES} edges already"),
                });
            }
            inner.edges.insert(edge.clone());
        }
        Ok(())
    }

    async fn topology(&self) -> Result<Vec<CallEdge>, GraphError> {
        Ok(self
            .read()
            .edges
            .iter()
            .take(MAX_TOPOLOGY_EDGES)
            .cloned()
            .collect())
    }

    async fn callees(&self, service: &str) -> Result<Vec<String>, GraphError> {
        Ok(self
            .read()
            .edges
            .iter()
            .filter(|e| e.caller == service)
            .map(|e| e.callee.clone())
            .collect())
    }

    async fn dependents(&self, service: &str) -> Result<Vec<String>, GraphError> {
        let inner = self.read();
        let callers: BTreeSet<String> = inner
            .edges
            .iter()
            .filter(|e| e.callee == service)
            .map(|e| e.caller.clone())
            .collect();
        Ok(callers.into_iter().collect())
    }

    async fn record_deployment(
        &self,
        deployment: &DeploymentRecord,
        commit: Option<&CommitRecord>,
    ) -> Result<(), GraphError> {
        let mut inner = self.write();
        let versions = inner
            .deployments
            .entry(deployment.service.clone())
            .or_default();
        versions.insert(deployment.version.clone(), deployment.clone());
        if versions.len() > DEPLOYMENTS_PER_SERVICE
            && let Some(oldest) = versions
                .values()
                .min_by_key(|d| d.deployed_at)
                .map(|d| d.version.clone())
        {
            versions.remove(&oldest);
        }
        if let Some(commit) = commit {
            remember_commit(&mut inner, commit);
        }
        Ok(())
    }

    async fn deployments(
        &self,
        service: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<DeploymentRecord>, GraphError> {
        let inner = self.read();
        let mut found: Vec<DeploymentRecord> = inner
            .deployments
            .get(service)
            .into_iter()
            .flat_map(|versions| versions.values())
            .filter(|d| d.deployed_at >= from && d.deployed_at <= to)
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.deployed_at
                .cmp(&a.deployed_at)
                .then_with(|| a.version.cmp(&b.version))
        });
        found.truncate(MAX_DEPLOYMENTS);
        Ok(found)
    }

    async fn latest_deployment_before(
        &self,
        service: &str,
        at: SystemTime,
    ) -> Result<Option<DeploymentRecord>, GraphError> {
        let inner = self.read();
        Ok(inner
            .deployments
            .get(service)
            .into_iter()
            .flat_map(|versions| versions.values())
            .filter(|d| d.deployed_at <= at)
            .max_by(|a, b| {
                a.deployed_at
                    .cmp(&b.deployed_at)
                    .then_with(|| b.version.cmp(&a.version))
            })
            .cloned())
    }

    async fn commits(&self, shas: &[String]) -> Result<Vec<CommitRecord>, GraphError> {
        let inner = self.read();
        Ok(shas
            .iter()
            .filter_map(|sha| inner.commits.get(sha).cloned())
            .collect())
    }

    async fn record_incident(&self, incident: &IncidentRecord) -> Result<(), GraphError> {
        let mut inner = self.write();
        inner
            .incidents
            .insert(incident.id.clone(), incident.clone());
        if inner.incidents.len() > MAX_RECORDS
            && let Some(first) = inner.incidents.keys().next().cloned()
        {
            inner.incidents.remove(&first);
        }
        Ok(())
    }

    async fn record_fix(&self, fix: &FixRecord) -> Result<(), GraphError> {
        let mut inner = self.write();
        let same = |f: &FixRecord| {
            f.incident_id == fix.incident_id
                && f.strategy == fix.strategy
                && f.template == fix.template
                && f.commit == fix.commit
        };
        if let Some(existing) = inner.fixes.iter_mut().find(|f| same(f)) {
            // The first recording's time stays; the rest may be corrected.
            existing.service = fix.service.clone();
            existing.cause_kind = fix.cause_kind;
            return Ok(());
        }
        inner.fixes.push(fix.clone());
        if inner.fixes.len() > MAX_RECORDS {
            inner.fixes.remove(0);
        }
        if !inner.incidents.contains_key(&fix.incident_id) {
            inner.incidents.insert(
                fix.incident_id.clone(),
                IncidentRecord {
                    id: fix.incident_id.clone(),
                    service: fix.service.clone(),
                    signal: String::new(),
                    first_bad_at: None,
                },
            );
        }
        Ok(())
    }

    async fn past_fixes(&self, query: &FixQuery) -> Result<Vec<FixRecord>, GraphError> {
        let inner = self.read();
        let mut found: Vec<FixRecord> = inner
            .fixes
            .iter()
            .filter(|f| {
                query.service.as_deref() == Some(f.service.as_str())
                    || query.cause_kind == Some(f.cause_kind)
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.recorded_at
                .cmp(&a.recorded_at)
                .then_with(|| a.incident_id.cmp(&b.incident_id))
                .then_with(|| a.strategy.cmp(&b.strategy))
        });
        found.truncate(query.limit.min(MAX_FIXES));
        Ok(found)
    }
}
