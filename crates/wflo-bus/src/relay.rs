//! The outbox relay: publishes events written to wflo-db's outbox, in id order, and marks them
//! published once the broker acknowledged them.
//!
//! Guarantees: an event leaves the outbox only after its acknowledgement (never lost); a broker
//! outage means retries with backoff; within a key (one partition) events are sent in id order
//! and a failed request stops that partition's batch, so a key is never reordered. An
//! acknowledgement lost in transit can publish an event twice: consumers dedupe on the event id.
//! On PostgreSQL several relays can run at once (rows are claimed `FOR UPDATE SKIP LOCKED`, and
//! a keyed row waits while another relay holds an earlier row of its key).

use crate::bus::{Bus, OutgoingMessage, event_headers};
use crate::topics::TopicSpec;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wflo_db::{Backend, Db, Executor, OutboxEvent};

/// Relay settings. Built with [`RelayConfig::builder`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    batch_size: u64,
    poll_interval: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    topics: Vec<TopicSpec>,
    default_partitions: i32,
}

impl RelayConfig {
    /// Defaults: batches of 500, poll every 100 ms when idle, backoff 100 ms to 5 s, Wflo's
    /// standard topics re-created when the broker lost them.
    pub fn builder() -> RelayConfigBuilder {
        RelayConfigBuilder {
            config: RelayConfig {
                batch_size: 500,
                poll_interval: Duration::from_millis(100),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                topics: crate::topics::standard_topics(),
                default_partitions: 3,
            },
        }
    }
}

/// Builder of [`RelayConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct RelayConfigBuilder {
    config: RelayConfig,
}

impl RelayConfigBuilder {
    /// Outbox rows per batch (default 500).
    pub fn batch_size(mut self, n: u64) -> Self {
        self.config.batch_size = n;
        self
    }
    /// Wait between polls of an empty outbox (default 100 ms).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.config.poll_interval = d;
        self
    }
    /// Backoff bounds after a failed batch (default 100 ms to 5 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.backoff_min = min;
        self.config.backoff_max = max;
        self
    }
    /// Topics (with settings) the relay creates when the broker does not know them (default:
    /// the standard topics). Other unknown topics get `default_partitions` and defaults.
    pub fn topics(mut self, specs: Vec<TopicSpec>) -> Self {
        self.config.topics = specs;
        self
    }
    /// Partitions of unknown topics the relay creates (default 3).
    pub fn default_partitions(mut self, n: i32) -> Self {
        self.config.default_partitions = n;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<RelayConfig> {
        let c = &self.config;
        if c.batch_size == 0 || c.batch_size > 10_000 {
            return Err(Error::InvalidConfig(
                "relay batch_size must be between 1 and 10000".into(),
            ));
        }
        if c.poll_interval.is_zero() || c.backoff_min.is_zero() || c.backoff_max < c.backoff_min {
            return Err(Error::InvalidConfig(
                "relay poll interval and backoff must be non-zero with min <= max".into(),
            ));
        }
        if c.default_partitions < 1 {
            return Err(Error::InvalidConfig(
                "default_partitions must be at least 1".into(),
            ));
        }
        for t in &c.topics {
            t.validate()?;
        }
        Ok(self.config)
    }
}

/// Counters of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayCounts {
    /// Events acknowledged by the broker and marked published.
    pub published: u64,
    /// Batches that failed (each retried after a backoff).
    pub failed_batches: u64,
    /// Times topics were (re)created after the broker reported them unknown.
    pub topic_recreations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    failed_batches: AtomicU64,
    topic_recreations: AtomicU64,
}

