//! [`RedisResponseCache`]: the response cache in Redis; a lookup and its counting are one script.

use super::{CacheStats, LlmCacheKey, ResponseCache, StoredEntry};
use crate::Result;
use crate::client::RedisClient;
use async_trait::async_trait;
use fred::prelude::HashesInterface;
use fred::types::scripts::Script;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::sync::LazyLock;
use std::time::Duration;

const NANO: i64 = 1_000_000_000;

/// Dollars to integer nano-dollars (rounded half away from zero below a nano-dollar).
fn to_nano(d: Decimal) -> i64 {
    (d * Decimal::from(NANO))
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(i64::MAX)
}

fn from_nano(n: i64) -> Decimal {
    Decimal::from(n) / Decimal::from(NANO)
}

static LOOKUP: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "local v = redis.call('GET', KEYS[1]) \
         if v then \
           local a = string.find(v, '\\n', 1, true) \
           if a and string.sub(v, 1, a - 1) == ARGV[1] then \
             if ARGV[2] == '1' then \
               redis.call('HINCRBY', KEYS[2], 'hits', 1) \
               local b = string.find(v, '\\n', a + 1, true) \
               if b and b > a + 1 then \
                 local c = string.sub(v, a + 1, b - 1) \
                 if c ~= '0' then redis.call('HINCRBY', KEYS[2], 'saved_nano', c) end \
               end \
             end \
             return v \
           end \
         end \
         if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'misses', 1) end \
         return false",
    )
});

static UNCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        "redis.call('HINCRBY', KEYS[1], 'hits', -1) \
         redis.call('HINCRBY', KEYS[1], 'misses', 1) \
         if ARGV[1] ~= '0' then redis.call('HINCRBY', KEYS[1], 'saved_nano', '-' .. ARGV[1]) end \
         return 1",
    )
});

/// The response cache in Redis. An entry is one string `SCHEMA\nCOST_NANO\nJSON` under
/// `PREFIX llm:NAMESPACE:SHA256` with a `PX` expiry; the counters of a namespace are the hash
/// `PREFIX llm-stats:NAMESPACE` (`hits`, `misses`, `saved_nano`: cost saved in nano-dollars).
/// A lookup and its counting are one script: one round trip.
#[derive(Debug, Clone)]
pub struct RedisResponseCache {
    client: RedisClient,
}

impl RedisResponseCache {
    /// A cache through `client`.
    pub fn new(client: RedisClient) -> Self {
        RedisResponseCache { client }
    }

    fn stats_key(&self, namespace: &str) -> String {
        self.client.key(&format!("llm-stats:{namespace}"))
    }
}

#[async_trait]
impl ResponseCache for RedisResponseCache {
    async fn lookup(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        count: bool,
    ) -> Result<Option<StoredEntry>> {
        let raw: Option<Vec<u8>> = self
            .client
            .eval(
                "EVALSHA cache lookup",
                &LOOKUP,
                vec![
                    self.client.key(&key.storage_key()),
                    self.stats_key(key.namespace()),
                ],
                vec![
                    schema.to_string(),
                    if count { "1" } else { "0" }.to_string(),
                ],
            )
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let mut parts = raw.splitn(3, |b| *b == b'\n');
        let (Some(_), Some(cost), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(None);
        };
        let cost = std::str::from_utf8(cost)
            .ok()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(Some(StoredEntry {
            cost_usd: from_nano(cost),
            body: body.to_vec(),
        }))
    }

    async fn store(
        &self,
        key: &LlmCacheKey,
        schema: &str,
        entry: StoredEntry,
        ttl: Duration,
    ) -> Result<()> {
        let mut raw = Vec::with_capacity(schema.len() + 24 + entry.body.len());
        raw.extend_from_slice(schema.as_bytes());
        raw.push(b'\n');
        raw.extend_from_slice(to_nano(entry.cost_usd).to_string().as_bytes());
        raw.push(b'\n');
        raw.extend_from_slice(&entry.body);
        self.client.set(&key.storage_key(), &raw, Some(ttl)).await
    }

    async fn uncount_hit(&self, namespace: &str, cost_usd: Decimal) -> Result<()> {
        let _: i64 = self
            .client
            .eval(
                "EVALSHA cache uncount",
                &UNCOUNT,
                vec![self.stats_key(namespace)],
                vec![to_nano(cost_usd).to_string()],
            )
            .await?;
        Ok(())
    }

    async fn invalidate(&self, key: &LlmCacheKey) -> Result<bool> {
        self.client.delete(&key.storage_key()).await
    }

    async fn clear_namespace(&self, namespace: &str) -> Result<u64> {
        self.client
            .unlink_matching(&format!("llm:{namespace}:"), 500)
            .await
    }

    async fn stats(&self, namespace: &str) -> Result<CacheStats> {
        let v: Vec<Option<i64>> = self
            .client
            .client()
            .hmget(
                self.stats_key(namespace),
                vec!["hits", "misses", "saved_nano"],
            )
            .await
            .map_err(|e| self.client.call_error("HMGET", e))?;
        let at = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
        Ok(CacheStats {
            hits: u64::try_from(at(0)).unwrap_or(0),
            misses: u64::try_from(at(1)).unwrap_or(0),
            cost_saved_usd: from_nano(at(2)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_conversion_is_exact() {
        use rust_decimal_macros::dec;
        assert_eq!(to_nano(dec!(0.000000150)), 150);
        assert_eq!(to_nano(dec!(12.5)), 12_500_000_000);
        assert_eq!(from_nano(to_nano(dec!(0.123456789))), dec!(0.123456789));
        assert_eq!(to_nano(dec!(0.0000000005)), 1);
    }
}
