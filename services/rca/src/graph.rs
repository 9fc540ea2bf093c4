//! The connection to the dependency graph in Neo4j over Bolt: deadlines on every query, retry
//! with backoff while the server comes up, and errors that name the server. The graph model
//! (services, `CALLS`, deployments, commits, fixes) builds on this.

use std::time::Duration;

use tokio::time::Instant;

/// Errors reaching the graph. Analysis degrades without the graph; it never fails on it.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("graph store {uri} is unavailable: {message}")]
    Unavailable { uri: String, message: String },
}

/// A Neo4j database reached over Bolt.
pub struct Neo4jGraph {
    uri: String,
    graph: neo4rs::Graph,
    timeout: Duration,
}

impl std::fmt::Debug for Neo4jGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neo4jGraph")
            .field("uri", &self.uri)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Neo4jGraph {
    /// Prepares a connection pool to `uri` (`bolt://host:port`); nothing is sent yet.
    /// `timeout` bounds every query.
    pub fn connect(
        uri: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, GraphError> {
        let unavailable = |message: String| GraphError::Unavailable {
            uri: uri.to_owned(),
            message,
        };
        let config = neo4rs::ConfigBuilder::default()
            .uri(uri)
            .user(user)
            .password(password)
            .max_connections(8)
            .build()
            .map_err(|error| unavailable(error.to_string()))?;
        let graph =
            neo4rs::Graph::connect(config).map_err(|error| unavailable(error.to_string()))?;
        Ok(Self {
            uri: uri.to_owned(),
            graph,
            timeout,
        })
    }

    /// The server's address, as configured.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Runs `RETURN 1` under the query deadline.
    pub async fn ping(&self) -> Result<(), GraphError> {
        let unavailable = |message: String| GraphError::Unavailable {
            uri: self.uri.clone(),
            message,
        };
        let query = async {
            let mut rows = self.graph.execute(neo4rs::query("RETURN 1 AS ok")).await?;
            let row = rows.next().await?;
            Ok::<_, neo4rs::Error>(row.and_then(|row| row.get::<i64>("ok").ok()))
        };
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(Some(1))) => Ok(()),
            Ok(Ok(other)) => Err(unavailable(format!(
                "unexpected answer to RETURN 1: {other:?}"
            ))),
            Ok(Err(error)) => Err(unavailable(error.to_string())),
            Err(_) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
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
}
