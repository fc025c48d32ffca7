//! # wflo-cache — Redis client, fenced distributed locks and the LLM response cache
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! * [`RedisClient`] — a pool of connections from a validated [`RedisConfig`] (`redis://` or
//!   `rediss://`, pool size, timeouts, reconnect backoff, key prefix), with a health check.
//!   Malformed URL, unreachable server, refused password, timeout and a connection lost during
//!   a call are distinct [`Error`] variants.
//! * [`DistributedLock`] over a [`LockService`] ([`RedisLocks`] or [`InProcessLocks`]):
//!   `try_acquire`, `acquire` with a wait deadline and jittered backoff, a random owner token,
//!   compare-and-delete release, compare-and-expire renewal, a watchdog that renews every
//!   `ttl / 3` and signals [`LockGuard::lost`] the moment the lock is lost, a [`FencingToken`]
//!   strictly increasing per name, and a guard released on drop (also on panic). One lock cycle
//!   is two Redis round trips.
//! * [`LlmCache`] over a [`ResponseCache`] ([`RedisResponseCache`] or
//!   [`InProcessResponseCache`], moka): [`LlmCacheKey`] is the SHA-256 of a canonical JSON of
//!   the request, values are typed ([`CacheValue`]) with a schema version, per-namespace
//!   [`CacheStats`] (hits, misses, cost saved as `Decimal`), single-flight `get_or_compute`,
//!   `invalidate`, `clear_namespace`.
//!
//! No `fred` or `moka` type appears in this crate's public API.

mod cache;
mod client;
mod config;
mod error;
mod lock;

pub use cache::{
    CacheStats, CacheValue, InProcessResponseCache, LlmCache, LlmCacheConfig,
    LlmCacheConfigBuilder, LlmCacheKey, LlmCacheKeyBuilder, RedisResponseCache, ResponseCache,
    StoredEntry,
};
pub use client::{Health, RedisClient};
pub use config::{RedisConfig, RedisConfigBuilder};
pub use error::{Error, Result};
pub use lock::{
    DistributedLock, FencingToken, InProcessLocks, LockGuard, LockOptions, LockOptionsBuilder,
    LockService, RedisLocks,
};
pub use tokio_util::sync::CancellationToken;
pub use wflo_types::redact_url as redact;

#[cfg(test)]
use crate as under_test;

#[cfg(test)]
#[path = "../tests/conformance/suite.rs"]
mod suite;

/// The conformance suite on the in-process backends (hermetic). `tests/conformance.rs` runs the
/// same suite on Redis too.
#[cfg(test)]
mod conformance_in_process {
    use crate::suite::{Counter, Harness};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct MemCounter(Mutex<HashMap<String, i64>>);

    #[async_trait::async_trait]
    impl Counter for MemCounter {
        async fn read(&self, key: &str) -> i64 {
            self.0.lock().unwrap().get(key).copied().unwrap_or(0)
        }
        async fn write(&self, key: &str, value: i64) {
            self.0.lock().unwrap().insert(key.to_string(), value);
        }
    }

    async fn harness() -> Harness {
        Harness {
            label: "in-process",
            locks: crate::DistributedLock::in_process(),
            cache_backend: Arc::new(crate::InProcessResponseCache::new(10_000)),
            counter: Arc::new(MemCounter::default()),
        }
    }

    crate::suite::conformance_suite!(harness);
}
