//! Tools: Rust functions the embedding program registers, with optional compensations that a
//! rollback runs in reverse order.

use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use wflo_types::{StepKind, StepStatus};

/// Why a tool call failed, and whether the step's retry policy may call it again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    message: String,
    retryable: bool,
}

impl ToolError {
    /// A failure another attempt may not see (the step's retry policy applies).
    pub fn new(message: impl Into<String>) -> ToolError {
        ToolError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry helps (bad input, refused by the other side): the step fails now.
    pub fn permanent(message: impl Into<String>) -> ToolError {
        ToolError {
            message: message.into(),
            retryable: false,
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the step's retry policy may call the tool again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::new(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::new(message)
    }
}

/// A registered function a `tool` step (or `ctx.tool`) calls.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Does the work; the error's text is recorded on the step, and whether it is retryable
    /// decides if the step's retry policy calls again.
    async fn call(&self, input: Value) -> Result<Value, ToolError>;

    /// Undoes a completed call (during a rollback). The default does nothing.
    async fn compensate(&self, _input: &Value, _output: &Value) -> Result<(), ToolError> {
        Ok(())
    }

    /// Whether [`Tool::compensate`] does something.
    fn compensable(&self) -> bool {
        false
    }
}

type CallFn = dyn Fn(Value) -> BoxFuture<'static, Result<Value, ToolError>> + Send + Sync;
type CompFn = dyn Fn(Value, Value) -> BoxFuture<'static, Result<(), ToolError>> + Send + Sync;

/// A [`Tool`] made of closures.
pub struct FnTool {
    call: Arc<CallFn>,
    compensate: Option<Arc<CompFn>>,
}

impl std::fmt::Debug for FnTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTool")
            .field("compensable", &self.compensate.is_some())
            .finish()
    }
}

impl FnTool {
    /// A tool calling `f` (a `String` or `&str` becomes a retryable [`ToolError`] with
    /// `.into()`).
    pub fn new<F, Fut>(f: F) -> FnTool
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        FnTool {
            call: Arc::new(move |v| Box::pin(f(v))),
            compensate: None,
        }
    }

    /// Adds the compensation: called with the step's input and output during a rollback.
    pub fn with_compensation<F, Fut>(mut self, f: F) -> FnTool
    where
        F: Fn(Value, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), ToolError>> + Send + 'static,
    {
        self.compensate = Some(Arc::new(move |i, o| Box::pin(f(i, o))));
        self
    }
}

#[async_trait::async_trait]
impl Tool for FnTool {
    async fn call(&self, input: Value) -> Result<Value, ToolError> {
        (self.call)(input).await
    }

    async fn compensate(&self, input: &Value, output: &Value) -> Result<(), ToolError> {
        match &self.compensate {
            Some(c) => c(input.clone(), output.clone()).await,
            None => Ok(()),
        }
    }

    fn compensable(&self) -> bool {
        self.compensate.is_some()
    }
}

/// Follows a run: the CLI draws its progress display from these.
pub trait Observer: Send + Sync + 'static {
    /// A step attempt started.
    fn step_started(&self, _step: &str, _kind: StepKind, _attempt: i32) {}
    /// A step attempt ended (COMPLETED or FAILED) with its cost.
    fn step_finished(&self, _step: &str, _status: StepStatus, _cost_usd: rust_decimal::Decimal) {}
    /// A step's stored output was reused (resume).
    fn step_reused(&self, _step: &str) {}
    /// The run waits for a decision.
    fn waiting_for_approval(&self, _approval: wflo_types::ApprovalId, _message: &str) {}
    /// Spend changed.
    fn spend(&self, _total_usd: rust_decimal::Decimal, _budget_usd: Option<rust_decimal::Decimal>) {
    }
}
