//! The one error type of wflo-runtime.

use rust_decimal::Decimal;

/// What can go wrong running a workflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The definition is invalid; names the step and its line when known.
    #[error("invalid workflow definition{}{}: {message}",
        step.as_ref().map(|s| format!(" in step `{s}`")).unwrap_or_default(),
        line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Definition {
        /// The step at fault.
        step: Option<String>,
        /// Its line in the YAML file.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The next call would overshoot a budget; it was not made.
    #[error(
        "step `{step}` was stopped before its call: budget `{scope}` has {limit} USD, {spent} spent \
         and {reserved} reserved, and the call may cost up to {requested} USD; raise the budget \
         (--budget) or lower max_tokens"
    )]
    BudgetExceeded {
        /// The step.
        step: String,
        /// The budget that refused.
        scope: String,
        /// Its limit.
        limit: Decimal,
        /// Spent so far.
        spent: Decimal,
        /// Held by calls in flight.
        reserved: Decimal,
        /// The worst-case cost of the call.
        requested: Decimal,
    },
    /// A step failed after its attempts.
    #[error("step `{step}` failed after {attempts} attempt(s): {message}")]
    StepFailed {
        /// The step.
        step: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// A human (or a timeout policy) rejected the step.
    #[error("step `{step}` was rejected by {by}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Rejected {
        /// The step.
        step: String,
        /// Who rejected (`system:timeout` for a timeout policy).
        by: String,
        /// Why.
        reason: Option<String>,
    },
    /// An approval was given for a different action than the one about to run.
    #[error(
        "approval {approval} of step `{step}` was given for another action (fingerprint {approved}, \
         now {current}); request a new approval"
    )]
    StaleApproval {
        /// The step.
        step: String,
        /// The approval request.
        approval: wflo_types::ApprovalId,
        /// The fingerprint that was approved.
        approved: String,
        /// The fingerprint of the action now.
        current: String,
    },
    /// A second decision of an approval: the first one stands.
    #[error(
        "approval {approval} was already decided ({status} by {by}{}); a decision is taken once",
        at.map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default()
    )]
    AlreadyDecided {
        /// The approval request.
        approval: wflo_types::ApprovalId,
        /// The decision that stands.
        status: wflo_db::ApprovalStatus,
        /// Who took it.
        by: String,
        /// When.
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A time limit passed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What.
        what: String,
        /// The limit.
        after: std::time::Duration,
    },
    /// Something the run needs is not configured.
    #[error("{0}")]
    NotConfigured(String),
    /// A row or object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A tool step failed.
    #[error("tool `{tool}` failed: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// Its error.
        message: String,
        /// Whether the tool said another call may succeed.
        retryable: bool,
    },
    /// An operation that the execution's state does not allow.
    #[error("{0}")]
    InvalidState(String),
    /// The database.
    #[error(transparent)]
    Db(#[from] wflo_db::Error),
    /// Prices, budgets and the cost ledger.
    #[error(transparent)]
    Cost(wflo_cost::Error),
    /// The LLM provider.
    #[error(transparent)]
    Llm(#[from] wflo_llm::Error),
    /// The sandbox.
    #[error(transparent)]
    Sandbox(#[from] wflo_sandbox::Error),
    /// The response cache.
    #[error(transparent)]
    Cache(#[from] wflo_cache::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<wflo_cost::Error> for Error {
    fn from(e: wflo_cost::Error) -> Self {
        Error::Cost(e)
    }
}

impl Error {
    /// Whether retrying may help (refusals and decisions are final). One layer retries each
    /// failure: an LLM error is retried by the step only when its provider did not already
    /// retry it (the HTTP providers retry 429, 5xx, timeouts and broken connections themselves;
    /// an error they gave up on, or a 401, is not asked again); a step that used up its own
    /// attempts (`StepFailed`) is not run again by an outer layer (a Temporal activity), which
    /// retries only what failed around the step (the database, the sandbox's daemon).
    pub fn is_retryable(&self) -> bool {
        if let Error::Llm(e) = self {
            return e.is_retryable() && e.attempts().is_none_or(|n| n <= 1);
        }
        !matches!(
            self,
            Error::Definition { .. }
                | Error::BudgetExceeded { .. }
                | Error::Rejected { .. }
                | Error::StaleApproval { .. }
                | Error::AlreadyDecided { .. }
                | Error::Db(wflo_db::Error::LeaseLost { .. })
                | Error::Db(wflo_db::Error::Leased { .. })
                | Error::NotConfigured(_)
                | Error::InvalidState(_)
                | Error::Cost(_)
                // The step's own retry policy has run its course.
                | Error::StepFailed { .. }
                | Error::Tool {
                    retryable: false,
                    ..
                }
        )
    }
}
