//! In-process leases with the same token semantics as Redis, for `selfheal up` on a bare machine.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{FencingToken, Lease, LockError, LockStore, validate};

#[derive(Debug, Default)]
struct State {
    held: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
}

/// Leases in this process's memory. Uses Tokio's clock, so tests can pause time.
#[derive(Debug, Default)]
pub struct EmbeddedLockStore {
    state: Mutex<State>,
}

impl EmbeddedLockStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl State {
    fn live_holder(&mut self, service: &str) -> Option<&String> {
        let now = Instant::now();
        if self
            .held
            .get(service)
            .is_some_and(|(_, expires)| *expires <= now)
        {
            self.held.remove(service);
        }
        self.held.get(service).map(|(owner, _)| owner)
    }
}

#[async_trait::async_trait]
impl LockStore for EmbeddedLockStore {
    async fn acquire(
        &self,
        service: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        validate(service, owner, ttl)?;
        let mut state = self.state.lock().await;
        if state.live_holder(service).is_some() {
            return Ok(None);
        }
        let fence = state.fences.entry(service.to_owned()).or_default();
        *fence += 1;
        let token = FencingToken(*fence);
        state
            .held
            .insert(service.to_owned(), (owner.to_owned(), Instant::now() + ttl));
        Ok(Some(Lease {
            service: service.to_owned(),
            owner: owner.to_owned(),
            token,
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut state = self.state.lock().await;
        if state.live_holder(&lease.service) != Some(&lease.owner) {
            return Ok(false);
        }
        state.held.insert(
            lease.service.clone(),
            (lease.owner.clone(), Instant::now() + lease.ttl),
        );
        Ok(true)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let mut state = self.state.lock().await;
        if state.live_holder(&lease.service) != Some(&lease.owner) {
            return Ok(false);
        }
        state.held.remove(&lease.service);
        Ok(true)
    }

    async fn holder(&self, service: &str) -> Result<Option<String>, LockError> {
        Ok(self.state.lock().await.live_holder(service).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passes_the_lock_store_conformance_suite() {
        super::super::conformance::run_all(&EmbeddedLockStore::new(), "embedded").await;
    }
}
