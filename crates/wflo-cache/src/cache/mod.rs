//! The LLM response cache: [`LlmCache`], with single-flight `get_or_compute` and per-entry TTL,
//! over a [`ResponseCache`] backend ([`RedisResponseCache`] or [`InProcessResponseCache`]), keyed
//! by [`LlmCacheKey`].

mod backend;
mod in_process;
mod key;
mod redis;

pub use backend::{CacheStats, CacheValue, ResponseCache, StoredEntry};
pub use in_process::InProcessResponseCache;
pub use key::{LlmCacheKey, LlmCacheKeyBuilder};
pub use redis::RedisResponseCache;

use crate::client::RedisClient;
use crate::{Error, Result};
use backend::schema_tag;
use key::check_namespace;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Settings of an [`LlmCache`]. Built with [`LlmCacheConfig::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmCacheConfig {
    default_ttl: Duration,
    cache_nonzero_temperature: bool,
}

impl LlmCacheConfig {
    /// Defaults: entries live one hour; requests with temperature above 0 are not cached.
    pub fn builder() -> LlmCacheConfigBuilder {
        LlmCacheConfigBuilder {
            config: LlmCacheConfig {
                default_ttl: Duration::from_secs(3600),
                cache_nonzero_temperature: false,
            },
        }
    }

    /// Time to live of entries written by [`LlmCache::set`].
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }
}

impl Default for LlmCacheConfig {
    fn default() -> Self {
        Self::builder().config
    }
}

/// Builder of [`LlmCacheConfig`].
#[derive(Debug, Clone, Copy)]
pub struct LlmCacheConfigBuilder {
    config: LlmCacheConfig,
}

impl LlmCacheConfigBuilder {
    /// Time to live of entries (default one hour, at least 1 ms).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// Also cache requests sampled with temperature above 0 (default off: such answers are
    /// meant to vary).
    pub fn cache_nonzero_temperature(mut self, yes: bool) -> Self {
        self.config.cache_nonzero_temperature = yes;
        self
    }

    /// Validates.
    pub fn build(self) -> Result<LlmCacheConfig> {
        if self.config.default_ttl < Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                what: "cache ttl",
                reason: "must be at least 1 ms".into(),
            });
        }
        Ok(self.config)
    }
}

type Flight = Arc<OnceCell<Arc<Vec<u8>>>>;

/// The LLM response cache over any [`ResponseCache`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LlmCache {
    backend: Arc<dyn ResponseCache>,
    config: LlmCacheConfig,
    flights: Arc<Mutex<HashMap<String, Flight>>>,
}

impl LlmCache {
    /// A cache on any backend.
    pub fn new(backend: Arc<dyn ResponseCache>, config: LlmCacheConfig) -> Self {
        LlmCache {
            backend,
            config,
            flights: Arc::default(),
        }
    }

    /// A cache in Redis.
    pub fn redis(client: RedisClient, config: LlmCacheConfig) -> Self {
        Self::new(Arc::new(RedisResponseCache::new(client)), config)
    }

    /// A cache in this process holding at most `max_entries` entries.
    pub fn in_process(max_entries: u64, config: LlmCacheConfig) -> Self {
        Self::new(Arc::new(InProcessResponseCache::new(max_entries)), config)
    }

    /// The settings.
    pub fn config(&self) -> &LlmCacheConfig {
        &self.config
    }

    /// Whether this request may be cached (temperature 0 or absent, or the opt-in is on).
    pub fn is_cacheable(&self, key: &LlmCacheKey) -> bool {
        self.config.cache_nonzero_temperature || key.temperature().is_none_or(|t| t <= 0.0)
    }

    /// The cached value; `None` on a miss, for an entry of another schema, and for a request
    /// that is not cacheable (not counted then).
    pub async fn get<T: CacheValue>(&self, key: &LlmCacheKey) -> Result<Option<T>> {
        if !self.is_cacheable(key) {
            return Ok(None);
        }
        self.lookup(key, true).await
    }

    async fn lookup<T: CacheValue>(&self, key: &LlmCacheKey, count: bool) -> Result<Option<T>> {
        let Some(entry) = self.backend.lookup(key, &schema_tag::<T>(), count).await? else {
            return Ok(None);
        };
        match serde_json::from_slice(&entry.body) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(namespace = %key.namespace(), error = %e, "undecodable cache entry counted as a miss");
                if count {
                    self.backend
                        .uncount_hit(key.namespace(), entry.cost_usd)
                        .await?;
                }
                Ok(None)
            }
        }
    }

    /// Stores `value` for the default TTL; false when the request is not cacheable.
    pub async fn set<T: CacheValue>(&self, key: &LlmCacheKey, value: &T) -> Result<bool> {
        self.set_with_ttl(key, value, self.config.default_ttl).await
    }

    /// Stores `value` for `ttl`; false when the request is not cacheable.
    pub async fn set_with_ttl<T: CacheValue>(
        &self,
        key: &LlmCacheKey,
        value: &T,
        ttl: Duration,
    ) -> Result<bool> {
        if !self.is_cacheable(key) {
            return Ok(false);
        }
        let body = serde_json::to_vec(value).map_err(|e| Error::Serialize(e.to_string()))?;
        self.store::<T>(key, value.cost_usd(), body, ttl).await?;
        Ok(true)
    }

    async fn store<T: CacheValue>(
        &self,
        key: &LlmCacheKey,
        cost: Decimal,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        if ttl < Duration::from_millis(1) {
            return Err(Error::InvalidConfig {
                what: "cache ttl",
                reason: "must be at least 1 ms".into(),
            });
        }
        let entry = StoredEntry {
            cost_usd: cost.max(Decimal::ZERO),
            body,
        };
        self.backend
            .store(key, &schema_tag::<T>(), entry, ttl)
            .await
    }

    /// The cached value, or the result of `compute`, which is stored for the default TTL.
    /// Concurrent misses on one key in this process compute once: the others wait and get the
    /// same value. A request that is not cacheable is computed every time. Cache errors are
    /// returned (as `E`); a failed computation caches nothing and the next waiter computes.
    pub async fn get_or_compute<T, E, F, Fut>(&self, key: &LlmCacheKey, compute: F) -> Result<T, E>
    where
        T: CacheValue,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !self.is_cacheable(key) {
            return compute().await;
        }
        if let Some(v) = self.lookup(key, true).await? {
            return Ok(v);
        }
        let id = key.storage_key();
        let flight: Flight = {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            f.entry(id.clone()).or_default().clone()
        };
        let mut mine: Option<T> = None;
        let slot = &mut mine;
        let result = flight
            .get_or_try_init(|| async move {
                // Someone may have stored it between our lookup and joining the flight.
                if let Some(v) = self.lookup::<T>(key, false).await? {
                    let body =
                        serde_json::to_vec(&v).map_err(|e| Error::Serialize(e.to_string()))?;
                    *slot = Some(v);
                    return Ok::<_, E>(Arc::new(body));
                }
                let v = compute().await?;
                let body = serde_json::to_vec(&v).map_err(|e| Error::Serialize(e.to_string()))?;
                self.store::<T>(key, v.cost_usd(), body.clone(), self.config.default_ttl)
                    .await?;
                *slot = Some(v);
                Ok(Arc::new(body))
            })
            .await
            .cloned();
        {
            let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if f.get(&id).is_some_and(|x| Arc::ptr_eq(x, &flight)) && flight.initialized() {
                f.remove(&id);
            }
        }
        let body = result?;
        if let Some(v) = mine {
            return Ok(v);
        }
        serde_json::from_slice(&body).map_err(|e| E::from(Error::Serialize(e.to_string())))
    }

    /// Deletes the entry of `key`; true when it existed.
    pub async fn invalidate(&self, key: &LlmCacheKey) -> Result<bool> {
        self.backend.invalidate(key).await
    }

    /// Deletes every entry of `namespace` (statistics stay) and returns how many.
    pub async fn clear_namespace(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace)?;
        self.backend.clear_namespace(namespace).await
    }

    /// Hits, misses and cost saved in `namespace`.
    pub async fn stats(&self, namespace: &str) -> Result<CacheStats> {
        check_namespace(namespace)?;
        self.backend.stats(namespace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_a_zero_ttl() {
        assert!(
            LlmCacheConfig::builder()
                .default_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
    }
}
