//! The one conformance suite of the lock and cache backends. Included by the crate's unit tests
//! (in-process backends) and by `tests/conformance.rs` (in-process and Redis backends): each
//! context defines `harness(backend)` and expands `conformance_suite!` once per backend.

use super::under_test::*;
use futures::future::join_all;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

/// A counter store the lock must protect (Redis keys for the Redis backend, process memory
/// otherwise). Reads and writes are separate calls: without the lock, updates are lost.
#[async_trait::async_trait]
pub(crate) trait Counter: Send + Sync {
    async fn read(&self, key: &str) -> i64;
    async fn write(&self, key: &str, value: i64);
}

pub(crate) struct Harness {
    pub(crate) label: &'static str,
    pub(crate) locks: DistributedLock,
    pub(crate) cache_backend: Arc<dyn ResponseCache>,
    pub(crate) counter: Arc<dyn Counter>,
}

pub(crate) fn unique(what: &str) -> String {
    let n: u64 = rand::random();
    format!("{what}-{n:016x}")
}

fn opts(ttl_ms: u64) -> LockOptions {
    LockOptions::builder(Duration::from_millis(ttl_ms))
        .build()
        .unwrap()
}

fn opts_no_renewal(ttl_ms: u64) -> LockOptions {
    LockOptions::builder(Duration::from_millis(ttl_ms))
        .no_renewal()
        .build()
        .unwrap()
}

