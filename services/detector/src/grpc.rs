//! The gRPC edge of the detector service: decode, call the domain, encode. Nothing else. The
//! orchestrator client that incidents are reported through lives here too, being protobuf.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use selfheal_proto::v1 as pb;
use selfheal_proto::v1::detector_server::Detector as DetectorRpc;
use selfheal_proto::v1::orchestrator_client::OrchestratorClient;
use selfheal_proto::v1::{
    AddTargetRequest, AddTargetResponse, GetIncidentRequest, GetIncidentResponse,
    ListIncidentsRequest, ListIncidentsResponse, ListTargetsRequest, ListTargetsResponse,
    QuerySeriesRequest, QuerySeriesResponse, RemoveTargetRequest, RemoveTargetResponse,
    WatchIncidentsRequest, WatchIncidentsResponse,
};
use selfheal_telemetry::TracedChannel;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::detector::{Detector, SeriesData, SeriesQuery};
use crate::error::Error;
use crate::incident::{
    EventKind, Incident, IncidentEvent, IncidentQuery, Severity, Signal, Source, Status as State,
};
use crate::report::{IncidentSink, SinkError};
use crate::target::{TargetSpec, TargetView};

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `selfheal.v1.Detector`.
#[derive(Debug, Clone)]
pub(crate) struct DetectorApi {
    detector: Detector,
}

impl DetectorApi {
    pub(crate) fn new(detector: Detector) -> Self {
        Self { detector }
    }
}

#[tonic::async_trait]
impl DetectorRpc for DetectorApi {
    type WatchIncidentsStream = BoxStream<WatchIncidentsResponse>;

