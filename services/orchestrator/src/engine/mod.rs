//! The saga engine: one saga per incident, driven step by step over gRPC by tasks the engine
//! owns (never inside an RPC future), each step locked, journaled and explained.
//!
//! - [`runner`]: the flow of one saga (lock → analyse → plan → patch → gate → deploy → verify),
//!   its compensations and its final state.
//! - [`journal`]: records appended to, and read back from, the audit service.
//! - [`recovery`]: rebuilding sagas from the journal at start-up.
//! - [`claims`]: serialising sagas whose candidates touch the same files.
//! - [`escalation`]: the report sent to people.
//! - [`chain`]: the audit chain verified before automation acts; a broken chain halts it.
//!
//! The engine keeps every saga in memory; the journal is the truth a restart rebuilds from.

// Messages of other services are always built with `..Default::default()`, so that their
// additive fields never break this crate, even where every field is set today.
#![allow(clippy::needless_update)]

mod chain;
mod claims;
mod escalation;
pub(crate) mod journal;
pub(crate) mod model;
mod recovery;
mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use selfheal_proto::v1::deployer_client::DeployerClient;
use selfheal_proto::v1::patcher_client::PatcherClient;
use selfheal_proto::v1::rca_client::RcaClient;
use selfheal_proto::v1::safety_gate_client::SafetyGateClient;
use selfheal_proto::v1::{Decision, Incident, RecordKind};
use selfheal_telemetry::TracedChannel;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{Config, EscalationConfig, SagaConfig};
use crate::error::Error;
use crate::lock::LockStore;
use crate::saga::{RetryPolicy, SagaState};

pub(crate) use self::chain::HALT_ID;
use self::chain::{ChainGuard, Halt};
use self::claims::FileClaims;
use self::journal::{Entry, Journal};
use self::model::state_name;
pub(crate) use self::model::{EventView, SagaView, StepStatus, StepView};

/// gRPC clients of the peers a saga calls; cloned per call.
#[derive(Clone, Debug)]
pub(crate) struct PeerClients {
    pub(crate) rca: RcaClient<TracedChannel>,
    pub(crate) patcher: PatcherClient<TracedChannel>,
    pub(crate) gate: SafetyGateClient<TracedChannel>,
    pub(crate) deployer: DeployerClient<TracedChannel>,
}

/// Channels to the peers the engine needs.
#[derive(Clone, Debug)]
pub(crate) struct EngineChannels {
    pub(crate) rca: TracedChannel,
    pub(crate) patcher: TracedChannel,
    pub(crate) gate: TracedChannel,
    pub(crate) deployer: TracedChannel,
    pub(crate) audit: TracedChannel,
}

/// Why a saga was told to stop.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stop {
    Aborted { actor: String, reason: String },
    LeaseLost(String),
}

/// A human's go-ahead for a paused saga.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Approval {
    pub(crate) approver: String,
    pub(crate) comment: String,
}

/// What the engine holds of one saga.
#[derive(Debug)]
pub(crate) struct SagaData {
    pub(crate) view: SagaView,
    pub(crate) events: Vec<EventView>,
    pub(crate) incident: Incident,
}

/// One saga, shared between its task and the API.
#[derive(Debug)]
pub(crate) struct SagaHandle {
    pub(crate) id: String,
    pub(crate) service: String,
    data: Mutex<SagaData>,
    changed: watch::Sender<u64>,
    pub(crate) stop: CancellationToken,
    stop_reason: Mutex<Option<Stop>>,
    pub(crate) approval: watch::Sender<Option<Approval>>,
}

impl SagaHandle {
    pub(crate) fn new(id: String, incident: Incident, started_at: SystemTime) -> Self {
        let service = incident.service.clone();
        let view = SagaView {
            id: id.clone(),
            service: service.clone(),
            state: SagaState::Detected,
            incident_ids: vec![incident.id.clone()],
            steps: Vec::new(),
            decisions: Vec::new(),
            fencing_token: 0,
            started_at,
            finished_at: None,
            outcome: String::new(),
        };
        Self {
            id,
            service,
            data: Mutex::new(SagaData {
                view,
                events: Vec::new(),
                incident,
            }),
            changed: watch::Sender::new(0),
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            approval: watch::Sender::new(None),
        }
    }

