//! [`InProcessResponseCache`]: the response cache in this process (moka).

use super::{CacheStats, LlmCacheKey, ResponseCache, StoredEntry};
use crate::Result;
use async_trait::async_trait;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct MemEntry {
    schema: String,
    entry: StoredEntry,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<String, Arc<MemEntry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<MemEntry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<MemEntry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The response cache in this process (moka, bounded by entry count, per-entry TTL), with the
/// same semantics as [`RedisResponseCache`]; counters are exact decimals.
///
/// [`RedisResponseCache`]: super::RedisResponseCache
pub struct InProcessResponseCache {
    entries: moka::future::Cache<String, Arc<MemEntry>>,
    stats: Mutex<HashMap<String, CacheStats>>,
}

impl std::fmt::Debug for InProcessResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessResponseCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl InProcessResponseCache {
    /// A cache holding at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        InProcessResponseCache {
            entries: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            stats: Mutex::default(),
        }
    }

    fn count(&self, namespace: &str, f: impl FnOnce(&mut CacheStats)) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        f(s.entry(namespace.to_string()).or_default());
    }
}

#[async_trait]
impl ResponseCache for InProcessResponseCache {
    async fn lookup(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        count: bool,
    ) -> Result<Option<StoredEntry>> {
        let found = self
            .entries
            .get(&key.storage_key())
            .await
            .filter(|e| e.schema == schema);
        if count {
            self.count(key.namespace(), |s| match &found {
                Some(e) => {
                    s.hits += 1;
                    s.cost_saved_usd += e.entry.cost_usd;
                }
                None => s.misses += 1,
            });
        }
        Ok(found.map(|e| e.entry.clone()))
    }

    async fn store(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        entry: StoredEntry,
        ttl: Duration,
    ) -> Result<()> {
        self.entries
            .insert(
                key.storage_key(),
                Arc::new(MemEntry {
                    schema: schema.to_string(),
                    entry,
                    ttl,
                }),
            )
            .await;
        Ok(())
    }

    async fn uncount_hit(&self, namespace: &str, cost_usd: Decimal) -> Result<()> {
        self.count(namespace, |s| {
            s.hits = s.hits.saturating_sub(1);
            s.misses += 1;
            s.cost_saved_usd -= cost_usd;
        });
        Ok(())
    }

    async fn invalidate(&self, key: &LlmCacheKey) -> Result<bool> {
        Ok(self.entries.remove(&key.storage_key()).await.is_some())
    }

    async fn clear_namespace(&self, namespace: &str) -> Result<u64> {
        let prefix = format!("llm:{namespace}:");
        let keys: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in keys {
            if self.entries.remove(k.as_str()).await.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn stats(&self, namespace: &str) -> Result<CacheStats> {
        let s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.get(namespace).cloned().unwrap_or_default())
    }
}
