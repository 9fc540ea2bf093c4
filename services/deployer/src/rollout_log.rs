//! The recorded events and outcome of one rollout: streamed live to the caller that started it,
//! and replayed to a caller that repeats its idempotency key.

use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::Notify;

use crate::error::Error;
use crate::model::RolloutEvent;

enum Next {
    Event(Box<RolloutEvent>),
    Failed(Arc<Error>),
    Done,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<RolloutEvent>,
    outcome: Option<Result<(), Arc<Error>>>,
}

/// Append-only events of one rollout plus its final outcome.
#[derive(Debug, Default)]
pub(crate) struct RolloutLog {
    state: Mutex<State>,
    changed: Notify,
}

impl RolloutLog {
    pub(crate) fn push(&self, event: RolloutEvent) {
        tracing::info!(kind = ?event.kind, version = %event.version, weight = event.canary_weight, message = %event.message, "rollout event");
        self.lock().events.push(event);
        self.changed.notify_waiters();
    }

    /// Records the outcome; later calls are ignored.
    pub(crate) fn finish(&self, outcome: Result<(), Error>) {
        let mut state = self.lock();
        if state.outcome.is_none() {
            state.outcome = Some(outcome.map_err(Arc::new));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// Waits until the outcome is recorded.
    pub(crate) async fn finished(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }

    /// Every event from the first, then the outcome as a final error if it failed.
    pub(crate) fn stream(self: Arc<Self>) -> impl Stream<Item = Result<RolloutEvent, Arc<Error>>> {
        futures::stream::unfold((self, 0usize, false), |(log, next, done)| async move {
            if done {
                return None;
            }
            let step = log.next_step(next).await;
            match step {
                Next::Event(event) => Some((Ok(*event), (log, next + 1, false))),
                Next::Failed(error) => Some((Err(error), (log, next, true))),
                Next::Done => None,
            }
        })
    }

    /// Waits for event `index`, or the outcome once every event has been read.
    async fn next_step(&self, index: usize) -> Next {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if let Some(event) = state.events.get(index) {
                    return Next::Event(Box::new(event.clone()));
                }
                match &state.outcome {
                    Some(Ok(())) => return Next::Done,
                    Some(Err(error)) => return Next::Failed(Arc::clone(error)),
                    None => {}
                }
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the event list half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RolloutEventKind;
    use futures::StreamExt;

    #[tokio::test]
    async fn streams_live_then_replays_to_a_late_reader() {
        let log = Arc::new(RolloutLog::default());
        let reader = tokio::spawn(Arc::clone(&log).stream().collect::<Vec<_>>());
        log.push(RolloutEvent::new(
            RolloutEventKind::BuildStarted,
            "v1",
            0,
            String::new(),
        ));
        log.push(RolloutEvent::new(
            RolloutEventKind::Failed,
            "v1",
            0,
            String::new(),
        ));
        log.finish(Err(Error::ShuttingDown));
        let live = reader.await.unwrap();
        assert_eq!(live.len(), 3);
        assert!(live[2].is_err());
        let replay: Vec<_> = Arc::clone(&log).stream().collect().await;
        assert_eq!(replay.len(), 3);
        log.finished().await;
    }
}
