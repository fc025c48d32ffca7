//! Distributed locks that stay safe: token-owned, released by compare-and-delete, renewed by a
//! watchdog that tells the holder the moment the lock is lost, and fenced by a per-name counter.

use crate::client::{RedisClient, millis};
use crate::config::check_name;
use crate::{Error, Result};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A number that strictly increases each time anyone acquires a given lock name. Pass it to the
/// resource the lock protects, which refuses writes carrying a token lower than one it has seen:
/// a holder that lost its lock (paused, partitioned) can then do no harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a lock is held: its time to live and how it is renewed. Built with
/// [`LockOptions::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    ttl: Duration,
    renew_every: Option<Duration>,
}

impl LockOptions {
    /// Options with time to live `ttl` and, by default, a watchdog renewing every `ttl / 3`.
    pub fn builder(ttl: Duration) -> LockOptionsBuilder {
        LockOptionsBuilder {
            ttl,
            renew_every: Some(ttl / 3),
        }
    }

    /// Time to live of the lock key (renewed by the watchdog when renewal is on).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renewal interval, `None` when renewal is off.
    pub fn renew_every(&self) -> Option<Duration> {
        self.renew_every
    }
}

/// Builder of [`LockOptions`]; `build` refuses a zero TTL and a renewal interval that is not
/// shorter than the TTL.
#[derive(Debug, Clone, Copy)]
pub struct LockOptionsBuilder {
    ttl: Duration,
    renew_every: Option<Duration>,
}

impl LockOptionsBuilder {
    /// Renew every `interval` (must be shorter than the TTL).
    pub fn renew_every(mut self, interval: Duration) -> Self {
        self.renew_every = Some(interval);
        self
    }

    /// No watchdog: the lock expires after its TTL unless [`LockGuard::renew`] is called. The
    /// guard still reports the loss when the TTL passes.
    pub fn no_renewal(mut self) -> Self {
        self.renew_every = None;
        self
    }

    /// Validates.
    pub fn build(self) -> Result<LockOptions> {
        if self.ttl < Duration::from_millis(1) {
            return Err(Error::InvalidLockOptions(format!(
                "the ttl must be at least 1 ms, got {:?}",
                self.ttl
            )));
        }
        if self.ttl.as_millis() > i64::MAX as u128 {
            return Err(Error::InvalidLockOptions("the ttl is too large".into()));
        }
        if let Some(every) = self.renew_every {
            if every.is_zero() {
                return Err(Error::InvalidLockOptions(
                    "the renewal interval must be greater than zero".into(),
                ));
            }
            if every >= self.ttl {
                return Err(Error::InvalidLockOptions(format!(
                    "the renewal interval ({every:?}) must be shorter than the ttl ({:?}), \
                     for example ttl / 3",
                    self.ttl
                )));
            }
        }
        Ok(LockOptions {
            ttl: self.ttl,
            renew_every: self.renew_every,
        })
    }
}

/// The atomic operations a lock backend provides. Implemented by [`RedisLocks`] and
/// [`InProcessLocks`]; use them through [`DistributedLock`].
#[async_trait]
pub trait LockService: Send + Sync + std::fmt::Debug + 'static {
    /// Takes `name` for `token` during `ttl` unless someone holds it; on success increments and
    /// returns the fencing counter of `name`. One atomic step.
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<FencingToken>>;
    /// Deletes `name` if `token` holds it; true when it did (false: the lock expired or has
    /// another holder, which is left alone).
    async fn unlock(&self, name: &str, token: &str) -> Result<bool>;
    /// Sets the time to live of `name` to `ttl` if `token` holds it; true when it did.
    async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<bool>;
    /// Whether anyone holds `name` now.
    async fn is_locked(&self, name: &str) -> Result<bool>;
}

