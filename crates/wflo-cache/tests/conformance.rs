#![cfg(feature = "integration")]
//! The conformance suite (tests/conformance/suite.rs) on both backends: Redis (the shared server,
//! a unique key prefix per test) and in-process.

mod common;
#[path = "conformance/suite.rs"]
mod suite;

use std::sync::Arc;
use suite::{Counter, Harness};
use wflo_cache as under_test;
use wflo_cache::{DistributedLock, RedisClient, RedisLocks, RedisResponseCache};

struct RedisCounter(RedisClient);

#[async_trait::async_trait]
impl Counter for RedisCounter {
    async fn read(&self, key: &str) -> i64 {
        let raw = self.0.get(key).await.unwrap().unwrap_or_default();
        String::from_utf8(raw).unwrap().parse().unwrap_or(0)
    }
    async fn write(&self, key: &str, value: i64) {
        self.0
            .set(
                key,
                value.to_string().as_bytes(),
                Some(std::time::Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
}

#[derive(Default)]
struct MemCounter(std::sync::Mutex<std::collections::HashMap<String, i64>>);

#[async_trait::async_trait]
impl Counter for MemCounter {
    async fn read(&self, key: &str) -> i64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    async fn write(&self, key: &str, value: i64) {
        self.0.lock().unwrap().insert(key.to_string(), value);
    }
}

async fn redis_harness() -> Harness {
    let client = common::client("conformance").await;
    Harness {
        label: "redis",
        locks: DistributedLock::new(Arc::new(RedisLocks::new(client.clone()))),
        cache_backend: Arc::new(RedisResponseCache::new(client.clone())),
        counter: Arc::new(RedisCounter(client)),
    }
}

async fn in_process_harness() -> Harness {
    Harness {
        label: "in-process",
        locks: DistributedLock::in_process(),
        cache_backend: Arc::new(wflo_cache::InProcessResponseCache::new(10_000)),
        counter: Arc::new(MemCounter::default()),
    }
}

mod redis {
    crate::suite::conformance_suite!(crate::redis_harness);
}

mod in_process {
    crate::suite::conformance_suite!(crate::in_process_harness);
}
