//! Saga states and the explicit transition table between them.
//!
//! ```text
//! DETECTED → LOCKED → ANALYZING → PLANNING → PATCHING → GATING → DEPLOYING → VERIFYING → RESOLVED
//!                                                      GATING ⇄ AWAITING_APPROVAL (needs-human)
//! PLANNING → DEPLOYING (a bad deploy without a code location: roll back to the previous stable)
//! any non-final state → ESCALATED | ABORTED;  DEPLOYING, VERIFYING → ROLLED_BACK
//! ```

/// Where a saga is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SagaState {
    Detected,
    Locked,
    Analyzing,
    Planning,
    Patching,
    Gating,
    AwaitingApproval,
    Deploying,
    Verifying,
    Resolved,
    RolledBack,
    Escalated,
    Aborted,
}

/// What happened to a saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SagaEvent {
    /// The lock (and its fencing token) was taken.
    LockAcquired,
    /// The current step finished and the next one starts.
    StepSucceeded,
    /// The plan is to return to the previous stable version instead of patching.
    RollbackPlanned,
    /// The gate asked a human.
    NeedsApproval,
    /// A human approved.
    Approved,
    /// The canary or verification failed and traffic is back on stable.
    RolledBack,
    /// Automation stops and a human gets the report.
    Escalate,
    /// A human (or a lost lock) stopped the saga.
    Abort,
}

/// A transition the table does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("saga in state {from:?} cannot take event {event:?}")]
pub struct InvalidTransition {
    pub from: SagaState,
    pub event: SagaEvent,
}

impl SagaState {
    /// The forward path, in order.
    pub const HAPPY_PATH: [SagaState; 9] = [
        SagaState::Detected,
        SagaState::Locked,
        SagaState::Analyzing,
        SagaState::Planning,
        SagaState::Patching,
        SagaState::Gating,
        SagaState::Deploying,
        SagaState::Verifying,
        SagaState::Resolved,
    ];

    /// Whether the saga is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Resolved | Self::RolledBack | Self::Escalated | Self::Aborted
        )
    }

    /// Whether ending in this state hands the service to a person: the escalation report is
    /// sent and automation of the service pauses until someone acknowledges. A rolled-back
    /// saga leaves the service as it was — still failing — so it waits for a person too.
    pub fn pauses_automation(self) -> bool {
        matches!(self, Self::Escalated | Self::RolledBack)
    }

    /// Whether traffic may have moved, so that leaving this state needs a rollback first.
    pub fn touches_traffic(self) -> bool {
        matches!(self, Self::Deploying | Self::Verifying)
    }

    /// The transition table. Everything not listed is invalid.
    pub fn on(self, event: SagaEvent) -> Result<SagaState, InvalidTransition> {
        use SagaEvent as E;
        use SagaState as S;
        let next = match (self, event) {
            (S::Detected, E::LockAcquired) => S::Locked,
            (S::Locked, E::StepSucceeded) => S::Analyzing,
            (S::Analyzing, E::StepSucceeded) => S::Planning,
            (S::Planning, E::StepSucceeded) => S::Patching,
            (S::Planning, E::RollbackPlanned) => S::Deploying,
            (S::Patching, E::StepSucceeded) => S::Gating,
            (S::Gating, E::StepSucceeded) => S::Deploying,
            (S::Gating, E::NeedsApproval) => S::AwaitingApproval,
            (S::AwaitingApproval, E::Approved) => S::Deploying,
            (S::Deploying, E::StepSucceeded) => S::Verifying,
            (S::Verifying, E::StepSucceeded) => S::Resolved,
            (S::Deploying | S::Verifying, E::RolledBack) => S::RolledBack,
            (state, E::Escalate) if !state.is_final() => S::Escalated,
            (state, E::Abort) if !state.is_final() => S::Aborted,
            (from, event) => return Err(InvalidTransition { from, event }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EVENTS: [SagaEvent; 8] = [
        SagaEvent::LockAcquired,
        SagaEvent::StepSucceeded,
        SagaEvent::RollbackPlanned,
        SagaEvent::NeedsApproval,
        SagaEvent::Approved,
        SagaEvent::RolledBack,
        SagaEvent::Escalate,
        SagaEvent::Abort,
    ];

    #[test]
    fn the_happy_path_reaches_resolved_one_step_at_a_time() {
        let mut state = SagaState::Detected;
        state = state.on(SagaEvent::LockAcquired).unwrap();
        for expected in &SagaState::HAPPY_PATH[2..] {
            state = state.on(SagaEvent::StepSucceeded).unwrap();
            assert_eq!(state, *expected);
        }
        assert!(state.is_final());
    }

    #[test]
    fn a_planned_rollback_skips_patch_and_gate() {
        let deploying = SagaState::Planning.on(SagaEvent::RollbackPlanned).unwrap();
        assert_eq!(deploying, SagaState::Deploying);
        assert!(SagaState::Gating.on(SagaEvent::RollbackPlanned).is_err());
    }

    #[test]
    fn nothing_runs_before_the_lock_is_taken() {
        assert!(SagaState::Detected.on(SagaEvent::StepSucceeded).is_err());
    }

    #[test]
    fn approval_resumes_a_paused_saga_at_deploy() {
        let paused = SagaState::Gating.on(SagaEvent::NeedsApproval).unwrap();
        assert_eq!(paused, SagaState::AwaitingApproval);
        assert_eq!(
            paused.on(SagaEvent::Approved).unwrap(),
            SagaState::Deploying
        );
        assert!(
            SagaState::Analyzing.on(SagaEvent::Approved).is_err(),
            "approval only where a human was asked"
        );
    }

    #[test]
    fn only_traffic_touching_states_roll_back() {
        for state in SagaState::HAPPY_PATH {
            assert_eq!(
                state.on(SagaEvent::RolledBack).is_ok(),
                state.touches_traffic(),
                "{state:?}"
            );
        }
    }

    proptest! {
        /// Whatever happens, a final state is never left, and RESOLVED is only reached through
        /// lock, analysis, plan, deploy and verification in order (patch and gate in between
        /// unless the plan was a rollback).
        #[test]
        fn final_states_are_absorbing_and_resolved_needs_every_step(events in proptest::collection::vec(0..EVENTS.len(), 0..40)) {
            let mut state = SagaState::Detected;
            let mut visited = vec![state];
            for index in events {
                match state.on(EVENTS[index]) {
                    Ok(next) => {
                        prop_assert!(!state.is_final(), "left final state {:?}", state);
                        state = next;
                        visited.push(state);
                    }
                    Err(error) => prop_assert_eq!(error.from, state),
                }
            }
            if state == SagaState::Resolved {
                let patched = visited.contains(&SagaState::Patching);
                let path: Vec<SagaState> = SagaState::HAPPY_PATH
                    .into_iter()
                    .filter(|s| patched || !matches!(s, SagaState::Patching | SagaState::Gating))
                    .collect();
                let mut expected = path.iter();
                let mut next = expected.next();
                for seen in &visited {
                    if Some(seen) == next { next = expected.next(); }
                }
                prop_assert!(next.is_none(), "resolved without passing every step: {:?}", visited);
            }
        }
    }
}
