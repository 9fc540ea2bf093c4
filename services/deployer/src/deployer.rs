//! The deployer's domain: which versions of which services run, where traffic goes, and the
//! rollouts that change both. Rollouts run in tasks the deployer owns (not in RPC futures), so a
//! caller that disconnects does not stop a half-done canary; their events go to a [`RolloutLog`].
//!
//! Each service's record (`state`) is written before a change is reported: a started
//! deployer first stops the processes a crashed predecessor left, then puts every recorded
//! stable back behind its public address and closes the rollout the crash interrupted as rolled
//! back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sha2::Digest;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analysis::{self, Thresholds, Verdict, WindowSample};
use crate::builder::{BuildSpec, BuiltVersion, LocalBuilder, VersionBuilder};
use crate::config::{CanaryDefaults, Config, validate_plan};
use crate::error::Error;
use crate::fencing::FencingStore;
use crate::memory;
use crate::model::{
    CanaryPlan, Decision, DecisionFactor, DecisionKind, DeployRequest, LogLine, ReplaySample,
    RollbackOutcome, RollbackRequest, RolloutEvent, RolloutEventKind, ServiceStatus, Strategy,
    VerifyOutcome, VerifyRequest, VersionStatus,
};
use crate::process::{
    HttpClient, LogBuffer, Process, Supervision, http_client, pick_port, stop_orphans,
};
use crate::rollout_log::RolloutLog;
use crate::router::{RouterMetrics, Routes, ServiceRouter, Upstream};
use crate::state::{
    OutcomeKind, OutcomeRecord, RollbackRecord, RolloutRecord, ServiceRecord, StateStore,
    VersionRecord,
};

/// Inconclusive windows (too little traffic) tolerated per step before one counts as a failure.
const MAX_INCONCLUSIVE_WINDOWS: u32 = 3;

/// A version that is running and routable.
#[derive(Clone, Debug)]
struct Running {
    built: BuiltVersion,
    process: Arc<Process>,
    upstream: Arc<Upstream>,
    port: u16,
    /// When the version's process became healthy.
    started_at: SystemTime,
}

#[derive(Debug, Default)]
struct Slots {
    stable: Option<Running>,
    canary: Option<Running>,
    /// The build stable replaced last, for Rollback after a promotion.
    previous: Option<BuiltVersion>,
    /// When `previous` started serving.
    previous_started_at: Option<SystemTime>,
}

#[derive(Debug)]
struct ActiveRollout {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    log: Arc<RolloutLog>,
}

/// One service the deployer runs.
#[derive(Debug)]
struct ServiceState {
    name: String,
    router: Arc<ServiceRouter>,
    logs: Arc<LogBuffer>,
    slots: tokio::sync::Mutex<Slots>,
    active: Mutex<Option<ActiveRollout>>,
    /// What a restart must know, as last written to the state store.
    record: tokio::sync::Mutex<ServiceRecord>,
}

