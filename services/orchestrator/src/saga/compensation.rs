//! Compensations: registered before their step runs, run in reverse order on failure, and every
//! failure of a compensation recorded — never swallowed.

use std::future::Future;
use std::pin::Pin;

type Undo = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A compensation that failed, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompensationFailure {
    pub step: String,
    pub error: String,
}

/// The compensations of one saga, in registration order.
#[derive(Default)]
pub struct CompensationStack {
    entries: Vec<(String, Box<dyn FnOnce() -> Undo + Send + Sync>)>,
}

impl std::fmt::Debug for CompensationStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(step, _)| step))
            .finish()
    }
}

impl CompensationStack {
    /// An empty stack.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to undo `step`. Call this before the step runs, so that a crash or failure
    /// in the middle of the step is still undone.
    pub fn register<F, Fut>(&mut self, step: impl Into<String>, undo: F)
    where
        F: FnOnce() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.entries
            .push((step.into(), Box::new(move || Box::pin(undo()))));
    }

    /// Forgets the compensation of `step` (its effect is final, e.g. a released lock).
    pub fn discharge(&mut self, step: &str) {
        if let Some(index) = self.entries.iter().rposition(|(name, _)| name == step) {
            drop(self.entries.remove(index));
        }
    }

    /// The registered steps, oldest first.
    pub fn steps(&self) -> Vec<&str> {
        self.entries.iter().map(|(step, _)| step.as_str()).collect()
    }

    /// Runs every compensation, newest first; all of them run even when some fail. Returns the
    /// order they ran in and the failures.
    pub async fn unwind(self) -> (Vec<String>, Vec<CompensationFailure>) {
        let mut ran = Vec::new();
        let mut failures = Vec::new();
        for (step, undo) in self.entries.into_iter().rev() {
            if let Err(error) = undo().await {
                tracing::warn!(%step, %error, "compensation failed");
                failures.push(CompensationFailure {
                    step: step.clone(),
                    error,
                });
            }
            ran.push(step);
        }
        (ran, failures)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn compensates_in_reverse_order_and_records_every_failure() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stack = CompensationStack::new();
        for step in ["lock", "worktree", "deploy"] {
            let log = log.clone();
            stack.register(step, move || async move {
                log.lock().unwrap().push(step);
                if step == "worktree" {
                    Err("disk full".to_string())
                } else {
                    Ok(())
                }
            });
        }
        let (ran, failures) = stack.unwind().await;
        assert_eq!(ran, ["deploy", "worktree", "lock"]);
        assert_eq!(
            *log.lock().unwrap(),
            ["deploy", "worktree", "lock"],
            "a failure does not stop the others"
        );
        assert_eq!(
            failures,
            [CompensationFailure {
                step: "worktree".into(),
                error: "disk full".into()
            }]
        );
    }

    #[tokio::test]
    async fn a_discharged_step_is_not_compensated() {
        let mut stack = CompensationStack::new();
        stack.register("lock", || async { Ok(()) });
        stack.register("deploy", || async { Err("must not run".to_string()) });
        stack.discharge("deploy");
        assert_eq!(stack.steps(), ["lock"]);
        let (ran, failures) = stack.unwind().await;
        assert_eq!(ran, ["lock"]);
        assert!(failures.is_empty());
    }
}