async fn eventually_unlocked(h: &Harness, name: &str, within: Duration) {
    let start = Instant::now();
    while h.locks.is_locked(name).await.unwrap() {
        assert!(
            start.elapsed() < within,
            "[{}] lock {name} still held after {within:?}",
            h.label
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) cost: Decimal,
}

impl CacheValue for Answer {
    const KIND: &'static str = "test-answer";
    const SCHEMA_VERSION: u32 = 1;
    fn cost_usd(&self) -> Decimal {
        self.cost
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AnswerV2 {
    text: String,
    cost: Decimal,
}

impl CacheValue for AnswerV2 {
    const KIND: &'static str = "test-answer";
    const SCHEMA_VERSION: u32 = 2;
}

fn answer(text: &str, cost: &str) -> Answer {
    Answer {
        text: text.into(),
        cost: cost.parse().unwrap(),
    }
}

fn key(ns: &str, f: impl FnOnce(LlmCacheKeyBuilder) -> LlmCacheKeyBuilder) -> LlmCacheKey {
    f(LlmCacheKey::builder(ns, "gpt-4o-mini")
        .messages(serde_json::json!([{"role": "user", "content": "what is 2+2?"}]))
        .temperature(0.0)
        .max_tokens(64))
    .build()
    .unwrap()
}

impl Harness {
    fn cache(&self) -> LlmCache {
        LlmCache::new(self.cache_backend.clone(), LlmCacheConfig::default())
    }
}

/// Runs one named check against a harness.
pub(crate) async fn run(check: &str, h: Harness) {
    match check {
        "lock_try_acquire_and_release" => lock_try_acquire_and_release(h).await,
        "lock_guard_holds_key_and_drop_removes_it" => {
            lock_guard_holds_key_and_drop_removes_it(h).await
        }
        "lock_second_acquirer_refused_while_held" => {
            lock_second_acquirer_refused_while_held(h).await
        }
        "lock_expires_by_itself" => lock_expires_by_itself(h).await,
        "lock_renew_extends" => lock_renew_extends(h).await,
        "lock_auto_renewal_keeps_it_past_ttl" => lock_auto_renewal_keeps_it_past_ttl(h).await,
        "lock_waiting_acquire_gets_it_on_release" => {
            lock_waiting_acquire_gets_it_on_release(h).await
        }
        "lock_released_on_error_path_and_panic" => lock_released_on_error_path_and_panic(h).await,
        "lock_stalled_holder_is_told_and_late_release_is_harmless" => {
            lock_stalled_holder_is_told_and_late_release_is_harmless(h).await
        }
        "lock_fencing_strictly_increases_over_100_competing_acquisitions" => {
            lock_fencing_strictly_increases(h).await
        }
        "lock_32_tasks_increment_exactly" => lock_32_tasks_increment_exactly(h).await,
        "cache_miss_set_hit_and_stats" => cache_miss_set_hit_and_stats(h).await,
        "cache_get_or_compute_computes_once" => cache_get_or_compute_computes_once(h).await,
        "cache_other_temperature_or_max_tokens_miss" => cache_other_params_miss(h).await,
        "cache_entry_expires" => cache_entry_expires(h).await,
        "cache_invalidate" => cache_invalidate(h).await,
        "cache_clear_namespace_returns_count" => cache_clear_namespace_returns_count(h).await,
        "cache_nonzero_temperature_not_cached_by_default" => cache_nonzero_temperature(h).await,
        "cache_other_schema_version_is_a_miss" => cache_other_schema_version_is_a_miss(h).await,
        "cache_50_concurrent_get_or_compute_compute_once" => cache_50_concurrent(h).await,
        "cache_failed_compute_caches_nothing" => cache_failed_compute_caches_nothing(h).await,
        other => panic!("unknown conformance check {other}"),
    }
}

/// Expands to one rstest test per conformance check, each run on `$harness().await`.
macro_rules! conformance_suite {
    ($harness:expr) => {
        #[rstest::rstest]
        #[case::lock_try_acquire_and_release("lock_try_acquire_and_release")]
        #[case::lock_guard_holds_key_and_drop_removes_it(
            "lock_guard_holds_key_and_drop_removes_it"
        )]
        #[case::lock_second_acquirer_refused_while_held("lock_second_acquirer_refused_while_held")]
        #[case::lock_expires_by_itself("lock_expires_by_itself")]
        #[case::lock_renew_extends("lock_renew_extends")]
        #[case::lock_auto_renewal_keeps_it_past_ttl("lock_auto_renewal_keeps_it_past_ttl")]
        #[case::lock_waiting_acquire_gets_it_on_release("lock_waiting_acquire_gets_it_on_release")]
        #[case::lock_released_on_error_path_and_panic("lock_released_on_error_path_and_panic")]
        #[case::lock_stalled_holder_is_told_and_late_release_is_harmless(
            "lock_stalled_holder_is_told_and_late_release_is_harmless"
        )]
        #[case::lock_fencing_strictly_increases(
            "lock_fencing_strictly_increases_over_100_competing_acquisitions"
        )]
        #[case::lock_32_tasks_increment_exactly("lock_32_tasks_increment_exactly")]
        #[case::cache_miss_set_hit_and_stats("cache_miss_set_hit_and_stats")]
        #[case::cache_get_or_compute_computes_once("cache_get_or_compute_computes_once")]
        #[case::cache_other_temperature_or_max_tokens_miss(
            "cache_other_temperature_or_max_tokens_miss"
        )]
        #[case::cache_entry_expires("cache_entry_expires")]
        #[case::cache_invalidate("cache_invalidate")]
        #[case::cache_clear_namespace_returns_count("cache_clear_namespace_returns_count")]
        #[case::cache_nonzero_temperature_not_cached_by_default(
            "cache_nonzero_temperature_not_cached_by_default"
        )]
        #[case::cache_other_schema_version_is_a_miss("cache_other_schema_version_is_a_miss")]
        #[case::cache_50_concurrent_get_or_compute_compute_once(
            "cache_50_concurrent_get_or_compute_compute_once"
        )]
        #[case::cache_failed_compute_caches_nothing("cache_failed_compute_caches_nothing")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance(#[case] check: &str) {
            $crate::suite::run(check, $harness().await).await;
        }
    };
}
pub(crate) use conformance_suite;

// ------------------------------------------------------------------------------------------------
// Locks