/// Runs versions of services behind their routers.
pub(crate) struct Deployer {
    config: Config,
    builder: Arc<dyn VersionBuilder>,
    fencing: FencingStore,
    state: StateStore,
    /// Marks this data directory's processes (see `process::stop_orphans`).
    owner: String,
    metrics: RouterMetrics,
    client: HttpClient,
    services: tokio::sync::Mutex<BTreeMap<String, Arc<ServiceState>>>,
    deploys: Mutex<HashMap<String, Arc<RolloutLog>>>,
    rollbacks: tokio::sync::Mutex<HashMap<String, RollbackOutcome>>,
    ports: Mutex<HashSet<u16>>,
    sequence: AtomicU64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Deployer {
    /// A deployer with the local builder, its metrics on `registry`.
    pub(crate) async fn start(
        config: Config,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, Error> {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(Error::io(format!(
                "cannot create {}",
                config.data_dir.display()
            )))?;
        let builder = LocalBuilder::new(
            config.data_dir.clone(),
            config.build_target_dir(),
            config.build.timeout,
            config.build.log_tail_lines,
        );
        let fencing = FencingStore::open(config.data_dir.join("fencing.json")).await?;
        let state = StateStore::open(&config.data_dir).await?;
        let owner = crate::state::owner_id(&config.data_dir).await?;
        let deployer = Arc::new(Self {
            metrics: RouterMetrics::register(registry)?,
            builder: Arc::new(builder),
            fencing,
            state,
            owner,
            client: http_client(),
            services: tokio::sync::Mutex::new(BTreeMap::new()),
            deploys: Mutex::new(HashMap::new()),
            rollbacks: tokio::sync::Mutex::new(HashMap::new()),
            ports: Mutex::new(HashSet::new()),
            sequence: AtomicU64::new(1),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            config,
        });
        deployer.recover().await?;
        Ok(deployer)
    }

    /// After a crash: stops the processes the last run left, restores every recorded service
    /// (router on its address, stable restarted) and closes the rollout that was in flight.
    async fn recover(self: &Arc<Self>) -> Result<(), Error> {
        let (records, unreadable) = self.state.load_all().await?;
        for problem in unreadable {
            tracing::error!(%problem, "a service record cannot be read; the service is not restored");
        }
        let orphans = stop_orphans(self.owner.clone()).await;
        if !orphans.is_empty() {
            tracing::warn!(
                ?orphans,
                "stopped version processes a previous run left behind"
            );
        }
        for record in records {
            let service = record.service.clone();
            match self.restore(record).await {
                Ok(stable) => tracing::info!(%service, %stable, "service restored"),
                Err(error) => tracing::error!(%service, %error, "service not restored"),
            }
        }
        Ok(())
    }

    /// Restores one recorded service; returns its stable version (empty when it had none).
    async fn restore(self: &Arc<Self>, mut record: ServiceRecord) -> Result<String, Error> {
        let versions = record
            .stable
            .iter()
            .chain(&record.previous)
            .map(|v| v.version.as_str())
            .chain(record.rollout.iter().map(|r| r.version.as_str()))
            .chain(record.outcomes.iter().map(|o| o.version.as_str()));
        if let Some(highest) = versions.filter_map(version_sequence).max() {
            self.sequence.fetch_max(highest + 1, Ordering::SeqCst);
        }
        let addr = record
            .public_address
            .parse()
            .unwrap_or_else(|_| self.public_addr_of(&record.service));
        let state = self.service_at(&record.service, addr).await?;
        let stable_version = record
            .stable
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_default();
        if let Some(interrupted) = record.rollout.take() {
            let message = format!(
                "the deployer restarted during the rollout of {}: it was stopped and all traffic is on {}",
                interrupted.version,
                if stable_version.is_empty() {
                    "no version"
                } else {
                    stable_version.as_str()
                }
            );
            tracing::warn!(service = %record.service, %message, "interrupted rollout rolled back");
            record.finish(interrupted.idempotency_key.map(|key| OutcomeRecord {
                idempotency_key: key,
                version: interrupted.version,
                kind: OutcomeKind::RolledBack,
                canary_weight: 0,
                message: message.clone(),
                reasoning: message,
                at: SystemTime::now(),
            }));
        }
        {
            let mut deploys = lock(&self.deploys);
            for outcome in &record.outcomes {
                deploys
                    .entry(outcome.idempotency_key.clone())
                    .or_insert_with(|| replayed(outcome));
            }
        }
        {
            let mut rollbacks = self.rollbacks.lock().await;
            for answer in &record.rollbacks {
                rollbacks
                    .entry(answer.idempotency_key.clone())
                    .or_insert_with(|| RollbackOutcome {
                        stable_version: answer.stable_version.clone(),
                        rolled_back: answer.rolled_back,
                    });
            }
        }
        record.public_address = state.router.public_addr.to_string();
        let (stable, previous) = (record.stable.clone(), record.previous.clone());
        self.remember(&state, |r| *r = record).await?;
        if let Some(stable) = &stable {
            let built = self.builder.build(&spec_of(stable)).await?;
            let mut running = self
                .start_version(&state, built, None, &CancellationToken::new())
                .await?;
            running.started_at = stable.started_at.unwrap_or(running.started_at);
            state.router.set_routes(Routes {
                stable: Some(Arc::clone(&running.upstream)),
                canary: None,
                canary_weight: 0,
            });
            state.slots.lock().await.stable = Some(running);
        }
        if let Some(previous) = &previous {
            match self.builder.build(&spec_of(previous)).await {
                Ok(built) => {
                    let mut slots = state.slots.lock().await;
                    slots.previous = Some(built);
                    slots.previous_started_at = previous.started_at;
                }
                Err(error) => {
                    tracing::warn!(version = %previous.version, %error, "the previous stable cannot be restored; Rollback will have nothing to return to");
                }
            }
        }
        Ok(stable_version)
    }

    /// Changes `state`'s record and writes it before returning.
    async fn remember(
        &self,
        state: &ServiceState,
        change: impl FnOnce(&mut ServiceRecord),
    ) -> Result<(), Error> {
        let mut record = state.record.lock().await;
        let mut next = record.clone();
        change(&mut next);
        self.state.write(&next).await?;
        *record = next;
        Ok(())
    }

    /// [`Deployer::remember`] for a change that already happened: a failed write is logged.
    async fn remember_or_log(&self, state: &ServiceState, change: impl FnOnce(&mut ServiceRecord)) {
        if let Err(error) = self.remember(state, change).await {
            tracing::error!(service = %state.name, %error, "cannot record the service's state; a restart may not restore it");
        }
    }

    /// The plan defaults for fields a request leaves unset.
    pub(crate) fn canary_defaults(&self) -> &CanaryDefaults {
        &self.config.canary
    }

    /// Cancelled when the deployer shuts down.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops every rollout, router and process, and waits for their tasks.
    pub(crate) async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Starts a rollout and returns its log; a repeated idempotency key returns the first log.
    pub(crate) async fn deploy(
        self: &Arc<Self>,
        request: DeployRequest,
    ) -> Result<Arc<RolloutLog>, Error> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // The token is checked before a repeated key is answered: a successor that resumes a
        // deploy under the same key shows its newer token, and a stale holder is refused even
        // when it repeats a key.
        self.fencing
            .admit(&request.service, request.fencing_token)
            .await?;
        if let Some(key) = &request.idempotency_key
            && let Some(log) = lock(&self.deploys).get(key)
        {
            return Ok(Arc::clone(log));
        }
        let mut problems = selfheal_service::Problems::default();
        validate_plan(&plan_as_defaults(&request.plan), "plan", &mut problems);
        if !problems.is_empty() {
            return Err(Error::InvalidArgument {
                field: "plan",
                reason: problems.into_vec().join("; "),
            });
        }
        let commit = self.builder.resolve(&request.source).await?;
        let state = self.service_or_create(&request.service).await?;
        if request.strategy == Strategy::Canary && state.slots.lock().await.stable.is_none() {
            return Err(Error::NoStable {
                service: request.service.clone(),
            });
        }

        let log = Arc::new(RolloutLog::default());
        let cancel = self.shutdown.child_token();
        let reason = Arc::new(Mutex::new(None));
        {
            let mut active = lock(&state.active);
            if active.as_ref().is_some_and(|a| !a.log.is_finished()) {
                return Err(Error::RolloutInProgress {
                    service: request.service.clone(),
                });
            }
            *active = Some(ActiveRollout {
                cancel: cancel.clone(),
                reason: Arc::clone(&reason),
                log: Arc::clone(&log),
            });
        }
        let version = version_name(
            self.sequence.fetch_add(1, Ordering::SeqCst),
            &commit,
            request.patch.as_deref(),
        );
        let in_flight = RolloutRecord {
            version: version.clone(),
            idempotency_key: request.idempotency_key.clone(),
        };
        if let Err(error) = self.remember(&state, |r| r.rollout = Some(in_flight)).await {
            log.finish(Ok(()));
            lock(&state.active).take();
            return Err(error);
        }
        if let Some(key) = &request.idempotency_key {
            lock(&self.deploys).insert(key.clone(), Arc::clone(&log));
        }

        let deployer = Arc::clone(self);
        let task_log = Arc::clone(&log);
        self.tracker.spawn(async move {
            let rollout = Rollout {
                deployer: &deployer,
                state: &state,
                log: &task_log,
                cancel: &cancel,
                reason: &reason,
                key: request.idempotency_key.as_deref(),
            };
            let result = match rollout.run(&request, commit, version.clone()).await {
                Err(Error::RolloutCancelled { reason }) => {
                    let decision =
                        Decision::new(DecisionKind::Rollback, format!("rollout of {version}"));
                    let decision = Decision {
                        outcome: "rolled back before traffic moved".into(),
                        reasoning: reason.clone(),
                        confidence: 1.0,
                        ..decision
                    };
                    rollout
                        .finish(
                            RolloutEvent::new(RolloutEventKind::RolledBack, &version, 0, reason)
                                .with_decision(decision),
                        )
                        .await;
                    Ok(())
                }
                other => other,
            };
            if let Err(error) = &result {
                // Nothing moved: a repeated key may try again after a restart.
                deployer.remember_or_log(&state, |r| r.finish(None)).await;
                task_log.push(RolloutEvent::new(
                    RolloutEventKind::Failed,
                    &version,
                    0,
                    error.to_string(),
                ));
            }
            task_log.finish(result);
        });
        Ok(log)
    }

    /// Returns traffic to stable: cancels a rollout in flight, or restarts the build stable
    /// replaced last.
    pub(crate) async fn rollback(
        self: &Arc<Self>,
        request: RollbackRequest,
    ) -> Result<RollbackOutcome, Error> {
        self.fencing
            .admit(&request.service, request.fencing_token)
            .await?;
        if let Some(key) = &request.idempotency_key
            && let Some(outcome) = self.rollbacks.lock().await.get(key)
        {
            return Ok(outcome.clone());
        }
        let state = self.existing(&request.service).await?;
        let reason = if request.reason.is_empty() {
            "rollback requested".to_owned()
        } else {
            request.reason.clone()
        };
        let in_flight = lock(&state.active)
            .as_ref()
            .filter(|a| !a.log.is_finished())
            .map(|a| (a.cancel.clone(), Arc::clone(&a.reason), Arc::clone(&a.log)));
        let rolled_back = if let Some((cancel, slot, log)) = in_flight {
            *lock(&slot) = Some(reason.clone());
            cancel.cancel();
            log.finished().await;
            true
        } else {
            self.restore_previous(&state, &reason).await?
        };
        let stable_version = state
            .slots
            .lock()
            .await
            .stable
            .as_ref()
            .map(|s| s.built.version.clone())
            .unwrap_or_default();
        let outcome = RollbackOutcome {
            stable_version,
            rolled_back,
        };
        if let Some(key) = request.idempotency_key {
            let answer = RollbackRecord {
                idempotency_key: key.clone(),
                stable_version: outcome.stable_version.clone(),
                rolled_back: outcome.rolled_back,
                at: SystemTime::now(),
            };
            self.remember_or_log(&state, |r| r.answered_rollback(answer))
                .await;
            self.rollbacks.lock().await.insert(key, outcome.clone());
        }
        Ok(outcome)
    }

    async fn restore_previous(
        self: &Arc<Self>,
        state: &Arc<ServiceState>,
        reason: &str,
    ) -> Result<bool, Error> {
        let previous = state.slots.lock().await.previous.clone();
        let Some(previous) = previous else {
            return Err(Error::NothingToRollBack {
                service: state.name.clone(),
            });
        };
        tracing::info!(service = %state.name, version = %previous.version, %reason, "restoring the previous stable");
        let running = self
            .start_version(state, previous, None, &CancellationToken::new())
            .await?;
        let restored = version_record(&running.built, Some(running.started_at));
        self.remember_or_log(state, |r| {
            r.stable = Some(restored);
            r.previous = None;
        })
        .await;
        let old = {
            let mut slots = state.slots.lock().await;
            state.router.set_routes(Routes {
                stable: Some(Arc::clone(&running.upstream)),
                canary: None,
                canary_weight: 0,
            });
            let old = slots.stable.replace(running);
            slots.previous = None;
            slots.previous_started_at = None;
            old
        };
        if let Some(old) = old {
            self.retire(old).await;
        }
        Ok(true)
    }

    /// Every service, or the one named.
    pub(crate) async fn status(&self, service: Option<&str>) -> Result<Vec<ServiceStatus>, Error> {
        let states: Vec<Arc<ServiceState>> = match service {
            Some(name) => vec![self.existing(name).await?],
            None => self.services.lock().await.values().cloned().collect(),
        };
        let mut out = Vec::with_capacity(states.len());
        for state in states {
            let routes = state.router.routes();
            let slots = state.slots.lock().await;
            let canary_weight = if slots.canary.is_some() {
                routes.canary_weight
            } else {
                0
            };
            out.push(ServiceStatus {
                service: state.name.clone(),
                public_address: state.router.public_addr.to_string(),
                stable: slots
                    .stable
                    .as_ref()
                    .map(|r| version_status(r, 100 - canary_weight)),
                canary: slots
                    .canary
                    .as_ref()
                    .map(|r| version_status(r, canary_weight)),
                previous_stable: slots.previous.as_ref().map(|built| VersionStatus {
                    version: built.version.clone(),
                    commit: built.commit.clone(),
                    repository: built.repository.display().to_string(),
                    deployed_at: slots.previous_started_at,
                    ..VersionStatus::default()
                }),
                highest_fencing_token: self.fencing.highest(&state.name).await,
            });
        }
        Ok(out)
    }

    /// Kept output lines and, when following, a receiver of new ones.
    pub(crate) async fn logs(
        &self,
        service: &str,
        version: Option<&str>,
        tail: usize,
    ) -> Result<(Vec<LogLine>, broadcast::Receiver<LogLine>), Error> {
        let state = self.existing(service).await?;
        Ok(state.logs.snapshot(version, tail))
    }

    /// Sampled failing and passing requests of a service.
    pub(crate) async fn failing_requests(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<(Vec<ReplaySample>, Vec<ReplaySample>), Error> {
        let state = self.existing(service).await?;
        Ok(state.router.samples(limit))
    }

    /// Error rate of the current stable over the next `window`.
    pub(crate) async fn verify(&self, request: VerifyRequest) -> Result<VerifyOutcome, Error> {
        let state = self.existing(&request.service).await?;
        let stable = state
            .slots
            .lock()
            .await
            .stable
            .clone()
            .ok_or_else(|| Error::NoStable {
                service: request.service.clone(),
            })?;
        let before = stable.upstream.counts();
        tokio::select! {
            () = tokio::time::sleep(request.window) => {}
            () = self.shutdown.cancelled() => return Err(Error::ShuttingDown),
        }
        let seen = stable.upstream.counts().since(before);
        let rate = if seen.requests == 0 {
            0.0
        } else {
            seen.errors as f64 / seen.requests as f64
        };
        let enough = seen.requests >= request.min_requests;
        let healthy = enough && rate <= request.max_error_rate;
        let mut decision = Decision::new(
            DecisionKind::Verification,
            format!("{} {}", request.service, stable.built.version),
        )
        .input(
            "window",
            format!("{:?}", request.window),
            "observed after the call arrived",
        )
        .input(
            "requests",
            seen.requests,
            "requests stable answered in the window",
        )
        .input("errors", seen.errors, "5xx answers and upstream failures")
        .input("error_rate", format!("{rate:.4}"), "");
        decision.constraints = vec![
            format!("requests >= {}", request.min_requests),
            format!("error rate <= {}", request.max_error_rate),
        ];
        let margin_z =
            if request.max_error_rate > 0.0 && request.max_error_rate < 1.0 && seen.requests > 0 {
                (request.max_error_rate - rate).abs()
                    / (request.max_error_rate * (1.0 - request.max_error_rate)
                        / seen.requests as f64)
                        .sqrt()
            } else {
                f64::INFINITY
            };
        decision.factors.push(DecisionFactor {
            name: "error_rate".into(),
            weight: 1.0,
            score: if rate <= request.max_error_rate {
                1.0
            } else {
                0.0
            },
            explanation: format!("{rate:.4} against the ceiling {}", request.max_error_rate),
        });
        (decision.outcome, decision.reasoning, decision.confidence) = if !enough {
            (
                "insufficient traffic".into(),
                format!(
                    "{} requests in the window, {} needed",
                    seen.requests, request.min_requests
                ),
                1.0 - seen.requests as f64 / request.min_requests.max(1) as f64,
            )
        } else if healthy {
            (
                "healthy".into(),
                format!(
                    "error rate {rate:.4} is within the ceiling {}",
                    request.max_error_rate
                ),
                analysis::normal_cdf(margin_z),
            )
        } else {
            (
                "unhealthy".into(),
                format!(
                    "error rate {rate:.4} is above the ceiling {}",
                    request.max_error_rate
                ),
                analysis::normal_cdf(margin_z),
            )
        };
        Ok(VerifyOutcome {
            healthy,
            error_rate: rate,
            requests: seen.requests,
            errors: seen.errors,
            decision,
        })
    }

    async fn existing(&self, service: &str) -> Result<Arc<ServiceState>, Error> {
        self.services
            .lock()
            .await
            .get(service)
            .cloned()
            .ok_or_else(|| Error::UnknownService(service.to_owned()))
    }

    /// The configured public address of `service` (port 0: any free port).
    fn public_addr_of(&self, service: &str) -> SocketAddr {
        let port = self.config.router.ports.get(service).copied().unwrap_or(0);
        SocketAddr::new(self.config.router.bind_host, port)
    }

    async fn service_or_create(&self, service: &str) -> Result<Arc<ServiceState>, Error> {
        if let Some(state) = self.services.lock().await.get(service) {
            return Ok(Arc::clone(state));
        }
        let state = self
            .service_at(service, self.public_addr_of(service))
            .await?;
        let public_address = state.router.public_addr.to_string();
        self.remember(&state, |r| {
            r.service = service.to_owned();
            r.public_address = public_address;
        })
        .await?;
        Ok(state)
    }

    /// The state of `service`, its router bound at `addr` when it is new.
    async fn service_at(
        &self,
        service: &str,
        addr: SocketAddr,
    ) -> Result<Arc<ServiceState>, Error> {
        let mut services = self.services.lock().await;
        if let Some(state) = services.get(service) {
            return Ok(Arc::clone(state));
        }
        let router = ServiceRouter::bind(
            service,
            addr,
            self.config.router.clone(),
            self.client.clone(),
            &self.tracker,
            self.shutdown.clone(),
        )
        .await?;
        tracing::info!(%service, addr = %router.public_addr, "router listening");
        let record = ServiceRecord {
            service: service.to_owned(),
            public_address: router.public_addr.to_string(),
            ..ServiceRecord::default()
        };
        let state = Arc::new(ServiceState {
            name: service.to_owned(),
            router,
            logs: Arc::new(LogBuffer::new(self.config.processes.log_lines)),
            slots: tokio::sync::Mutex::new(Slots::default()),
            active: Mutex::new(None),
            record: tokio::sync::Mutex::new(record),
        });
        services.insert(service.to_owned(), Arc::clone(&state));
        Ok(state)
    }

    /// Starts `built` on a free port and waits for its health path; stops it on failure.
    async fn start_version(
        &self,
        state: &ServiceState,
        built: BuiltVersion,
        log: Option<&RolloutLog>,
        cancel: &CancellationToken,
    ) -> Result<Running, Error> {
        let port = {
            let mut ports = lock(&self.ports);
            let p = &self.config.processes;
            let port = pick_port(p.port_range_start, p.port_range_end, &ports)?;
            ports.insert(port);
            port
        };
        let supervision = Supervision {
            logs: Arc::clone(&state.logs),
            client: self.client.clone(),
            tracker: self.tracker.clone(),
            shutdown: self.shutdown.clone(),
            max_backoff: self.config.processes.max_restart_backoff,
            owner: self.owner.clone(),
        };
        let process = match Process::start(&built, port, supervision).await {
            Ok(process) => process,
            Err(error) => {
                lock(&self.ports).remove(&port);
                return Err(error);
            }
        };
        if let Some(log) = log {
            log.push(RolloutEvent::new(
                RolloutEventKind::Started,
                &built.version,
                0,
                format!("pid {} listening on {}", process.pid(), process.addr),
            ));
        }
        let timeout = self.config.processes.health_timeout;
        let healthy = tokio::select! {
            healthy = process.wait_healthy(timeout) => Ok(healthy),
            () = cancel.cancelled() => Err(()),
        };
        if healthy != Ok(true) {
            process.stop().await;
            lock(&self.ports).remove(&port);
            return Err(match healthy {
                Err(()) => Error::RolloutCancelled {
                    reason: "cancelled while waiting for health".into(),
                },
                Ok(_) => Error::NeverHealthy {
                    version: built.version.clone(),
                    timeout,
                    log_tail: state.logs.tail_text(&built.version, 20),
                },
            });
        }
        if let Some(log) = log {
            log.push(RolloutEvent::new(
                RolloutEventKind::Healthy,
                &built.version,
                0,
                format!("{} answered 200", built.manifest.health_path),
            ));
        }
        let upstream = Upstream::new(&state.name, &built.version, process.addr, &self.metrics);
        Ok(Running {
            built,
            process,
            upstream,
            port,
            started_at: SystemTime::now(),
        })
    }

    /// Lets a version finish its in-flight requests, then stops it.
    async fn retire(&self, running: Running) {
        running
            .upstream
            .drain(self.config.processes.drain_timeout)
            .await;
        running.process.stop().await;
        lock(&self.ports).remove(&running.port);
    }
}

/// One rollout in progress.
struct Rollout<'a> {
    deployer: &'a Arc<Deployer>,
    state: &'a Arc<ServiceState>,
    log: &'a RolloutLog,
    cancel: &'a CancellationToken,
    reason: &'a Arc<Mutex<Option<String>>>,
    /// The Deploy's idempotency key, under which the outcome is remembered.
    key: Option<&'a str>,
}

/// Why a canary step ended early.
enum Interrupt {
    Cancelled,
    CanaryExited,
}

impl Rollout<'_> {
    /// The outcome of `event` (PROMOTED or ROLLED_BACK) under the rollout's key.
    fn outcome(&self, event: &RolloutEvent) -> Option<OutcomeRecord> {
        let kind = match event.kind {
            RolloutEventKind::Promoted => OutcomeKind::Promoted,
            RolloutEventKind::RolledBack => OutcomeKind::RolledBack,
            _ => return None,
        };
        Some(OutcomeRecord {
            idempotency_key: self.key?.to_owned(),
            version: event.version.clone(),
            kind,
            canary_weight: event.canary_weight,
            message: event.message.clone(),
            reasoning: event
                .decision
                .as_ref()
                .map(|d| d.reasoning.clone())
                .unwrap_or_default(),
            at: event.at,
        })
    }

