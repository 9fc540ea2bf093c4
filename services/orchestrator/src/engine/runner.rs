//! The flow of one saga, driven by a task the engine owns.
//!
//! Every step appends STEP_STARTED before it calls anyone and STEP_FINISHED (with what a restart
//! needs) or STEP_FAILED before the next step starts; a journal that cannot be written stops the
//! saga (fail closed). Every transition goes through the table in [`crate::saga::state`] and is
//! journaled as SAGA_STATE. Mutating deployer calls carry the lease's fencing token and the
//! step's idempotency key `{saga_id}:{step}`, and happen only after the lease was confirmed.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::{DecisionKind, RecordKind};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::journal::{Entry, decode, digest, encode};
use super::model::state_name;
use super::{Inner, SagaHandle, StepStatus, StepView, Stop, escalation};
use crate::lock::Lease;
use crate::saga::{CompensationStack, SagaEvent, SagaState, StepError, retry_step};

/// What the journal says a restarted saga has done already.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    /// STEP_FINISHED payloads by step.
    pub(crate) finished: std::collections::HashMap<String, Value>,
    /// Steps whose start was journaled.
    pub(crate) started: HashSet<String>,
    /// Steps whose compensation ran.
    pub(crate) compensated: HashSet<String>,
    /// States the saga entered.
    pub(crate) visited: HashSet<SagaState>,
    /// The approval of a paused saga, when one was journaled.
    pub(crate) approved: bool,
    /// A stop journaled before the restart: compensate and end ABORTED.
    pub(crate) stopping: Option<String>,
}

/// How the forward path ended.
#[derive(Debug)]
enum Flow {
    Resolved,
    /// Traffic returned to stable (by the deployer, or by a compensation still to run).
    RolledBack(String),
    Escalate(String),
}

/// Why the forward path could not go on.
#[derive(Debug)]
enum Failure {
    Step {
        step: String,
        error: StepError,
    },
    /// The audit service did not take a record within the journal deadline.
    Journal(String),
    /// The lease could not be confirmed before a mutating call.
    Lock(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step { step, error } => write!(f, "step {step} failed: {error}"),
            Self::Journal(message) => write!(f, "journal unavailable: {message}"),
            Self::Lock(message) => write!(f, "no lock: {message}"),
        }
    }
}

/// The fix plan chosen from the top cause.
#[derive(Clone, Debug, PartialEq)]
enum Plan {
    Patch,
    RollbackToPrevious,
    Escalate(String),
}

/// The state of one saga run.
struct SagaRun {
    inner: Arc<Inner>,
    saga: Arc<SagaHandle>,
    resume: Resume,
    lease: Option<Lease>,
    keeper: Option<CancellationToken>,
    compensations: CompensationStack,
    journal_dead: bool,
    /// Records made since the last write; written together before the next step calls anyone.
    pending: std::sync::Mutex<Vec<(Entry, u64)>>,
    decisions_seen: HashSet<String>,
    source: pb::SourceRef,
    last_good: String,
    report: Option<pb::RootCauseReport>,
    candidates: Vec<pb::CandidatePatch>,
    selected: Option<pb::CandidatePatch>,
    plan: Option<Plan>,
}

/// The first record of a saga: its incident, so a restart can rebuild it.
pub(crate) fn detected_entry(saga_id: &str, incident: &pb::Incident) -> Entry {
    Entry {
        kind: RecordKind::SagaState,
        step: String::new(),
        payload: json!({
            "state": state_name(SagaState::Detected),
            "service": incident.service,
            "incident": encode(incident),
        }),
        decision: None,
        key: format!("{saga_id}:state:{}", state_name(SagaState::Detected)),
    }
}

/// Runs `saga` from where `resume` says it is to a final state.
pub(crate) async fn drive(inner: Arc<Inner>, saga: Arc<SagaHandle>, resume: Resume) {
    let shutdown = inner.shutdown.clone();
    let mut run = SagaRun {
        inner,
        saga,
        resume,
        lease: None,
        keeper: None,
        compensations: CompensationStack::new(),
        journal_dead: false,
        pending: std::sync::Mutex::new(Vec::new()),
        decisions_seen: HashSet::new(),
        source: pb::SourceRef::default(),
        last_good: String::new(),
        report: None,
        candidates: Vec::new(),
        selected: None,
        plan: None,
    };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => run.abandon().await,
        () = run.whole() => {}
    }
}

impl SagaRun {
    fn token(&self) -> u64 {
        self.lease.as_ref().map_or(0, |lease| lease.token.0)
    }

    fn incident_id(&self) -> String {
        self.saga.read(|data| data.incident.id.clone())
    }

