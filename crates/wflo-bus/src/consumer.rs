//! Consuming: per-partition streams from a stored offset, and handlers whose offsets commit
//! with their effects.
//!
//! rskafka has no consumer groups: a [`Consumer`] reads the partitions it is given (all by
//! default) and keeps its position in wflo-db's `consumer_offsets` under its group name. Run
//! several consumers of one group on disjoint partitions to share a topic.

use crate::bus::{Bus, OutgoingMessage};
use crate::event::EventEnvelope;
use crate::topics::{TopicSpec, dead_letter_name};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;
use wflo_db::{Db, Executor, Tx};

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<String>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers (non-UTF-8 values are converted lossily).
    pub headers: BTreeMap<String, String>,
    /// The record's timestamp.
    pub timestamp: DateTime<Utc>,
}

impl Message {
    /// The value parsed as an event envelope.
    pub fn envelope(&self) -> Result<EventEnvelope> {
        Ok(EventEnvelope::from_bytes(&self.value)?)
    }
}

/// An event handed to a handler: the record and its parsed envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The record.
    pub message: Message,
    /// Its envelope.
    pub envelope: EventEnvelope,
}

/// What a handler can answer besides success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The event can never be handled: it goes to the dead-letter topic and consumption goes on.
    #[error("rejected: {0}")]
    Reject(String),
    /// A transient failure: the event is offered again after a backoff.
    #[error("retry: {0}")]
    Retry(String),
}

/// A handler whose effects go to the database: it writes through the given [`Tx`], and the
/// consumer commits the offset (and the event id, for dedupe) through the same transaction.
pub trait TxHandler: Send + Sync {
    /// Handles one event.
    fn handle<'a>(
        &'a self,
        tx: &'a Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>>;
}

/// A handler without database effects: redeliveries are suppressed by an in-memory LRU of
/// event ids (bounded), and the offset commits after the handler returns (at least once).
pub trait Handler: Send + Sync {
    /// Handles one event.
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>>;
}