async fn lock_try_acquire_and_release(h: Harness) {
    let name = unique("lock");
    assert!(!h.locks.is_locked(&name).await.unwrap());
    let g = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .unwrap();
    assert!(g.fencing_token().get() >= 1);
    assert!(h.locks.is_locked(&name).await.unwrap(), "[{}]", h.label);
    assert!(
        g.release().await.unwrap(),
        "[{}] release of a held lock",
        h.label
    );
    assert!(!h.locks.is_locked(&name).await.unwrap());
    // And it can be taken again, with a higher fencing token.
    let g2 = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .unwrap();
    assert!(g2.fencing_token().get() >= 2);
    assert!(g2.release().await.unwrap());
}

async fn lock_guard_holds_key_and_drop_removes_it(h: Harness) {
    let name = unique("lock");
    {
        let _g = h
            .locks
            .acquire(&name, &opts(30_000), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(h.locks.is_locked(&name).await.unwrap());
        assert!(
            h.locks
                .try_acquire(&name, &opts(30_000))
                .await
                .unwrap()
                .is_none()
        );
    }
    // Far before the 30 s ttl: the drop released it.
    eventually_unlocked(&h, &name, Duration::from_secs(2)).await;
}

async fn lock_second_acquirer_refused_while_held(h: Harness) {
    let name = unique("lock");
    let g = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .unwrap();
    assert!(
        h.locks
            .try_acquire(&name, &opts(30_000))
            .await
            .unwrap()
            .is_none()
    );
    let started = Instant::now();
    let err = h
        .locks
        .acquire(&name, &opts(30_000), Duration::from_millis(300))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, Error::LockTimeout { .. }),
        "[{}] {err:?}",
        h.label
    );
    assert!(
        waited >= Duration::from_millis(300),
        "gave up early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "waited too long: {waited:?}"
    );
    assert!(err.to_string().contains(&name));
    assert!(g.release().await.unwrap());
}

async fn lock_expires_by_itself(h: Harness) {
    let name = unique("lock");
    let g = h
        .locks
        .try_acquire(&name, &opts_no_renewal(200))
        .await
        .unwrap()
        .unwrap();
    assert!(h.locks.is_locked(&name).await.unwrap());
    sleep(Duration::from_millis(350)).await;
    assert!(
        !h.locks.is_locked(&name).await.unwrap(),
        "[{}] still held after ttl",
        h.label
    );
    assert!(g.is_lost(), "the holder must know the ttl passed");
    let g2 = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .expect("free after expiry");
    assert!(g2.fencing_token() > g.fencing_token());
    assert!(
        !g.release().await.unwrap(),
        "release after expiry reports we did not own it"
    );
    assert!(
        h.locks.is_locked(&name).await.unwrap(),
        "late release removed the new holder's lock"
    );
    assert!(g2.release().await.unwrap());
}

async fn lock_renew_extends(h: Harness) {
    let name = unique("lock");
    let g = h
        .locks
        .try_acquire(&name, &opts_no_renewal(400))
        .await
        .unwrap()
        .unwrap();
    sleep(Duration::from_millis(250)).await;
    assert!(
        g.renew().await.unwrap(),
        "[{}] renew of a held lock",
        h.label
    );
    sleep(Duration::from_millis(250)).await;
    // 500 ms after acquiring with a 400 ms ttl: held only thanks to the renewal.
    assert!(
        h.locks.is_locked(&name).await.unwrap(),
        "[{}] renew did not extend",
        h.label
    );
    assert!(!g.is_lost());
    sleep(Duration::from_millis(400)).await;
    assert!(!h.locks.is_locked(&name).await.unwrap());
    assert!(!g.renew().await.unwrap(), "renew after expiry must fail");
    assert!(g.is_lost());
}

async fn lock_auto_renewal_keeps_it_past_ttl(h: Harness) {
    let name = unique("lock");
    let o = LockOptions::builder(Duration::from_millis(300))
        .renew_every(Duration::from_millis(100))
        .build()
        .unwrap();
    let g = h.locks.try_acquire(&name, &o).await.unwrap().unwrap();
    sleep(Duration::from_millis(1_000)).await;
    assert!(
        h.locks.is_locked(&name).await.unwrap(),
        "[{}] watchdog did not renew",
        h.label
    );
    assert!(!g.is_lost());
    assert!(h.locks.try_acquire(&name, &o).await.unwrap().is_none());
    assert!(g.release().await.unwrap());
    assert!(!h.locks.is_locked(&name).await.unwrap());
}