    /// The orchestrator is shutting down: stop where we are; the journal lets a restart continue.
    async fn abandon(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.cancel();
        }
        if let Some(lease) = self.lease.take() {
            let _ = tokio::time::timeout(self.inner.lock_timeout, self.inner.locks.release(&lease))
                .await;
        }
        tracing::info!(saga_id = %self.saga.id, "saga left for a restart to continue");
    }

    async fn whole(&mut self) {
        if !self.resume.visited.contains(&SagaState::Detected) {
            let entry = detected_entry(&self.saga.id, &self.saga.incident());
            let incident_id = self.incident_id();
            if let Err(error) = self
                .inner
                .journal
                .append(&self.saga.id, &incident_id, 0, entry)
                .await
            {
                self.journal_dead = true;
                self.finish(
                    SagaEvent::Abort,
                    format!("fail closed, journal unavailable: {error}"),
                )
                .await;
                return;
            }
            self.resume.visited.insert(SagaState::Detected);
        }
        // Queue behind the parallel bound (sagas of other services).
        let permit = self.wait_for_permit().await;
        let stop = self.saga.stop.clone();
        let outcome = if let Some(reason) = self.resume.stopping.clone() {
            self.prepare_stopped_compensation()
                .await
                .and(Err(Failure::Step {
                    step: "abort".into(),
                    error: StepError::Terminal(reason),
                }))
        } else {
            tokio::select! {
                biased;
                () = stop.cancelled() => Err(Failure::Step { step: "stop".into(), error: StepError::Terminal("stopped".into()) }),
                flow = self.forward() => flow,
            }
        };
        let (event, reason) = self.conclude(outcome).await;
        self.finish(event, reason).await;
        drop(permit);
    }

    /// A saga stopped before a restart: take the lease again (a rollback needs a current
    /// fencing token) and register the rollback of a deploy that started and was not undone.
    async fn prepare_stopped_compensation(&mut self) -> Result<(), Failure> {
        if !self.resume.visited.contains(&SagaState::Locked) {
            return Ok(());
        }
        self.take_lock().await?;
        let rolled_back_by_deployer = self
            .finished("deploy")
            .and_then(|o| {
                o.get("outcome")
                    .and_then(Value::as_str)
                    .map(|o| o != "promoted")
            })
            .unwrap_or(false);
        if self.resume.started.contains("deploy")
            && !self.resume.compensated.contains("deploy")
            && !rolled_back_by_deployer
        {
            self.register_rollback();
        }
        Ok(())
    }

    async fn wait_for_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        let parallel = Arc::clone(&self.inner.parallel);
        if let Ok(permit) = Arc::clone(&parallel).try_acquire_owned() {
            return Some(permit);
        }
        self.saga.event(
            "",
            None,
            format!(
                "queued: {} sagas already run (saga.max_parallel)",
                self.inner.saga.max_parallel
            ),
            None,
        );
        let stop = self.saga.stop.clone();
        tokio::select! {
            permit = parallel.acquire_owned() => permit.ok(),
            () = stop.cancelled() => None,
        }
    }

    /// Decides the final event and reason from how the forward path ended, running
    /// compensations where anything may have to be undone.
    async fn conclude(&mut self, outcome: Result<Flow, Failure>) -> (SagaEvent, String) {
        let stop = self.saga.stop_reason();
        let stopped_reason = self.resume.stopping.clone();
        match (outcome, stop) {
            (_, Some(Stop::Aborted { actor, reason })) => {
                let reason = format!(
                    "aborted by {}: {reason}",
                    if actor.is_empty() {
                        "someone"
                    } else {
                        actor.as_str()
                    }
                );
                self.note(json!({ "stopping": reason }), "stopping").await;
                self.flush_or_log().await;
                self.compensate().await;
                (SagaEvent::Abort, reason)
            }
            (_, Some(Stop::LeaseLost(message))) => {
                let reason = format!("lease lost: {message}");
                self.note(json!({ "stopping": reason }), "stopping").await;
                self.flush_or_log().await;
                self.compensate().await;
                (SagaEvent::Abort, reason)
            }
            (Err(Failure::Step { .. }), None) if stopped_reason.is_some() => {
                self.compensate().await;
                (SagaEvent::Abort, stopped_reason.unwrap_or_default())
            }
            (Ok(Flow::Resolved), None) => {
                self.compensations.discharge("deploy");
                (
                    SagaEvent::StepSucceeded,
                    "resolved: the service is healthy".into(),
                )
            }
            (Ok(Flow::RolledBack(reason)), None) => {
                self.compensate().await;
                (SagaEvent::RolledBack, reason)
            }
            (Ok(Flow::Escalate(reason)), None) => {
                self.compensate().await;
                (SagaEvent::Escalate, reason)
            }
            (Err(Failure::Step { step, error }), None) => {
                self.compensate().await;
                let reason = format!("step {step} failed: {error}");
                if self.saga.state().touches_traffic() {
                    (SagaEvent::RolledBack, reason)
                } else {
                    (SagaEvent::Escalate, reason)
                }
            }
            (Err(Failure::Lock(message)), None) => {
                self.compensate().await;
                (SagaEvent::Abort, format!("fail closed, no lock: {message}"))
            }
            (Err(Failure::Journal(message)), None) => {
                self.journal_dead = true;
                self.compensate().await;
                (
                    SagaEvent::Abort,
                    format!("fail closed, journal unavailable: {message}"),
                )
            }
        }
    }

    /// Releases what the saga holds, escalates when asked, and records the final state.
    async fn finish(&mut self, event: SagaEvent, reason: String) {
        let current = self.saga.state();
        let final_state = current
            .on(event)
            .or_else(|_| current.on(SagaEvent::Escalate))
            .unwrap_or(SagaState::Escalated);
        let event = if final_state == SagaState::Escalated {
            SagaEvent::Escalate
        } else {
            event
        };
        if final_state == SagaState::Resolved {
            self.record_fix().await;
        }
        self.release().await;
        self.inner.claims.release(&self.saga.id);
        if final_state.pauses_automation() {
            self.escalate(&reason, final_state).await;
        }
        // The registry learns first, so that an escalation pauses the service before anything
        // else is reported for it.
        self.inner.saga_ended(&self.saga, final_state);
        let payload = json!({
            "state": state_name(final_state),
            "from": state_name(current),
            "event": format!("{event:?}"),
            "reason": reason,
            "fencing_token": self.token(),
        });
        if !self.journal_dead
            && let Err(error) = self
                .append(
                    RecordKind::SagaState,
                    "",
                    payload,
                    None,
                    &format!("state:{}", state_name(final_state)),
                )
                .await
        {
            tracing::error!(saga_id = %self.saga.id, %error, "final state not journaled");
        }
        if let Err(error) = self.flush().await {
            tracing::error!(saga_id = %self.saga.id, %error, "final records not journaled");
        }
        self.saga.update(|data| {
            data.view.state = final_state;
            data.view.outcome = reason.clone();
            data.view.finished_at = Some(SystemTime::now());
        });
        self.saga.event("", None, reason.clone(), None);
        tracing::info!(saga_id = %self.saga.id, state = state_name(final_state), %reason, "saga finished");
    }

    // ---- journal helpers -------------------------------------------------------------------

    async fn append(
        &self,
        kind: RecordKind,
        step: &str,
        mut payload: Value,
        decision: Option<pb::Decision>,
        key_suffix: &str,
    ) -> Result<(), Failure> {
        if let Value::Object(map) = &mut payload {
            map.entry("service")
                .or_insert_with(|| Value::String(self.saga.service.clone()));
        }
        let entry = Entry {
            kind,
            step: step.to_owned(),
            payload,
            decision,
            key: format!("{}:{key_suffix}", self.saga.id),
        };
        self.pending
            .lock()
            .expect("pending lock is never poisoned")
            .push((entry, self.token()));
        Ok(())
    }

    /// Writes the records made since the last write, in one request. Called before a step
    /// calls anyone, before waiting for a person or another saga, and at the end, so that every
    /// step's start and end are in the journal before the next step starts.
    async fn flush(&self) -> Result<(), Failure> {
        let batch =
            std::mem::take(&mut *self.pending.lock().expect("pending lock is never poisoned"));
        if batch.is_empty() || self.journal_dead {
            return Ok(());
        }
        self.inner
            .journal
            .append_all(&self.saga.id, &self.incident_id(), batch)
            .await
            .map_err(|error| Failure::Journal(error.to_string()))
    }

    /// Flushes where a failure must not stop what follows (compensations, the end).
    async fn flush_or_log(&mut self) {
        if let Err(error) = self.flush().await {
            tracing::error!(saga_id = %self.saga.id, %error, "journal records not written");
            self.journal_dead = true;
        }
    }

    /// A NOTE that must not stop anything when it cannot be written.
    async fn note(&mut self, payload: Value, key_suffix: &str) {
        if self.journal_dead {
            return;
        }
        if let Err(Failure::Journal(error)) = self
            .append(RecordKind::Note, "", payload, None, key_suffix)
            .await
        {
            tracing::warn!(saga_id = %self.saga.id, %error, "note not journaled");
        }
    }

    /// Enters `target` through `event`, journaling the transition first. A state the journal
    /// shows entered already (a resumed saga) is skipped.
    async fn advance(
        &mut self,
        event: SagaEvent,
        target: SagaState,
        reason: &str,
    ) -> Result<(), Failure> {
        if self.resume.visited.contains(&target) {
            return Ok(());
        }
        let current = self.saga.state();
        let next = current.on(event).map_err(|error| Failure::Step {
            step: state_name(target).to_lowercase(),
            error: StepError::Terminal(error.to_string()),
        })?;
        debug_assert_eq!(next, target, "the flow follows the transition table");
        self.append(
            RecordKind::SagaState,
            "",
            json!({ "state": state_name(next), "from": state_name(current), "reason": reason, "fencing_token": self.token() }),
            None,
            &format!("state:{}", state_name(next)),
        )
        .await?;
        if next == SagaState::AwaitingApproval {
            // A saga at rest is shown waiting only once the journal says so.
            self.flush().await?;
        }
        self.resume.visited.insert(next);
        self.saga.update(|data| data.view.state = next);
        self.saga.event(
            "",
            None,
            format!("{} → {}: {reason}", state_name(current), state_name(next)),
            None,
        );
        Ok(())
    }

    async fn begin(&mut self, step: &str, inputs: Value) -> Result<Instant, Failure> {
        let token = self.token();
        let started_at = SystemTime::now();
        self.saga.update(|data| {
            data.view.steps.retain(|s| s.name != step);
            data.view.steps.push(StepView {
                name: step.to_owned(),
                status: StepStatus::Running,
                attempt: 0,
                started_at,
                duration: None,
                summary: String::new(),
                error: String::new(),
                fencing_token: token,
            });
        });
        self.saga.event(
            step,
            Some(StepStatus::Running),
            format!("{step} started"),
            None,
        );
        self.append(
            RecordKind::StepStarted,
            step,
            json!({
                "step": step,
                "inputs_digest": digest(&inputs),
                "inputs": inputs,
                "fencing_token": token,
                "idempotency_key": format!("{}:{step}", self.saga.id),
            }),
            None,
            &format!("{step}:started"),
        )
        .await?;
        self.flush().await?;
        Ok(Instant::now())
    }

    async fn end(
        &mut self,
        step: &str,
        started: Instant,
        attempt: u32,
        summary: String,
        outputs: Value,
    ) -> Result<(), Failure> {
        let duration = started.elapsed();
        self.append(
            RecordKind::StepFinished,
            step,
            json!({
                "step": step,
                "summary": summary,
                "outputs": outputs,
                "attempts": attempt,
                "duration_ms": duration.as_secs_f64() * 1000.0,
                "fencing_token": self.token(),
            }),
            None,
            &format!("{step}:finished"),
        )
        .await?;
        self.resume
            .finished
            .insert(step.to_owned(), json!({ "outputs": outputs }));
        self.saga.update(|data| {
            if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                view.status = StepStatus::Succeeded;
                view.attempt = attempt;
                view.duration = Some(duration);
                view.summary = summary.clone();
            }
        });
        self.saga
            .event(step, Some(StepStatus::Succeeded), summary, None);
        Ok(())
    }

    /// Journals a failed step and returns the failure to stop the forward path with.
    async fn failed(&mut self, step: &str, started: Instant, error: StepError) -> Failure {
        let duration = started.elapsed();
        let retryable = matches!(
            error,
            StepError::Retryable(_) | StepError::DeadlineExceeded { .. }
        );
        self.saga.update(|data| {
            if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                view.status = StepStatus::Failed;
                view.duration = Some(duration);
                view.error = error.to_string();
            }
        });
        self.saga
            .event(step, Some(StepStatus::Failed), error.to_string(), None);
        let journaled = self
            .append(
                RecordKind::StepFailed,
                step,
                json!({
                    "step": step,
                    "error": error.to_string(),
                    "retryable": retryable,
                    "duration_ms": duration.as_secs_f64() * 1000.0,
                    "fencing_token": self.token(),
                }),
                None,
                &format!("{step}:failed"),
            )
            .await;
        match journaled {
            Ok(()) => Failure::Step {
                step: step.to_owned(),
                error,
            },
            Err(failure) => failure,
        }
    }

    /// Journals a decision (filling what peers may leave out) and attaches it to the saga.
    async fn decide(
        &mut self,
        step: &str,
        decision: pb::Decision,
        fallback: DecisionKind,
        key: &str,
    ) -> Result<(), Failure> {
        if !self.decisions_seen.insert(key.to_owned()) {
            return Ok(());
        }
        let decision = normalise(decision, fallback, &self.saga.id, key);
        self.append(
            RecordKind::Decision,
            step,
            json!({ "step": step, "outcome": decision.outcome }),
            Some(decision.clone()),
            &format!("decision:{key}"),
        )
        .await?;
        self.saga
            .update(|data| data.view.decisions.push(decision.clone()));
        self.saga.event(
            step,
            None,
            format!("decision: {}", decision.outcome),
            Some(decision),
        );
        Ok(())
    }

    fn finished(&self, step: &str) -> Option<Value> {
        self.resume
            .finished
            .get(step)
            .and_then(|p| p.get("outputs"))
            .cloned()
    }

    // ---- the forward path ------------------------------------------------------------------

    async fn forward(&mut self) -> Result<Flow, Failure> {
        self.take_lock().await?;
        self.advance(SagaEvent::StepSucceeded, SagaState::Analyzing, "lease held")
            .await?;
        self.analyze().await?;
        let confidence = self.report.as_ref().map_or(0.0, |r| r.confidence);
        if confidence < self.inner.saga.min_confidence {
            // Rounded down, so that the figure shown is never at or above the minimum.
            let shown = (confidence * 1e4).floor() / 1e4;
            return Ok(Flow::Escalate(format!(
                "root-cause confidence {shown} is below the minimum {}",
                self.inner.saga.min_confidence
            )));
        }
        self.advance(
            SagaEvent::StepSucceeded,
            SagaState::Planning,
            "analysis done",
        )
        .await?;
        match self.plan().await? {
            Plan::Escalate(reason) => Ok(Flow::Escalate(reason)),
            Plan::RollbackToPrevious => {
                self.advance(
                    SagaEvent::RollbackPlanned,
                    SagaState::Deploying,
                    "bad deploy: return to the previous stable",
                )
                .await?;
                self.rollback_to_previous().await?;
                self.advance(
                    SagaEvent::StepSucceeded,
                    SagaState::Verifying,
                    "previous stable restored",
                )
                .await?;
                if self.verify().await? {
                    Ok(Flow::Resolved)
                } else {
                    Ok(Flow::Escalate(
                        "errors persist after returning to the previous stable".into(),
                    ))
                }
            }
            Plan::Patch => {
                self.advance(
                    SagaEvent::StepSucceeded,
                    SagaState::Patching,
                    "code defect with a location: patch",
                )
                .await?;
                self.patch().await?;
                if self.candidates.is_empty() {
                    return Ok(Flow::Escalate("the patcher produced no candidate".into()));
                }
                self.advance(
                    SagaEvent::StepSucceeded,
                    SagaState::Gating,
                    "candidates ready",
                )
                .await?;
                match self.gate().await? {
                    GateResult::Approved => {
                        self.advance(
                            SagaEvent::StepSucceeded,
                            SagaState::Deploying,
                            "candidate approved by the gate",
                        )
                        .await?;
                    }
                    GateResult::NeedsHuman => {
                        self.advance(
                            SagaEvent::NeedsApproval,
                            SagaState::AwaitingApproval,
                            "the gate asks a human",
                        )
                        .await?;
                        let approver = self.await_approval().await?;
                        self.advance(
                            SagaEvent::Approved,
                            SagaState::Deploying,
                            &format!("approved by {approver}"),
                        )
                        .await?;
                    }
                    GateResult::Rejected(reason) => return Ok(Flow::Escalate(reason)),
                }
                self.claim_files().await?;
                if let Some(reason) = self.deploy().await? {
                    return Ok(Flow::RolledBack(reason));
                }
                self.advance(SagaEvent::StepSucceeded, SagaState::Verifying, "promoted")
                    .await?;
                if self.verify().await? {
                    Ok(Flow::Resolved)
                } else {
                    Ok(Flow::RolledBack("errors persist after promotion".into()))
                }
            }
        }
    }

    async fn take_lock(&mut self) -> Result<(), Failure> {
        let resumed = self.resume.visited.contains(&SagaState::Locked);
        let owner = format!("{}/{}", self.inner.instance, self.saga.id);
        let ttl = self.inner.lock_ttl;
        let started = if resumed {
            Instant::now()
        } else {
            self.begin(
                "lock",
                json!({ "owner": owner, "ttl_ms": ttl.as_millis() as u64 }),
            )
            .await?
        };
        let policy = crate::saga::RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: (ttl / 4).max(Duration::from_millis(50)),
            multiplier: 2.0,
            max_attempts: u32::MAX,
            deadline: self.inner.saga.deadlines.lock,
        };
        let locks = Arc::clone(&self.inner.locks);
        let service = self.saga.service.clone();
        let timeout = self.inner.lock_timeout;
        let acquired = retry_step(policy, |_, _| {
            let locks = Arc::clone(&locks);
            let (service, owner) = (service.clone(), owner.clone());
            async move {
                match tokio::time::timeout(timeout, locks.acquire(&service, &owner, ttl)).await {
                    Ok(Ok(Some(lease))) => Ok(lease),
                    Ok(Ok(None)) => Err(StepError::Retryable(format!(
                        "{service} is locked by another saga"
                    ))),
                    Ok(Err(error @ crate::lock::LockError::Unavailable { .. })) => {
                        Err(StepError::Retryable(error.to_string()))
                    }
                    Ok(Err(error)) => Err(StepError::Terminal(error.to_string())),
                    Err(_) => Err(StepError::Retryable(format!(
                        "lock store did not answer within {timeout:?}"
                    ))),
                }
            }
        })
        .await;
        let (lease, attempts) = match acquired {
            Ok(acquired) => acquired,
            Err(error) => return Err(self.failed("lock", started, error).await),
        };
        let token = lease.token.0;
        self.lease = Some(lease.clone());
        self.saga.update(|data| data.view.fencing_token = token);
        self.keeper = Some(self.spawn_keeper(lease));
        if resumed {
            self.note(json!({ "lease": "re-acquired after a restart", "fencing_token": token, "owner": owner }), &format!("lease:{token}")).await;
            self.saga.event(
                "lock",
                None,
                format!("lease re-acquired with fencing token {token}"),
                None,
            );
            return Ok(());
        }
        self.end(
            "lock",
            started,
            attempts,
            format!("lease held with fencing token {token}"),
            json!({ "fencing_token": token, "owner": owner }),
        )
        .await?;
        self.advance(
            SagaEvent::LockAcquired,
            SagaState::Locked,
            &format!("fencing token {token}"),
        )
        .await
    }

    /// Renews the lease every ttl/3; stops the saga when it is lost or cannot be confirmed for
    /// a whole ttl.
    fn spawn_keeper(&self, lease: Lease) -> CancellationToken {
        let cancel = self.inner.shutdown.child_token();
        let (locks, saga, timeout) = (
            Arc::clone(&self.inner.locks),
            Arc::clone(&self.saga),
            self.inner.lock_timeout,
        );
        let stop = cancel.clone();
        let every = (lease.ttl / 3).max(Duration::from_millis(10));
        self.inner.tracker.spawn(
            async move {
                let mut confirmed = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    match tokio::time::timeout(timeout, locks.renew(&lease)).await {
                        Ok(Ok(true)) => confirmed = tokio::time::Instant::now(),
                        Ok(Ok(false)) => {
                            saga.request_stop(Stop::LeaseLost(format!(
                                "the lease on {} expired or was taken over",
                                lease.service
                            )));
                            return;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "lease renewal failed");
                            if confirmed.elapsed() >= lease.ttl {
                                saga.request_stop(Stop::LeaseLost(format!(
                                    "not renewed for a whole ttl: {error}"
                                )));
                                return;
                            }
                        }
                        Err(_) => {
                            if confirmed.elapsed() >= lease.ttl {
                                saga.request_stop(Stop::LeaseLost(
                                    "the lock store did not answer for a whole ttl".into(),
                                ));
                                return;
                            }
                        }
                    }
                }
            }
            .in_current_span(),
        );
        cancel
    }

    /// Confirms the lease right before a mutating call: no lock, no call.
    async fn confirm_lease(&self) -> Result<(), Failure> {
        let Some(lease) = &self.lease else {
            return Err(Failure::Lock("no lease held".into()));
        };
        match tokio::time::timeout(self.inner.lock_timeout, self.inner.locks.renew(lease)).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Failure::Lock(format!(
                "the lease on {} was lost",
                lease.service
            ))),
            Ok(Err(error)) => Err(Failure::Lock(error.to_string())),
            Err(_) => Err(Failure::Lock("the lock store did not answer".into())),
        }
    }

    async fn analyze(&mut self) -> Result<(), Failure> {
        if let Some(outputs) = self.finished("analyze") {
            self.source = decode(&outputs, "source_pb").unwrap_or_default();
            self.last_good = outputs
                .get("last_good_commit")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            self.report = decode(&outputs, "report_pb");
            return Ok(());
        }
        let incident = self.saga.incident();
        let started = self
            .begin(
                "analyze",
                json!({ "incident_id": incident.id, "service": self.saga.service }),
            )
            .await?;
        let peers = self.inner.peers.clone();
        let service = self.saga.service.clone();
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.analyze),
            |_, left| {
                let (mut deployer, mut rca) = (peers.deployer.clone(), peers.rca.clone());
                let (service, incident) = (service.clone(), incident.clone());
                async move {
                    let status = deployer
                        .status(request(
                            pb::StatusRequest {
                                service: service.clone(),
                                ..Default::default()
                            },
                            left,
                        ))
                        .await
                        .map_err(|s| StepError::from_status(&s))?
                        .into_inner();
                    let Some(current) = status.services.into_iter().find(|s| s.service == service)
                    else {
                        return Err(StepError::Terminal(format!(
                            "the deployer does not run {service}"
                        )));
                    };
                    let Some(stable) = current.stable.clone() else {
                        return Err(StepError::Terminal(format!(
                            "{service} has no stable version"
                        )));
                    };
                    let source = pb::SourceRef {
                        repository: stable.repository.clone(),
                        commit: stable.commit.clone(),
                    };
                    let last_good = current
                        .previous_stable
                        .as_ref()
                        .map(|p| p.commit.clone())
                        .unwrap_or_default();
                    for version in current
                        .previous_stable
                        .iter()
                        .chain(std::iter::once(&stable))
                    {
                        let deployment = pb::Deployment {
                            service: service.clone(),
                            version: version.version.clone(),
                            commit: version.commit.clone(),
                            deployed_at: version.deployed_at,
                            repository: version.repository.clone(),
                            ..Default::default()
                        };
                        // The graph is one source of evidence among several: when it cannot
                        // take the deployment, the analysis still runs and names the gap.
                        if let Err(status) = rca
                            .record_deployment(request(
                                pb::RecordDeploymentRequest {
                                    deployment: Some(deployment),
                                    ..Default::default()
                                },
                                left,
                            ))
                            .await
                        {
                            tracing::warn!(
                                code = ?status.code(),
                                message = status.message(),
                                "rca could not record the deployment; analysing without it"
                            );
                        }
                    }
                    let analysis = rca
                        .analyze(request(
                            pb::AnalyzeRequest {
                                incident: Some(incident),
                                source: Some(source.clone()),
                                last_good_commit: last_good.clone(),
                                ..Default::default()
                            },
                            left,
                        ))
                        .await
                        .map_err(|s| StepError::from_status(&s))?
                        .into_inner();
                    let report = analysis.report.ok_or_else(|| {
                        StepError::Terminal("rca answered without a report".into())
                    })?;
                    Ok((source, last_good, report))
                }
            },
        )
        .await;
        let ((source, last_good, report), attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("analyze", started, error).await),
        };
        if let Some(decision) = report.decision.clone() {
            self.decide("analyze", decision, DecisionKind::RootCause, "analyze")
                .await?;
        }
        let top = report.causes.first();
        let summary = match top {
            Some(cause) => format!(
                "top cause {} ({:.2}){} with confidence {:.2}",
                cause_name(cause.kind()),
                cause.score,
                cause
                    .location
                    .as_ref()
                    .map(|l| format!(" at {}:{}", l.file, l.line))
                    .unwrap_or_default(),
                report.confidence
            ),
            None => "no root cause found".into(),
        };
        let outputs = json!({
            "source": { "repository": source.repository, "commit": source.commit },
            "last_good_commit": last_good,
            "confidence": report.confidence,
            "top_cause": top.map(cause_json),
            "gaps": report.gaps,
            "source_pb": encode(&source),
            "report_pb": encode(&report),
        });
        self.source = source;
        self.last_good = last_good;
        self.report = Some(report);
        self.end("analyze", started, attempts, summary, outputs)
            .await
    }

    fn top_cause(&self) -> Option<&pb::RootCause> {
        self.report.as_ref().and_then(|r| r.causes.first())
    }

    async fn plan(&mut self) -> Result<Plan, Failure> {
        if let Some(outputs) = self.finished("plan") {
            let plan = match outputs.get("plan").and_then(Value::as_str) {
                Some("patch") => Plan::Patch,
                Some("rollback") => Plan::RollbackToPrevious,
                _ => Plan::Escalate(
                    outputs
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("escalate")
                        .to_owned(),
                ),
            };
            self.plan = Some(plan.clone());
            return Ok(plan);
        }
        let started = self.begin("plan", json!({ "top_cause": self.top_cause().map(cause_json), "last_good_commit": self.last_good })).await?;
        let (plan, decision) = fix_plan(
            self.top_cause(),
            self.report.as_ref().map_or(0.0, |r| r.confidence),
            &self.last_good,
            &self.saga.service,
        );
        self.decide("plan", decision, DecisionKind::FixPlan, "plan")
            .await?;
        let (name, reason) = match &plan {
            Plan::Patch => ("patch", String::new()),
            Plan::RollbackToPrevious => ("rollback", String::new()),
            Plan::Escalate(reason) => ("escalate", reason.clone()),
        };
        self.plan = Some(plan.clone());
        self.end(
            "plan",
            started,
            1,
            format!("plan: {name}"),
            json!({ "plan": name, "reason": reason }),
        )
        .await?;
        Ok(plan)
    }

    async fn patch(&mut self) -> Result<(), Failure> {
        if let Some(outputs) = self.finished("patch") {
            let response: pb::GenerateCandidatesResponse =
                decode(&outputs, "response_pb").unwrap_or_default();
            self.candidates = response.candidates;
            return Ok(());
        }
        let cause = self.top_cause().cloned().unwrap_or_default();
        let past_fixes = self
            .report
            .as_ref()
            .map(|r| r.past_fixes.clone())
            .unwrap_or_default();
        let generate = pb::GenerateCandidatesRequest {
            incident_id: self.incident_id(),
            service: self.saga.service.clone(),
            source: Some(self.source.clone()),
            location: cause.location.clone(),
            culprit: cause.culprit.clone(),
            failure_message: cause.failure_message.clone(),
            trace_text: cause.trace_text.clone(),
            cause_kind: cause.kind,
            max_candidates: self.inner.saga.max_candidates,
            past_fixes,
            ..Default::default()
        };
        let started = self
            .begin("patch", json!({ "location": cause.location.as_ref().map(|l| format!("{}:{}", l.file, l.line)), "cause_kind": cause_name(cause.kind()), "max_candidates": generate.max_candidates }))
            .await?;
        let patcher = self.inner.peers.patcher.clone();
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.patch),
            |_, left| {
                let mut patcher = patcher.clone();
                let generate = generate.clone();
                async move {
                    patcher
                        .generate_candidates(request(generate, left))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| StepError::from_status(&s))
                }
            },
        )
        .await;
        let (response, attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("patch", started, error).await),
        };
        let outputs = json!({
            "candidates": response.candidates.iter().map(candidate_json).collect::<Vec<_>>(),
            "notes": response.notes,
            "response_pb": encode(&response),
        });
        // Strategies that produced nothing say why (e.g. "llm: timed out after 10s").
        let summary = if response.notes.is_empty() {
            format!("{} candidates", response.candidates.len())
        } else {
            format!(
                "{} candidates ({})",
                response.candidates.len(),
                response.notes.join("; ")
            )
        };
        self.candidates = response.candidates;
        self.end("patch", started, attempts, summary, outputs).await
    }

    async fn gate(&mut self) -> Result<GateResult, Failure> {
        if let Some(outputs) = self.finished("gate") {
            let selected = outputs
                .get("selected_candidate_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.selected = self.candidates.iter().find(|c| c.id == selected).cloned();
            return Ok(match outputs.get("outcome").and_then(Value::as_str) {
                Some("approve") if self.selected.is_some() => GateResult::Approved,
                Some("needs_human") if self.selected.is_some() => GateResult::NeedsHuman,
                _ => GateResult::Rejected(
                    outputs
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("rejected")
                        .to_owned(),
                ),
            });
        }
        let started = self
            .begin("gate", json!({ "candidates": self.candidates.iter().map(|c| c.id.clone()).collect::<Vec<_>>() }))
            .await?;
        let peers = self.inner.peers.clone();
        let service = self.saga.service.clone();
        let evaluate = pb::EvaluateRequest {
            incident_id: self.incident_id(),
            service: service.clone(),
            source: Some(self.source.clone()),
            candidates: self.candidates.clone(),
            service_criticality: self.inner.saga.criticality_of(&service),
            dependents: self
                .inner
                .saga
                .dependents
                .get(&service)
                .copied()
                .unwrap_or(0),
            ..Default::default()
        };
        let limit = self.inner.saga.replay_requests;
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.gate),
            |_, left| {
                let (mut deployer, mut gate) = (peers.deployer.clone(), peers.gate.clone());
                let (service, mut evaluate) = (service.clone(), evaluate.clone());
                async move {
                    let replay = deployer
                        .failing_requests(request(
                            pb::FailingRequestsRequest {
                                service,
                                limit,
                                ..Default::default()
                            },
                            left,
                        ))
                        .await
                        .map_err(|s| StepError::from_status(&s))?
                        .into_inner();
                    evaluate.failing_requests = replay.failing;
                    evaluate.passing_requests = replay.passing;
                    gate.evaluate(request(evaluate, left))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| StepError::from_status(&s))
                }
            },
        )
        .await;
        let (response, attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("gate", started, error).await),
        };
        for verdict in &response.verdicts {
            if let Some(decision) = verdict.decision.clone() {
                self.decide(
                    "gate",
                    decision,
                    DecisionKind::SafetyGate,
                    &format!("gate:{}", verdict.candidate_id),
                )
                .await?;
            }
        }
        if let Some(decision) = response.decision.clone() {
            self.decide("gate", decision, DecisionKind::SafetyGate, "gate")
                .await?;
        }
        let (result, chosen) = gate_choice(&response);
        self.selected = chosen.and_then(|id| self.candidates.iter().find(|c| c.id == id).cloned());
        if self.selected.is_none() && !matches!(result, GateResult::Rejected(_)) {
            let reason = "the gate chose a candidate the patcher did not propose".to_owned();
            return Err(self
                .failed("gate", started, StepError::Terminal(reason))
                .await);
        }
        let (outcome, reason) = match &result {
            GateResult::Approved => ("approve", String::new()),
            GateResult::NeedsHuman => ("needs_human", String::new()),
            GateResult::Rejected(reason) => ("reject", reason.clone()),
        };
        let outputs = json!({
            "outcome": outcome,
            "reason": reason,
            "selected_candidate_id": self.selected.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            "selected_diff": self.selected.as_ref().map(|c| c.diff.clone()).unwrap_or_default(),
            "verdicts": response.verdicts.iter().map(|v| json!({ "candidate_id": v.candidate_id, "outcome": format!("{:?}", v.outcome()), "risk_score": v.risk_score })).collect::<Vec<_>>(),
        });
        self.end(
            "gate",
            started,
            attempts,
            format!("gate: {outcome}"),
            outputs,
        )
        .await?;
        Ok(result)
    }

    async fn await_approval(&mut self) -> Result<String, Failure> {
        if self.resume.approved {
            return Ok("an approver (before a restart)".into());
        }
        self.saga
            .event("gate", None, "waiting for a human: Approve or Abort", None);
        self.flush().await?;
        let mut approvals = self.saga.approval.subscribe();
        let approval = approvals
            .wait_for(Option::is_some)
            .await
            .map(|a| a.clone())
            .ok()
            .flatten()
            .ok_or_else(|| Failure::Step {
                step: "approval".into(),
                error: StepError::Terminal("approval channel closed".into()),
            })?;
        self.append(
            RecordKind::Note,
            "approval",
            json!({ "approved_by": approval.approver, "comment": approval.comment, "candidate_id": self.selected.as_ref().map(|c| c.id.clone()) }),
            None,
            "approval",
        )
        .await?;
        Ok(if approval.approver.is_empty() {
            "someone".into()
        } else {
            approval.approver
        })
    }

    async fn claim_files(&mut self) -> Result<(), Failure> {
        self.flush().await?;
        let Some(candidate) = &self.selected else {
            return Ok(());
        };
        let mut files: BTreeSet<String> = candidate.files.iter().cloned().collect();
        if files.is_empty() {
            files = files_of_diff(&candidate.diff);
        }
        let saga = Arc::clone(&self.saga);
        self.inner
            .claims
            .claim(&self.saga.id, &self.source.repository, files, |blocker| {
                saga.event(
                    "deploy",
                    None,
                    format!("waiting for saga {blocker}: its candidate touches the same files"),
                    None,
                );
            })
            .await;
        Ok(())
    }

    /// Registers the deploy's compensation (a rollback with the token), then deploys the
    /// selected candidate. `Some(reason)` when the deployer rolled the canary back itself.
    async fn deploy(&mut self) -> Result<Option<String>, Failure> {
        if !self.resume.compensated.contains("deploy") {
            self.register_rollback();
        }
        if let Some(outputs) = self.finished("deploy") {
            return Ok(self.after_deploy(&outputs).await);
        }
        self.confirm_lease().await?;
        let candidate = self.selected.clone().unwrap_or_default();
        let started = self
            .begin("deploy", json!({ "candidate_id": candidate.id, "diff_digest": digest(&Value::String(candidate.diff.clone())), "strategy": "canary" }))
            .await?;
        let canary = &self.inner.saga.canary;
        let deploy = pb::DeployRequest {
            service: self.saga.service.clone(),
            source: Some(self.source.clone()),
            strategy: pb::RolloutStrategy::Canary.into(),
            plan: Some(pb::CanaryPlan {
                steps: canary.steps.clone(),
                analysis_window: prost_types::Duration::try_from(canary.analysis_window).ok(),
                min_requests: canary.min_requests,
                max_error_rate: canary.max_error_rate,
                failure_limit: canary.failure_limit,
                ..Default::default()
            }),
            fencing_token: self.token(),
            idempotency_key: format!("{}:deploy", self.saga.id),
            patch: candidate.diff.clone(),
            ..Default::default()
        };
        let deployer = self.inner.peers.deployer.clone();
        let saga = Arc::clone(&self.saga);
        let seen = Arc::new(AtomicUsize::new(0));
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.deploy),
            |_, left| {
                let mut deployer = deployer.clone();
                let (deploy, saga, seen) = (deploy.clone(), Arc::clone(&saga), Arc::clone(&seen));
                async move {
                    let mut stream = deployer
                        .deploy(request(deploy, left))
                        .await
                        .map_err(|s| StepError::from_status(&s))?
                        .into_inner();
                    let mut index = 0;
                    let mut decisions = Vec::new();
                    while let Some(message) = stream
                        .message()
                        .await
                        .map_err(|s| StepError::from_status(&s))?
                    {
                        let Some(event) = message.event else { continue };
                        index += 1;
                        if let Some(decision) = &event.decision {
                            decisions.push((index, decision.clone()));
                        }
                        if index > seen.load(Ordering::SeqCst) {
                            seen.store(index, Ordering::SeqCst);
                            saga.event(
                                "deploy",
                                None,
                                format!(
                                    "rollout {}: {}% {} {}",
                                    rollout_name(event.kind()),
                                    event.canary_weight,
                                    event.version,
                                    event.message
                                ),
                                event.decision.clone(),
                            );
                        }
                        match event.kind() {
                            pb::RolloutEventKind::Promoted => {
                                return Ok(("promoted", event, decisions));
                            }
                            pb::RolloutEventKind::RolledBack => {
                                return Ok(("rolled_back", event, decisions));
                            }
                            pb::RolloutEventKind::Failed => {
                                return Ok(("failed", event, decisions));
                            }
                            _ => {}
                        }
                    }
                    Err(StepError::Retryable(
                        "the rollout stream ended before an outcome".into(),
                    ))
                }
            },
        )
        .await;
        let ((outcome, event, decisions), attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("deploy", started, error).await),
        };
        for (index, decision) in decisions {
            let fallback = match outcome {
                "promoted" => DecisionKind::Promotion,
                _ => DecisionKind::Rollback,
            };
            self.decide("deploy", decision, fallback, &format!("deploy:{index}"))
                .await?;
        }
        let outputs = json!({
            "outcome": outcome,
            "version": event.version,
            "message": event.message,
            "candidate_id": candidate.id,
        });
        self.end(
            "deploy",
            started,
            attempts,
            format!("rollout {outcome}: {}", event.message),
            outputs.clone(),
        )
        .await?;
        Ok(self.after_deploy(&outputs).await)
    }

    /// After a finished deploy: nothing when promoted; when the deployer rolled back, its
    /// rollback is the compensation (recorded), and a second one must not run.
    async fn after_deploy(&mut self, outputs: &Value) -> Option<String> {
        let outcome = outputs
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if outcome == "promoted" {
            return None;
        }
        let message = outputs
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.compensations.discharge("deploy");
        if !self.resume.compensated.contains("deploy") {
            let detail =
                format!("the deployer returned traffic to stable itself ({outcome}): {message}");
            if let Err(Failure::Journal(error)) = self
                .append(
                    RecordKind::Compensation,
                    "deploy",
                    json!({ "step": "deploy", "ok": true, "by": "deployer", "detail": detail }),
                    None,
                    "compensate:deploy",
                )
                .await
            {
                tracing::warn!(saga_id = %self.saga.id, %error, "compensation not journaled");
            }
            self.resume.compensated.insert("deploy".into());
            self.mark_compensated("deploy");
            self.saga
                .event("deploy", Some(StepStatus::Compensated), detail, None);
        }
        Some(format!("canary {outcome}: {message}"))
    }

    fn register_rollback(&mut self) {
        let deployer = self.inner.peers.deployer.clone();
        let service = self.saga.service.clone();
        let token = self.token();
        let key = format!("{}:compensate:deploy", self.saga.id);
        let policy = self.inner.policy(self.inner.saga.deadlines.compensate);
        self.compensations.register("deploy", move || async move {
            retry_step(policy, |_, left| {
                let mut deployer = deployer.clone();
                let rollback = pb::RollbackRequest {
                    service: service.clone(),
                    fencing_token: token,
                    reason: "saga compensation".into(),
                    idempotency_key: key.clone(),
                    ..Default::default()
                };
                async move {
                    deployer
                        .rollback(request(rollback, left))
                        .await
                        .map(|_| ())
                        .map_err(|s| StepError::from_status(&s))
                }
            })
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
        });
    }

    fn mark_compensated(&self, step: &str) {
        self.saga.update(|data| {
            if let Some(view) = data.view.steps.iter_mut().rfind(|s| s.name == step) {
                view.status = StepStatus::Compensated;
            }
        });
    }

    async fn rollback_to_previous(&mut self) -> Result<(), Failure> {
        if self.finished("rollback").is_some() {
            return Ok(());
        }
        self.confirm_lease().await?;
        let started = self
            .begin("rollback", json!({ "to_commit": self.last_good }))
            .await?;
        let deployer = self.inner.peers.deployer.clone();
        let rollback = pb::RollbackRequest {
            service: self.saga.service.clone(),
            fencing_token: self.token(),
            reason: format!(
                "bad deploy: return to the previous stable {}",
                self.last_good
            ),
            idempotency_key: format!("{}:rollback", self.saga.id),
            ..Default::default()
        };
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.deploy),
            |_, left| {
                let mut deployer = deployer.clone();
                let rollback = rollback.clone();
                async move {
                    deployer
                        .rollback(request(rollback, left))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| StepError::from_status(&s))
                }
            },
        )
        .await;
        let (response, attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("rollback", started, error).await),
        };
        let summary = format!("stable is {}", response.stable_version);
        self.end("rollback", started, attempts, summary, json!({ "stable_version": response.stable_version, "rolled_back": response.rolled_back })).await
    }

    /// Whether the stable version is healthy now.
    async fn verify(&mut self) -> Result<bool, Failure> {
        if let Some(outputs) = self.finished("verify") {
            return Ok(outputs
                .get("healthy")
                .and_then(Value::as_bool)
                .unwrap_or(false));
        }
        let settings = &self.inner.saga.verify;
        let verify = pb::VerifyRequest {
            service: self.saga.service.clone(),
            window: prost_types::Duration::try_from(settings.window).ok(),
            min_requests: settings.min_requests,
            max_error_rate: settings.max_error_rate,
            ..Default::default()
        };
        let started = self.begin("verify", json!({ "window_ms": settings.window.as_millis() as u64, "min_requests": settings.min_requests, "max_error_rate": settings.max_error_rate })).await?;
        let deployer = self.inner.peers.deployer.clone();
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.verify),
            |_, left| {
                let mut deployer = deployer.clone();
                let verify = verify.clone();
                async move {
                    deployer
                        .verify(request(verify, left))
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| StepError::from_status(&s))
                }
            },
        )
        .await;
        let (response, attempts) = match result {
            Ok(result) => result,
            Err(error) => return Err(self.failed("verify", started, error).await),
        };
        if let Some(decision) = response.decision.clone() {
            self.decide("verify", decision, DecisionKind::Verification, "verify")
                .await?;
        }
        let summary = format!(
            "{}: error rate {:.4} over {} requests",
            if response.healthy {
                "healthy"
            } else {
                "not healthy"
            },
            response.error_rate,
            response.requests
        );
        self.end("verify", started, attempts, summary, json!({ "healthy": response.healthy, "error_rate": response.error_rate, "requests": response.requests, "errors": response.errors })).await?;
        Ok(response.healthy)
    }

    /// Tells rca what fixed the incident; a failure is recorded and does not undo the fix.
    async fn record_fix(&mut self) {
        if self.finished("record_fix").is_some() || self.journal_dead {
            return;
        }
        let Ok(started) = self
            .begin("record_fix", json!({ "plan": format!("{:?}", self.plan) }))
            .await
        else {
            return;
        };
        let cause_kind = self.top_cause().map_or(0, |c| c.kind);
        let (strategy, template) = match &self.selected {
            Some(candidate) => (
                strategy_name(candidate.strategy()).to_owned(),
                candidate.template.clone(),
            ),
            None => ("rollback".to_owned(), String::new()),
        };
        let peers = self.inner.peers.clone();
        let (service, incident_id) = (self.saga.service.clone(), self.incident_id());
        let fallback_commit = if self.selected.is_some() {
            self.source.commit.clone()
        } else {
            self.last_good.clone()
        };
        let result = retry_step(
            self.inner.policy(self.inner.saga.deadlines.record),
            |_, left| {
                let (mut deployer, mut rca) = (peers.deployer.clone(), peers.rca.clone());
                let (service, incident_id, strategy, template, fallback_commit) = (
                    service.clone(),
                    incident_id.clone(),
                    strategy.clone(),
                    template.clone(),
                    fallback_commit.clone(),
                );
                async move {
                    let commit = deployer
                        .status(request(
                            pb::StatusRequest {
                                service: service.clone(),
                                ..Default::default()
                            },
                            left,
                        ))
                        .await
                        .ok()
                        .and_then(|r| {
                            r.into_inner()
                                .services
                                .into_iter()
                                .find(|s| s.service == service)
                        })
                        .and_then(|s| s.stable)
                        .map(|stable| stable.commit)
                        .filter(|commit| !commit.is_empty())
                        .unwrap_or(fallback_commit);
                    let fix = pb::RecordFixRequest {
                        incident_id,
                        service,
                        cause_kind,
                        strategy,
                        commit: commit.clone(),
                        template,
                        ..Default::default()
                    };
                    rca.record_fix(request(fix, left))
                        .await
                        .map(|_| commit)
                        .map_err(|s| StepError::from_status(&s))
                }
            },
        )
        .await;
        match result {
            Ok((commit, attempts)) => {
                let _ = self
                    .end(
                        "record_fix",
                        started,
                        attempts,
                        format!("fix recorded ({strategy} at {commit})"),
                        json!({ "strategy": strategy, "commit": commit }),
                    )
                    .await;
            }
            Err(error) => {
                let _ = self.failed("record_fix", started, error).await;
            }
        }
    }

    /// Runs the registered compensations newest first and journals each, failures included.
    async fn compensate(&mut self) {
        let stack = std::mem::take(&mut self.compensations);
        if stack.steps().is_empty() {
            return;
        }
        let (ran, failures) = stack.unwind().await;
        for step in ran {
            let failure = failures.iter().find(|f| f.step == step);
            let payload = json!({ "step": step, "ok": failure.is_none(), "error": failure.map(|f| f.error.clone()), "by": "orchestrator" });
            if failure.is_none() {
                self.mark_compensated(&step);
            }
            self.saga.event(
                &step,
                Some(if failure.is_none() {
                    StepStatus::Compensated
                } else {
                    StepStatus::Failed
                }),
                match failure {
                    None => format!("compensated {step}"),
                    Some(f) => format!("compensation of {step} failed: {}", f.error),
                },
                None,
            );
            if !self.journal_dead
                && let Err(Failure::Journal(error)) = self
                    .append(
                        RecordKind::Compensation,
                        &step,
                        payload,
                        None,
                        &format!("compensate:{step}"),
                    )
                    .await
            {
                tracing::error!(saga_id = %self.saga.id, %error, "compensation not journaled");
            }
        }
    }

    /// Stops renewing and releases the lease (compare-and-delete), journaled as a step.
    async fn release(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.cancel();
        }
        let Some(lease) = self.lease.clone() else {
            return;
        };
        let started = if self.journal_dead {
            Ok(Instant::now())
        } else {
            self.begin("release", json!({ "fencing_token": lease.token.0 }))
                .await
        };
        let released =
            tokio::time::timeout(self.inner.lock_timeout, self.inner.locks.release(&lease)).await;
        let Ok(started) = started else { return };
        if self.journal_dead {
            return;
        }
        let _ = match released {
            Ok(Ok(true)) => {
                self.end(
                    "release",
                    started,
                    1,
                    "lease released".into(),
                    json!({ "released": true }),
                )
                .await
            }
            Ok(Ok(false)) => {
                self.end(
                    "release",
                    started,
                    1,
                    "the lease had already lapsed".into(),
                    json!({ "released": false }),
                )
                .await
            }
            Ok(Err(error)) => Err(self
                .failed("release", started, StepError::Retryable(error.to_string()))
                .await),
            Err(_) => Err(self
                .failed(
                    "release",
                    started,
                    StepError::Retryable("the lock store did not answer".into()),
                )
                .await),
        };
    }

    /// Sends the escalation report of a saga ending in `state` and records whether it was
    /// delivered.
    async fn escalate(&mut self, reason: &str, state: SagaState) {
        let incident = self.saga.incident();
        let decision = pb::Decision {
            kind: DecisionKind::Escalation.into(),
            subject: format!("saga {} of {}", self.saga.id, self.saga.service),
            outcome: "escalate to a human; automation of the service paused until acknowledged"
                .into(),
            reasoning: reason.to_owned(),
            confidence: 1.0,
            ..Default::default()
        };
        if !self.journal_dead {
            let _ = self
                .decide("escalate", decision, DecisionKind::Escalation, "escalate")
                .await;
        }
        let view = self.saga.view();
        let report = json!({
            "saga_id": self.saga.id,
            "service": self.saga.service,
            "state": state_name(state),
            "reason": reason,
            "incident": {
                "id": incident.id,
                "summary": incident.summary,
                "signal": format!("{:?}", incident.signal()),
                "severity": format!("{:?}", incident.severity()),
                "observed_value": incident.observed_value,
                "threshold": incident.threshold,
            },
            "incident_ids": view.incident_ids,
            "evidence": {
                "source": { "repository": self.source.repository, "commit": self.source.commit },
                "last_good_commit": self.last_good,
                "confidence": self.report.as_ref().map(|r| r.confidence),
                "top_cause": self.top_cause().map(cause_json),
                "gaps": self.report.as_ref().map(|r| r.gaps.clone()).unwrap_or_default(),
            },
            "candidates": self.candidates.iter().map(candidate_json).collect::<Vec<_>>(),
            "decisions": view.decisions.iter().map(|d| json!({
                "kind": format!("{:?}", d.kind()),
                "subject": d.subject,
                "outcome": d.outcome,
                "reasoning": d.reasoning,
                "confidence": d.confidence,
            })).collect::<Vec<_>>(),
            "steps": view.steps.iter().map(|s| json!({ "name": s.name, "status": format!("{:?}", s.status), "summary": s.summary, "error": s.error })).collect::<Vec<_>>(),
        });
        let delivered = escalation::post(&self.inner.http, &self.inner.escalation, &report).await;
        let (message, payload) = match &delivered {
            Ok(None) => (
                "escalation report journaled (no webhook configured)".to_owned(),
                json!({ "escalation_report": "no webhook configured" }),
            ),
            Ok(Some(status)) => (
                format!("escalation report delivered ({status})"),
                json!({ "escalation_report": "delivered", "status": status }),
            ),
            Err(error) => (
                format!("escalation report {error}"),
                json!({ "escalation_report": "not delivered", "error": error }),
            ),
        };
        self.saga.event("escalate", None, message, None);
        self.note(payload, "escalation-report").await;
    }
}