/// Publishes the outbox. Cheap to clone; run one or several (PostgreSQL) with [`Relay::run`].
#[derive(Debug, Clone)]
pub struct Relay {
    bus: Bus,
    db: Db,
    config: Arc<RelayConfig>,
    counters: Arc<Counters>,
    check_topics: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    /// A relay from `db`'s outbox to `bus`.
    pub fn new(bus: Bus, db: Db, config: RelayConfig) -> Relay {
        Relay {
            bus,
            db,
            config: Arc::new(config),
            counters: Arc::default(),
            check_topics: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Creates the configured topics that are missing: at the first batch and before the
    /// first batch after any failure (a broker that restarted empty has lost them; create
    /// them with their settings before a produce request can make the broker auto-create
    /// them with its defaults).
    async fn check_topics(&self) -> Result<()> {
        if self.config.topics.is_empty() || !self.check_topics.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        match self.bus.ensure_topics(&self.config.topics).await {
            Ok(created) => {
                if !created.is_empty() {
                    self.counters
                        .topic_recreations
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(?created, "relay created missing topics");
                }
                Ok(())
            }
            Err(e) => {
                self.check_topics.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Events waiting to be published (the lag).
    pub async fn lag(&self) -> Result<u64> {
        Ok(self.db.outbox().count_unpublished().await?)
    }

    /// The counters so far.
    pub fn counts(&self) -> RelayCounts {
        let c = &self.counters;
        RelayCounts {
            published: c.published.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            topic_recreations: c.topic_recreations.load(Ordering::Relaxed),
        }
    }

    /// Publishes until `shutdown` is cancelled; failures are retried with backoff (never
    /// skipped). Returns after the batch in hand is finished.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut backoff = self.config.backoff_min;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let wait = match self.relay_once().await {
                Ok(0) => {
                    backoff = self.config.backoff_min;
                    self.config.poll_interval
                }
                Ok(_) => {
                    backoff = self.config.backoff_min;
                    continue;
                }
                Err(e) => {
                    self.check_topics.store(true, Ordering::Release);
                    self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, backoff = ?backoff, "outbox relay batch failed; retrying");
                    let w = backoff;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    w
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes one batch; returns how many events were published. On error nothing after
    /// the failure point of any partition is marked published.
    pub async fn relay_once(&self) -> Result<usize> {
        self.check_topics().await?;
        let limit = self.config.batch_size;
        if self.db.backend() == Backend::Postgres {
            let tx = self.db.begin().await?;
            let rows = tx.outbox().claim_unpublished(limit).await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(0);
            }
            let (done, failure) = self.publish(&rows).await;
            tx.outbox().mark_published(&done).await?;
            tx.commit().await?;
            self.finish(&rows, done, failure).await
        } else {
            let rows = self.db.outbox().unpublished(limit).await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let (done, failure) = self.publish(&rows).await;
            self.db.outbox().mark_published(&done).await?;
            self.finish(&rows, done, failure).await
        }
    }

    async fn finish(
        &self,
        rows: &[OutboxEvent],
        done: Vec<i64>,
        failure: Option<Error>,
    ) -> Result<usize> {
        self.counters
            .published
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        match failure {
            None => Ok(done.len()),
            Some(e) => {
                self.check_topics.store(true, Ordering::Release);
                let failed: Vec<i64> = rows
                    .iter()
                    .map(|r| r.id)
                    .filter(|id| !done.contains(id))
                    .collect();
                self.db
                    .outbox()
                    .record_failure(&failed, &e.to_string())
                    .await?;
                if let Error::UnknownTopic { topic } = &e {
                    self.recreate(topic).await?;
                }
                Err(e)
            }
        }
    }

    async fn recreate(&self, topic: &str) -> Result<()> {
        let spec = self
            .config
            .topics
            .iter()
            .find(|s| s.name == topic)
            .cloned()
            .unwrap_or_else(|| TopicSpec::new(topic, self.config.default_partitions));
        // The broker may have lost several topics (in-memory brokers restart empty).
        let mut specs = self.config.topics.clone();
        if !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec);
        }
        self.bus.forget_topic(topic);
        let created = self.bus.ensure_topics(&specs).await?;
        if !created.is_empty() {
            self.counters
                .topic_recreations
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(?created, "relay re-created topics the broker did not know");
        }
        Ok(())
    }

    /// Sends rows grouped by (topic, partition), each group in one ordered request; returns
    /// the ids acknowledged and the first error.
    async fn publish(&self, rows: &[OutboxEvent]) -> (Vec<i64>, Option<Error>) {
        let mut groups: BTreeMap<(String, i32), Vec<(i64, OutgoingMessage)>> = BTreeMap::new();
        let mut failure = None;
        let mut blocked: std::collections::BTreeSet<(String, Option<String>)> = Default::default();
        for row in rows {
            let k = (row.topic.clone(), row.key.clone());
            if blocked.contains(&k) {
                continue;
            }
            let msg = match to_message(row) {
                Ok(m) => m,
                Err(e) => {
                    failure.get_or_insert(e);
                    blocked.insert(k);
                    continue;
                }
            };
            if let Err(e) = self.bus.check_size(&msg) {
                // Never sendable: it stays in the outbox with the error recorded; later rows of
                // its key wait behind it (per-key order) until an operator removes it.
                failure.get_or_insert(e);
                blocked.insert(k);
                continue;
            }
            match self.bus.partition_of(&row.topic, row.key.as_deref()).await {
                Ok(p) => groups
                    .entry((row.topic.clone(), p))
                    .or_default()
                    .push((row.id, msg)),
                Err(e) => {
                    failure.get_or_insert(e);
                    blocked.insert(k);
                }
            }
        }
        let sends = groups
            .into_iter()
            .map(|((topic, partition), items)| async move {
                let (ids, msgs): (Vec<i64>, Vec<OutgoingMessage>) = items.into_iter().unzip();
                self.bus
                    .produce_to_partition(&topic, partition, &msgs)
                    .await
                    .map(|_| ids)
            });
        let mut done = Vec::new();
        for r in futures::future::join_all(sends).await {
            match r {
                Ok(ids) => done.extend(ids),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        done.sort_unstable();
        (done, failure)
    }
}

fn to_message(row: &OutboxEvent) -> Result<OutgoingMessage> {
    let value = serde_json::to_vec(&row.payload)
        .map_err(|e| Error::Malformed(format!("outbox row {}: {e}", row.id)))?;
    let event_type = row
        .payload
        .get("event_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let mut headers = event_headers(row.event_id, event_type);
    headers.extend(row.headers.clone());
    Ok(OutgoingMessage {
        topic: row.topic.clone(),
        key: row.key.clone(),
        value,
        headers,
    })
}
