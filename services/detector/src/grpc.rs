//! The gRPC edge of the detector service: decode, call the domain, encode. Nothing else.

use selfheal_proto::v1::detector_server::Detector;
use selfheal_proto::v1::{
    AddTargetRequest, AddTargetResponse, GetIncidentRequest, GetIncidentResponse,
    ListIncidentsRequest, ListIncidentsResponse, ListTargetsRequest, ListTargetsResponse,
    QuerySeriesRequest, QuerySeriesResponse, RemoveTargetRequest, RemoveTargetResponse,
    WatchIncidentsRequest, WatchIncidentsResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Implements `selfheal.v1.Detector`.
#[derive(Debug, Default)]
pub(crate) struct DetectorApi;

#[tonic::async_trait]
impl Detector for DetectorApi {
    type WatchIncidentsStream = BoxStream<WatchIncidentsResponse>;

    async fn watch_incidents(
        &self,
        _request: Request<WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        Err(Error::NotBuilt {
            rpc: "WatchIncidents",
            missing: "incident streaming needs the scrape and alert pipeline",
        }
        .into())
    }

    async fn list_incidents(
        &self,
        _request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "ListIncidents",
            missing: "incident storage needs the scrape and alert pipeline",
        }
        .into())
    }

    async fn get_incident(
        &self,
        _request: Request<GetIncidentRequest>,
    ) -> Result<Response<GetIncidentResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "GetIncident",
            missing: "incident storage needs the scrape and alert pipeline",
        }
        .into())
    }

    async fn add_target(
        &self,
        _request: Request<AddTargetRequest>,
    ) -> Result<Response<AddTargetResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "AddTarget",
            missing: "scrape targets need the scraper",
        }
        .into())
    }

    async fn remove_target(
        &self,
        _request: Request<RemoveTargetRequest>,
    ) -> Result<Response<RemoveTargetResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "RemoveTarget",
            missing: "scrape targets need the scraper",
        }
        .into())
    }

    async fn list_targets(
        &self,
        _request: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "ListTargets",
            missing: "scrape targets need the scraper",
        }
        .into())
    }

    async fn query_series(
        &self,
        _request: Request<QuerySeriesRequest>,
    ) -> Result<Response<QuerySeriesResponse>, Status> {
        Err(Error::NotBuilt {
            rpc: "QuerySeries",
            missing: "series need the sliding-window store",
        }
        .into())
    }
}