#[derive(Debug)]
enum GateResult {
    Approved,
    NeedsHuman,
    Rejected(String),
}

/// What the gate's answer means for the saga, and the candidate it names. The overall
/// `outcome` (with `recommended_candidate_id`) wins; a gate that leaves it unspecified is read
/// from its verdicts: an approved candidate (the selected one, else the least risky), else the
/// least risky one needing a human, else rejection.
fn gate_choice(response: &pb::EvaluateResponse) -> (GateResult, Option<String>) {
    let named = |id: &str| (!id.is_empty()).then(|| id.to_owned());
    let rejected = || GateResult::Rejected("the safety gate rejected every candidate".into());
    match response.outcome() {
        pb::GateOutcome::Approve => {
            if let Some(id) = named(&response.selected_candidate_id)
                .or_else(|| named(&response.recommended_candidate_id))
            {
                return (GateResult::Approved, Some(id));
            }
        }
        pb::GateOutcome::NeedsHuman => {
            if let Some(id) = named(&response.recommended_candidate_id) {
                return (GateResult::NeedsHuman, Some(id));
            }
        }
        pb::GateOutcome::Reject => return (rejected(), None),
        pb::GateOutcome::Unspecified => {}
    }
    let least_risky = |outcome: pb::GateOutcome| {
        response
            .verdicts
            .iter()
            .filter(move |v| v.outcome() == outcome)
            .min_by(|a, b| a.risk_score.total_cmp(&b.risk_score))
    };
    let selected = response.verdicts.iter().find(|v| {
        !response.selected_candidate_id.is_empty()
            && v.candidate_id == response.selected_candidate_id
            && v.outcome() == pb::GateOutcome::Approve
    });
    if let Some(verdict) = selected.or_else(|| least_risky(pb::GateOutcome::Approve)) {
        return (GateResult::Approved, Some(verdict.candidate_id.clone()));
    }
    if let Some(verdict) = least_risky(pb::GateOutcome::NeedsHuman) {
        return (GateResult::NeedsHuman, Some(verdict.candidate_id.clone()));
    }
    (rejected(), None)
}

