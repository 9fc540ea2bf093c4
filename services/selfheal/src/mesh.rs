//! Starting all seven services in one process, each on its own loopback ports.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use selfheal_service::{ConfigSources, EnvSource, Listeners, ServeError, ServiceConfig, load};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The services of the mesh, in port order (orchestrator first).
pub const SERVICES: [&str; 7] = [
    "orchestrator",
    "detector",
    "rca",
    "patcher",
    "safety-gate",
    "deployer",
    "audit",
];

/// How to start the mesh.
pub struct MeshOptions<'a> {
    /// Address every service binds.
    pub host: IpAddr,
    /// gRPC port of the orchestrator; the others follow in [`SERVICES`] order, and each HTTP
    /// port is its gRPC port plus 10. `0` picks free ports (tests).
    pub base_port: u16,
    /// One TOML file with a table per service (`[detector.server]`, …).
    pub config_file: Option<&'a Path>,
    /// `service.key=value` settings, e.g. `detector.server.shutdown_grace=5s`.
    pub overrides: Vec<String>,
    /// Environment: `SELFHEAL_DETECTOR__SERVER__SHUTDOWN_GRACE=5s` and so on.
    pub env: &'a (dyn EnvSource + Sync),
}

impl std::fmt::Debug for MeshOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshOptions")
            .field("host", &self.host)
            .field("base_port", &self.base_port)
            .field("config_file", &self.config_file)
            .field("overrides", &self.overrides)
            .finish_non_exhaustive()
    }
}

/// Errors from starting or stopping the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<String>),
    #[error("{service}: {source}")]
    Bind {
        service: &'static str,
        #[source]
        source: ServeError,
    },
    #[error("{service} stopped with an error: {message}")]
    Service {
        service: &'static str,
        message: String,
    },
}

/// Where one running service listens.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    pub service: &'static str,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Endpoint {
    /// `http://host:port` of the gRPC server.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }
}

/// The running mesh; stop it with [`RunningMesh::stop`].
#[derive(Debug)]
pub struct RunningMesh {
    endpoints: Vec<Endpoint>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
}

