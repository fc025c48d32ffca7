//! # wflo-runtime — the step logic and the in-process engine
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! The step logic both engines drive is written once, here:
//!
//! * **LLM steps** reserve their worst-case cost (counted prompt tokens at the input price plus
//!   max output tokens at the output price) in every budget that applies *before* the call, look
//!   the request up in the response cache, call the provider, record the paid response, settle
//!   the actual usage, and write the step row and its events through the outbox;
//! * **code steps** run in the locked-down sandbox; **tool steps** call registered Rust
//!   functions (with optional compensations); **approval steps** create a durable, fingerprinted
//!   request and wait for a decision or the timeout policy; **checkpoints** snapshot the state.
//!
//! Every step is memoized durably by its id: rerunning an execution after a crash reuses each
//! completed step's stored output and resumes at the first incomplete one — a paid LLM call is
//! never repeated. [`Engine::rollback`] restores a snapshot, runs compensations in reverse, and
//! lets the execution continue from there.
//!
//! The [`Engine`] runs a YAML [`WorkflowDef`] or a Rust closure (`ctx.llm(..)`, `ctx.code(..)`,
//! `ctx.checkpoint(..)`, `ctx.approval(..)`, `ctx.tool(..)`). An engine that keeps the run's
//! control flow itself (wflo-temporal) drives the same step logic one step at a time:
//! [`Engine::open_execution`], [`Engine::run_step`], [`Engine::open_approval`] /
//! [`Engine::close_approval`] around its own wait, [`Engine::finish_execution`] and
//! [`Engine::cancel_execution`] — each idempotent, as retries and replays need.

mod context;
mod definition;
mod durable;
mod engine;
mod error;
mod events;
mod lease;
mod template;
mod tools;

pub use context::{ApprovalCall, CodeCall, Ctx, LlmCall, action_fingerprint, extract_code};
pub use definition::{
    ApprovalPolicy, InputDef, Policies, RetryPolicy, StepDef, StepKind, WorkflowBuilder,
    WorkflowDef,
};
pub use durable::{ApprovalTicket, PlannedStep, StepReport};
pub use engine::{
    Engine, EngineBuilder, EngineConfig, EngineConfigBuilder, RollbackOutcome, RunOptions,
    RunOutcome,
};
pub use error::{Error, Result};
pub use events::SOURCE as EVENT_SOURCE;
pub use tools::{FnTool, Observer, Tool, ToolError};