/// Acquires locks on a [`LockService`]. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> wflo_cache::Result<()> {
/// use std::time::Duration;
/// use wflo_cache::{DistributedLock, LockOptions};
/// let locks = DistributedLock::in_process();
/// let opts = LockOptions::builder(Duration::from_secs(30)).build()?;
/// let guard = locks.acquire("execution:42", &opts, Duration::from_secs(5)).await?;
/// tokio::select! {
///     _ = guard.lost() => { /* stop: someone else may hold the lock now */ }
///     _ = async { /* the critical section, passing guard.fencing_token() along */ } => {}
/// }
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DistributedLock {
    service: Arc<dyn LockService>,
}

impl DistributedLock {
    /// Locks on any backend.
    pub fn new(service: Arc<dyn LockService>) -> Self {
        DistributedLock { service }
    }

    /// Locks in Redis (shared by every process using the same server and key prefix).
    pub fn redis(client: RedisClient) -> Self {
        Self::new(Arc::new(RedisLocks::new(client)))
    }

    /// Locks in this process (the embedded default).
    pub fn in_process() -> Self {
        Self::new(Arc::new(InProcessLocks::default()))
    }

    /// Takes the lock if it is free; `None` when someone else holds it.
    pub async fn try_acquire(&self, name: &str, opts: &LockOptions) -> Result<Option<LockGuard>> {
        check_name("lock name", name)?;
        let token = random_token();
        let started = Instant::now();
        let Some(fencing) = self.service.try_lock(name, &token, opts.ttl).await? else {
            return Ok(None);
        };
        Ok(Some(LockGuard::start(
            self.service.clone(),
            name.to_string(),
            token,
            fencing,
            *opts,
            started,
        )))
    }

    /// Takes the lock, waiting with jittered exponential backoff (10 ms to 250 ms) while someone
    /// else holds it, for at most `max_wait`; then fails with [`Error::LockTimeout`]. An
    /// attempt is never cut off mid-flight, so no lock is left behind by a timeout.
    pub async fn acquire(
        &self,
        name: &str,
        opts: &LockOptions,
        max_wait: Duration,
    ) -> Result<LockGuard> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(250))
            .with_factor(1.5)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            if let Some(guard) = self.try_acquire(name, opts).await? {
                return Ok(guard);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::LockTimeout {
                    name: name.to_string(),
                    waited: now - started,
                });
            }
            let delay = delays.next().unwrap_or(Duration::from_millis(250));
            tokio::time::sleep(delay.min(deadline - now)).await;
        }
    }

    /// Whether anyone holds `name` now.
    pub async fn is_locked(&self, name: &str) -> Result<bool> {
        check_name("lock name", name)?;
        self.service.is_locked(name).await
    }
}

/// A held lock. Released by [`LockGuard::release`], or when dropped (also while unwinding from
/// a panic) by a background task on the current tokio runtime.
#[derive(Debug)]
pub struct LockGuard {
    service: Arc<dyn LockService>,
    name: String,
    token: String,
    fencing: FencingToken,
    ttl: Duration,
    lost: CancellationToken,
    lease_end: Arc<Mutex<Instant>>,
    watchdog: Option<JoinHandle<()>>,
    released: bool,
}

