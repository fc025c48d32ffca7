//! # wflo-temporal — durable, distributed runs on Temporal
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! This is the only crate that knows the Temporal SDK (the official Rust SDK,
//! `temporalio-sdk` / `temporalio-client` 1.1); no Temporal type appears in its public API.
//!
//! * [`TemporalConfig`]: address, namespace (default `default`), task queue (default
//!   `wflo-tasks`), concurrency limits, activity retry policy — validated by its builder.
//! * [`TemporalWorker`]: registers the workflows and activities and polls the task queue,
//!   either on the caller's task ([`WorkerBuilder::run_until`], for `wflo worker` with a SIGTERM
//!   future) or on its own thread ([`WorkerBuilder::spawn`] → [`WorkerHandle`] with graceful
//!   [`shutdown`](WorkerHandle::shutdown)).
//! * [`TemporalClient`]: start, signal, query, cancel, await, describe and list runs.
//!
//! Temporal has one path for Wflo's work: wflo-runtime's step logic, driven one step at a
//! time through its idempotent one-step API (`open_execution`, `run_step`, `open_approval` /
//! `close_approval`, `finish_execution`, `cancel_execution`). Workflows:
//!
//! * `WfloWorkflow(definition, inputs, budget)`: a definition's steps, one activity each, in
//!   run order; an approval step waits for the one `approve` / `reject` signal
//!   ([`TemporalClient::approve`], [`TemporalClient::reject`]; the decision itself is the
//!   approval row's) or a durable timer applying its timeout policy. Queries: `status`,
//!   `current_step`, `cost`, `pending_approval`; signal `cancel_request`.
//! * `CodeExecutionWorkflow(code, timeout)`: one program as the one `code` step of an
//!   execution of the [`CODE_WORKFLOW`] definition — memoized, with its step row and its
//!   `sandbox.execution` event in the outbox, limits from the worker engine's sandbox
//!   configuration — returning the step's output ([`CodeExecutionOutput`]).
//! * `SimpleWorkflow(name)` (the seed's greeting) and `NoopWorkflow(n)` (engine overhead):
//!   probes that touch no database.
//!
//! Workflow code is deterministic; every side effect is an activity, and a run's retry policy
//! is recorded in its history when it starts.
//!
//! An unreachable server is [`Error::Unreachable`], naming the address and how to start a dev
//! server (`cargo xtask services up temporal`).

mod activities;
mod client;
mod config;
mod error;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod worker;
mod workflows;

pub use client::{TemporalClient, wflo_workflow_id};
pub use config::{
    ActivityRetry, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE, TemporalConfig,
    TemporalConfigBuilder,
};
pub use error::{Error, Result};
pub use types::{
    ApprovalSignal, CODE_STEP, CODE_WORKFLOW, CodeExecutionOutput, CodeExecutionRequest,
    PendingApproval, Poller, RunStatus, StartedRun, WfloOutcome, WfloStatus, WorkflowRun,
};
pub use worker::{TemporalWorker, WorkerBuilder, WorkerHandle};
