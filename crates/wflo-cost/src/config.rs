//! [`CostConfig`]: how long reservations hold, where alerts fire, budget policies, retries and
//! the writer's batching; built and validated by [`CostConfigBuilder`].

use crate::budget::BudgetPolicy;
use crate::{Error, Result};
use rust_decimal::Decimal;
use std::time::Duration;

/// Settings of a [`CostTracker`](crate::CostTracker). Built with [`CostConfig::builder`].
#[derive(Debug, Clone)]
pub struct CostConfig {
    pub(crate) reservation_ttl: Duration,
    pub(crate) thresholds: Vec<u32>,
    pub(crate) policies: Vec<BudgetPolicy>,
    pub(crate) busy_retries: usize,
    pub(crate) max_batch: usize,
    pub(crate) writers: usize,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            reservation_ttl: Duration::from_secs(600),
            thresholds: vec![50, 75, 90, 100],
            policies: Vec::new(),
            busy_retries: 10,
            max_batch: 128,
            writers: 2,
        }
    }
}

impl CostConfig {
    /// Defaults: reservations expire after 10 minutes; alerts at 50, 75, 90 and 100 %.
    pub fn builder() -> CostConfigBuilder {
        CostConfigBuilder {
            config: CostConfig::default(),
        }
    }
}

/// Builder of [`CostConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct CostConfigBuilder {
    config: CostConfig,
}

impl CostConfigBuilder {
    /// How long a reservation holds its amount before the sweeper may free it (a crashed
    /// caller's reservation does not leak). Longer than your slowest LLM call.
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.config.reservation_ttl = ttl;
        self
    }

    /// Alert thresholds in percent of a budget's limit (1..=1000).
    pub fn thresholds(mut self, pct: impl IntoIterator<Item = u32>) -> Self {
        self.config.thresholds = pct.into_iter().collect();
        self
    }

    /// Adds a periodic (or total) budget policy.
    pub fn policy(mut self, policy: BudgetPolicy) -> Self {
        self.config.policies.push(policy);
        self
    }

    /// How many times a reserve or settle is retried when the database is momentarily busy
    /// (SQLite `database is locked`, PostgreSQL deadlock or serialization failure).
    pub fn busy_retries(mut self, n: usize) -> Self {
        self.config.busy_retries = n;
        self
    }

    /// Most budget operations (reserves, settles, releases) committed in one transaction by
    /// the tracker's writer (default 128; 1 turns group commit off).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.config.max_batch = n;
        self
    }

    /// How many writers commit batches concurrently on PostgreSQL (default 2; SQLite always
    /// uses one, as it has one writer).
    pub fn writers(mut self, n: usize) -> Self {
        self.config.writers = n;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<CostConfig> {
        let c = &mut self.config;
        if c.max_batch == 0 || c.writers == 0 {
            return Err(Error::InvalidConfig {
                what: "budget writer",
                detail: "max_batch and writers must be at least 1".into(),
            });
        }
        if c.reservation_ttl.is_zero() {
            return Err(Error::InvalidConfig {
                what: "reservation ttl",
                detail: "it must be greater than zero".into(),
            });
        }
        if let Some(bad) = c.thresholds.iter().find(|p| **p == 0 || **p > 1000) {
            return Err(Error::InvalidConfig {
                what: "alert threshold",
                detail: format!("{bad} % is outside 1..=1000"),
            });
        }
        c.thresholds.sort_unstable();
        c.thresholds.dedup();
        for p in &c.policies {
            if p.limit_usd <= Decimal::ZERO {
                return Err(Error::InvalidLimit {
                    scope: p.scope.key(),
                    limit: p.limit_usd,
                });
            }
        }
        Ok(self.config)
    }
}