    /// Changes the saga under its lock and wakes watchers.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut SagaData) -> T) -> T {
        let result = change(&mut self.data.lock().expect("saga lock is never poisoned"));
        self.changed.send_modify(|version| *version += 1);
        result
    }

    pub(crate) fn read<T>(&self, read: impl FnOnce(&SagaData) -> T) -> T {
        read(&self.data.lock().expect("saga lock is never poisoned"))
    }

    pub(crate) fn view(&self) -> SagaView {
        self.read(|data| data.view.clone())
    }

    pub(crate) fn state(&self) -> SagaState {
        self.read(|data| data.view.state)
    }

    pub(crate) fn incident(&self) -> Incident {
        self.read(|data| data.incident.clone())
    }

    /// Appends an event carrying the current state.
    pub(crate) fn event(
        &self,
        step: &str,
        step_status: Option<StepStatus>,
        message: impl Into<String>,
        decision: Option<Decision>,
    ) {
        let message = message.into();
        self.update(|data| {
            let event = EventView {
                saga_id: data.view.id.clone(),
                at: SystemTime::now(),
                state: data.view.state,
                step: step.to_owned(),
                step_status,
                message,
                decision,
            };
            data.events.push(event);
        });
    }

    /// Records why the saga must stop (the first reason wins) and stops it.
    pub(crate) fn request_stop(&self, stop: Stop) {
        let mut reason = self
            .stop_reason
            .lock()
            .expect("stop lock is never poisoned");
        if reason.is_none() {
            *reason = Some(stop);
        }
        drop(reason);
        self.stop.cancel();
    }

    pub(crate) fn stop_reason(&self) -> Option<Stop> {
        self.stop_reason
            .lock()
            .expect("stop lock is never poisoned")
            .clone()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[derive(Debug, Default)]
struct Registry {
    sagas: HashMap<String, Arc<SagaHandle>>,
    /// Saga ids, oldest first.
    order: Vec<String>,
    by_incident: HashMap<String, String>,
    /// The non-final saga of each service.
    running: HashMap<String, String>,
    /// Services whose automation is paused by an escalation, with the escalated saga.
    blocked: HashMap<String, String>,
}

/// What ReportIncident answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reported {
    pub(crate) saga_id: String,
    pub(crate) joined: bool,
}

/// What a reported incident becomes.
enum Admission {
    /// Reported before: the same answer again.
    Known(Reported),
    Joined {
        saga: Arc<SagaHandle>,
        incident_id: String,
    },
    /// Automation of the service is paused by the escalated saga `blocker`.
    Paused {
        saga: Arc<SagaHandle>,
        blocker: String,
    },
    Started(Arc<SagaHandle>),
}