fn request<T>(message: T, left: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(left);
    request
}

/// The fix plan for the top cause, with the decision that explains it.
fn fix_plan(
    cause: Option<&pb::RootCause>,
    confidence: f64,
    last_good: &str,
    service: &str,
) -> (Plan, pb::Decision) {
    use pb::CauseKind as K;
    let located = cause
        .and_then(|c| c.location.as_ref())
        .is_some_and(|l| !l.file.is_empty());
    let kind = cause.map_or(K::Unspecified, pb::RootCause::kind);
    let plan = match (cause, kind, located) {
        (None, ..) => Plan::Escalate("no root cause to act on".into()),
        // A cause in another service (a failing dependency's own code) is never patched into
        // this service's repository, nor fixed by rolling this service back.
        (Some(c), ..) if !c.service.is_empty() && c.service != service => Plan::Escalate(format!(
            "the root cause is in {}, downstream of {service}: not fixable in this service",
            c.service
        )),
        (_, K::CodeDefect | K::BadDeploy, true) => Plan::Patch,
        (_, K::BadDeploy, false) if !last_good.is_empty() => Plan::RollbackToPrevious,
        (_, K::BadDeploy, false) => {
            Plan::Escalate("a bad deploy, but no previous stable version to return to".into())
        }
        (_, K::CodeDefect, false) => {
            Plan::Escalate("a code defect without a location in the code".into())
        }
        (_, K::Dependency, _) => {
            Plan::Escalate("the cause is a dependency: not fixable in this service".into())
        }
        (_, K::Resource, _) => {
            Plan::Escalate("the cause is resources: needs capacity, not a patch".into())
        }
        (_, K::Configuration, _) => {
            Plan::Escalate("the cause is configuration: needs a person".into())
        }
        (_, K::Unspecified, _) => Plan::Escalate("the cause kind is unknown".into()),
    };
    let option = |p: &Plan| match p {
        Plan::Patch => "patch the code at the location",
        Plan::RollbackToPrevious => "roll back to the previous stable version",
        Plan::Escalate(_) => "escalate to a human",
    };
    let alternatives = [
        Plan::Patch,
        Plan::RollbackToPrevious,
        Plan::Escalate(String::new()),
    ]
    .into_iter()
    .filter(|p| std::mem::discriminant(p) != std::mem::discriminant(&plan))
    .map(|p| pb::DecisionAlternative {
        option: option(&p).into(),
        why_not: match p {
            Plan::Patch if !located => "no code location to patch".into(),
            Plan::Patch => "not a code defect".into(),
            Plan::RollbackToPrevious if last_good.is_empty() => "no previous stable version".into(),
            Plan::RollbackToPrevious => {
                "a located defect is fixed forward, keeping the rest of the release".into()
            }
            Plan::Escalate(_) => "an automated fix applies".into(),
        },
        score: 0.0,
        ..Default::default()
    })
    .collect();
    let decision = pb::Decision {
        kind: DecisionKind::FixPlan.into(),
        subject: format!("fix plan for {service}"),
        inputs: vec![
            pb::DecisionInput {
                name: "cause_kind".into(),
                value: cause_name(kind).into(),
                note: "top-ranked root cause".into(),
                ..Default::default()
            },
            pb::DecisionInput {
                name: "location".into(),
                value: cause
                    .and_then(|c| c.location.as_ref())
                    .map(|l| format!("{}:{}", l.file, l.line))
                    .unwrap_or_default(),
                note: "where the failure is in the service's code".into(),
                ..Default::default()
            },
            pb::DecisionInput {
                name: "last_good_commit".into(),
                value: last_good.into(),
                note: "the previous stable version".into(),
                ..Default::default()
            },
        ],
        constraints: vec![
            "patch only a code defect with a location".into(),
            "roll back only a bad deploy with a previous stable".into(),
        ],
        alternatives,
        outcome: match &plan {
            Plan::Escalate(reason) => format!("escalate: {reason}"),
            other => option(other).into(),
        },
        reasoning: format!(
            "top cause {} {}",
            cause_name(kind),
            if located {
                "with a code location"
            } else {
                "without a code location"
            }
        ),
        confidence: confidence.clamp(0.0, 1.0),
        ..Default::default()
    };
    (plan, decision)
}

