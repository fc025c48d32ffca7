//! The LLM response cache: keys from a canonical JSON of the request, typed values with a schema
//! version, per-entry TTL, single-flight `get_or_compute`, and hit/miss/cost-saved statistics.

use crate::client::{RedisClient, millis};
use crate::config::check_name;
use crate::{Error, Result};
use async_trait::async_trait;
use fred::prelude::HashesInterface;
use fred::types::scripts::Script;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Version of the key derivation: bump it when the canonical form changes.
const KEY_FORMAT: u32 = 1;

/// The cache key of one LLM request: a namespace (tenant) and the SHA-256 of a canonical JSON of
/// every parameter that changes the answer. Built with [`LlmCacheKey::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCacheKey {
    namespace: String,
    digest: String,
    temperature: Option<f64>,
    canonical: String,
}

impl LlmCacheKey {
    /// Starts a key for a request to `model` in `namespace` (characters among
    /// `a-z A-Z 0-9 _ - . /`).
    pub fn builder(namespace: impl Into<String>, model: impl Into<String>) -> LlmCacheKeyBuilder {
        LlmCacheKeyBuilder {
            namespace: namespace.into(),
            model: model.into(),
            fields: BTreeMap::new(),
            temperature: None,
            bad: None,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Hex SHA-256 of the canonical request.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The sampling temperature, when given.
    pub fn temperature(&self) -> Option<f64> {
        self.temperature
    }

    /// The canonical JSON the digest is computed from (sorted keys, no whitespace).
    pub fn canonical_json(&self) -> &str {
        &self.canonical
    }

    fn storage_key(&self) -> String {
        format!("llm:{}:{}", self.namespace, self.digest)
    }
}

/// Builder of [`LlmCacheKey`]. Every parameter given goes into the key; parameters not given are
/// left out (so adding an unset one later does not change existing keys).
#[derive(Debug, Clone)]
pub struct LlmCacheKeyBuilder {
    namespace: String,
    model: String,
    fields: BTreeMap<String, Value>,
    temperature: Option<f64>,
    bad: Option<String>,
}

impl LlmCacheKeyBuilder {
    fn field(mut self, name: &str, value: Value) -> Self {
        self.fields.insert(name.to_string(), value);
        self
    }

    fn float(mut self, name: &str, v: f64) -> Self {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.field(name, Value::Number(n)),
            None => {
                self.bad = Some(format!("{name} must be a finite number, got {v}"));
                self
            }
        }
    }

    /// The conversation (any JSON: the provider's message list).
    pub fn messages(self, messages: Value) -> Self {
        self.field("messages", messages)
    }

    /// Sampling temperature. Above 0 the cache refuses the request unless
    /// [`LlmCacheConfigBuilder::cache_nonzero_temperature`] is on.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self.float("temperature", t)
    }

    /// Maximum output tokens.
    pub fn max_tokens(self, n: u32) -> Self {
        self.field("max_tokens", Value::from(n))
    }

    /// Nucleus sampling.
    pub fn top_p(self, p: f64) -> Self {
        self.float("top_p", p)
    }

    /// Tool definitions.
    pub fn tools(self, tools: Value) -> Self {
        self.field("tools", tools)
    }

    /// Sampling seed.
    pub fn seed(self, seed: i64) -> Self {
        self.field("seed", Value::from(seed))
    }

    /// Response format (JSON schema, text, ...).
    pub fn response_format(self, format: Value) -> Self {
        self.field("response_format", format)
    }

    /// Stop sequences.
    pub fn stop(self, stop: Vec<String>) -> Self {
        self.field("stop", Value::from(stop))
    }

    /// The system prompt, when the provider takes it apart from the messages.
    pub fn system(self, system: impl Into<String>) -> Self {
        self.field("system", Value::from(system.into()))
    }