    /// Records the rollout's last event as its outcome, then publishes it.
    async fn finish(&self, event: RolloutEvent) {
        let outcome = self.outcome(&event);
        self.deployer
            .remember_or_log(self.state, |r| r.finish(outcome))
            .await;
        self.log.push(event);
    }

    fn cancelled(&self) -> Error {
        Error::RolloutCancelled {
            reason: lock(self.reason)
                .clone()
                .unwrap_or_else(|| "the deployer is shutting down".into()),
        }
    }

    async fn run(
        &self,
        request: &DeployRequest,
        commit: String,
        version: String,
    ) -> Result<(), Error> {
        let patch_note = if request.patch.is_some() {
            " with a patch"
        } else {
            ""
        };
        self.log.push(RolloutEvent::new(
            RolloutEventKind::BuildStarted,
            &version,
            0,
            format!(
                "building {commit}{patch_note} from {}",
                request.source.repository.display()
            ),
        ));
        let spec = BuildSpec {
            version: version.clone(),
            source: request.source.clone(),
            commit,
            patch: request.patch.clone(),
        };
        let started = Instant::now();
        let built = tokio::select! {
            built = self.deployer.builder.build(&spec) => built?,
            () = self.cancel.cancelled() => return Err(self.cancelled()),
        };
        self.log.push(RolloutEvent::new(
            RolloutEventKind::BuildFinished,
            &version,
            0,
            if built.cached {
                "reused the kept build of this commit and patch".to_owned()
            } else {
                format!("built in {:.1}s", started.elapsed().as_secs_f64())
            },
        ));
        let running = self
            .deployer
            .start_version(self.state, built, Some(self.log), self.cancel)
            .await
            .map_err(|e| match e {
                Error::RolloutCancelled { .. } => self.cancelled(),
                other => other,
            })?;
        if self.cancel.is_cancelled() {
            self.deployer.retire(running).await;
            return Err(self.cancelled());
        }
        match request.strategy {
            Strategy::Direct => {
                self.promote(
                    running,
                    "direct replacement: the new version is healthy".into(),
                    1.0,
                    Vec::new(),
                )
                .await;
                Ok(())
            }
            Strategy::Canary => self.canary(running, &request.plan).await,
        }
    }