/// Where a consumer starts a partition it has no stored offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartFrom {
    /// The earliest record kept.
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Consumer settings. Built with [`ConsumerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    group: String,
    topic: String,
    partitions: Option<Vec<i32>>,
    start: StartFrom,
    buffer: usize,
    fetch_max_bytes: i32,
    fetch_max_wait: Duration,
    dead_letter: Option<String>,
    dedupe_capacity: NonZeroUsize,
    retry_backoff: Duration,
}

impl ConsumerConfig {
    /// A consumer of `topic` in `group` (the name its offsets are stored under).
    pub fn builder(group: impl Into<String>, topic: impl Into<String>) -> ConsumerConfigBuilder {
        let topic = topic.into();
        ConsumerConfigBuilder {
            config: ConsumerConfig {
                group: group.into(),
                dead_letter: Some(dead_letter_name(&topic)),
                topic,
                partitions: None,
                start: StartFrom::Earliest,
                buffer: 256,
                fetch_max_bytes: 1024 * 1024,
                fetch_max_wait: Duration::from_millis(200),
                dedupe_capacity: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
                retry_backoff: Duration::from_millis(200),
            },
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Builder of [`ConsumerConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct ConsumerConfigBuilder {
    config: ConsumerConfig,
}

impl ConsumerConfigBuilder {
    /// Read only these partitions (default: all of the topic's).
    pub fn partitions(mut self, p: impl IntoIterator<Item = i32>) -> Self {
        self.config.partitions = Some(p.into_iter().collect());
        self
    }

    /// Where to start without a stored offset (default earliest).
    pub fn start(mut self, s: StartFrom) -> Self {
        self.config.start = s;
        self
    }

    /// Records buffered per partition ahead of the handler (default 256): the bound that makes
    /// a slow handler slow the fetching down.
    pub fn buffer(mut self, n: usize) -> Self {
        self.config.buffer = n;
        self
    }

    /// Bytes per fetch (default 1 MiB).
    pub fn fetch_max_bytes(mut self, n: i32) -> Self {
        self.config.fetch_max_bytes = n;
        self
    }

    /// How long the broker may hold a fetch open waiting for records (default 200 ms).
    pub fn fetch_max_wait(mut self, d: Duration) -> Self {
        self.config.fetch_max_wait = d;
        self
    }

    /// The dead-letter topic (default `TOPIC.dlq`; `None` drops rejected events after logging).
    pub fn dead_letter(mut self, topic: Option<String>) -> Self {
        self.config.dead_letter = topic;
        self
    }

    /// Event ids remembered for dedupe by [`Consumer::run`] (default 10,000).
    pub fn dedupe_capacity(mut self, n: usize) -> Self {
        self.config.dedupe_capacity = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }

    /// Wait before offering an event again after [`HandlerError::Retry`] (default 200 ms).
    pub fn retry_backoff(mut self, d: Duration) -> Self {
        self.config.retry_backoff = d;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ConsumerConfig> {
        let c = &self.config;
        if c.group.is_empty() || c.topic.is_empty() {
            return Err(Error::InvalidConfig(
                "a consumer needs a non-empty group and topic".into(),
            ));
        }
        if c.buffer == 0 {
            return Err(Error::InvalidConfig("buffer must be at least 1".into()));
        }
        if c.fetch_max_bytes < 1024 {
            return Err(Error::InvalidConfig(
                "fetch_max_bytes must be at least 1024".into(),
            ));
        }
        if let Some(p) = &c.partitions
            && (p.is_empty() || p.iter().any(|p| *p < 0))
        {
            return Err(Error::InvalidConfig(
                "partitions must be a non-empty list of non-negative ids".into(),
            ));
        }
        if c.dead_letter.as_deref() == Some(c.topic.as_str()) {
            return Err(Error::InvalidConfig(
                "the dead-letter topic must differ from the topic".into(),
            ));
        }
        Ok(self.config)
    }
}

/// A stream of one partition's records from an offset, fed by a background fetch task
/// through a bounded buffer. Dropping it stops the fetching.
#[derive(Debug)]
pub struct PartitionStream {
    rx: mpsc::Receiver<Result<Message>>,
    _stop: DropGuard,
}

impl futures::Stream for PartitionStream {
    type Item = Result<Message>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Counters of a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsumerCounts {
    /// Events the handler accepted.
    pub handled: u64,
    /// Redeliveries recognised and skipped.
    pub duplicates: u64,
    /// Records sent to the dead-letter topic (malformed or rejected).
    pub dead_lettered: u64,
    /// Handler retries.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    retries: AtomicU64,
}

/// Reads a topic's partitions and hands events to a handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Consumer {
    bus: Bus,
    db: Db,
    config: Arc<ConsumerConfig>,
    counters: Arc<Counters>,
}

enum Mode<'h> {
    Tx(&'h dyn TxHandler),
    Plain(
        &'h dyn Handler,
        &'h std::sync::Mutex<lru::LruCache<Uuid, ()>>,
    ),
}

impl Consumer {
    /// A consumer reading through `bus`, keeping offsets in `db`.
    pub fn new(bus: Bus, db: Db, config: ConsumerConfig) -> Consumer {
        Consumer {
            bus,
            db,
            config: Arc::new(config),
            counters: Arc::default(),
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> ConsumerCounts {
        let c = &self.counters;
        ConsumerCounts {
            handled: c.handled.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// The partitions this consumer reads.
    pub async fn partitions(&self) -> Result<Vec<i32>> {
        match &self.config.partitions {
            Some(p) => Ok(p.clone()),
            None => Ok((0..self.bus.partition_count(&self.config.topic).await?).collect()),
        }
    }

    /// The offset reading of `partition` starts at: the stored one, else per [`StartFrom`].
    pub async fn start_offset(&self, partition: i32) -> Result<i64> {
        let c = &self.config;
        if let Some(o) = self
            .db
            .consumer_offsets()
            .get(&c.group, &c.topic, partition)
            .await?
        {
            return Ok(o);
        }
        match c.start {
            StartFrom::Earliest => self.bus.low_watermark(&c.topic, partition).await,
            StartFrom::Latest => self.bus.high_watermark(&c.topic, partition).await,
        }
    }

    /// Streams `partition` from `offset`. Fetch errors are yielded as items and the fetching
    /// continues after a backoff; the buffer holds at most `buffer` records.
    pub fn stream(&self, partition: i32, offset: i64) -> PartitionStream {
        let (tx, rx) = mpsc::channel(self.config.buffer);
        let stop = CancellationToken::new();
        let bus = self.bus.clone();
        let config = Arc::clone(&self.config);
        let token = stop.clone();
        tokio::spawn(async move {
            fetch_loop(bus, config, partition, offset, tx, token).await;
        });
        PartitionStream {
            rx,
            _stop: stop.drop_guard(),
        }
    }

    /// Runs `handler` on every partition until `shutdown` is cancelled. Each event is handled
    /// in a transaction that also records its id (a redelivered event is skipped) and the
    /// next offset, and commits once: effects and position move together. Malformed records
    /// and rejected events go to the dead-letter topic. On shutdown the event in hand is
    /// finished, then it returns.
    pub async fn run_transactional(
        &self,
        handler: &dyn TxHandler,
        shutdown: CancellationToken,
    ) -> Result<ConsumerCounts> {
        self.run_mode(Mode::Tx(handler), shutdown).await
    }

    /// Runs a handler without database effects until `shutdown` is cancelled: event ids seen
    /// recently are skipped (bounded LRU), offsets commit after the handler (at least once).
    pub async fn run(
        &self,
        handler: &dyn Handler,
        shutdown: CancellationToken,
    ) -> Result<ConsumerCounts> {
        let seen = std::sync::Mutex::new(lru::LruCache::new(self.config.dedupe_capacity));
        self.run_mode(Mode::Plain(handler, &seen), shutdown).await
    }

    async fn run_mode(
        &self,
        mode: Mode<'_>,
        shutdown: CancellationToken,
    ) -> Result<ConsumerCounts> {
        if let Some(dlq) = &self.config.dead_letter {
            self.bus
                .ensure_topics(&[TopicSpec::new(dlq.clone(), 1)])
                .await?;
        }
        let partitions = self.partitions().await?;
        let mode = &mode;
        let runs = partitions.into_iter().map(|p| {
            let shutdown = shutdown.clone();
            async move { self.run_partition(p, mode, shutdown).await }
        });
        for r in futures::future::join_all(runs).await {
            r?;
        }
        Ok(self.counts())
    }

    async fn run_partition(
        &self,
        partition: i32,
        mode: &Mode<'_>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        use futures::StreamExt;
        let offset = self.start_offset(partition).await?;
        let mut stream = self.stream(partition, offset);
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                item = stream.next() => item,
            };
            match item {
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.config.topic, partition, error = %e, "fetch failed; retrying");
                }
                Some(Ok(msg)) => self.process(msg, mode, &shutdown).await?,
            }
        }
    }

    async fn process(
        &self,
        msg: Message,
        mode: &Mode<'_>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let c = &self.config;
        let next = msg.offset + 1;
        let envelope = match msg.envelope() {
            Ok(e) => e,
            Err(e) => {
                self.dead_letter(&msg, &e.to_string()).await?;
                self.db
                    .consumer_offsets()
                    .commit(&c.group, &c.topic, msg.partition, next)
                    .await?;
                return Ok(());
            }
        };
        let event = Event {
            message: msg,
            envelope,
        };
        loop {
            let outcome = match mode {
                Mode::Tx(h) => {
                    let tx = self.db.begin().await?;
                    if !tx
                        .consumer_offsets()
                        .mark_processed(&c.group, event.envelope.event_id)
                        .await?
                    {
                        tx.consumer_offsets()
                            .commit(&c.group, &c.topic, event.message.partition, next)
                            .await?;
                        tx.commit().await?;
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    match h.handle(&tx, &event).await {
                        Ok(()) => {
                            tx.consumer_offsets()
                                .commit(&c.group, &c.topic, event.message.partition, next)
                                .await?;
                            tx.commit().await?;
                            Ok(())
                        }
                        Err(e) => {
                            tx.rollback().await?;
                            Err(e)
                        }
                    }
                }
                Mode::Plain(h, seen) => {
                    let id = event.envelope.event_id;
                    let dup = seen.lock().unwrap_or_else(|p| p.into_inner()).contains(&id);
                    if dup {
                        self.commit_offset(event.message.partition, next).await?;
                        self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    let r = h.handle(&event).await;
                    if r.is_ok() {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).put(id, ());
                        self.commit_offset(event.message.partition, next).await?;
                    }
                    r
                }
            };
            match outcome {
                Ok(()) => {
                    self.counters.handled.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(HandlerError::Reject(reason)) => {
                    self.dead_letter(&event.message, &format!("rejected: {reason}"))
                        .await?;
                    self.commit_offset(event.message.partition, next).await?;
                    return Ok(());
                }
                Err(HandlerError::Retry(reason)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(event_id = %event.envelope.event_id, %reason, "handler asked to retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(c.retry_backoff) => {}
                    }
                }
            }
        }
    }

    async fn commit_offset(&self, partition: i32, next: i64) -> Result<()> {
        let c = &self.config;
        self.db
            .consumer_offsets()
            .commit(&c.group, &c.topic, partition, next)
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, msg: &Message, reason: &str) -> Result<()> {
        let c = &self.config;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let Some(dlq) = &c.dead_letter else {
            tracing::warn!(topic = %msg.topic, partition = msg.partition, offset = msg.offset, %reason, "dropping a record (no dead-letter topic)");
            return Ok(());
        };
        let mut out = OutgoingMessage::new(dlq.clone(), msg.value.clone());
        out.key = msg.key.clone();
        out.headers = msg.headers.clone();
        out.headers
            .insert(HEADER_DLQ_REASON.into(), truncate(reason, 1000));
        out.headers
            .insert(HEADER_DLQ_TOPIC.into(), msg.topic.clone());
        out.headers
            .insert(HEADER_DLQ_PARTITION.into(), msg.partition.to_string());
        out.headers
            .insert(HEADER_DLQ_OFFSET.into(), msg.offset.to_string());
        out.headers.insert(HEADER_DLQ_GROUP.into(), c.group.clone());
        if self.bus.check_size(&out).is_err() {
            out.value.clear();
            out.headers
                .insert("wflo-dlq-value-dropped".into(), "too large".into());
        }
        self.bus.send(out).await?;
        Ok(())
    }
}

/// Dead-letter header: why.
pub const HEADER_DLQ_REASON: &str = "wflo-dlq-reason";
/// Dead-letter header: original topic.
pub const HEADER_DLQ_TOPIC: &str = "wflo-dlq-topic";
/// Dead-letter header: original partition.
pub const HEADER_DLQ_PARTITION: &str = "wflo-dlq-partition";
/// Dead-letter header: original offset.
pub const HEADER_DLQ_OFFSET: &str = "wflo-dlq-offset";
/// Dead-letter header: consumer group.
pub const HEADER_DLQ_GROUP: &str = "wflo-dlq-group";

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

async fn fetch_loop(
    bus: Bus,
    config: Arc<ConsumerConfig>,
    partition: i32,
    mut offset: i64,
    tx: mpsc::Sender<Result<Message>>,
    stop: CancellationToken,
) {
    let topic = config.topic.clone();
    let wait_ms = config.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32;
    let mut backoff = Duration::from_millis(100);
    loop {
        let fetched = async {
            let pc = bus.partition_client(&topic, partition).await?;
            tokio::time::timeout(
                bus.op_timeout() + config.fetch_max_wait,
                pc.fetch_records(offset, 1..config.fetch_max_bytes, wait_ms),
            )
            .await
            .map_err(|_| bus.timed_out(format!("fetching {topic}/{partition}")))?
            .map_err(|e| Error::kafka(format!("fetching {topic}/{partition}"), &e))
        };
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            r = fetched => r,
        };
        match res {
            Ok((records, _high)) => {
                backoff = Duration::from_millis(100);
                let empty = records.is_empty();
                for r in records {
                    if r.offset < offset {
                        continue;
                    }
                    offset = r.offset + 1;
                    let rec = r.record;
                    let msg = Message {
                        topic: topic.clone(),
                        partition,
                        offset: r.offset,
                        key: rec.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                        value: rec.value.unwrap_or_default(),
                        headers: rec
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                            .collect(),
                        timestamp: rec.timestamp,
                    };
                    // Blocks while the buffer is full: backpressure.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = tx.send(Ok(msg)) => if sent.is_err() { return },
                    }
                }
                if empty {
                    // Brokers that answer an empty fetch at once must not make this spin.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
            Err(e) => {
                if matches!(e, Error::UnknownTopic { .. }) || e.is_retryable() {
                    bus.forget_topic(&topic);
                }
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
