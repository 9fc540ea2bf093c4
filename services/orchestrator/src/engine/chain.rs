//! The audit chain as a precondition of automation. The orchestrator verifies the chain (the
//! audit service's Verify) at start-up and before a saga starts, unless a good verification is
//! younger than `saga.verify_chain_interval`. A chain that fails verification HALTS automation:
//! no new saga starts and no unfinished one resumes; incidents are still journaled (as sagas
//! that end ESCALATED with the halt as their reason), an alert naming the broken record goes to
//! `escalation.webhook_url`, `GET /automation` on the HTTP port reports the halt and the gauge
//! `orchestrator_automation_halted` is 1.
//!
//! A person lifts the halt with `Approve` of the id [`HALT_ID`] once they have looked at the
//! chain; the acknowledgement is journaled, deferred sagas resume, and the same break does not
//! halt this process again (a different break does). A restart verifies afresh: a chain that
//! is still broken halts again until it is restored from a good copy, as a tampered log must
//! never be silently accepted for good.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use selfheal_proto::v1 as pb;
use selfheal_proto::v1::audit_client::AuditClient;
use selfheal_telemetry::TracedChannel;
use serde_json::json;

use super::SagaHandle;
use super::runner::Resume;
use crate::config::EscalationConfig;

/// The id `Approve` takes to acknowledge a halt of automation.
pub(crate) const HALT_ID: &str = "audit-chain";

/// Why automation is halted: the first broken record of the chain.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Halt {
    pub(crate) sequence: u64,
    pub(crate) reason: String,
    pub(crate) detail: String,
    pub(crate) records_checked: u64,
    pub(crate) since: SystemTime,
}

impl Halt {
    /// The reason given to incidents while halted.
    pub(crate) fn describe(&self) -> String {
        format!(
            "automation halted: the audit chain failed verification at sequence {} ({}: {}); \
             check the chain, then acknowledge with Approve of {HALT_ID:?}",
            self.sequence, self.reason, self.detail
        )
    }

    fn same_break(&self, other: &Self) -> bool {
        self.sequence == other.sequence && self.reason == other.reason
    }
}

#[derive(Default)]
struct State {
    last_good: Option<Instant>,
    halt: Option<Halt>,
    /// A break a person acknowledged; it does not halt this process again.
    acknowledged: Option<Halt>,
    /// Unfinished sagas found at start-up while halted; resumed on acknowledgement.
    deferred: Deferred,
}

/// Sagas to resume once a halt is lifted.
pub(crate) type Deferred = Vec<(std::sync::Arc<SagaHandle>, Resume)>;

/// Verifies the chain and keeps the halt.
pub(crate) struct ChainGuard {
    client: AuditClient<TracedChannel>,
    interval: Duration,
    timeout: Duration,
    state: Mutex<State>,
    verifying: tokio::sync::Mutex<()>,
    halted: prometheus::IntGauge,
}

impl std::fmt::Debug for ChainGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainGuard")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl ChainGuard {
    pub(crate) fn new(channel: TracedChannel, interval: Duration, timeout: Duration) -> Self {
        let halted = prometheus::IntGauge::new(
            "orchestrator_automation_halted",
            "1 while automation is halted because the audit chain failed verification.",
        )
        .expect("the gauge's name and help are valid");
        Self {
            client: AuditClient::new(channel),
            interval,
            timeout,
            state: Mutex::new(State::default()),
            verifying: tokio::sync::Mutex::new(()),
            halted,
        }
    }

    /// The gauge `orchestrator_automation_halted`, for the service's registry.
    pub(crate) fn gauge(&self) -> prometheus::IntGauge {
        self.halted.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("chain lock is never poisoned")
    }

    /// The current halt, if any.
    pub(crate) fn halted(&self) -> Option<Halt> {
        self.state().halt.clone()
    }

    /// Verifies the chain unless a good verification is recent; returns the halt when
    /// automation is (now) halted. A newly found break is posted to the webhook. An audit
    /// service that does not answer halts nothing (the journal fails closed on its own) and
    /// leaves the next check to verify again.
    pub(crate) async fn check(
        &self,
        http: &reqwest::Client,
        escalation: &EscalationConfig,
    ) -> Option<Halt> {
        let _one_at_a_time = self.verifying.lock().await;
        {
            let state = self.state();
            if let Some(halt) = &state.halt {
                return Some(halt.clone());
            }
            if state
                .last_good
                .is_some_and(|at| at.elapsed() < self.interval)
            {
                return None;
            }
        }
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(pb::VerifyChainRequest {});
        request.set_timeout(self.timeout);
        let report = match client.verify(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(%status, "cannot verify the audit chain now; verifying again before the next saga");
                return None;
            }
        };
        if report.ok {
            self.state().last_good = Some(Instant::now());
            return None;
        }
        let halt = Halt {
            sequence: report.first_broken_sequence,
            reason: format!("{:?}", report.reason()),
            detail: report.detail.clone(),
            records_checked: report.records_checked,
            since: SystemTime::now(),
        };
        {
            let mut state = self.state();
            if state
                .acknowledged
                .as_ref()
                .is_some_and(|known| known.same_break(&halt))
            {
                state.last_good = Some(Instant::now());
                return None;
            }
            state.halt = Some(halt.clone());
        }
        self.halted.set(1);
        tracing::error!(
            sequence = halt.sequence,
            reason = %halt.reason,
            detail = %halt.detail,
            "audit chain verification failed: automation halted"
        );
        let alert = json!({
            "kind": "audit_chain_broken",
            "state": "HALTED",
            "reason": halt.describe(),
            "broken_record": {
                "sequence": halt.sequence,
                "reason": halt.reason,
                "detail": halt.detail,
                "records_verified_before": halt.records_checked,
            },
            "acknowledge": format!("Approve with saga_id {HALT_ID:?}"),
        });
        if let Err(error) = super::escalation::post(http, escalation, &alert).await {
            tracing::error!(%error, "the halt alert was not delivered");
        }
        Some(halt)
    }

    /// Keeps an unfinished saga found while halted, to resume on acknowledgement.
    pub(crate) fn defer(&self, saga: std::sync::Arc<SagaHandle>, resume: Resume) {
        self.state().deferred.push((saga, resume));
    }

    /// Lifts the halt; returns it and the sagas to resume, or `None` when not halted.
    pub(crate) fn acknowledge(&self) -> Option<(Halt, Deferred)> {
        let mut state = self.state();
        let halt = state.halt.take()?;
        state.acknowledged = Some(halt.clone());
        state.last_good = Some(Instant::now());
        let deferred = std::mem::take(&mut state.deferred);
        drop(state);
        self.halted.set(0);
        Some((halt, deferred))
    }
}