/// A decision fit for the audit chain: a kind, an id, a confidence within 0..1.
fn normalise(
    mut decision: pb::Decision,
    fallback: DecisionKind,
    saga_id: &str,
    key: &str,
) -> pb::Decision {
    if decision.kind() == DecisionKind::Unspecified {
        decision.kind = fallback.into();
    }
    if decision.id.is_empty() {
        decision.id = format!("{saga_id}:{key}");
    }
    let unit = |v: f64| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    decision.confidence = unit(decision.confidence);
    for factor in &mut decision.factors {
        factor.weight = unit(factor.weight);
        factor.score = unit(factor.score);
    }
    for alternative in &mut decision.alternatives {
        alternative.score = unit(alternative.score);
    }
    if decision.decided_at.is_none() {
        decision.decided_at = Some(prost_types::Timestamp::from(SystemTime::now()));
    }
    decision
}

fn cause_name(kind: pb::CauseKind) -> &'static str {
    match kind {
        pb::CauseKind::Unspecified => "unknown",
        pb::CauseKind::CodeDefect => "code_defect",
        pb::CauseKind::BadDeploy => "bad_deploy",
        pb::CauseKind::Dependency => "dependency",
        pb::CauseKind::Resource => "resource",
        pb::CauseKind::Configuration => "configuration",
    }
}

