//! The dependency graph in Neo4j, over Bolt with the `neo4rs` driver: Cypher with parameters
//! only (no value is ever spliced into a query), `MERGE` so every write is idempotent, uniqueness
//! constraints and indexes created before the first write, a deadline on every query, readiness
//! retries with jittered backoff, and errors that name the server.
//!
//! Every node carries a `namespace` property and every query filters on it, so several
//! installations (or parallel test runs) can share one database without seeing each other.
//! Times are stored as milliseconds since the Unix epoch.
//!
//! Model: `(:Service {name})-[:CALLS]->(:Service)`, `(:Service)-[:DEPLOYED]->(:Deployment
//! {service, version, commit, repository, deployed_at})-[:OF_COMMIT]->(:Commit {sha, …})`,
//! `(:Incident {id, service, signal, first_bad_at})-[:RESOLVED_BY]->(:Fix {…})-[:FIXED]->
//! (:Service)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use neo4rs::{BoltType, Query, Row, query};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{
    CallEdge, CauseKind, CommitRecord, DeploymentRecord, FixQuery, FixRecord, GraphError,
    GraphStore, IncidentRecord, MAX_DEPLOYMENTS, MAX_FIXES, MAX_TOPOLOGY_EDGES,
};

/// Constraints and indexes, created (if missing) before the first query.
const SCHEMA: &[&str] = &[
    "CREATE CONSTRAINT selfheal_service_key IF NOT EXISTS \
     FOR (s:Service) REQUIRE (s.namespace, s.name) IS UNIQUE",
    "CREATE CONSTRAINT selfheal_deployment_key IF NOT EXISTS \
     FOR (d:Deployment) REQUIRE (d.namespace, d.service, d.version) IS UNIQUE",
    "CREATE CONSTRAINT selfheal_commit_key IF NOT EXISTS \
     FOR (c:Commit) REQUIRE (c.namespace, c.sha) IS UNIQUE",
    "CREATE CONSTRAINT selfheal_incident_key IF NOT EXISTS \
     FOR (i:Incident) REQUIRE (i.namespace, i.id) IS UNIQUE",
    "CREATE INDEX selfheal_deployment_time IF NOT EXISTS \
     FOR (d:Deployment) ON (d.namespace, d.service, d.deployed_at)",
    "CREATE INDEX selfheal_fix_service IF NOT EXISTS FOR (f:Fix) ON (f.namespace, f.service)",
    "CREATE INDEX selfheal_fix_kind IF NOT EXISTS FOR (f:Fix) ON (f.namespace, f.cause_kind)",
];

/// How to reach Neo4j.
#[derive(Clone, PartialEq, Eq)]
pub struct Neo4jSettings {
    /// `bolt://host:port`.
    pub uri: String,
    pub user: String,
    pub password: String,
    /// Every node this store writes or reads carries this namespace.
    pub namespace: String,
    /// Deadline of every query (and of creating the schema).
    pub query_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: usize,
}