    /// Any other parameter that changes the answer (`frequency_penalty`, `tool_choice`,
    /// `reasoning_effort`, provider name, ...). Kept apart from the named ones.
    pub fn param(mut self, name: impl Into<String>, value: Value) -> Self {
        let extra = self
            .fields
            .entry("params".to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = extra {
            m.insert(name.into(), value);
        }
        self
    }

    /// Validates and hashes.
    pub fn build(self) -> Result<LlmCacheKey> {
        check_namespace(&self.namespace)?;
        if let Some(bad) = self.bad {
            return Err(Error::InvalidConfig {
                what: "cache key",
                reason: bad,
            });
        }
        if self.model.is_empty() {
            return Err(Error::InvalidConfig {
                what: "cache key",
                reason: "the model name is empty".into(),
            });
        }
        let mut root = Map::new();
        root.insert("format".into(), Value::from(KEY_FORMAT));
        root.insert("namespace".into(), Value::from(self.namespace.clone()));
        root.insert("model".into(), Value::from(self.model));
        for (k, v) in self.fields {
            root.insert(k, v);
        }
        let mut canonical = String::new();
        write_canonical(&Value::Object(root), &mut canonical);
        let digest = hex::encode(Sha256::digest(canonical.as_bytes()));
        Ok(LlmCacheKey {
            namespace: self.namespace,
            digest,
            temperature: self.temperature,
            canonical,
        })
    }
}

fn check_namespace(ns: &str) -> Result<()> {
    check_name("cache namespace", ns)?;
    if ns.contains(':') {
        return Err(Error::InvalidName {
            what: "cache namespace (no `:`)",
            value: ns.to_string(),
        });
    }
    Ok(())
}

/// JSON with object keys sorted at every level and no whitespace, whatever the map order of the
/// `serde_json` build.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

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

fn schema_tag<T: CacheValue>() -> String {
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
        self.config.cache_nonzero_temperature || key.temperature.is_none_or(|t| t <= 0.0)
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
                tracing::warn!(namespace = %key.namespace, error = %e, "undecodable cache entry counted as a miss");
                if count {
                    self.backend
                        .uncount_hit(&key.namespace, entry.cost_usd)
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

// ---------------------------------------------------------------------------------------------
// Redis

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
                    self.stats_key(&key.namespace),
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
        let _ = millis(ttl);
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

// ---------------------------------------------------------------------------------------------
// In process

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
            self.count(&key.namespace, |s| match &found {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(f: impl FnOnce(LlmCacheKeyBuilder) -> LlmCacheKeyBuilder) -> LlmCacheKey {
        f(
            LlmCacheKey::builder("t1", "gpt-4o")
                .messages(json!([{"role": "user", "content": "hi"}])),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn key_is_canonical_and_sensitive() {
        let a = LlmCacheKey::builder("t1", "m")
            .messages(json!([{"role": "user", "content": "hi", "name": "x"}]))
            .param("b", json!(1))
            .param("a", json!({"z": 1, "y": 2}))
            .build()
            .unwrap();
        let b = LlmCacheKey::builder("t1", "m")
            .param("a", json!({"y": 2, "z": 1}))
            .param("b", json!(1))
            .messages(json!([{"name": "x", "content": "hi", "role": "user"}]))
            .build()
            .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        assert!(!a.canonical_json().contains(' '));

        let base = key(|b| b.temperature(0.0).max_tokens(100));
        let variants = [
            key(|b| b.temperature(0.5).max_tokens(100)),
            key(|b| b.temperature(0.0).max_tokens(101)),
            key(|b| b.temperature(0.0).max_tokens(100).top_p(0.9)),
            key(|b| b.temperature(0.0).max_tokens(100).seed(7)),
            key(|b| {
                b.temperature(0.0)
                    .max_tokens(100)
                    .tools(json!([{"name": "f"}]))
            }),
            key(|b| {
                b.temperature(0.0)
                    .max_tokens(100)
                    .response_format(json!({"type": "json_object"}))
            }),
            key(|b| b.temperature(0.0).max_tokens(100).stop(vec!["\n".into()])),
            key(|b| b.temperature(0.0).max_tokens(100).system("be brief")),
            LlmCacheKey::builder("t2", "gpt-4o")
                .messages(json!([{"role": "user", "content": "hi"}]))
                .temperature(0.0)
                .max_tokens(100)
                .build()
                .unwrap(),
            LlmCacheKey::builder("t1", "gpt-4o-mini")
                .messages(json!([{"role": "user", "content": "hi"}]))
                .temperature(0.0)
                .max_tokens(100)
                .build()
                .unwrap(),
        ];
        for v in &variants {
            assert_ne!(v.digest(), base.digest(), "{}", v.canonical_json());
        }
        assert_eq!(base, key(|b| b.max_tokens(100).temperature(0.0)));
    }

    #[test]
    fn key_refuses_bad_input() {
        assert!(LlmCacheKey::builder("a:b", "m").build().is_err());
        assert!(LlmCacheKey::builder("a*", "m").build().is_err());
        assert!(LlmCacheKey::builder("ok", "").build().is_err());
        assert!(
            LlmCacheKey::builder("ok", "m")
                .temperature(f64::NAN)
                .build()
                .is_err()
        );
        assert!(
            LlmCacheConfig::builder()
                .default_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
    }

    #[test]
    fn nano_conversion_is_exact() {
        use rust_decimal_macros::dec;
        assert_eq!(to_nano(dec!(0.000000150)), 150);
        assert_eq!(to_nano(dec!(12.5)), 12_500_000_000);
        assert_eq!(from_nano(to_nano(dec!(0.123456789))), dec!(0.123456789));
        assert_eq!(to_nano(dec!(0.0000000005)), 1);
    }
}
