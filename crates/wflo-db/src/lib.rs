//! # wflo-db — Wflo's persistence layer
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! Everything Wflo remembers — workflow definitions, executions, steps, snapshots, approvals,
//! rollbacks, the transactional outbox and consumer offsets, API tokens, webhooks and their
//! deliveries — lives here, on PostgreSQL (production) or SQLite (the embedded default). Both
//! pass one conformance suite.
//!
//! * The schema is made only by the migrations in this crate; [`Db::connect`] refuses a
//!   database whose schema is newer than the build ([`Error::SchemaTooNew`]).
//! * Money is exact: `Decimal` dollars in the API, integer nano-USD in the database
//!   ([`money`]). Accumulation is one atomic `SET x = x + n` statement
//!   ([`Executions::add_cost`]).
//! * Status changes are conditional updates that enforce the state machines
//!   ([`ExecutionStatus::allowed_from`]); an approval is decided once.
//! * Repositories run on the pool or on a transaction ([`Executor`]): write a state change
//!   and its [`Outbox`] event through one [`Tx`] and they commit together. A step's status
//!   change and its events also have one call each ([`Steps::start_with_events`],
//!   [`Steps::transition_with_events`]): one statement on PostgreSQL, so a durable step costs
//!   one round trip per status change.
//! * SQLite files are put in write-ahead-log mode with `synchronous = FULL`: each commit is one
//!   sync of the log and survives a power loss, as in the default rollback-journal mode (which
//!   syncs both the journal and the database file on every commit). `synchronous = NORMAL` would skip that sync and stay safe against a process
//!   crash, but a power loss could take back the last commits — a RUNNING step, or a paid LLM
//!   response — so it is not used. A [`Tx`] on SQLite is `BEGIN IMMEDIATE`.
//!
//! ```no_run
//! # async fn demo() -> wflo_db::Result<()> {
//! use wflo_db::{Db, DbConfig, Executor, NewDefinition, NewExecution};
//! let db = Db::connect(&DbConfig::builder("sqlite::memory:").build()?).await?;
//! let def = db.definitions().create(NewDefinition::new("triage", serde_json::json!({"steps": []}))).await?;
//! let tx = db.begin().await?;
//! let exec = tx.executions().create(NewExecution::new(def.id, serde_json::json!({}))).await?;
//! tx.commit().await?;
//! assert_eq!(db.executions().get(exec.id).await?.status.as_str(), "PENDING");
//! # Ok(()) }
//! ```
//!
//! No sea-orm or sqlx type appears in this crate's public API.

mod db;
mod entity;
mod error;
mod migration;
pub mod money;
mod repo;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Backend, Db, DbConfig, DbConfigBuilder, Executor, SchemaStatus, Tx, redact};
pub use error::{Error, Result};
pub use repo::*;
/// The ids rows carry and repositories take (the shared vocabulary's types).
pub use wflo_types::{ApprovalId, ExecutionId, ReservationId, SnapshotId, StepId};