/// Everything the engine's tasks share.
pub(crate) struct Inner {
    pub(crate) saga: SagaConfig,
    pub(crate) escalation: EscalationConfig,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_timeout: Duration,
    pub(crate) instance: String,
    pub(crate) peers: PeerClients,
    pub(crate) journal: Journal,
    pub(crate) locks: Arc<dyn LockStore>,
    pub(crate) http: reqwest::Client,
    registry: Mutex<Registry>,
    pub(crate) parallel: Arc<Semaphore>,
    pub(crate) claims: FileClaims,
    pub(crate) chain: ChainGuard,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    recovered: watch::Sender<bool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The retry policy of a step with `deadline`.
    pub(crate) fn policy(&self, deadline: Duration) -> RetryPolicy {
        RetryPolicy {
            initial_backoff: self.saga.backoff.initial,
            max_backoff: self.saga.backoff.max,
            multiplier: 2.0,
            max_attempts: self.saga.backoff.max_attempts,
            deadline,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .expect("registry lock is never poisoned")
    }

    /// Forgets that `saga` runs for its service; an escalation or a rollback pauses the service.
    pub(crate) fn saga_ended(&self, saga: &SagaHandle, state: SagaState) {
        let mut registry = self.registry();
        if registry.running.get(&saga.service) == Some(&saga.id) {
            registry.running.remove(&saga.service);
        }
        if state.pauses_automation() {
            registry
                .blocked
                .insert(saga.service.clone(), saga.id.clone());
        }
    }

    /// Removes a saga that never started (its incident could not be journaled).
    fn forget(&self, saga: &SagaHandle) {
        let mut registry = self.registry();
        if registry.running.get(&saga.service) == Some(&saga.id) {
            registry.running.remove(&saga.service);
        }
        registry.by_incident.retain(|_, id| *id != saga.id);
        registry.order.retain(|id| *id != saga.id);
        registry.sagas.remove(&saga.id);
    }

    fn insert(&self, registry: &mut Registry, saga: Arc<SagaHandle>) {
        for incident in saga.read(|data| data.view.incident_ids.clone()) {
            registry.by_incident.insert(incident, saga.id.clone());
        }
        registry.order.push(saga.id.clone());
        registry.sagas.insert(saga.id.clone(), saga);
    }

    /// Starts the task that drives `saga`, inside the saga's own root span.
    pub(crate) fn spawn_saga(self: &Arc<Self>, saga: Arc<SagaHandle>, resume: runner::Resume) {
        let incident_id = saga.read(|data| data.incident.id.clone());
        let span = tracing::info_span!(
            parent: None,
            "saga",
            otel.name = "saga",
            saga_id = %saga.id,
            service = %saga.service,
            incident_id = %incident_id,
        );
        self.tracker
            .spawn(runner::drive(Arc::clone(self), saga, resume).instrument(span));
    }
}

/// The engine behind the orchestrator's API.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    inner: Arc<Inner>,
}

/// How long ReportIncident waits for the journal to be read at start-up.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);

impl Engine {
    /// An engine over `channels` and `locks`; reads the journal in the background and resumes
    /// unfinished sagas.
    pub(crate) fn start(
        config: &Config,
        channels: EngineChannels,
        locks: Arc<dyn LockStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let instance = if config.instance.is_empty() {
            format!("orchestrator-{}", uuid::Uuid::new_v4().simple())
        } else {
            config.instance.clone()
        };
        let journal_policy = RetryPolicy {
            initial_backoff: config.saga.backoff.initial,
            max_backoff: config.saga.backoff.max,
            multiplier: 2.0,
            max_attempts: u32::MAX,
            deadline: config.saga.deadlines.journal,
        };
        let chain = ChainGuard::new(
            channels.audit.clone(),
            config.saga.verify_chain_interval,
            config.saga.deadlines.journal,
        );
        let inner = Arc::new(Inner {
            saga: config.saga.clone(),
            escalation: config.escalation.clone(),
            lock_ttl: config.lock.ttl,
            lock_timeout: config.lock.timeout,
            peers: PeerClients {
                rca: RcaClient::new(channels.rca).max_decoding_message_size(64 * 1024 * 1024),
                patcher: PatcherClient::new(channels.patcher)
                    .max_decoding_message_size(64 * 1024 * 1024),
                gate: SafetyGateClient::new(channels.gate)
                    .max_decoding_message_size(64 * 1024 * 1024),
                deployer: DeployerClient::new(channels.deployer)
                    .max_decoding_message_size(64 * 1024 * 1024),
            },
            journal: Journal::new(channels.audit, instance.clone(), journal_policy),
            instance,
            locks,
            http: reqwest::Client::new(),
            registry: Mutex::new(Registry::default()),
            parallel: Arc::new(Semaphore::new(config.saga.max_parallel.max(1))),
            claims: FileClaims::default(),
            chain,
            tracker: TaskTracker::new(),
            shutdown,
            recovered: watch::Sender::new(false),
        });
        let recovering = Arc::clone(&inner);
        inner.tracker.spawn(async move {
            // A broken chain halts automation before anything resumes from it.
            tokio::select! {
                _ = recovering.chain.check(&recovering.http, &recovering.escalation) => {}
                () = recovering.shutdown.cancelled() => return,
            }
            recovery::recover(&recovering).await;
            recovering.recovered.send_replace(true);
        });
        Self { inner }
    }