    async fn canary(&self, canary: Running, plan: &CanaryPlan) -> Result<(), Error> {
        let router = &self.state.router;
        let stable = {
            let mut slots = self.state.slots.lock().await;
            let Some(stable) = slots.stable.clone() else {
                drop(slots);
                self.deployer.retire(canary).await;
                return Err(Error::NoStable {
                    service: self.state.name.clone(),
                });
            };
            slots.canary = Some(canary.clone());
            router.set_routes(Routes {
                stable: Some(Arc::clone(&stable.upstream)),
                canary: Some(Arc::clone(&canary.upstream)),
                canary_weight: 0,
            });
            stable
        };
        let version = canary.built.version.clone();
        let mut exits = canary.process.exits();
        exits.borrow_and_update();
        let memory_limits = &self.deployer.config.canary.memory;
        let thresholds = Thresholds::new(
            plan.min_requests,
            plan.max_error_rate,
            memory_limits.clone(),
        );
        let rollout_started = Instant::now();
        let stable_at_start = stable.upstream.counts();
        let mut failures = 0u32;
        let mut last_confidence = 1.0;
        let mut last_factors = Vec::new();

        for &weight in &plan.steps {
            router.set_canary_weight(weight);
            self.log.push(RolloutEvent::new(
                RolloutEventKind::Step,
                &version,
                weight,
                format!("canary receives {weight}% of traffic"),
            ));
            let mut inconclusive = 0;
            loop {
                let window_started = Instant::now();
                let (canary_before, stable_before) =
                    (canary.upstream.counts(), stable.upstream.counts());
                let watched = tokio::select! {
                    memory = memory::watch_window(
                        &canary.process,
                        &stable.process,
                        memory_limits.sample_interval,
                        plan.analysis_window,
                    ) => Ok(memory),
                    () = self.cancel.cancelled() => Err(Interrupt::Cancelled),
                    _ = exits.changed() => Err(Interrupt::CanaryExited),
                };
                let (canary_memory, stable_memory) = match watched {
                    Ok(memory) => memory,
                    Err(interrupt) => {
                        let (reasoning, subject) = match interrupt {
                            Interrupt::Cancelled => {
                                (self.cancelled().to_string(), "rollback requested")
                            }
                            Interrupt::CanaryExited => (
                                format!(
                                    "the canary process exited during the {weight}% step (restarts: {})",
                                    canary.process.restarts()
                                ),
                                "canary process died",
                            ),
                        };
                        let mut decision = Decision::new(
                            DecisionKind::Rollback,
                            format!("{} {version}", self.state.name),
                        )
                        .input("step", format!("{weight}%"), "")
                        .input("trigger", subject, "");
                        decision.outcome = format!("rolled back to {}", stable.built.version);
                        decision.reasoning = reasoning;
                        decision.confidence = 1.0;
                        self.roll_back(&stable, canary, decision).await;
                        return Ok(());
                    }
                };
                let canary_seen = canary.upstream.counts().since(canary_before);
                let canary_sample = WindowSample {
                    requests: canary_seen.requests,
                    errors: canary_seen.errors,
                    latencies_ms: canary.upstream.latencies_since(window_started),
                    memory: canary_memory,
                };
                let stable_seen = stable.upstream.counts().since(stable_before);
                // At high canary weights stable sees little traffic: compare with all of stable's
                // traffic since the rollout began instead.
                let stable_sample = if stable_seen.requests >= plan.min_requests {
                    WindowSample {
                        requests: stable_seen.requests,
                        errors: stable_seen.errors,
                        latencies_ms: stable.upstream.latencies_since(window_started),
                        memory: stable_memory,
                    }
                } else {
                    let since = stable.upstream.counts().since(stable_at_start);
                    WindowSample {
                        requests: since.requests,
                        errors: since.errors,
                        latencies_ms: stable.upstream.latencies_since(rollout_started),
                        memory: stable_memory,
                    }
                };
                let result = analysis::analyse(
                    format!("{} {version} at {weight}%", self.state.name),
                    &canary_sample,
                    &stable_sample,
                    &thresholds,
                );
                let mut decision = result
                    .decision
                    .input(
                        "step",
                        format!("{weight}%"),
                        "canary share during the window",
                    )
                    .input("analysis_window", format!("{:?}", plan.analysis_window), "")
                    .input("failed_analyses", failures, "before this one");
                decision
                    .constraints
                    .push(format!("at most {} failed analyses", plan.failure_limit));
                self.log.push(
                    RolloutEvent::new(
                        RolloutEventKind::Analysis,
                        &version,
                        weight,
                        decision.outcome.clone(),
                    )
                    .with_decision(decision.clone()),
                );
                match result.verdict {
                    Verdict::Pass => {
                        last_confidence = decision.confidence;
                        last_factors = decision.factors;
                        break;
                    }
                    Verdict::Inconclusive if inconclusive < MAX_INCONCLUSIVE_WINDOWS => {
                        inconclusive += 1;
                    }
                    Verdict::Inconclusive | Verdict::Fail => {
                        failures += 1;
                        if failures >= plan.failure_limit {
                            let rollback = Decision {
                                id: uuid::Uuid::now_v7().to_string(),
                                kind: DecisionKind::Rollback,
                                outcome: format!("rolled back to {}", stable.built.version),
                                reasoning: format!(
                                    "{failures} failed {} reached the limit of {}: {}",
                                    if failures == 1 {
                                        "analysis"
                                    } else {
                                        "analyses"
                                    },
                                    plan.failure_limit,
                                    decision.reasoning
                                ),
                                decided_at: std::time::SystemTime::now(),
                                ..decision
                            };
                            self.roll_back(&stable, canary, rollback).await;
                            return Ok(());
                        }
                    }
                }
            }
        }
        let reasoning = format!(
            "every step ({:?}) passed its analysis with {failures} failed analyses",
            plan.steps
        );
        self.promote(canary, reasoning, last_confidence, last_factors)
            .await;
        Ok(())
    }