async fn lock_waiting_acquire_gets_it_on_release(h: Harness) {
    let name = unique("lock");
    let g = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .unwrap();
    let locks = h.locks.clone();
    let n = name.clone();
    let waiter = tokio::spawn(async move {
        let g = locks
            .acquire(&n, &opts(30_000), Duration::from_secs(5))
            .await
            .unwrap();
        (Instant::now(), g)
    });
    sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "[{}] waiter got a held lock",
        h.label
    );
    let released_at = Instant::now();
    let first = g.fencing_token();
    assert!(g.release().await.unwrap());
    let (got_at, g2) = timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(got_at >= released_at);
    assert!(
        got_at - released_at < Duration::from_millis(600),
        "slow handover"
    );
    assert!(g2.fencing_token() > first);
    assert!(g2.release().await.unwrap());
}

async fn lock_released_on_error_path_and_panic(h: Harness) {
    let name = unique("lock");
    async fn critical(locks: &DistributedLock, name: &str) -> std::result::Result<(), String> {
        let _g = locks
            .acquire(name, &opts(30_000), Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        Err("the step failed".into())
    }
    assert!(critical(&h.locks, &name).await.is_err());
    eventually_unlocked(&h, &name, Duration::from_secs(2)).await;

    let locks = h.locks.clone();
    let n = name.clone();
    let res = tokio::spawn(async move {
        let _g = locks
            .acquire(&n, &opts(30_000), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(locks.is_locked(&n).await.unwrap());
        panic!("critical section panicked (expected by the test)");
    })
    .await;
    assert!(res.unwrap_err().is_panic());
    eventually_unlocked(&h, &name, Duration::from_secs(2)).await;
    let g = h
        .locks
        .try_acquire(&name, &opts(30_000))
        .await
        .unwrap()
        .expect("free again");
    assert!(g.release().await.unwrap());
}

async fn lock_stalled_holder_is_told_and_late_release_is_harmless(h: Harness) {
    let name = unique("lock");
    let a = h
        .locks
        .try_acquire(&name, &opts_no_renewal(250))
        .await
        .unwrap()
        .unwrap();
    let lost = a.lost();
    let b = h
        .locks
        .acquire(&name, &opts(30_000), Duration::from_secs(3))
        .await
        .unwrap();
    // The stalled holder learns it lost the lock (within a short bound, not never).
    timeout(Duration::from_millis(500), lost)
        .await
        .unwrap_or_else(|_| panic!("[{}] the stalled holder was not told", h.label));
    assert!(a.is_lost());
    assert!(b.fencing_token() > a.fencing_token());
    assert!(
        !a.release().await.unwrap(),
        "late release must report the loss"
    );
    assert!(
        h.locks.is_locked(&name).await.unwrap(),
        "late release removed b's lock"
    );
    assert!(!b.is_lost());
    assert!(b.release().await.unwrap());
}

async fn lock_fencing_strictly_increases(h: Harness) {
    let name = unique("lock");
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::<u64>::new()));
    let tasks = (0..8).map(|_| {
        let (locks, name, seen) = (h.locks.clone(), name.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let g = locks
                    .acquire(&name, &opts(30_000), Duration::from_secs(20))
                    .await
                    .unwrap();
                let mut s = seen.lock().await;
                if s.len() >= 100 {
                    drop(s);
                    g.release().await.unwrap();
                    return;
                }
                s.push(g.fencing_token().get());
                drop(s);
                assert!(g.release().await.unwrap());
            }
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    let s = seen.lock().await;
    assert_eq!(s.len(), 100);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "[{}] fencing tokens not strictly increasing in holding order: {s:?}",
        h.label
    );
}

async fn lock_32_tasks_increment_exactly(h: Harness) {
    let name = unique("lock");
    let counter_key = unique("counter");
    h.counter.write(&counter_key, 0).await;
    let tasks = (0..32).map(|_| {
        let (locks, name, key, counter) = (
            h.locks.clone(),
            name.clone(),
            counter_key.clone(),
            h.counter.clone(),
        );
        tokio::spawn(async move {
            let g = locks
                .acquire(&name, &opts(10_000), Duration::from_secs(30))
                .await
                .unwrap();
            let v = counter.read(&key).await;
            sleep(Duration::from_millis(5)).await;
            counter.write(&key, v + 1).await;
            assert!(g.release().await.unwrap());
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(
        h.counter.read(&counter_key).await,
        32,
        "[{}] lost updates",
        h.label
    );
}

// ------------------------------------------------------------------------------------------------
// Cache

async fn cache_miss_set_hit_and_stats(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), None);
    let v = answer("4", "0.000123456");
    assert!(cache.set(&k, &v).await.unwrap());
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), Some(v.clone()));
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), Some(v));
    let s = cache.stats(&ns).await.unwrap();
    assert_eq!((s.hits, s.misses), (2, 1), "[{}]", h.label);
    assert_eq!(s.cost_saved_usd, "0.000246912".parse::<Decimal>().unwrap());
    // Other namespaces are untouched.
    let other = cache.stats(&unique("ns")).await.unwrap();
    assert_eq!((other.hits, other.misses), (0, 0));
}

