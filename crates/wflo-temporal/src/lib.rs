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
//! Workflows: `SimpleWorkflow(name)` (the seed's greeting), `CodeExecutionWorkflow(code,
//! timeout, limits)` (wflo-sandbox through an activity with a retry policy), `ApprovalWorkflow`
//! (approve / reject signals, a `status` query, a durable timer applying the timeout policy),
//! and `NoopWorkflow(n)` (engine overhead). Workflow code is deterministic; every side effect is
//! an activity, and a run's retry policy is recorded in its history when it starts.
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
    ApprovalRequest, ApprovalSignal, ApprovalState, ApprovalStatus, CodeExecutionOutput,
    CodeExecutionRequest, CodeLimits, Decision, OnTimeout, PendingApproval, Poller, RunStatus,
    StartedRun, WfloOutcome, WfloStatus, WorkflowRun,
};
pub use worker::{TemporalWorker, WorkerBuilder, WorkerHandle};
