//! # wflo-bus — Wflo's events on Kafka
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! Operators and other systems follow agents through events: status changes, costs, sandbox
//! runs, approvals, audit. This crate makes sure none is lost:
//!
//! * [`EventEnvelope`] — the schema-versioned JSON envelope with typed payloads
//!   ([`EventPayload`]); unknown fields are tolerated, unknown types read as raw.
//! * [`Bus`] — the connection: [`Bus::ensure_topics`] creates Wflo's topics
//!   ([`standard_topics`]) with their partitions, retention and cleanup policy;
//!   [`Bus::send`] batches (linger, size bound), compresses, partitions by key hash (Kafka's
//!   murmur2) and resolves only when the broker acknowledged, with partition and offset.
//! * [`Relay`] — publishes the wflo-db outbox (events written in the same transaction as
//!   the state change) in id order, marking rows published only after acknowledgement; a
//!   broker outage means backoff, never loss or per-key reordering.
//! * [`Consumer`] — per-partition streams from the offset stored in wflo-db; a
//!   [`TxHandler`]'s effects, the event id (dedupe) and the next offset commit in one
//!   transaction; malformed or rejected records go to a dead-letter topic.
//!
//! rskafka is the Kafka client; no rskafka type appears in this crate's API.

mod admin;
mod bus;
mod config;
mod consumer;
mod error;
mod event;
mod partitioner;
mod relay;
mod topics;

pub use bus::{Bus, Delivery, HEADER_EVENT_ID, HEADER_EVENT_TYPE, OutgoingMessage};
pub use config::{BusConfig, BusConfigBuilder, Compression, RetryPolicy};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerConfigBuilder, ConsumerCounts, Event, HEADER_DLQ_GROUP,
    HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_REASON, HEADER_DLQ_TOPIC, Handler,
    HandlerError, Message, PartitionStream, StartFrom, TxHandler,
};
pub use error::{Error, Result};
pub use event::{
    AlertType, ApprovalPayload, AuditPayload, CostPayload, EventEnvelope, EventPayload, EventType,
    SCHEMA_VERSION, SandboxPayload, StepStatusPayload, WorkflowStatusPayload,
};
pub use relay::{Relay, RelayConfig, RelayConfigBuilder, RelayCounts};
pub use tokio_util::sync::CancellationToken;
pub use topics::{CleanupPolicy, TopicInfo, TopicSpec, dead_letter_name, names, standard_topics};