    /// Makes `new` the stable version and retires the old one.
    async fn promote(
        &self,
        new: Running,
        reasoning: String,
        confidence: f64,
        factors: Vec<DecisionFactor>,
    ) {
        let version = new.built.version.clone();
        let stable_record = version_record(&new.built, Some(new.started_at));
        let old = {
            let mut slots = self.state.slots.lock().await;
            self.state.router.set_routes(Routes {
                stable: Some(Arc::clone(&new.upstream)),
                canary: None,
                canary_weight: 0,
            });
            slots.canary = None;
            let old = slots.stable.replace(new);
            if let Some(old) = &old {
                slots.previous = Some(old.built.clone());
                slots.previous_started_at = Some(old.started_at);
            }
            old
        };
        let mut decision = Decision::new(
            DecisionKind::Promotion,
            format!("{} {version}", self.state.name),
        )
        .input(
            "replaced",
            old.as_ref().map_or("nothing", |o| o.built.version.as_str()),
            "previous stable",
        );
        decision.factors = factors;
        decision.outcome = format!("{version} is stable");
        decision.reasoning = reasoning;
        decision.confidence = confidence;
        let event = RolloutEvent::new(
            RolloutEventKind::Promoted,
            &version,
            100,
            decision.outcome.clone(),
        )
        .with_decision(decision);
        let outcome = self.outcome(&event);
        let previous_record = old
            .as_ref()
            .map(|o| version_record(&o.built, Some(o.started_at)));
        self.deployer
            .remember_or_log(self.state, |r| {
                r.stable = Some(stable_record);
                if previous_record.is_some() {
                    r.previous = previous_record;
                }
                r.finish(outcome);
            })
            .await;
        self.log.push(event);
        if let Some(old) = old {
            self.deployer.retire(old).await;
        }
    }