fn strategy_name(strategy: pb::PatchStrategy) -> &'static str {
    match strategy {
        pb::PatchStrategy::Unspecified => "unknown",
        pb::PatchStrategy::Template => "template",
        pb::PatchStrategy::PartialRevert => "partial_revert",
        pb::PatchStrategy::FullRevert => "full_revert",
        pb::PatchStrategy::Mutation => "mutation",
        pb::PatchStrategy::Llm => "llm",
    }
}

fn rollout_name(kind: pb::RolloutEventKind) -> &'static str {
    kind.as_str_name().trim_start_matches("ROLLOUT_EVENT_KIND_")
}

fn cause_json(cause: &pb::RootCause) -> Value {
    json!({
        "service": cause.service,
        "kind": cause_name(cause.kind()),
        "score": cause.score,
        "explanation": cause.explanation,
        "location": cause.location.as_ref().map(|l| json!({ "file": l.file, "line": l.line, "function": l.function })),
        "culprit": cause.culprit.as_ref().map(|c| json!({ "sha": c.sha, "author": c.author, "message": c.message })),
        "failure_message": cause.failure_message,
    })
}

fn candidate_json(candidate: &pb::CandidatePatch) -> Value {
    json!({
        "id": candidate.id,
        "strategy": strategy_name(candidate.strategy()),
        "files": candidate.files,
        "confidence": candidate.confidence,
        "rationale": candidate.rationale,
        "lines_added": candidate.lines_added,
        "lines_removed": candidate.lines_removed,
        "template": candidate.template,
    })
}

