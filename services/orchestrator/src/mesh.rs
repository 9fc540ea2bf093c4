//! The orchestrator's view of the mesh: one traced gRPC channel per peer, and health probes.

use std::time::{Duration, Instant};

use selfheal_telemetry::{TracedChannel, connect_lazy};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as HealthStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Peers;
use crate::error::Error;

/// A peer service the orchestrator calls.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) name: &'static str,
    pub(crate) address: String,
    pub(crate) channel: TracedChannel,
}

/// What a health probe of one peer found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PeerHealth {
    Serving,
    NotServing,
    Unreachable(String),
}

/// All peers, connected lazily so services may start in any order.
#[derive(Clone, Debug)]
pub(crate) struct Mesh {
    peers: Vec<Peer>,
    call_timeout: Duration,
}

impl Mesh {
    pub(crate) fn connect(config: &Peers) -> Result<Self, Error> {
        let peers = config
            .named()
            .into_iter()
            .map(|(name, address)| {
                let channel = connect_lazy(address, config.connect_timeout).map_err(|source| {
                    Error::PeerAddress {
                        peer: name,
                        address: address.to_owned(),
                        source,
                    }
                })?;
                Ok(Peer {
                    name,
                    address: address.to_owned(),
                    channel,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            peers,
            call_timeout: config.call_timeout,
        })
    }

    /// The channel to the peer named `name` (as in [`Peers::named`]).
    pub(crate) fn channel(&self, name: &str) -> Option<TracedChannel> {
        self.peers
            .iter()
            .find(|peer| peer.name == name)
            .map(|peer| peer.channel.clone())
    }

    /// Probes every peer's gRPC health concurrently; returns them in configuration order.
    pub(crate) async fn probe_all(&self) -> Vec<(Peer, PeerHealth, Duration)> {
        let probes = self.peers.iter().map(|peer| async move {
            let started = Instant::now();
            let health = probe(peer, self.call_timeout).await;
            (peer.clone(), health, started.elapsed())
        });
        futures::future::join_all(probes).await
    }
}

async fn probe(peer: &Peer, timeout: Duration) -> PeerHealth {
    let mut client = HealthClient::new(peer.channel.clone());
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(timeout);
    // The deadline also covers connecting, which `grpc-timeout` alone does not bound.
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(response)) => match response.into_inner().status() {
            HealthStatus::Serving => PeerHealth::Serving,
            _ => PeerHealth::NotServing,
        },
        Ok(Err(status)) => PeerHealth::Unreachable(status.message().to_owned()),
        Err(_) => PeerHealth::Unreachable(format!("no answer within {timeout:?}")),
    }
}
