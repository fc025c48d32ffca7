//! What both Temporal suites need: the dev server's address and a test's own configuration.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;
use wflo_temporal::{ActivityRetry, TemporalConfig};

pub fn address() -> String {
    std::env::var("WFLO_TEST_TEMPORAL_ADDRESS").expect(
        "WFLO_TEST_TEMPORAL_ADDRESS is not set; run `cargo xtask itest wflo-temporal` \
         (it starts the temporal dev server and exports the variable)",
    )
}

pub fn unique(tag: &str) -> String {
    format!("it-{tag}-{}", uuid::Uuid::now_v7().simple())
}

/// A private task queue, fast retries (4 attempts, 100 ms apart, doubling), short activity and
/// sticky-queue timeouts so restarts are quick.
pub fn config(tag: &str) -> TemporalConfig {
    TemporalConfig::builder()
        .address(address())
        .task_queue(unique(tag))
        .activity_retry(ActivityRetry::new(4, Duration::from_millis(100)))
        .activity_timeout(Duration::from_secs(10))
        .sticky_queue_timeout(Duration::from_secs(1))
        .graceful_shutdown(Duration::from_secs(2))
        .build()
        .expect("valid config")
}