/// The files a unified diff changes (`+++ b/path`, or `--- a/path` for deletions).
fn files_of_diff(diff: &str) -> BTreeSet<String> {
    diff.lines()
        .filter_map(|line| {
            line.strip_prefix("+++ b/")
                .or_else(|| line.strip_prefix("--- a/"))
        })
        .map(|path| path.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(kind: pb::CauseKind, file: Option<&str>) -> pb::RootCause {
        pb::RootCause {
            kind: kind.into(),
            location: file.map(|f| pb::CodeLocation {
                file: f.into(),
                line: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_plan_follows_the_top_cause() {
        use pb::CauseKind as K;
        let plan = |c: Option<pb::RootCause>, last_good: &str| {
            fix_plan(c.as_ref(), 0.9, last_good, "svc").0
        };
        assert_eq!(
            plan(Some(cause(K::CodeDefect, Some("src/a.rs"))), ""),
            Plan::Patch
        );
        assert_eq!(
            plan(Some(cause(K::BadDeploy, None)), "abc"),
            Plan::RollbackToPrevious
        );
        assert!(matches!(
            plan(Some(cause(K::BadDeploy, None)), ""),
            Plan::Escalate(_)
        ));
        for kind in [K::Dependency, K::Resource, K::Configuration, K::Unspecified] {
            assert!(
                matches!(
                    plan(Some(cause(kind, Some("x.rs"))), "abc"),
                    Plan::Escalate(_)
                ),
                "{kind:?}"
            );
        }
        assert!(matches!(plan(None, "abc"), Plan::Escalate(_)));
    }

    #[test]
    fn a_located_defect_in_another_service_is_escalated_not_patched_here() {
        let mut downstream = cause(pb::CauseKind::CodeDefect, Some("src/profiles.rs"));
        downstream.service = "customer".into();
        let (plan, decision) = fix_plan(Some(&downstream), 0.9, "abc", "checkout");
        match plan {
            Plan::Escalate(reason) => assert!(reason.contains("customer"), "{reason}"),
            other => panic!("expected an escalation, got {other:?}"),
        }
        assert_eq!(decision.kind(), DecisionKind::FixPlan);
        downstream.service = "checkout".into();
        assert_eq!(
            fix_plan(Some(&downstream), 0.9, "abc", "checkout").0,
            Plan::Patch
        );
    }

    #[test]
    fn every_plan_decision_is_explained() {
        let (_, decision) = fix_plan(
            Some(&cause(pb::CauseKind::CodeDefect, Some("src/a.rs"))),
            0.8,
            "abc",
            "svc",
        );
        assert_eq!(decision.kind(), DecisionKind::FixPlan);
        assert_eq!(decision.alternatives.len(), 2);
        assert!(decision.alternatives.iter().all(|a| !a.why_not.is_empty()));
        assert!((decision.confidence - 0.8).abs() < 1e-9);
    }

    #[test]
    fn peer_decisions_are_made_fit_for_the_chain() {
        let decision = normalise(
            pb::Decision {
                confidence: 7.0,
                ..Default::default()
            },
            DecisionKind::Rollback,
            "s",
            "deploy:1",
        );
        assert_eq!(decision.kind(), DecisionKind::Rollback);
        assert_eq!(decision.confidence, 1.0);
        assert_eq!(decision.id, "s:deploy:1");
    }

    fn verdict(id: &str, outcome: pb::GateOutcome, risk: f64) -> pb::GateVerdict {
        pb::GateVerdict {
            candidate_id: id.into(),
            outcome: outcome.into(),
            risk_score: risk,
            ..Default::default()
        }
    }

    #[test]
    fn the_gates_overall_outcome_wins_over_its_verdicts() {
        use pb::GateOutcome as G;
        let response = pb::EvaluateResponse {
            verdicts: vec![
                verdict("a", G::Reject, 0.9),
                verdict("b", G::NeedsHuman, 0.4),
            ],
            outcome: G::NeedsHuman.into(),
            recommended_candidate_id: "b".into(),
            ..Default::default()
        };
        let (result, chosen) = gate_choice(&response);
        assert!(matches!(result, GateResult::NeedsHuman));
        assert_eq!(chosen.as_deref(), Some("b"));
        let rejected = pb::EvaluateResponse {
            outcome: G::Reject.into(),
            ..response.clone()
        };
        assert!(matches!(gate_choice(&rejected).0, GateResult::Rejected(_)));
    }

    #[test]
    fn without_an_overall_outcome_the_verdicts_decide() {
        use pb::GateOutcome as G;
        let response = pb::EvaluateResponse {
            verdicts: vec![
                verdict("a", G::Approve, 0.5),
                verdict("b", G::Approve, 0.1),
                verdict("c", G::NeedsHuman, 0.0),
            ],
            ..Default::default()
        };
        assert_eq!(
            gate_choice(&response).1.as_deref(),
            Some("b"),
            "least risky approved"
        );
        let none = pb::EvaluateResponse {
            verdicts: vec![verdict("a", G::Reject, 0.1)],
            ..Default::default()
        };
        assert!(matches!(gate_choice(&none).0, GateResult::Rejected(_)));
    }

    #[test]
    fn files_come_from_diff_headers() {
        let diff = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\n--- a/old.rs\n+++ /dev/null\n";
        let files: Vec<_> = files_of_diff(diff).into_iter().collect();
        assert_eq!(files, ["old.rs", "src/lib.rs"]);
    }
}
