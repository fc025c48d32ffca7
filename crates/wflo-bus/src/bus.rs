//! [`Bus`]: the connection to the brokers, topic administration and the producer.

use crate::admin;
use crate::config::BusConfig;
use crate::event::EventEnvelope;
use crate::partitioner::partition_for;
use crate::topics::{TopicInfo, TopicSpec};
use crate::{Error, Result};
use backon::Retryable;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::producer::aggregator::RecordAggregator;
use rskafka::client::producer::{BatchProducer, BatchProducerBuilder};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key: records with one key go to one partition, in order.
    pub key: Option<String>,
    /// The bytes.
    pub value: Vec<u8>,
    /// Headers.
    pub headers: BTreeMap<String, String>,
}

impl OutgoingMessage {
    /// A message for `topic`.
    pub fn new(topic: impl Into<String>, value: Vec<u8>) -> Self {
        OutgoingMessage {
            topic: topic.into(),
            key: None,
            value,
            headers: BTreeMap::new(),
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// An event as a message: JSON value, key = execution id, headers `wflo-event-id`,
    /// `wflo-event-type`, `content-type`.
    pub fn event(topic: impl Into<String>, event: &EventEnvelope) -> Result<Self> {
        let mut m = OutgoingMessage::new(topic, event.to_bytes()?);
        m.key = event.key();
        m.headers = event_headers(event.event_id, event.event_type.as_str());
        Ok(m)
    }

    /// Key, value and header bytes.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, String::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

pub(crate) fn event_headers(id: uuid::Uuid, event_type: &str) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert(HEADER_EVENT_ID.to_string(), id.to_string());
    h.insert(HEADER_EVENT_TYPE.to_string(), event_type.to_string());
    h.insert("content-type".to_string(), "application/json".to_string());
    h
}

pub use wflo_types::{HEADER_EVENT_ID, HEADER_EVENT_TYPE};

/// Where the broker stored an acknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

type Producer = BatchProducer<RecordAggregator>;
type Gate = Arc<tokio::sync::Mutex<()>>;

/// Something per (topic, partition), looked up by `&str` without allocating (the send path
/// does one lookup per message).
#[derive(Debug)]
struct PerPartition<T>(Mutex<HashMap<String, HashMap<i32, Arc<T>>>>);

impl<T> Default for PerPartition<T> {
    fn default() -> Self {
        PerPartition(Mutex::new(HashMap::new()))
    }
}

impl<T> PerPartition<T> {
    fn get(&self, topic: &str, partition: i32) -> Option<Arc<T>> {
        lock(&self.0).get(topic)?.get(&partition).cloned()
    }

    /// The stored one if another caller stored one first, else `value`.
    fn get_or_insert(&self, topic: &str, partition: i32, value: Arc<T>) -> Arc<T> {
        let mut map = lock(&self.0);
        if !map.contains_key(topic) {
            map.insert(topic.to_string(), HashMap::new());
        }
        let per_topic = map.get_mut(topic).expect("inserted above");
        Arc::clone(per_topic.entry(partition).or_insert(value))
    }

    fn remove(&self, topic: &str, partition: i32) {
        if let Some(per_topic) = lock(&self.0).get_mut(topic) {
            per_topic.remove(&partition);
        }
    }

    fn remove_topic(&self, topic: &str) {
        lock(&self.0).remove(topic);
    }
}

struct Inner {
    client: Client,
    config: BusConfig,
    partitions: Mutex<HashMap<String, i32>>,
    clients: PerPartition<PartitionClient>,
    producers: PerPartition<Producer>,
    gates: PerPartition<tokio::sync::Mutex<()>>,
    round_robin: AtomicU64,
}

/// One produce request in flight per partition: the order of a key never depends on the
/// broker's handling of pipelined requests (without an idempotent producer, Kafka itself only
/// keeps order with one request in flight, and Tansu's memory engine can assign overlapping
/// offsets to concurrent requests).
#[derive(Debug)]
struct SerialPartition {
    client: Arc<PartitionClient>,
    gate: Gate,
}

impl rskafka::client::producer::ProducerClient for SerialPartition {
    fn produce(
        &self,
        records: Vec<Record>,
        compression: rskafka::client::partition::Compression,
    ) -> futures::future::BoxFuture<'_, Result<Vec<i64>, rskafka::client::error::Error>> {
        Box::pin(async move {
            let _turn = self.gate.lock().await;
            self.client.produce(records, compression).await
        })
    }
}

/// The connection to the Kafka brokers: topics and the producer. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("bootstrap", &self.inner.config.bootstrap_servers())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    /// Connects to the brokers (fetches the cluster metadata); an unreachable cluster is
    /// [`Error::Unreachable`] naming the bootstrap servers after the retry policy's
    /// `max_elapsed`.
    pub async fn connect(config: BusConfig) -> Result<Bus> {
        // rskafka's own retries are turned off (deadline zero): every retry happens here, where
        // the relay can re-create lost topics before a request makes a broker auto-create them
        // with its defaults, and where the retry policy bounds the total time.
        let connect = || async {
            ClientBuilder::new(config.bootstrap.clone())
                .client_id(config.client_id.clone())
                .backoff_config(rskafka::BackoffConfig {
                    init_backoff: config.retry.initial,
                    max_backoff: config.retry.max,
                    base: 2.0,
                    deadline: Some(std::time::Duration::ZERO),
                })
                .build()
                .await
                .map_err(|e| Error::Unreachable {
                    servers: config.bootstrap_servers(),
                    reason: e.to_string().to_lowercase(),
                })
        };
        let client = connect.retry(config.retry.backoff()).await?;
        Ok(Bus {
            inner: Arc::new(Inner {
                client,
                config,
                partitions: Mutex::new(HashMap::new()),
                clients: PerPartition::default(),
                producers: PerPartition::default(),
                gates: PerPartition::default(),
                round_robin: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// The topics on the cluster (internal topics left out), sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let topics = tokio::time::timeout(self.op_timeout(), self.inner.client.list_topics())
            .await
            .map_err(|_| self.timed_out("listing topics".into()))?
            .map_err(|e| Error::kafka("listing topics", &e))?;
        let mut out: Vec<TopicInfo> = topics
            .into_iter()
            .map(|t| TopicInfo {
                name: t.name,
                partitions: t.partitions.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        let mut cache = lock(&self.inner.partitions);
        cache.clear();
        for t in &out {
            cache.insert(t.name.clone(), t.partitions.len() as i32);
        }
        Ok(out)
    }

    /// Creates every topic of `specs` that does not exist, with its partitions, retention and
    /// cleanup policy; returns the names created. Existing topics are left as they are.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<Vec<String>> {
        for s in specs {
            s.validate()?;
        }
        let existing: Vec<String> = self
            .list_topics()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        let c = &self.inner.config;
        let mut created = Vec::new();
        for spec in specs.iter().filter(|s| !existing.contains(&s.name)) {
            if admin::create_topic(&c.bootstrap, &c.client_id, c.request_timeout, spec).await? {
                created.push(spec.name.clone());
            }
        }
        if !created.is_empty() {
            // Wait until the metadata shows every partition (creation is asynchronous on Kafka).
            let deadline = tokio::time::Instant::now() + c.request_timeout;
            loop {
                let topics = self.list_topics().await?;
                let missing = specs.iter().find(|s| {
                    !topics
                        .iter()
                        .any(|t| t.name == s.name && t.partitions.len() as i32 >= s.partitions)
                });
                match missing {
                    None => break,
                    Some(s) if tokio::time::Instant::now() >= deadline => {
                        return Err(Error::TopicSetup {
                            topic: s.name.clone(),
                            reason:
                                "created, but its partitions did not appear in the metadata in time"
                                    .into(),
                        });
                    }
                    Some(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
            for name in &created {
                self.forget_topic(name);
            }
            // Partition counts were refreshed by the final list_topics above.
            self.list_topics().await?;
        }
        Ok(created)
    }

    /// The broker-side configs of a topic (e.g. `retention.ms`, `cleanup.policy`).
    pub async fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let c = &self.inner.config;
        admin::describe_topic_configs(&c.bootstrap, &c.client_id, c.request_timeout, topic).await
    }

    /// Deletes a topic (tests and tooling).
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let ctl = self
            .inner
            .client
            .controller_client()
            .map_err(|e| Error::kafka("deleting a topic", &e))?;
        ctl.delete_topic(topic, 5_000)
            .await
            .map_err(|e| Error::kafka(format!("deleting topic {topic}"), &e))?;
        self.forget_topic(topic);
        lock(&self.inner.partitions).remove(topic);
        Ok(())
    }

    /// Number of partitions of `topic` ([`Error::UnknownTopic`] when it does not exist).
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        if let Some(n) = lock(&self.inner.partitions).get(topic) {
            return Ok(*n);
        }
        // Boxed so the (rare) metadata fetch does not make every caller's future large.
        Box::pin(self.list_topics()).await?;
        lock(&self.inner.partitions)
            .get(topic)
            .copied()
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_string(),
            })
    }

    /// The partition a record with `key` goes to (round robin without a key).
    pub async fn partition_of(&self, topic: &str, key: Option<&str>) -> Result<i32> {
        let n = self.partition_count(topic).await?;
        Ok(match key {
            Some(k) => partition_for(k.as_bytes(), n),
            None => (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % n as u64) as i32,
        })
    }

    /// The offset the next record of a partition will get (the high watermark).
    pub async fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64> {
        let pc = self.partition_client(topic, partition).await?;
        pc.get_offset(OffsetAt::Latest)
            .await
            .map_err(|e| Error::kafka("reading the high watermark", &e))
    }

    /// The earliest offset still stored in a partition.
    pub async fn low_watermark(&self, topic: &str, partition: i32) -> Result<i64> {
        let pc = self.partition_client(topic, partition).await?;
        pc.get_offset(OffsetAt::Earliest)
            .await
            .map_err(|e| Error::kafka("reading the low watermark", &e))
    }

    pub(crate) async fn partition_client(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>> {
        if let Some(pc) = self.inner.clients.get(topic, partition) {
            return Ok(pc);
        }
        let pc = tokio::time::timeout(
            self.op_timeout(),
            self.inner
                .client
                .partition_client(topic, partition, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|_| self.timed_out(format!("connecting to {topic}/{partition}")))?
        .map_err(|e| Error::kafka(format!("connecting to {topic}/{partition}"), &e))?;
        Ok(self
            .inner
            .clients
            .get_or_insert(topic, partition, Arc::new(pc)))
    }

    async fn producer(&self, topic: &str, partition: i32) -> Result<Arc<Producer>> {
        if let Some(p) = self.inner.producers.get(topic, partition) {
            return Ok(p);
        }
        // Boxed: connecting is rare and its future is large; inlined, it would make every
        // `send` future that large (tests/producer.rs `a_send_future_stays_small`).
        let pc = Box::pin(self.partition_client(topic, partition)).await?;
        let c = &self.inner.config;
        let serial = SerialPartition {
            client: pc,
            gate: self.gate(topic, partition),
        };
        let p = BatchProducerBuilder::new_with_client(Arc::new(serial))
            .with_linger(c.linger)
            .with_compression(c.compression.to_rskafka())
            .build(RecordAggregator::new(c.batch_size));
        Ok(self
            .inner
            .producers
            .get_or_insert(topic, partition, Arc::new(p)))
    }

    /// Bound of one operation including the client's own retries.
    pub(crate) fn op_timeout(&self) -> std::time::Duration {
        let c = &self.inner.config;
        c.retry.max_elapsed + c.request_timeout
    }

    pub(crate) fn timed_out(&self, context: String) -> Error {
        Error::Broker {
            context,
            reason: format!("no answer within {:?}", self.op_timeout()),
            retriable: true,
        }
    }

    fn gate(&self, topic: &str, partition: i32) -> Gate {
        match self.inner.gates.get(topic, partition) {
            Some(g) => g,
            None => self
                .inner
                .gates
                .get_or_insert(topic, partition, Gate::default()),
        }
    }

    /// Drops cached clients of a topic (after it vanished or was recreated).
    pub(crate) fn forget_topic(&self, topic: &str) {
        self.inner.clients.remove_topic(topic);
        self.inner.producers.remove_topic(topic);
        lock(&self.inner.partitions).remove(topic);
    }

    pub(crate) fn check_size(&self, msg: &OutgoingMessage) -> Result<()> {
        let limit = self.inner.config.max_message_size;
        let size = msg.size();
        if size > limit {
            return Err(Error::MessageTooLarge {
                topic: msg.topic.clone(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Sends a message; resolves when the broker has acknowledged it, with where it was
    /// stored. Messages sent concurrently are batched (linger, size bound) and compressed.
    /// Oversized messages are refused before sending; retriable errors are retried with
    /// backoff per the retry policy.
    pub async fn send(&self, msg: OutgoingMessage) -> Result<Delivery> {
        self.check_size(&msg)?;
        let partition = self.partition_of(&msg.topic, msg.key.as_deref()).await?;
        let topic = msg.topic.as_str();
        let msg = &msg;
        let attempt = || {
            // Built per attempt: one copy of the value on the (usual) first-attempt path.
            let record = to_record(msg);
            async move {
                let producer = self.producer(topic, partition).await?;
                let produced = tokio::time::timeout(self.op_timeout(), producer.produce(record))
                    .await
                    .map_err(|_| self.timed_out(format!("sending to {topic}")))?;
                match produced {
                    Ok(offset) => Ok(Delivery { partition, offset }),
                    Err(e) => {
                        let err = match &e {
                            rskafka::client::producer::Error::Client(c) => {
                                Error::kafka(format!("sending to {topic}"), c)
                            }
                            other => Error::Broker {
                                context: format!("sending to {topic}"),
                                reason: other.to_string().to_lowercase(),
                                retriable: false,
                            },
                        };
                        if matches!(err, Error::UnknownTopic { .. }) || err.is_retryable() {
                            self.forget_topic_clients(topic, partition);
                        }
                        Err(err)
                    }
                }
            }
        };
        attempt
            .retry(self.inner.config.retry.backoff())
            .when(Error::is_retryable)
            .await
    }

    /// Sends an event to `topic` (see [`OutgoingMessage::event`]).
    pub async fn send_event(&self, topic: &str, event: &EventEnvelope) -> Result<Delivery> {
        self.send(OutgoingMessage::event(topic, event)?).await
    }

    /// Sends records of one partition in one request, in order, without linger; returns their
    /// offsets. Used by the relay so a failed request leaves nothing after it published.
    pub(crate) async fn produce_to_partition(
        &self,
        topic: &str,
        partition: i32,
        msgs: &[OutgoingMessage],
    ) -> Result<Vec<i64>> {
        let pc = self.partition_client(topic, partition).await?;
        let records = msgs.iter().map(to_record).collect();
        let gate = self.gate(topic, partition);
        let _turn = gate.lock().await;
        let res = match tokio::time::timeout(
            self.op_timeout(),
            pc.produce(records, self.inner.config.compression.to_rskafka()),
        )
        .await
        {
            Ok(r) => r.map_err(|e| Error::kafka(format!("sending to {topic}/{partition}"), &e)),
            Err(_) => Err(self.timed_out(format!("sending to {topic}/{partition}"))),
        };
        if let Err(e) = &res
            && (matches!(e, Error::UnknownTopic { .. }) || e.is_retryable())
        {
            self.forget_topic_clients(topic, partition);
        }
        res
    }

    fn forget_topic_clients(&self, topic: &str, partition: i32) {
        self.inner.clients.remove(topic, partition);
        self.inner.producers.remove(topic, partition);
    }
}

fn to_record(msg: &OutgoingMessage) -> Record {
    Record {
        key: msg.key.as_ref().map(|k| k.as_bytes().to_vec()),
        value: Some(msg.value.clone()),
        headers: msg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect(),
        timestamp: chrono::Utc::now(),
    }
}
