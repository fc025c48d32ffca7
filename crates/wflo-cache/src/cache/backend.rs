//! What every response-cache backend shares: the [`ResponseCache`] trait, the entries and
//! counters it holds, and [`CacheValue`], what may be cached.

use super::LlmCacheKey;
use crate::Result;
use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A value the cache stores: serde plus a kind and schema version. An entry written with another
/// kind or version is a miss (and is overwritten by the next `set`).
pub trait CacheValue: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the value is (e.g. `chat-completion`).
    const KIND: &'static str;
    /// Bump when the serialized form changes incompatibly.
    const SCHEMA_VERSION: u32;

    /// What producing this value cost (added to "cost saved" on every hit).
    fn cost_usd(&self) -> Decimal {
        Decimal::ZERO
    }
}

/// The tag an entry of `T` is stored under: `KIND@SCHEMA_VERSION`.
pub(super) fn schema_tag<T: CacheValue>() -> String {
    format!("{}@{}", T::KIND, T::SCHEMA_VERSION)
}

/// Counters of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found a usable entry.
    pub hits: u64,
    /// Lookups that found none (or one of another schema).
    pub misses: u64,
    /// Sum of the cost of the entries served by hits.
    pub cost_saved_usd: Decimal,
}

/// An entry as the backend holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoredEntry {
    /// What producing the value cost.
    pub cost_usd: Decimal,
    /// The serialized value.
    pub body: Vec<u8>,
}

/// Storage of a response cache. Implemented by [`RedisResponseCache`] and
/// [`InProcessResponseCache`]; use them through [`LlmCache`].
///
/// [`RedisResponseCache`]: super::RedisResponseCache
/// [`InProcessResponseCache`]: super::InProcessResponseCache
/// [`LlmCache`]: super::LlmCache
#[async_trait]
pub trait ResponseCache: Send + Sync + std::fmt::Debug + 'static {
    /// The entry under `key` if it was written with schema tag `schema`. When `count` is true,
    /// counts a hit (adding its cost to cost saved) or a miss in the namespace, in the same step.
    async fn lookup(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        count: bool,
    ) -> Result<Option<StoredEntry>>;
    /// Writes an entry that expires after `ttl`.
    async fn store(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        entry: StoredEntry,
        ttl: Duration,
    ) -> Result<()>;
    /// Turns a counted hit into a miss (the entry could not be decoded).
    async fn uncount_hit(&self, namespace: &str, cost_usd: Decimal) -> Result<()>;
    /// Deletes one entry; true when it existed.
    async fn invalidate(&self, key: &LlmCacheKey) -> Result<bool>;
    /// Deletes every entry of `namespace` (statistics stay); returns how many.
    async fn clear_namespace(&self, namespace: &str) -> Result<u64>;
    /// The counters of `namespace`.
    async fn stats(&self, namespace: &str) -> Result<CacheStats>;
}