impl RunningMesh {
    /// Every service's addresses, in [`SERVICES`] order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The addresses of `service`.
    pub fn endpoint(&self, service: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|endpoint| endpoint.service == service)
    }

    /// `http://host:port` of `service`'s gRPC server; empty for a service the mesh lacks.
    pub fn grpc_url(&self, service: &str) -> String {
        self.endpoint(service)
            .map(Endpoint::grpc_url)
            .unwrap_or_default()
    }

    /// Resolves when any service stops on its own (which it should only do on failure).
    pub async fn any_stopped(&mut self) -> Result<(), MeshError> {
        match self.tasks.join_next().await {
            Some(Ok((service, Err(message)))) => Err(MeshError::Service { service, message }),
            Some(Ok((service, Ok(())))) => Err(MeshError::Service {
                service,
                message: "stopped unexpectedly".to_owned(),
            }),
            Some(Err(error)) => Err(MeshError::Service {
                service: "mesh",
                message: error.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Cancels every service and waits for all of them; reports the first failure.
    pub async fn stop(mut self) -> Result<(), MeshError> {
        self.shutdown.cancel();
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let error = match joined {
                Ok((_, Ok(()))) => None,
                Ok((service, Err(message))) => Some(MeshError::Service { service, message }),
                Err(error) => Some(MeshError::Service {
                    service: "mesh",
                    message: error.to_string(),
                }),
            };
            if first_error.is_none() {
                first_error = error;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Loads every service's configuration, binds every port, then starts all seven.
/// Nothing is started unless every configuration is valid and every port could be bound.
pub async fn start(options: MeshOptions<'_>) -> Result<RunningMesh, MeshError> {
    let mut problems = stray_settings(&options);
    let orchestrator =
        layered::<selfheal_orchestrator::Config>(&options, "orchestrator", &mut problems);
    let detector = layered::<selfheal_detector::Config>(&options, "detector", &mut problems);
    let rca = layered::<selfheal_rca::Config>(&options, "rca", &mut problems);
    let patcher = layered::<selfheal_patcher::Config>(&options, "patcher", &mut problems);
    let safety_gate =
        layered::<selfheal_safety_gate::Config>(&options, "safety-gate", &mut problems);
    let deployer = layered::<selfheal_deployer::Config>(&options, "deployer", &mut problems);
    let audit = layered::<selfheal_audit::Config>(&options, "audit", &mut problems);
    let (
        Some(mut orchestrator_config),
        Some(detector),
        Some(rca),
        Some(patcher),
        Some(safety_gate),
        Some(deployer),
        Some(audit),
    ) = (
        orchestrator,
        detector,
        rca,
        patcher,
        safety_gate,
        deployer,
        audit,
    )
    else {
        return Err(MeshError::Config(problems));
    };

    let mut bound = Vec::new();
    for (service, server) in [
        ("orchestrator", orchestrator_config.server()),
        ("detector", detector.server()),
        ("rca", rca.server()),
        ("patcher", patcher.server()),
        ("safety-gate", safety_gate.server()),
        ("deployer", deployer.server()),
        ("audit", audit.server()),
    ] {
        let listeners = Listeners::bind(server.grpc_addr, server.http_addr)
            .await
            .map_err(|source| MeshError::Bind { service, source })?;
        bound.push((service, listeners));
    }
    let endpoints: Vec<Endpoint> = bound
        .iter()
        .map(|(service, listeners)| Endpoint {
            service,
            grpc_addr: listeners.grpc_addr(),
            http_addr: listeners.http_addr(),
        })
        .collect();
    // In one process the orchestrator always talks to its in-process peers.
    let url_of = |name: &str| {
        endpoints
            .iter()
            .find(|e| e.service == name)
            .map(Endpoint::grpc_url)
            .unwrap_or_default()
    };
    let mut detector = detector;
    detector.orchestrator.url = url_of("orchestrator");
    let mut rca = rca;
    rca.sources.deployer = url_of("deployer");
    rca.sources.detector = url_of("detector");
    let peers = &mut orchestrator_config.peers;
    peers.detector = url_of("detector");
    peers.rca = url_of("rca");
    peers.patcher = url_of("patcher");
    peers.safety_gate = url_of("safety-gate");
    peers.deployer = url_of("deployer");
    peers.audit = url_of("audit");

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut listeners = bound.into_iter().map(|(_, listeners)| listeners);
    let mut next = || listeners.next();
    spawn(&mut tasks, "orchestrator", next(), &shutdown, |l, s| {
        selfheal_orchestrator::run(orchestrator_config, l, s)
    });
    spawn(&mut tasks, "detector", next(), &shutdown, |l, s| {
        selfheal_detector::run(detector, l, s)
    });
    spawn(&mut tasks, "rca", next(), &shutdown, |l, s| {
        selfheal_rca::run(rca, l, s)
    });
    spawn(&mut tasks, "patcher", next(), &shutdown, |l, s| {
        selfheal_patcher::run(patcher, l, s)
    });
    spawn(&mut tasks, "safety-gate", next(), &shutdown, |l, s| {
        selfheal_safety_gate::run(safety_gate, l, s)
    });
    spawn(&mut tasks, "deployer", next(), &shutdown, |l, s| {
        selfheal_deployer::run(deployer, l, s)
    });
    spawn(&mut tasks, "audit", next(), &shutdown, |l, s| {
        selfheal_audit::run(audit, l, s)
    });
    Ok(RunningMesh {
        endpoints,
        shutdown,
        tasks,
    })
}

/// Runs one service of the mesh as this process's only service until `shutdown`: its
/// configuration is loaded as [`start`] loads it, and its peers' addresses come from the
/// settings (`orchestrator.peers.audit=http://…`) since no mesh sits beside it. Used to run a
/// service as its own process, e.g. to kill and restart it while the rest of the mesh runs.
pub async fn serve_one(
    service: &str,
    options: MeshOptions<'_>,
    shutdown: CancellationToken,
) -> Result<(), MeshError> {
    let Some(service) = SERVICES.iter().copied().find(|name| *name == service) else {
        return Err(MeshError::Config(vec![format!(
            "unknown service {service:?}; one of: {}",
            SERVICES.join(", ")
        )]));
    };
    async fn one<C: ServiceConfig, F, Fut, E>(
        options: &MeshOptions<'_>,
        service: &'static str,
        shutdown: CancellationToken,
        run: F,
    ) -> Result<(), MeshError>
    where
        F: FnOnce(C, Listeners, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut problems = stray_settings(options);
        let config = layered::<C>(options, service, &mut problems);
        let (Some(config), true) = (config, problems.is_empty()) else {
            return Err(MeshError::Config(problems));
        };
        let server = config.server();
        let listeners = Listeners::bind(server.grpc_addr, server.http_addr)
            .await
            .map_err(|source| MeshError::Bind { service, source })?;
        run(config, listeners, shutdown)
            .await
            .map_err(|error| MeshError::Service {
                service,
                message: error.to_string(),
            })
    }
    match service {
        "orchestrator" => one(&options, service, shutdown, selfheal_orchestrator::run).await,
        "detector" => one(&options, service, shutdown, selfheal_detector::run).await,
        "rca" => one(&options, service, shutdown, selfheal_rca::run).await,
        "patcher" => one(&options, service, shutdown, selfheal_patcher::run).await,
        "safety-gate" => one(&options, service, shutdown, selfheal_safety_gate::run).await,
        "deployer" => one(&options, service, shutdown, selfheal_deployer::run).await,
        _ => one(&options, service, shutdown, selfheal_audit::run).await,
    }
}

/// Settings that name no service: every `--set` of the mesh is `<service>.key=value`, and one
/// for no service would otherwise be dropped without a word.
fn stray_settings(options: &MeshOptions<'_>) -> Vec<String> {
    options
        .overrides
        .iter()
        .filter(|setting| {
            let key = setting.split_once('=').map_or(setting.as_str(), |(key, _)| key);
            let first = key.trim().split('.').next().unwrap_or_default();
            !SERVICES
                .iter()
                .any(|service| *service == first || service.replace('-', "_") == first)
        })
        .map(|setting| {
            format!(
                "setting {setting:?} names no service: settings look like <service>.key=value, with <service> one of {}",
                SERVICES.join(", ")
            )
        })
        .collect()
}

/// Loads one service's configuration: its defaults on this mesh's port plan, then its table of
/// the shared file, then `SELFHEAL_<SERVICE>__*`, then `<service>.key=value` settings.
fn layered<C: ServiceConfig>(
    options: &MeshOptions<'_>,
    service: &'static str,
    problems: &mut Vec<String>,
) -> Option<C> {
    let mut defaults = C::default();
    let index = SERVICES
        .iter()
        .position(|name| *name == service)
        .unwrap_or_default();
    let (grpc_port, http_port) = match options.base_port {
        0 => (0, 0),
        base => {
            let grpc = base.saturating_add(u16::try_from(index).unwrap_or(u16::MAX));
            (grpc, grpc.saturating_add(10))
        }
    };
    let server = defaults.server_mut();
    server.grpc_addr = SocketAddr::new(options.host, grpc_port);
    server.http_addr = SocketAddr::new(options.host, http_port);

    let table = service.replace('-', "_");
    let env_prefix = format!("SELFHEAL_{}__", table.to_ascii_uppercase());
    let dashed = format!("{service}.");
    let underscored = format!("{table}.");
    let overrides = options
        .overrides
        .iter()
        .filter_map(|setting| {
            setting
                .strip_prefix(&dashed)
                .or_else(|| setting.strip_prefix(&underscored))
        })
        .map(str::to_owned)
        .collect();
    let sources = ConfigSources {
        file: options.config_file,
        env_prefix: &env_prefix,
        env: options.env,
        overrides,
        file_table: Some(&table),
    };
    match load(&defaults, &sources) {
        Ok(config) => Some(config),
        Err(error) => {
            problems.extend(
                error
                    .problems()
                    .into_iter()
                    .map(|problem| format!("{service}: {problem}")),
            );
            None
        }
    }
}

fn spawn<F, Fut, E>(
    tasks: &mut JoinSet<(&'static str, Result<(), String>)>,
    service: &'static str,
    listeners: Option<Listeners>,
    shutdown: &CancellationToken,
    run: F,
) where
    F: FnOnce(Listeners, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let Some(listeners) = listeners else {
        return;
    };
    let future = run(listeners, shutdown.child_token());
    tasks.spawn(async move { (service, future.await.map_err(|error| error.to_string())) });
}
