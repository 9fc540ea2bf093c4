//! Root-cause analysis: collects evidence for an incident, ranks causes over the dependency graph,
//! and localises the faulty line and the commit that introduced it.
//!
//! The library exposes [`run`]; the binary in `main.rs` only loads configuration and calls it.

pub mod analysis;
mod config;
mod error;
pub mod graph;
mod grpc;
pub mod localize;
mod validate;

use std::sync::Arc;

pub use config::{
    AnalysisConfig, Config, DEFAULT_GRPC_PORT, GraphBackend, GraphConfig, LocalizeConfig,
    SourcesConfig,
};
pub use error::Error;

use selfheal_proto::v1::rca_server::RcaServer;
use selfheal_service::{Listeners, ServiceHost};
use tokio_util::sync::CancellationToken;

use crate::graph::{EmbeddedGraph, GraphStore, Neo4jGraph};

/// The component name used in logs, spans and metrics.
pub const COMPONENT: &str = "rca";

/// The graph store `config` names. Neo4j is not contacted here; see [`prepare_graph`].
pub fn open_graph(config: &GraphConfig) -> Result<Arc<dyn GraphStore>, Error> {
    Ok(match config.backend {
        GraphBackend::Embedded => Arc::new(EmbeddedGraph::new()),
        GraphBackend::Neo4j => Arc::new(Neo4jGraph::open(&config.neo4j_settings())?),
    })
}

/// Serves the rca service on `listeners` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let host = ServiceHost::new(COMPONENT, selfheal_proto::service_names::RCA)?;
    let (graph, schema) = match config.graph.backend {
        GraphBackend::Embedded => (open_graph(&config.graph)?, None),
        GraphBackend::Neo4j => {
            let neo4j = Arc::new(Neo4jGraph::open(&config.graph.neo4j_settings())?);
            // Constraints and indexes are created at start when Neo4j answers in time; otherwise
            // the first graph call creates them, and analysis degrades until then.
            let preparing = Arc::clone(&neo4j);
            let wait = config.graph.connect_timeout;
            let schema = tokio::spawn(async move {
                let ready = async {
                    preparing.wait_ready(wait).await?;
                    preparing.ensure_schema().await
                };
                if let Err(error) = ready.await {
                    tracing::warn!(%error, "graph schema not created at start; retried on first use");
                }
            });
            (neo4j as Arc<dyn GraphStore>, Some(schema))
        }
    };
    host.readiness().set_serving().await;
    let localizer = Arc::new(localize::Localizer::new(config.localize.settings()));
    let collector = analysis::collect::Collector::new(
        config.sources.clone(),
        graph,
        config.localize.git_timeout,
    );
    let analyzer = Arc::new(analysis::Analyzer::new(
        collector,
        Arc::clone(&localizer),
        config.analysis.clone(),
    ));
    // Requests up to twice the analysis limit are decoded so the limit can be reported as
    // INVALID_ARGUMENT with the sizes; larger ones are refused by the transport.
    let limit = config.analysis.max_request_bytes.saturating_mul(2);
    let service = RcaServer::new(grpc::RcaApi::new(
        localizer,
        analyzer,
        config.analysis.clone(),
        config.localize.git_timeout,
    ))
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let served = host
        .serve(
            service,
            axum::Router::new(),
            listeners,
            shutdown,
            config.server.shutdown_grace,
        )
        .await;
    if let Some(schema) = schema {
        schema.abort();
        let _ = schema.await;
    }
    served?;
    Ok(())
}