async fn cache_get_or_compute_computes_once(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    let calls = AtomicU32::new(0);
    for _ in 0..3 {
        let v: Answer = cache
            .get_or_compute(&k, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(answer("4", "0.01"))
            })
            .await
            .unwrap();
        assert_eq!(v, answer("4", "0.01"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "[{}]", h.label);
    let s = cache.stats(&ns).await.unwrap();
    assert_eq!((s.hits, s.misses), (2, 1));
    assert_eq!(s.cost_saved_usd, "0.02".parse::<Decimal>().unwrap());
}

async fn cache_other_params_miss(h: Harness) {
    let cache = LlmCache::new(
        h.cache_backend.clone(),
        LlmCacheConfig::builder()
            .cache_nonzero_temperature(true)
            .build()
            .unwrap(),
    );
    let ns = unique("ns");
    let base = key(&ns, |b| b);
    assert!(cache.set(&base, &answer("4", "0.01")).await.unwrap());
    assert!(cache.get::<Answer>(&base).await.unwrap().is_some());
    for other in [
        key(&ns, |b| b.temperature(0.7)),
        key(&ns, |b| b.max_tokens(65)),
        key(&ns, |b| b.top_p(0.5)),
        key(&ns, |b| b.seed(1)),
        key(&ns, |b| {
            b.param("frequency_penalty", serde_json::json!(0.1))
        }),
    ] {
        assert_eq!(
            cache.get::<Answer>(&other).await.unwrap(),
            None,
            "{}",
            other.canonical_json()
        );
    }
}

async fn cache_entry_expires(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    assert!(
        cache
            .set_with_ttl(&k, &answer("4", "0"), Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(cache.get::<Answer>(&k).await.unwrap().is_some());
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cache.get::<Answer>(&k).await.unwrap(),
        None,
        "[{}] not expired",
        h.label
    );
    // The default ttl applies otherwise.
    let short = LlmCache::new(
        h.cache_backend.clone(),
        LlmCacheConfig::builder()
            .default_ttl(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    assert!(short.set(&k, &answer("4", "0")).await.unwrap());
    assert!(short.get::<Answer>(&k).await.unwrap().is_some());
    sleep(Duration::from_millis(500)).await;
    assert_eq!(short.get::<Answer>(&k).await.unwrap(), None);
}

async fn cache_invalidate(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    let k2 = key(&ns, |b| b.max_tokens(10));
    cache.set(&k, &answer("4", "0")).await.unwrap();
    cache.set(&k2, &answer("5", "0")).await.unwrap();
    assert!(cache.invalidate(&k).await.unwrap());
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), None);
    assert!(
        !cache.invalidate(&k).await.unwrap(),
        "[{}] second invalidate",
        h.label
    );
    assert!(
        cache.get::<Answer>(&k2).await.unwrap().is_some(),
        "invalidate hit another key"
    );
}

async fn cache_clear_namespace_returns_count(h: Harness) {
    let cache = h.cache();
    let (a, b) = (unique("ns"), unique("ns"));
    for i in 0..7u32 {
        cache
            .set(&key(&a, |k| k.max_tokens(i + 1)), &answer("x", "0"))
            .await
            .unwrap();
    }
    for i in 0..2u32 {
        cache
            .set(&key(&b, |k| k.max_tokens(i + 1)), &answer("y", "0"))
            .await
            .unwrap();
    }
    assert_eq!(cache.clear_namespace(&a).await.unwrap(), 7, "[{}]", h.label);
    assert_eq!(
        cache
            .get::<Answer>(&key(&a, |k| k.max_tokens(1)))
            .await
            .unwrap(),
        None
    );
    assert!(
        cache
            .get::<Answer>(&key(&b, |k| k.max_tokens(1)))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(cache.clear_namespace(&a).await.unwrap(), 0);
    assert_eq!(cache.clear_namespace(&b).await.unwrap(), 2);
}

async fn cache_nonzero_temperature(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b.temperature(0.7));
    assert!(!cache.is_cacheable(&k));
    assert!(!cache.set(&k, &answer("4", "0.01")).await.unwrap());
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), None);
    let calls = AtomicU32::new(0);
    for _ in 0..2 {
        let _: Answer = cache
            .get_or_compute(&k, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(answer("4", "0.01"))
            })
            .await
            .unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "[{}] sampled answers were cached",
        h.label
    );
    assert_eq!(cache.stats(&ns).await.unwrap(), CacheStats::default());
}

