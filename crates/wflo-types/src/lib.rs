//! Wflo's shared vocabulary: the words two or more crates use, defined once.
//!
//! Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.
//!
//! * Ids: [`ExecutionId`], [`StepId`], [`ApprovalId`], [`SnapshotId`], [`ReservationId`], each a
//!   newtype over a UUID, so one cannot be passed where another is expected.
//! * [`status`]: the status enums of executions, steps, approvals and rollbacks, with the
//!   transitions each allows.
//! * [`TokenUsage`]: what one LLM call used, in one shape from the provider to the ledger.
//! * [`event`]: the event envelope every Wflo event travels in, and every typed payload.
//! * [`step`]: step kinds and the typed outputs each kind stores.
//! * [`Role`]: what an API token may do.
//! * [`Usd`]: money, an exact decimal amount of US dollars, never a float.
//! * Two helpers several crates need byte for byte alike: [`canonical_json`] (the text that
//!   cache keys and cassette hashes are computed from) and [`redact_url`] (a URL's password
//!   out of messages and logs).
//!
//! It is a leaf: it depends on none of Wflo's crates and does no IO, so every crate may use it
//! and a contract crosses layers as one of these types, not as JSON read by string key.

#[macro_use]
mod macros;

pub mod access;
mod canonical;
pub mod event;
mod ids;
mod redact;
pub mod status;
pub mod step;
mod usage;

pub use access::Role;
pub use canonical::canonical_json;
pub use event::{
    AlertType, ApprovalPayload, AuditPayload, CostPayload, EventEnvelope, EventPayload, EventType,
    RunLabels, SCHEMA_VERSION, SandboxPayload, StepStatusPayload, WorkflowStatusPayload,
};
pub use ids::{ApprovalId, ExecutionId, ReservationId, SnapshotId, StepId};
pub use redact::redact_url;
pub use status::{ApprovalStatus, ExecutionStatus, RollbackStatus, StepStatus};
pub use step::{
    ApprovalOutput, CheckpointOutput, CodeOutput, LlmOutput, StepKind, StepOutput, ToolOutput,
};
pub use usage::TokenUsage;

/// An exact amount of US dollars (never a float; stored as integer nano-USD).
pub type Usd = rust_decimal::Decimal;

/// Topic names: which stream each kind of event belongs on.
pub mod topic {
    /// Workflow status changes.
    pub const WORKFLOWS: &str = "wflo.workflows";
    /// Step status changes.
    pub const STEPS: &str = "wflo.steps";
    /// Costs and budget alerts.
    pub const COSTS: &str = "wflo.costs";
    /// Sandbox executions.
    pub const SANDBOX: &str = "wflo.sandbox";
    /// Approvals requested, decided, expired.
    pub const APPROVALS: &str = "wflo.approvals";
    /// The audit trail.
    pub const AUDIT: &str = "wflo.audit";
    /// Metrics and events of unknown type.
    pub const METRICS: &str = "wflo.metrics";
}

/// Message header carrying the event id.
pub const HEADER_EVENT_ID: &str = "wflo-event-id";
/// Message header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "wflo-event-type";

/// What can go wrong reading the vocabulary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event or output whose JSON does not match its schema.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A stored text that is not one of an enum's values.
    #[error("`{value}` is not a valid {what}; expected one of {expected}")]
    UnknownValue {
        /// The enum.
        what: &'static str,
        /// The text read.
        value: String,
        /// Its values.
        expected: String,
    },
    /// A text that is not the UUID an id is.
    #[error(
        "`{value}` is not a valid {what}; expected a uuid such as 0190c5f2-7a3e-7cc1-8d2b-3f6a1e0b9c4d"
    )]
    InvalidId {
        /// The kind of id.
        what: &'static str,
        /// The text read.
        value: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