impl LockGuard {
    fn start(
        service: Arc<dyn LockService>,
        name: String,
        token: String,
        fencing: FencingToken,
        opts: LockOptions,
        requested_at: Instant,
    ) -> LockGuard {
        let lost = CancellationToken::new();
        // The lease is counted from before the request was sent: never later than the server's.
        let lease_end = Arc::new(Mutex::new(requested_at + opts.ttl));
        let watchdog = tokio::spawn(watchdog(
            service.clone(),
            name.clone(),
            token.clone(),
            opts,
            lease_end.clone(),
            lost.clone(),
        ));
        LockGuard {
            service,
            name,
            token,
            fencing,
            ttl: opts.ttl,
            lost,
            lease_end,
            watchdog: Some(watchdog),
            released: false,
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token given at acquisition.
    pub fn fencing_token(&self) -> FencingToken {
        self.fencing
    }

    /// Resolves the moment the lock is known lost: renewal found another holder or no key, or
    /// the lease ran out without a successful renewal. Select on it in the critical section.
    pub fn lost(&self) -> WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// A token cancelled when the lock is lost (same moment as [`LockGuard::lost`]).
    pub fn lost_token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lock is known lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Extends the lock to a full TTL now; false (and the lost signal) when we no longer hold it.
    pub async fn renew(&self) -> Result<bool> {
        let started = Instant::now();
        let ok = self
            .service
            .extend(&self.name, &self.token, self.ttl)
            .await?;
        if ok {
            let mut end = self.lease_end.lock().unwrap_or_else(|p| p.into_inner());
            if started + self.ttl > *end {
                *end = started + self.ttl;
            }
        } else {
            self.lost.cancel();
        }
        Ok(ok)
    }

    /// Releases the lock; true when we still held it (false: it had expired or been taken by
    /// another holder, whose lock is left alone).
    pub async fn release(mut self) -> Result<bool> {
        self.released = true;
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        self.service.unlock(&self.name, &self.token).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.released {
            return;
        }
        let (service, name, token) = (
            self.service.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = service.unlock(&name, &token).await {
                        tracing::warn!(lock = %name, error = %e, "releasing a dropped lock failed; it expires with its ttl");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(lock = %name, "lock guard dropped outside a tokio runtime; the lock expires with its ttl");
            }
        }
    }
}

async fn watchdog(
    service: Arc<dyn LockService>,
    name: String,
    token: String,
    opts: LockOptions,
    lease_end: Arc<Mutex<Instant>>,
    lost: CancellationToken,
) {
    let end = || *lease_end.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        let until = end();
        if now >= until {
            lost.cancel();
            return;
        }
        let wake = match opts.renew_every {
            Some(every) => (now + every).min(until),
            None => until,
        };
        tokio::time::sleep_until(wake).await;
        let until = end();
        if Instant::now() >= until {
            lost.cancel();
            return;
        }
        if opts.renew_every.is_none() {
            continue;
        }
        let started = Instant::now();
        match tokio::time::timeout_at(until, service.extend(&name, &token, opts.ttl)).await {
            Ok(Ok(true)) => {
                let mut e = lease_end.lock().unwrap_or_else(|p| p.into_inner());
                if started + opts.ttl > *e {
                    *e = started + opts.ttl;
                }
            }
            Ok(Ok(false)) => {
                tracing::warn!(lock = %name, "lock lost: another holder or no key at renewal");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lock = %name, error = %e, "lock renewal failed; retrying until the lease ends");
            }
            Err(_) => {
                tracing::warn!(lock = %name, "lock lease ran out while renewing");
                lost.cancel();
                return;
            }
        }
    }
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Redis

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
           return redis.call('INCR', KEYS[2]) \
         end \
         return false",
    )
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('DEL', KEYS[1]) \
         end \
         return 0",
    )
});
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then \
           return redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         end \
         return 0",
    )
});

/// Locks in Redis: `SET NX PX` plus the fencing `INCR` in one script (one round trip), release
/// by compare-and-delete, renewal by compare-and-`PEXPIRE`. Keys: `PREFIX lock:NAME` and the
/// never-expiring counter `PREFIX lock:NAME:fence`.
#[derive(Debug, Clone)]
pub struct RedisLocks {
    client: RedisClient,
}

impl RedisLocks {
    /// Locks through `client`.
    pub fn new(client: RedisClient) -> Self {
        RedisLocks { client }
    }

    fn key(&self, name: &str) -> String {
        self.client.key(&format!("lock:{name}"))
    }
}