    /// Sends all traffic back to stable and retires the canary.
    async fn roll_back(&self, stable: &Running, canary: Running, decision: Decision) {
        {
            let mut slots = self.state.slots.lock().await;
            self.state.router.set_routes(Routes {
                stable: Some(Arc::clone(&stable.upstream)),
                canary: None,
                canary_weight: 0,
            });
            slots.canary = None;
        }
        self.finish(
            RolloutEvent::new(
                RolloutEventKind::RolledBack,
                &canary.built.version,
                0,
                format!("{}: {}", decision.outcome, decision.reasoning),
            )
            .with_decision(decision),
        )
        .await;
        self.deployer.retire(canary).await;
    }
}

fn version_status(running: &Running, weight: u32) -> VersionStatus {
    let counts = running.upstream.counts();
    VersionStatus {
        version: running.built.version.clone(),
        commit: running.built.commit.clone(),
        pid: running.process.pid(),
        address: running.process.addr.to_string(),
        healthy: running.process.is_healthy(),
        restarts: running.process.restarts(),
        weight,
        requests: counts.requests,
        errors: counts.errors,
        repository: running.built.repository.display().to_string(),
        deployed_at: Some(running.started_at),
    }
}

fn plan_as_defaults(plan: &CanaryPlan) -> CanaryDefaults {
    CanaryDefaults {
        steps: plan.steps.clone(),
        analysis_window: plan.analysis_window,
        min_requests: plan.min_requests,
        max_error_rate: plan.max_error_rate,
        failure_limit: plan.failure_limit,
        ..CanaryDefaults::default()
    }
}