    /// Stops every saga task where it is (the journal lets a restart continue) and waits.
    pub(crate) async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    async fn wait_recovered(&self) -> Result<(), Error> {
        let mut recovered = self.inner.recovered.subscribe();
        match tokio::time::timeout(RECOVERY_WAIT, recovered.wait_for(|done| *done)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable {
                reason: "still reading the saga journal from the audit service".into(),
            }),
        }
    }

    /// Starts a saga for `incident`, joins the running saga of its service, or records it in an
    /// escalated saga when automation of the service is paused.
    pub(crate) async fn report(&self, incident: Incident) -> Result<Reported, Error> {
        validate_incident(&incident)?;
        self.wait_recovered().await?;
        let inner = &self.inner;
        match self.admit(incident) {
            Admission::Known(reported) => Ok(reported),
            Admission::Joined { saga, incident_id } => {
                saga.event(
                    "",
                    None,
                    format!("incident {incident_id} joined the running saga"),
                    None,
                );
                tracing::info!(saga_id = %saga.id, %incident_id, "incident joined the running saga");
                let journal = inner.journal.clone();
                let saga_id = saga.id.clone();
                let shutdown = inner.shutdown.clone();
                inner.tracker.spawn(async move {
                    let entry = Entry {
                        kind: RecordKind::Note,
                        step: String::new(),
                        payload: serde_json::json!({ "joined_incident": incident_id }),
                        decision: None,
                        key: format!("{saga_id}:join:{incident_id}"),
                    };
                    let appended = tokio::select! {
                        () = shutdown.cancelled() => return,
                        appended = journal.append(&saga_id, &incident_id, 0, entry) => appended,
                    };
                    if let Err(error) = appended {
                        tracing::warn!(%saga_id, %error, "could not journal a joined incident");
                    }
                });
                Ok(Reported {
                    saga_id: saga.id.clone(),
                    joined: true,
                })
            }
            Admission::Paused { saga, blocker } => {
                let saga_id = saga.id.clone();
                let reason = format!(
                    "automation paused: saga {blocker} escalated to a person and awaits acknowledgement"
                );
                self.record_held(saga, reason, serde_json::json!({ "blocked_by": blocker }))
                    .await?;
                Ok(Reported {
                    saga_id,
                    joined: false,
                })
            }
            Admission::Started(saga) => {
                if let Some(halt) = inner.chain.check(&inner.http, &inner.escalation).await {
                    inner.saga_ended(&saga, SagaState::Aborted);
                    let saga_id = saga.id.clone();
                    self.record_held(saga, halt.describe(), halt_payload(&halt))
                        .await?;
                    return Ok(Reported {
                        saga_id,
                        joined: false,
                    });
                }
                // The incident is acknowledged only once the journal holds it, so that a crash
                // right after cannot lose it.
                let incident = saga.incident();
                let detected = runner::detected_entry(&saga.id, &incident);
                if let Err(error) = inner
                    .journal
                    .append(&saga.id, &incident.id, 0, detected)
                    .await
                {
                    inner.forget(&saga);
                    return Err(Error::Unavailable {
                        reason: format!("cannot journal the incident: {error}"),
                    });
                }
                tracing::info!(saga_id = %saga.id, service = %saga.service, "saga started");
                let saga_id = saga.id.clone();
                let mut resume = runner::Resume::default();
                resume.visited.insert(SagaState::Detected);
                inner.spawn_saga(saga, resume);
                Ok(Reported {
                    saga_id,
                    joined: false,
                })
            }
        }
    }

    /// Decides, under the registry lock, what a reported incident becomes.
    fn admit(&self, incident: Incident) -> Admission {
        let inner = &self.inner;
        let mut registry = inner.registry();
        if let Some(saga_id) = registry.by_incident.get(&incident.id) {
            let saga = &registry.sagas[saga_id];
            // A saga that handed the incident to a person, once the person resumed automation,
            // no longer stands for it: the detector reports it again because it still fails, and
            // it is handled afresh below. Anything else answers as before.
            let retry = matches!(saga.state(), SagaState::Escalated | SagaState::RolledBack)
                && !registry.blocked.contains_key(&saga.service);
            if !retry {
                let joined = saga.read(|data| data.view.incident_ids.first() != Some(&incident.id));
                return Admission::Known(Reported {
                    saga_id: saga_id.clone(),
                    joined,
                });
            }
            tracing::info!(%saga_id, incident_id = %incident.id, "incident still failing after its saga was acknowledged; handling it again");
        }
        if let Some(saga_id) = registry.running.get(&incident.service).cloned() {
            let saga = Arc::clone(&registry.sagas[&saga_id]);
            registry
                .by_incident
                .insert(incident.id.clone(), saga_id.clone());
            saga.update(|data| data.view.incident_ids.push(incident.id.clone()));
            return Admission::Joined {
                saga,
                incident_id: incident.id,
            };
        }
        let id = uuid::Uuid::now_v7().to_string();
        let saga = Arc::new(SagaHandle::new(id.clone(), incident, SystemTime::now()));
        inner.insert(&mut registry, Arc::clone(&saga));
        if let Some(blocker) = registry.blocked.get(&saga.service).cloned() {
            return Admission::Paused { saga, blocker };
        }
        registry.running.insert(saga.service.clone(), id);
        Admission::Started(saga)
    }

    /// A saga for an incident automation must not act on (its service is paused, or automation
    /// is halted): journaled, then straight to ESCALATED with `reason`; `cause` is merged into
    /// the final record.
    async fn record_held(
        &self,
        saga: Arc<SagaHandle>,
        reason: String,
        cause: serde_json::Value,
    ) -> Result<(), Error> {
        let incident = saga.incident();
        let detected = runner::detected_entry(&saga.id, &incident);
        let mut payload = serde_json::json!({
            "state": state_name(SagaState::Escalated),
            "from": state_name(SagaState::Detected),
            "reason": reason,
        });
        if let (Some(map), serde_json::Value::Object(cause)) = (payload.as_object_mut(), cause) {
            map.extend(cause);
        }
        let escalated = Entry {
            kind: RecordKind::SagaState,
            step: String::new(),
            payload,
            decision: None,
            key: format!("{}:state:{}", saga.id, state_name(SagaState::Escalated)),
        };
        saga.update(|data| {
            data.view.state = SagaState::Escalated;
            data.view.outcome = reason.clone();
            data.view.finished_at = Some(SystemTime::now());
        });
        saga.event("", None, reason.clone(), None);
        for entry in [detected, escalated] {
            self.inner
                .journal
                .append(&saga.id, &incident.id, 0, entry)
                .await
                .map_err(|error| Error::Unavailable {
                    reason: format!("cannot journal the paused incident: {error}"),
                })?;
        }
        Ok(())
    }

    fn find(&self, id: &str) -> Result<Arc<SagaHandle>, Error> {
        let registry = self.inner.registry();
        let saga_id = registry.by_incident.get(id).map_or(id, String::as_str);
        registry
            .sagas
            .get(saga_id)
            .cloned()
            .ok_or_else(|| Error::NotFound { id: id.to_owned() })
    }

    /// A saga by its id or the id of one of its incidents.
    pub(crate) async fn get(&self, id: &str) -> Result<SagaView, Error> {
        check_id("id", id)?;
        self.wait_recovered().await?;
        Ok(self.find(id)?.view())
    }

    /// Sagas, newest first, filtered by service and state.
    pub(crate) async fn list(
        &self,
        service: Option<&str>,
        state: Option<SagaState>,
        limit: usize,
    ) -> Result<Vec<SagaView>, Error> {
        self.wait_recovered().await?;
        let registry = self.inner.registry();
        Ok(registry
            .order
            .iter()
            .rev()
            .filter_map(|id| registry.sagas.get(id))
            .filter(|saga| service.is_none_or(|s| saga.service == s))
            .map(|saga| saga.view())
            .filter(|view| state.is_none_or(|s| view.state == s))
            .take(if limit == 0 { usize::MAX } else { limit })
            .collect())
    }

    /// The saga's events so far, then live ones; ends when the saga is over.
    pub(crate) async fn watch(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = EventView> + use<>, Error> {
        check_id("id", id)?;
        self.wait_recovered().await?;
        let saga = self.find(id)?;
        let changes = saga.subscribe();
        let shutdown = self.inner.shutdown.clone();
        Ok(futures::stream::unfold(
            (saga, changes, 0usize, shutdown),
            |(saga, mut changes, next, shutdown)| async move {
                loop {
                    changes.borrow_and_update();
                    let (event, over) = saga
                        .read(|data| (data.events.get(next).cloned(), data.view.state.is_final()));
                    if let Some(event) = event {
                        return Some((event, (saga, changes, next + 1, shutdown)));
                    }
                    if over {
                        return None;
                    }
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() { return None },
                        () = shutdown.cancelled() => return None,
                    }
                }
            },
        ))
    }

    /// Lets a saga waiting for a human continue, or acknowledges an escalated or rolled-back
    /// saga (automation of the service resumes).
    pub(crate) async fn approve(
        &self,
        id: &str,
        approver: &str,
        comment: &str,
    ) -> Result<SagaState, Error> {
        check_id("saga_id", id)?;
        check_person("approver", approver)?;
        self.wait_recovered().await?;
        if id == HALT_ID {
            return self.acknowledge_halt(approver, comment).await;
        }
        let saga = self.find(id)?;
        match saga.state() {
            SagaState::AwaitingApproval => {
                saga.approval.send_replace(Some(Approval {
                    approver: approver.to_owned(),
                    comment: comment.to_owned(),
                }));
                Ok(self
                    .wait_state(&saga, |state| state != SagaState::AwaitingApproval)
                    .await)
            }
            state @ (SagaState::Escalated | SagaState::RolledBack) => {
                let entry = Entry {
                    kind: RecordKind::Note,
                    step: String::new(),
                    payload: serde_json::json!({
                        "acknowledged_by": approver,
                        "comment": comment,
                        "service": saga.service,
                    }),
                    decision: None,
                    key: format!("{}:acknowledged", saga.id),
                };
                let incident_id = saga.read(|data| data.incident.id.clone());
                self.inner
                    .journal
                    .append(&saga.id, &incident_id, 0, entry)
                    .await
                    .map_err(|error| Error::Unavailable {
                        reason: format!("cannot journal the acknowledgement: {error}"),
                    })?;
                let mut registry = self.inner.registry();
                if registry.blocked.contains_key(&saga.service) {
                    registry.blocked.remove(&saga.service);
                }
                drop(registry);
                saga.event(
                    "",
                    None,
                    format!(
                        "escalation acknowledged by {approver}: automation of {} resumes",
                        saga.service
                    ),
                    None,
                );
                Ok(state)
            }
            state => Err(Error::FailedPrecondition {
                reason: format!(
                    "saga {} is {}; only a saga awaiting approval, an escalated or a rolled-back one can be approved",
                    saga.id,
                    state_name(state)
                ),
            }),
        }
    }

    /// Lifts a halt of automation: journals who acknowledged which break, then resumes the
    /// sagas the halt kept from resuming.
    async fn acknowledge_halt(&self, approver: &str, comment: &str) -> Result<SagaState, Error> {
        let Some(halt) = self.inner.chain.halted() else {
            return Err(Error::FailedPrecondition {
                reason: format!(
                    "automation is not halted; {HALT_ID:?} is acknowledged only while the audit chain fails verification"
                ),
            });
        };
        let entry = Entry {
            kind: RecordKind::Note,
            step: String::new(),
            payload: serde_json::json!({
                "acknowledged_by": approver,
                "comment": comment,
                "halt": halt_payload(&halt),
            }),
            decision: None,
            key: format!("{HALT_ID}:acknowledged:{}", halt.sequence),
        };
        self.inner
            .journal
            .append(HALT_ID, "", 0, entry)
            .await
            .map_err(|error| Error::Unavailable {
                reason: format!("cannot journal the acknowledgement: {error}"),
            })?;
        let Some((halt, deferred)) = self.inner.chain.acknowledge() else {
            return Ok(SagaState::Escalated);
        };
        tracing::warn!(%approver, sequence = halt.sequence, resumed = deferred.len(), "halt of automation acknowledged");
        for (saga, resume) in deferred {
            saga.event(
                "",
                None,
                format!("halt acknowledged by {approver}: resuming from the journal"),
                None,
            );
            self.inner.spawn_saga(saga, resume);
        }
        Ok(SagaState::Escalated)
    }

    /// The gauge that is 1 while automation is halted.
    pub(crate) fn halt_gauge(&self) -> prometheus::IntGauge {
        self.inner.chain.gauge()
    }

    /// The halt of automation, if any, as JSON for `GET /automation`.
    pub(crate) fn automation(&self) -> serde_json::Value {
        match self.inner.chain.halted() {
            Some(halt) => serde_json::json!({
                "halted": true,
                "reason": halt.describe(),
                "broken_record": halt_payload(&halt),
                "since_unix_seconds": halt
                    .since
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            }),
            None => serde_json::json!({ "halted": false }),
        }
    }

    /// Stops a saga; its compensations run and it ends ABORTED.
    pub(crate) async fn abort(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<SagaState, Error> {
        check_id("saga_id", id)?;
        check_person("actor", actor)?;
        self.wait_recovered().await?;
        let saga = self.find(id)?;
        let state = saga.state();
        if state.is_final() {
            return Err(Error::FailedPrecondition {
                reason: format!("saga {} is already {}", saga.id, state_name(state)),
            });
        }
        saga.request_stop(Stop::Aborted {
            actor: actor.to_owned(),
            reason: if reason.is_empty() {
                "aborted".to_owned()
            } else {
                reason.to_owned()
            },
        });
        Ok(self.wait_state(&saga, SagaState::is_final).await)
    }

    /// Waits (bounded) for the saga's state to satisfy `done`; returns the state then.
    async fn wait_state(&self, saga: &SagaHandle, done: impl Fn(SagaState) -> bool) -> SagaState {
        let mut changes = saga.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            changes.borrow_and_update();
            let state = saga.state();
            if done(state) {
                return state;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return state;
            }
        }
    }
}

