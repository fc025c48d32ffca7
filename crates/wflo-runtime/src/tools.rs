//! Tools: Rust functions the embedding program registers, with optional compensations that a
//! rollback runs in reverse order.

use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

/// A registered function a `tool` step (or `ctx.tool`) calls.
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Does the work; the error text is recorded on the step.
    async fn call(&self, input: Value) -> Result<Value, String>;

    /// Undoes a completed call (during a rollback). The default does nothing.
    async fn compensate(&self, _input: &Value, _output: &Value) -> Result<(), String> {
        Ok(())
    }

    /// Whether [`Tool::compensate`] does something.
    fn compensable(&self) -> bool {
        false
    }
}

type CallFn = dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync;
type CompFn = dyn Fn(Value, Value) -> BoxFuture<'static, Result<(), String>> + Send + Sync;

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
    /// A tool calling `f`.
    pub fn new<F, Fut>(f: F) -> FnTool
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, String>> + Send + 'static,
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
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.compensate = Some(Arc::new(move |i, o| Box::pin(f(i, o))));
        self
    }
}

#[async_trait::async_trait]
impl Tool for FnTool {
    async fn call(&self, input: Value) -> Result<Value, String> {
        (self.call)(input).await
    }

    async fn compensate(&self, input: &Value, output: &Value) -> Result<(), String> {
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
    fn step_started(&self, _step: &str, _kind: &str, _attempt: i32) {}
    /// A step ended (COMPLETED or FAILED) with its cost.
    fn step_finished(&self, _step: &str, _status: &str, _cost_usd: rust_decimal::Decimal) {}
    /// A step's stored output was reused (resume).
    fn step_reused(&self, _step: &str) {}
    /// The run waits for a decision.
    fn waiting_for_approval(&self, _approval: uuid::Uuid, _message: &str) {}
    /// Spend changed.
    fn spend(&self, _total_usd: rust_decimal::Decimal, _budget_usd: Option<rust_decimal::Decimal>) {
    }
}