/// What a restart needs to run `built` again.
fn version_record(built: &BuiltVersion, started_at: Option<SystemTime>) -> VersionRecord {
    VersionRecord {
        version: built.version.clone(),
        repository: built.repository.clone(),
        commit: built.commit.clone(),
        patch: built.patch.clone(),
        started_at,
    }
}

/// The build of a recorded version (a kept build when there is one).
fn spec_of(record: &VersionRecord) -> BuildSpec {
    BuildSpec {
        version: record.version.clone(),
        source: crate::model::SourceRef {
            repository: record.repository.clone(),
            commit: record.commit.clone(),
        },
        commit: record.commit.clone(),
        patch: record.patch.clone(),
    }
}

/// The finished log a repeated Deploy of a remembered rollout replays: its last event.
fn replayed(outcome: &OutcomeRecord) -> Arc<RolloutLog> {
    let (kind, decision_kind) = match outcome.kind {
        OutcomeKind::Promoted => (RolloutEventKind::Promoted, DecisionKind::Promotion),
        OutcomeKind::RolledBack => (RolloutEventKind::RolledBack, DecisionKind::Rollback),
    };
    let mut decision = Decision::new(decision_kind, format!("rollout of {}", outcome.version));
    decision.outcome = outcome.message.clone();
    decision.reasoning = outcome.reasoning.clone();
    decision.confidence = 1.0;
    decision.decided_at = outcome.at;
    let mut event = RolloutEvent::new(
        kind,
        &outcome.version,
        outcome.canary_weight,
        outcome.message.clone(),
    )
    .with_decision(decision);
    event.at = outcome.at;
    let log = Arc::new(RolloutLog::default());
    log.push(event);
    log.finish(Ok(()));
    log
}

/// The sequence number of a version name `r<n>-…`.
fn version_sequence(version: &str) -> Option<u64> {
    version.strip_prefix('r')?.split('-').next()?.parse().ok()
}

/// `r<sequence>-<commit prefix>[-p<patch digest>]`: unique per deploy, readable in metrics.
fn version_name(sequence: u64, commit: &str, patch: Option<&str>) -> String {
    let short = &commit[..commit.len().min(10)];
    match patch {
        Some(patch) => {
            let digest = hex::encode(sha2::Sha256::digest(patch.as_bytes()));
            format!("r{sequence}-{short}-p{}", &digest[..8])
        }
        None => format!("r{sequence}-{short}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_are_readable_and_mark_patches() {
        assert_eq!(version_name(3, "0123456789abcdef", None), "r3-0123456789");
        let patched = version_name(4, "0123456789abcdef", Some("diff"));
        assert!(patched.starts_with("r4-0123456789-p"), "{patched}");
        assert_eq!(patched.len(), "r4-0123456789-p".len() + 8);
        assert_eq!(version_sequence(&patched), Some(4));
        assert_eq!(version_sequence("x4-0123"), None);
    }
}