    async fn watch_incidents(
        &self,
        request: Request<WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let request = request.into_inner();
        let service = Some(request.service).filter(|s| !s.is_empty());
        let (open, receiver) = self.detector.subscribe();
        let replay: Vec<Result<WatchIncidentsResponse, Status>> = if request.include_open {
            open.into_iter()
                .filter(|i| service.as_ref().is_none_or(|s| *s == i.service))
                .map(|incident| {
                    Ok(encode_event(IncidentEvent {
                        kind: EventKind::Opened,
                        incident,
                    }))
                })
                .collect()
        } else {
            Vec::new()
        };
        let live = BroadcastStream::new(receiver)
            .filter_map(move |item| match item {
                Ok(event) => service
                    .as_ref()
                    .is_none_or(|s| *s == event.incident.service)
                    .then(|| Ok(encode_event(event))),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Some(Err(Status::resource_exhausted(format!(
                        "watcher fell {missed} events behind; watch again with include_open"
                    ))))
                }
            })
            // A lagging watcher gets its error and the stream ends: it must not miss events silently.
            .map_while({
                let mut ended = false;
                move |item: Result<WatchIncidentsResponse, Status>| {
                    if ended {
                        return None;
                    }
                    ended = item.is_err();
                    Some(item)
                }
            });
        let stream = tokio_stream::iter(replay).chain(live);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let request = request.into_inner();
        let status = match pb::IncidentStatus::try_from(request.status) {
            Ok(pb::IncidentStatus::Unspecified) => None,
            Ok(pb::IncidentStatus::Open) => Some(State::Open),
            Ok(pb::IncidentStatus::Resolved) => Some(State::Resolved),
            Err(_) => {
                return Err(Error::InvalidField {
                    field: "status",
                    reason: format!("unknown value {}", request.status),
                }
                .into());
            }
        };
        let query = IncidentQuery {
            service: Some(request.service).filter(|s| !s.is_empty()),
            status,
            limit: (request.limit > 0).then_some(request.limit as usize),
        };
        let incidents = self
            .detector
            .incidents(&query)
            .into_iter()
            .map(encode_incident)
            .collect();
        Ok(Response::new(ListIncidentsResponse { incidents }))
    }

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<GetIncidentResponse>, Status> {
        let id = request.into_inner().id;
        if id.is_empty() {
            return Err(Error::MissingField("id").into());
        }
        let incident = self.detector.incident(&id).ok_or(Error::NotFound {
            what: "incident",
            id,
        })?;
        Ok(Response::new(GetIncidentResponse {
            incident: Some(encode_incident(incident)),
        }))
    }

    async fn add_target(
        &self,
        request: Request<AddTargetRequest>,
    ) -> Result<Response<AddTargetResponse>, Status> {
        let target = request
            .into_inner()
            .target
            .ok_or(Error::MissingField("target"))?;
        let spec = TargetSpec::new(
            target.service,
            target.address,
            target.labels.into_iter().collect(),
        )
        .map_err(Error::InvalidTarget)?;
        let view = self.detector.add_target(spec);
        Ok(Response::new(AddTargetResponse {
            target: Some(encode_target(view)),
        }))
    }

    async fn remove_target(
        &self,
        request: Request<RemoveTargetRequest>,
    ) -> Result<Response<RemoveTargetResponse>, Status> {
        let service = request.into_inner().service;
        if service.is_empty() {
            return Err(Error::MissingField("service").into());
        }
        let removed = self.detector.remove_target(&service);
        Ok(Response::new(RemoveTargetResponse { removed }))
    }

    async fn list_targets(
        &self,
        _request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        let targets = self
            .detector
            .targets()
            .into_iter()
            .map(encode_target)
            .collect();
        Ok(Response::new(ListTargetsResponse { targets }))
    }

    async fn query_series(
        &self,
        request: Request<QuerySeriesRequest>,
    ) -> Result<Response<QuerySeriesResponse>, Status> {
        let request = request.into_inner();
        if request.service.is_empty() {
            return Err(Error::MissingField("service").into());
        }
        let known: HashSet<&str> = crate::detector::SERIES_NAMES.into_iter().collect();
        if let Some(unknown) = request.names.iter().find(|n| !known.contains(n.as_str())) {
            return Err(Error::InvalidField {
                field: "names",
                reason: format!(
                    "unknown series {unknown:?}; known: {}",
                    crate::detector::SERIES_NAMES.join(", ")
                ),
            }
            .into());
        }
        let query = SeriesQuery {
            service: request.service.clone(),
            names: request.names,
            start: request.start.map(decode_time).transpose()?,
            end: request.end.map(decode_time).transpose()?,
            step: request
                .step
                .map(|d| {
                    Duration::try_from(d).map_err(|e| Error::InvalidField {
                        field: "step",
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
        };
        let series = self.detector.series(&query).ok_or(Error::NotFound {
            what: "target",
            id: request.service.clone(),
        })?;
        Ok(Response::new(QuerySeriesResponse {
            series: series
                .into_iter()
                .map(|s| encode_series(&request.service, s))
                .collect(),
        }))
    }
}

fn decode_time(timestamp: prost_types::Timestamp) -> Result<SystemTime, Error> {
    SystemTime::try_from(timestamp).map_err(|e| Error::InvalidField {
        field: "timestamp",
        reason: e.to_string(),
    })
}

fn encode_time(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

fn encode_event(event: IncidentEvent) -> WatchIncidentsResponse {
    let kind = match event.kind {
        EventKind::Opened => pb::IncidentEventKind::Opened,
        EventKind::Updated => pb::IncidentEventKind::Updated,
        EventKind::Resolved => pb::IncidentEventKind::Resolved,
    };
    WatchIncidentsResponse {
        kind: kind as i32,
        incident: Some(encode_incident(event.incident)),
    }
}

pub(crate) fn encode_incident(incident: Incident) -> pb::Incident {
    let signal = match incident.signal {
        Signal::ErrorRate => pb::SignalKind::ErrorRate,
        Signal::LatencyP99 => pb::SignalKind::LatencyP99,
        Signal::MemoryGrowth => pb::SignalKind::MemoryGrowth,
        Signal::Restarts => pb::SignalKind::Restarts,
        Signal::TargetDown => pb::SignalKind::TargetDown,
        Signal::Alert => pb::SignalKind::Alert,
    };
    let severity = match incident.severity {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    };
    let status = match incident.status {
        State::Open => pb::IncidentStatus::Open,
        State::Resolved => pb::IncidentStatus::Resolved,
    };
    let source = match incident.source {
        Source::Scrape => pb::IncidentSource::Scrape,
        Source::Alertmanager => pb::IncidentSource::Alertmanager,
    };
    pb::Incident {
        id: incident.id,
        fingerprint: incident.fingerprint,
        service: incident.service,
        signal: signal as i32,
        severity: severity as i32,
        status: status as i32,
        source: source as i32,
        observed_value: incident.observed_value,
        threshold: incident.threshold,
        baseline: incident.baseline,
        window: prost_types::Duration::try_from(incident.window).ok(),
        sample_count: incident.sample_count,
        bad_sample_count: incident.bad_sample_count,
        first_bad_at: Some(encode_time(incident.first_bad_at)),
        opened_at: Some(encode_time(incident.opened_at)),
        resolved_at: incident.resolved_at.map(encode_time),
        labels: incident.labels.into_iter().collect(),
        summary: incident.summary,
    }
}

fn encode_target(view: TargetView) -> pb::ScrapeTarget {
    pb::ScrapeTarget {
        service: view.spec.service,
        address: view.spec.address,
        labels: view.spec.labels.into_iter().collect(),
        up: view.health.up,
        last_scrape_at: view.health.last_scrape_at.map(encode_time),
        last_error: view.health.last_error.unwrap_or_default(),
    }
}

fn encode_series(service: &str, series: SeriesData) -> pb::Series {
    pb::Series {
        service: service.to_owned(),
        name: series.name,
        labels: series.labels.into_iter().collect(),
        points: series
            .points
            .into_iter()
            .map(|(at, value)| pb::SeriesPoint {
                at: Some(encode_time(at)),
                value,
            })
            .collect(),
    }
}

/// Reports incidents with `Orchestrator.ReportIncident` over a traced channel.
#[derive(Clone, Debug)]
pub(crate) struct OrchestratorSink {
    client: OrchestratorClient<TracedChannel>,
    call_timeout: Duration,
}

impl OrchestratorSink {
    pub(crate) fn connect_lazy(
        url: &str,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, Error> {
        let channel = selfheal_telemetry::connect_lazy(url, connect_timeout).map_err(|source| {
            Error::OrchestratorUrl {
                url: url.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            client: OrchestratorClient::new(channel),
            call_timeout,
        })
    }
}

impl IncidentSink for OrchestratorSink {
    fn report(&self, incident: Incident) -> BoxFuture<'static, Result<(), SinkError>> {
        let mut client = self.client.clone();
        let call_timeout = self.call_timeout;
        Box::pin(async move {
            let incident_id = incident.id.clone();
            let mut request = Request::new(pb::ReportIncidentRequest {
                incident: Some(encode_incident(incident)),
            });
            request.set_timeout(call_timeout);
            let response = client
                .report_incident(request)
                .await
                .map_err(|status| SinkError(format!("{:?}: {}", status.code(), status.message())))?
                .into_inner();
            tracing::info!(%incident_id, saga_id = %response.saga_id, joined = response.joined, "incident reported");
            Ok(())
        })
    }
}
