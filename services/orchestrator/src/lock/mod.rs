//! Per-service leases with fencing tokens: at most one saga acts on a service at a time, and a
//! holder whose lease expired can be told apart from the current one by its token.
//!
//! Two implementations share one conformance suite ([`conformance`]): [`RedisLockStore`] for the
//! mesh (`SET lock:{service} owner NX PX ttl` + `INCR fence:{service}`, Lua compare-and-renew
//! and compare-and-delete) and [`EmbeddedLockStore`] for a single process.

mod embedded;
mod redis_store;

#[doc(hidden)]
pub mod conformance;

use std::time::Duration;

pub use embedded::EmbeddedLockStore;
pub use redis_store::RedisLockStore;

/// A monotonically increasing number issued with each lease of a service. The deployer rejects
/// mutating calls carrying a token lower than the highest it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A held lease on one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub service: String,
    /// Unique per acquisition (instance and saga); compare-and-renew/delete match on it.
    pub owner: String,
    pub token: FencingToken,
    pub ttl: Duration,
}

/// Errors of a lock store. Every one of them means "no lock": callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock store {address} is unavailable: {message}")]
    Unavailable { address: String, message: String },
    #[error("invalid lock request: {0}")]
    Invalid(String),
}

/// Where leases live.
#[async_trait::async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes the lease on `service` for `owner`, or returns `None` when someone else holds it.
    async fn acquire(
        &self,
        service: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError>;
    /// Extends the lease; `false` when it was lost (expired, or taken by another owner).
    async fn renew(&self, lease: &Lease) -> Result<bool, LockError>;
    /// Releases the lease if still held by its owner; `false` when it was already lost.
    async fn release(&self, lease: &Lease) -> Result<bool, LockError>;
    /// The owner currently holding `service`, if any.
    async fn holder(&self, service: &str) -> Result<Option<String>, LockError>;
}

fn validate(service: &str, owner: &str, ttl: Duration) -> Result<(), LockError> {
    if service.is_empty() || service.len() > 200 || service.chars().any(char::is_control) {
        return Err(LockError::Invalid(format!(
            "service name {service:?} must be 1-200 printable characters"
        )));
    }
    if owner.is_empty() || owner.len() > 200 {
        return Err(LockError::Invalid("owner must be 1-200 characters".into()));
    }
    if ttl < Duration::from_millis(10) {
        return Err(LockError::Invalid(format!(
            "ttl {ttl:?} must be at least 10ms"
        )));
    }
    Ok(())
}
