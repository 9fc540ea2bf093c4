//! Leases in Redis: `SET lock:{service} owner NX PX ttl` with the fencing token from
//! `INCR fence:{service}` taken in the same Lua script, so a token is issued exactly when a lease
//! is granted; renew and release are compare-and-set scripts on the owner.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{FencingToken, Lease, LockError, LockStore, validate};

const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Leases in Redis. Connects lazily and reconnects on its own; every command has a deadline,
/// and every failure is [`LockError::Unavailable`] naming the server.
#[derive(Clone)]
pub struct RedisLockStore {
    address: String,
    prefix: String,
    connection: ConnectionManager,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisLockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLockStore")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisLockStore {
    /// A store on `url` (`redis://host:port/db`); keys are `{prefix}lock:{service}` and
    /// `{prefix}fence:{service}`. Nothing is sent until the first call.
    pub fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, LockError> {
        let unavailable = |message: String| LockError::Unavailable {
            address: url.to_owned(),
            message,
        };
        let client = redis::Client::open(url).map_err(|error| unavailable(error.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| unavailable(error.to_string()))?;
        Ok(Self {
            address: url.to_owned(),
            prefix: prefix.to_owned(),
            connection,
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        })
    }

    /// Deletes the lease and the fencing counter of `service`: for a store whose prefix is
    /// disposable (a test run), never for one in use, since tokens would start again at 1.
    pub async fn forget(&self, service: &str) -> Result<(), LockError> {
        let (lock, fence) = self.keys(service);
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(&lock)
            .arg(&fence)
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| self.unavailable(&error))
    }

    fn keys(&self, service: &str) -> (String, String) {
        (
            format!("{}lock:{service}", self.prefix),
            format!("{}fence:{service}", self.prefix),
        )
    }

    fn unavailable(&self, error: &redis::RedisError) -> LockError {
        LockError::Unavailable {
            address: self.address.clone(),
            message: error.to_string(),
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait::async_trait]
impl LockStore for RedisLockStore {
    async fn acquire(
        &self,
        service: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockError> {
        validate(service, owner, ttl)?;
        let (lock, fence) = self.keys(service);
        let mut connection = self.connection.clone();
        let token: u64 = self
            .acquire
            .key(&lock)
            .key(&fence)
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.unavailable(&error))?;
        Ok((token > 0).then(|| Lease {
            service: service.to_owned(),
            owner: owner.to_owned(),
            token: FencingToken(token),
            ttl,
        }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LockError> {
        let (lock, _) = self.keys(&lease.service);
        let mut connection = self.connection.clone();
        let renewed: i64 = self
            .renew
            .key(&lock)
            .arg(&lease.owner)
            .arg(millis(lease.ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.unavailable(&error))?;
        Ok(renewed == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LockError> {
        let (lock, _) = self.keys(&lease.service);
        let mut connection = self.connection.clone();
        let released: i64 = self
            .release
            .key(&lock)
            .arg(&lease.owner)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| self.unavailable(&error))?;
        Ok(released == 1)
    }

    async fn holder(&self, service: &str) -> Result<Option<String>, LockError> {
        let (lock, _) = self.keys(service);
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut connection)
            .await
            .map_err(|error| self.unavailable(&error))
    }
}