#[async_trait]
impl LockService for RedisLocks {
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<FencingToken>> {
        let key = self.key(name);
        let fence = format!("{key}:fence");
        let n: Option<i64> = self
            .client
            .eval(
                "EVALSHA lock acquire",
                &ACQUIRE,
                vec![key, fence],
                vec![token.to_string(), millis(ttl).to_string()],
            )
            .await?;
        Ok(n.map(|n| FencingToken(u64::try_from(n).unwrap_or(0))))
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool> {
        let n: i64 = self
            .client
            .eval(
                "EVALSHA lock release",
                &RELEASE,
                vec![self.key(name)],
                vec![token.to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<bool> {
        let n: i64 = self
            .client
            .eval(
                "EVALSHA lock renew",
                &EXTEND,
                vec![self.key(name)],
                vec![token.to_string(), millis(ttl).to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn is_locked(&self, name: &str) -> Result<bool> {
        self.client.exists(&format!("lock:{name}")).await
    }
}

// ---------------------------------------------------------------------------------------------
// In process

/// Locks in this process, with the same token, TTL and fencing semantics as [`RedisLocks`].
#[derive(Debug, Default)]
pub struct InProcessLocks {
    state: Mutex<LockTable>,
}

#[derive(Debug, Default)]
struct LockTable {
    held: HashMap<String, (String, Instant)>,
    fences: HashMap<String, u64>,
}

impl LockTable {
    fn holder(&mut self, name: &str, now: Instant) -> Option<&mut (String, Instant)> {
        if self.held.get(name).is_some_and(|(_, exp)| *exp <= now) {
            self.held.remove(name);
        }
        self.held.get_mut(name)
    }
}

impl InProcessLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, LockTable> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl LockService for InProcessLocks {
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<FencingToken>> {
        let now = Instant::now();
        let mut t = self.table();
        if t.holder(name, now).is_some() {
            return Ok(None);
        }
        if t.held.len() >= 1024 {
            t.held.retain(|_, (_, exp)| *exp > now);
        }
        t.held
            .insert(name.to_string(), (token.to_string(), now + ttl));
        let fence = t.fences.entry(name.to_string()).or_insert(0);
        *fence += 1;
        Ok(Some(FencingToken(*fence)))
    }

    async fn unlock(&self, name: &str, token: &str) -> Result<bool> {
        let mut t = self.table();
        if t.holder(name, Instant::now())
            .is_some_and(|(tok, _)| tok == token)
        {
            t.held.remove(name);
            return Ok(true);
        }
        Ok(false)
    }

    async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut t = self.table();
        match t.holder(name, now) {
            Some((tok, exp)) if tok == token => {
                *exp = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn is_locked(&self, name: &str) -> Result<bool> {
        Ok(self.table().holder(name, Instant::now()).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_ttl_and_slow_renewal() {
        let s = Duration::from_secs(1);
        assert!(matches!(
            LockOptions::builder(Duration::ZERO).build(),
            Err(Error::InvalidLockOptions(_))
        ));
        assert!(matches!(
            LockOptions::builder(s).renew_every(s).build(),
            Err(Error::InvalidLockOptions(_))
        ));
        assert!(matches!(
            LockOptions::builder(s).renew_every(s * 2).build(),
            Err(Error::InvalidLockOptions(_))
        ));
        assert!(matches!(
            LockOptions::builder(s).renew_every(Duration::ZERO).build(),
            Err(Error::InvalidLockOptions(_))
        ));
        let o = LockOptions::builder(Duration::from_millis(900))
            .build()
            .unwrap();
        assert_eq!(o.renew_every(), Some(Duration::from_millis(300)));
        let o = LockOptions::builder(s).no_renewal().build().unwrap();
        assert_eq!(o.renew_every(), None);
    }

    #[tokio::test]
    async fn refuses_bad_lock_names() {
        let locks = DistributedLock::in_process();
        let o = LockOptions::builder(Duration::from_secs(1))
            .build()
            .unwrap();
        for bad in ["", "a b", "a*", "x?"] {
            assert!(matches!(
                locks.try_acquire(bad, &o).await,
                Err(Error::InvalidName { .. })
            ));
        }
    }
}