impl std::fmt::Debug for Neo4jSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jSettings")
            .field("uri", &self.uri)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("namespace", &self.namespace)
            .field("query_timeout", &self.query_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// A Neo4j database reached over Bolt.
pub struct Neo4jGraph {
    uri: String,
    namespace: String,
    graph: neo4rs::Graph,
    timeout: Duration,
    schema: OnceCell<()>,
}

impl std::fmt::Debug for Neo4jGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jGraph")
            .field("uri", &self.uri)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Neo4jGraph {
    /// Prepares a connection pool to `uri` (`bolt://host:port`); nothing is sent yet.
    /// `timeout` bounds every query. Nodes go to the namespace `default`.
    pub fn connect(
        uri: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, GraphError> {
        Self::open(&Neo4jSettings {
            uri: uri.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            namespace: "default".to_owned(),
            query_timeout: timeout,
            max_connections: 8,
        })
    }

    /// Prepares a connection pool as `settings` say; nothing is sent yet.
    pub fn open(settings: &Neo4jSettings) -> Result<Self, GraphError> {
        let unavailable = |message: String| GraphError::Unavailable {
            uri: settings.uri.clone(),
            message,
        };
        let config = neo4rs::ConfigBuilder::default()
            .uri(&settings.uri)
            .user(settings.user.as_str())
            .password(settings.password.as_str())
            .max_connections(settings.max_connections.max(1))
            .build()
            .map_err(|error| unavailable(error.to_string()))?;
        let graph =
            neo4rs::Graph::connect(config).map_err(|error| unavailable(error.to_string()))?;
        Ok(Self {
            uri: settings.uri.clone(),
            namespace: settings.namespace.clone(),
            graph,
            timeout: settings.query_timeout,
            schema: OnceCell::new(),
        })
    }

    /// The server's address, as configured.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn unavailable(&self, message: impl Into<String>) -> GraphError {
        GraphError::Unavailable {
            uri: self.uri.clone(),
            message: message.into(),
        }
    }

    fn unexpected(&self, message: impl Into<String>) -> GraphError {
        GraphError::Unexpected {
            uri: self.uri.clone(),
            message: message.into(),
        }
    }

    /// Runs `RETURN 1` under the query deadline.
    pub async fn ping(&self) -> Result<(), GraphError> {
        let rows = self.fetch(query("RETURN 1 AS ok")).await?;
        match rows.first().map(|row| row.get::<i64>("ok")) {
            Some(Ok(1)) => Ok(()),
            other => Err(self.unexpected(format!("unexpected answer to RETURN 1: {other:?}"))),
        }
    }

    /// Pings until the server answers, backing off (with jitter) from 100 ms up to 2 s, and
    /// gives up at `deadline` with the last error.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<(), GraphError> {
        let give_up = Instant::now() + deadline;
        let mut backoff = Duration::from_millis(100);
        loop {
            let error = match self.ping().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            tracing::debug!(uri = %self.uri, %error, "graph store not ready; retrying");
            let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(jittered.min(left)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Creates the constraints and indexes once; a failure is retried by the next call.
    pub async fn ensure_schema(&self) -> Result<(), GraphError> {
        self.schema
            .get_or_try_init(|| async {
                for statement in SCHEMA {
                    match self.run_raw(query(statement)).await {
                        Ok(()) => {}
                        // Another client created the same rule at the same moment.
                        Err(GraphError::Unavailable { message, .. })
                            if message.contains("EquivalentSchemaRuleAlreadyExists") => {}
                        Err(error) => return Err(error),
                    }
                }
                tracing::debug!(uri = %self.uri, "graph schema ready");
                Ok::<_, GraphError>(())
            })
            .await
            .map(|_| ())
    }

    /// Deletes every node of this store's namespace and its relationships (tests and
    /// decommissioning; other namespaces are untouched).
    pub async fn clear_namespace(&self) -> Result<(), GraphError> {
        self.run_raw(
            query("MATCH (n {namespace: $namespace}) DETACH DELETE n")
                .param("namespace", self.namespace.as_str()),
        )
        .await
    }

    async fn run_raw(&self, q: Query) -> Result<(), GraphError> {
        match tokio::time::timeout(self.timeout, self.graph.run(q)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(self.unavailable(error.to_string())),
            Err(_) => Err(self.unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// A write, after the schema exists.
    async fn run(&self, q: Query) -> Result<(), GraphError> {
        self.ensure_schema().await?;
        self.run_raw(q.param("namespace", self.namespace.as_str()))
            .await
    }

    /// All rows of a read, under one deadline.
    async fn fetch(&self, q: Query) -> Result<Vec<Row>, GraphError> {
        let q = q.param("namespace", self.namespace.as_str());
        let read = async {
            let mut stream = self.graph.execute(q).await?;
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await? {
                rows.push(row);
            }
            Ok::<_, neo4rs::Error>(rows)
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(error)) => Err(self.unavailable(error.to_string())),
            Err(_) => Err(self.unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn fetch_schema(&self, q: Query) -> Result<Vec<Row>, GraphError> {
        self.ensure_schema().await?;
        self.fetch(q).await
    }

    fn get<'a, T: serde::Deserialize<'a>>(&self, row: &'a Row, key: &str) -> Result<T, GraphError> {
        row.get::<T>(key)
            .map_err(|error| self.unexpected(format!("column {key}: {error}")))
    }

    fn deployment(&self, row: &Row) -> Result<DeploymentRecord, GraphError> {
        Ok(DeploymentRecord {
            service: self.get(row, "service")?,
            version: self.get(row, "version")?,
            commit: self.get(row, "commit")?,
            repository: self.get(row, "repository")?,
            deployed_at: from_millis(self.get(row, "deployed_at")?),
        })
    }
}

/// Milliseconds since the Unix epoch (negative before it).
fn millis(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn strings(values: &[String]) -> BoltType {
    values.iter().map(String::as_str).collect::<Vec<_>>().into()
}

const DEPLOYMENT_COLUMNS: &str = "d.service AS service, d.version AS version, \
    d.commit AS commit, d.repository AS repository, d.deployed_at AS deployed_at";

#[async_trait::async_trait]
impl GraphStore for Neo4jGraph {
    fn describe(&self) -> String {
        format!("neo4j at {}", self.uri)
    }

    async fn record_calls(&self, edges: &[CallEdge]) -> Result<(), GraphError> {
        if edges.is_empty() {
            return Ok(());
        }
        let pairs: Vec<BoltType> = edges
            .iter()
            .map(|e| vec![e.caller.as_str(), e.callee.as_str()].into())
            .collect();
        self.run(
            query(
                "UNWIND $edges AS edge \
                 MERGE (a:Service {namespace: $namespace, name: edge[0]}) \
                 MERGE (b:Service {namespace: $namespace, name: edge[1]}) \
                 MERGE (a)-[:CALLS]->(b)",
            )
            .param("edges", pairs),
        )
        .await
    }

    async fn topology(&self) -> Result<Vec<CallEdge>, GraphError> {
        let rows = self
            .fetch_schema(
                query(
                    "MATCH (a:Service {namespace: $namespace})-[:CALLS]->(b:Service) \
                     RETURN a.name AS caller, b.name AS callee \
                     ORDER BY caller, callee LIMIT $limit",
                )
                .param("limit", limit(MAX_TOPOLOGY_EDGES)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CallEdge {
                    caller: self.get(row, "caller")?,
                    callee: self.get(row, "callee")?,
                })
            })
            .collect()
    }

    async fn callees(&self, service: &str) -> Result<Vec<String>, GraphError> {
        let rows = self
            .fetch_schema(
                query(
                    "MATCH (:Service {namespace: $namespace, name: $service})-[:CALLS]->(b:Service) \
                     RETURN DISTINCT b.name AS name ORDER BY name",
                )
                .param("service", service),
            )
            .await?;
        rows.iter().map(|row| self.get(row, "name")).collect()
    }

    async fn dependents(&self, service: &str) -> Result<Vec<String>, GraphError> {
        let rows = self
            .fetch_schema(
                query(
                    "MATCH (a:Service)-[:CALLS]->(:Service {namespace: $namespace, name: $service}) \
                     RETURN DISTINCT a.name AS name ORDER BY name",
                )
                .param("service", service),
            )
            .await?;
        rows.iter().map(|row| self.get(row, "name")).collect()
    }

    async fn record_deployment(
        &self,
        deployment: &DeploymentRecord,
        commit: Option<&CommitRecord>,
    ) -> Result<(), GraphError> {
        let (author, email, message, time, files) = match commit {
            Some(c) => (
                Some(c.author.as_str()),
                Some(c.author_email.as_str()),
                Some(c.message.as_str()),
                Some(millis(c.time)),
                Some(strings(&c.files)),
            ),
            None => (None, None, None, None, None),
        };
        self.run(
            query(
                "MERGE (s:Service {namespace: $namespace, name: $service}) \
                 MERGE (d:Deployment {namespace: $namespace, service: $service, version: $version}) \
                 SET d.commit = $commit, d.repository = $repository, d.deployed_at = $deployed_at \
                 MERGE (s)-[:DEPLOYED]->(d) \
                 WITH d \
                 OPTIONAL MATCH (d)-[old:OF_COMMIT]->(previous:Commit) WHERE previous.sha <> $commit \
                 DELETE old \
                 WITH DISTINCT d \
                 MERGE (c:Commit {namespace: $namespace, sha: $commit}) \
                 SET c.author = coalesce($author, c.author), \
                     c.author_email = coalesce($author_email, c.author_email), \
                     c.message = coalesce($message, c.message), \
                     c.time = coalesce($time, c.time), \
                     c.files = coalesce($files, c.files) \
                 MERGE (d)-[:OF_COMMIT]->(c)",
            )
            .param("service", deployment.service.as_str())
            .param("version", deployment.version.as_str())
            .param("commit", deployment.commit.as_str())
            .param("repository", deployment.repository.as_str())
            .param("deployed_at", millis(deployment.deployed_at))
            .param("author", author)
            .param("author_email", email)
            .param("message", message)
            .param("time", time)
            .param("files", files),
        )
        .await
    }

    async fn deployments(
        &self,
        service: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Vec<DeploymentRecord>, GraphError> {
        let rows = self
            .fetch_schema(
                query(&format!(
                    "MATCH (d:Deployment {{namespace: $namespace, service: $service}}) \
                     WHERE d.deployed_at >= $from AND d.deployed_at <= $to \
                     RETURN {DEPLOYMENT_COLUMNS} \
                     ORDER BY deployed_at DESC, version ASC LIMIT $limit"
                ))
                .param("service", service)
                .param("from", millis(from))
                .param("to", millis(to))
                .param("limit", limit(MAX_DEPLOYMENTS)),
            )
            .await?;
        rows.iter().map(|row| self.deployment(row)).collect()
    }

    async fn latest_deployment_before(
        &self,
        service: &str,
        at: SystemTime,
    ) -> Result<Option<DeploymentRecord>, GraphError> {
        let rows = self
            .fetch_schema(
                query(&format!(
                    "MATCH (d:Deployment {{namespace: $namespace, service: $service}}) \
                     WHERE d.deployed_at <= $at \
                     RETURN {DEPLOYMENT_COLUMNS} \
                     ORDER BY deployed_at DESC, version DESC LIMIT 1"
                ))
                .param("service", service)
                .param("at", millis(at)),
            )
            .await?;
        rows.first().map(|row| self.deployment(row)).transpose()
    }

    async fn commits(&self, shas: &[String]) -> Result<Vec<CommitRecord>, GraphError> {
        if shas.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .fetch_schema(
                query(
                    "MATCH (c:Commit {namespace: $namespace}) \
                     WHERE c.sha IN $shas AND c.time IS NOT NULL \
                     RETURN c.sha AS sha, coalesce(c.author, '') AS author, \
                       coalesce(c.author_email, '') AS author_email, \
                       coalesce(c.message, '') AS message, coalesce(c.time, 0) AS time, \
                       coalesce(c.files, []) AS files",
                )
                .param("shas", strings(shas)),
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            found.push(CommitRecord {
                sha: self.get(row, "sha")?,
                author: self.get(row, "author")?,
                author_email: self.get(row, "author_email")?,
                message: self.get(row, "message")?,
                time: from_millis(self.get(row, "time")?),
                files: self.get(row, "files")?,
            });
        }
        // The order asked for.
        found.sort_by_key(|c| shas.iter().position(|s| *s == c.sha));
        Ok(found)
    }

    async fn record_incident(&self, incident: &IncidentRecord) -> Result<(), GraphError> {
        self.run(
            query(
                "MERGE (s:Service {namespace: $namespace, name: $service}) \
                 MERGE (i:Incident {namespace: $namespace, id: $id}) \
                 SET i.service = $service, i.signal = $signal, \
                     i.first_bad_at = coalesce($first_bad_at, i.first_bad_at) \
                 MERGE (i)-[:AFFECTED]->(s)",
            )
            .param("id", incident.id.as_str())
            .param("service", incident.service.as_str())
            .param("signal", incident.signal.as_str())
            .param("first_bad_at", incident.first_bad_at.map(millis)),
        )
        .await
    }

    async fn record_fix(&self, fix: &FixRecord) -> Result<(), GraphError> {
        self.run(
            query(
                "MERGE (s:Service {namespace: $namespace, name: $service}) \
                 MERGE (i:Incident {namespace: $namespace, id: $incident}) \
                 ON CREATE SET i.service = $service, i.signal = '' \
                 MERGE (f:Fix {namespace: $namespace, incident_id: $incident, \
                               strategy: $strategy, template: $template, commit: $commit}) \
                 ON CREATE SET f.recorded_at = $recorded_at \
                 SET f.service = $service, f.cause_kind = $cause_kind \
                 MERGE (i)-[:RESOLVED_BY]->(f) \
                 WITH f, s \
                 OPTIONAL MATCH (f)-[old:FIXED]->(other:Service) WHERE other.name <> $service \
                 DELETE old \
                 WITH DISTINCT f, s \
                 MERGE (f)-[:FIXED]->(s)",
            )
            .param("incident", fix.incident_id.as_str())
            .param("service", fix.service.as_str())
            .param("cause_kind", fix.cause_kind.as_str())
            .param("strategy", fix.strategy.as_str())
            .param("template", fix.template.as_str())
            .param("commit", fix.commit.as_str())
            .param("recorded_at", millis(fix.recorded_at)),
        )
        .await
    }

    async fn past_fixes(&self, query_: &FixQuery) -> Result<Vec<FixRecord>, GraphError> {
        let rows = self
            .fetch_schema(
                query(
                    "MATCH (f:Fix {namespace: $namespace}) \
                     WHERE f.service = $service OR f.cause_kind = $cause_kind \
                     RETURN f.incident_id AS incident_id, f.service AS service, \
                       f.cause_kind AS cause_kind, f.strategy AS strategy, \
                       f.template AS template, f.commit AS commit, f.recorded_at AS recorded_at \
                     ORDER BY recorded_at DESC, incident_id ASC, strategy ASC LIMIT $limit",
                )
                .param("service", query_.service.as_deref())
                .param("cause_kind", query_.cause_kind.map(CauseKind::as_str))
                .param("limit", limit(query_.limit.min(MAX_FIXES))),
            )
            .await?;
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            found.push(FixRecord {
                incident_id: self.get(row, "incident_id")?,
                service: self.get(row, "service")?,
                cause_kind: CauseKind::parse(&self.get::<String>(row, "cause_kind")?),
                strategy: self.get(row, "strategy")?,
                template: self.get(row, "template")?,
                commit: self.get(row, "commit")?,
                recorded_at: from_millis(self.get(row, "recorded_at")?),
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_milliseconds() {
        for at in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            UNIX_EPOCH - Duration::from_millis(5),
        ] {
            assert_eq!(from_millis(millis(at)), at);
        }
    }
}