fn halt_payload(halt: &Halt) -> serde_json::Value {
    serde_json::json!({
        "halted_by_chain": {
            "sequence": halt.sequence,
            "reason": halt.reason,
            "detail": halt.detail,
        }
    })
}

fn check_id(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument {
            field: field.to_owned(),
            reason: "is required".into(),
        });
    }
    if value.len() > 200 || value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument {
            field: field.to_owned(),
            reason: "must be 1-200 printable characters".into(),
        });
    }
    Ok(())
}

fn check_person(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > 200 || value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument {
            field: field.to_owned(),
            reason: "must be at most 200 printable characters".into(),
        });
    }
    Ok(())
}

/// An incident the engine can run a saga for.
fn validate_incident(incident: &Incident) -> Result<(), Error> {
    check_id("incident.id", &incident.id)?;
    check_id("incident.service", &incident.service)?;
    if incident.service.chars().any(char::is_whitespace) {
        return Err(Error::InvalidArgument {
            field: "incident.service".into(),
            reason: "must not contain whitespace".into(),
        });
    }
    if selfheal_proto::v1::SignalKind::try_from(incident.signal).is_err() {
        return Err(Error::InvalidArgument {
            field: "incident.signal".into(),
            reason: format!("{} is not a SignalKind", incident.signal),
        });
    }
    if incident.summary.len() > 64 * 1024 {
        return Err(Error::InvalidArgument {
            field: "incident.summary".into(),
            reason: "is longer than 64 KiB".into(),
        });
    }
    Ok(())
}