async fn cache_other_schema_version_is_a_miss(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    cache.set(&k, &answer("4", "0.5")).await.unwrap();
    assert_eq!(
        cache.get::<AnswerV2>(&k).await.unwrap(),
        None,
        "[{}]",
        h.label
    );
    let s = cache.stats(&ns).await.unwrap();
    assert_eq!((s.hits, s.misses, s.cost_saved_usd), (0, 1, Decimal::ZERO));
    // A newer writer replaces it; the old reader then misses.
    cache
        .set(
            &k,
            &AnswerV2 {
                text: "4".into(),
                cost: Decimal::ONE,
            },
        )
        .await
        .unwrap();
    assert!(cache.get::<AnswerV2>(&k).await.unwrap().is_some());
    assert_eq!(cache.get::<Answer>(&k).await.unwrap(), None);
}

async fn cache_50_concurrent(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    let calls = Arc::new(AtomicU32::new(0));
    let tasks = (0..50).map(|_| {
        let (cache, k, calls) = (cache.clone(), k.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute(&k, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(200)).await;
                    Ok::<_, Error>(answer("4", "0.01"))
                })
                .await
                .unwrap()
        })
    });
    let results = join_all(tasks).await;
    for r in results {
        assert_eq!(r.unwrap(), answer("4", "0.01"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "[{}] computed more than once",
        h.label
    );
    assert_eq!(
        cache.get::<Answer>(&k).await.unwrap(),
        Some(answer("4", "0.01"))
    );
}

async fn cache_failed_compute_caches_nothing(h: Harness) {
    let cache = h.cache();
    let ns = unique("ns");
    let k = key(&ns, |b| b);
    #[derive(Debug)]
    enum StepError {
        Provider,
        Cache(Error),
    }
    impl From<Error> for StepError {
        fn from(e: Error) -> Self {
            StepError::Cache(e)
        }
    }
    let r: std::result::Result<Answer, StepError> = cache
        .get_or_compute(&k, || async { Err(StepError::Provider) })
        .await;
    assert!(matches!(r, Err(StepError::Provider)), "{r:?}");
    assert_eq!(
        cache.get::<Answer>(&k).await.unwrap(),
        None,
        "[{}]",
        h.label
    );
    let v: Answer = cache
        .get_or_compute(&k, || async { Ok::<_, StepError>(answer("4", "0")) })
        .await
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert_eq!(v.text, "4");
    if let Err(StepError::Cache(e)) = r {
        panic!("unexpected cache error {e}");
    }
}
