//! Activities: the side effects of the workflows. Thin: every step of a Wflo execution (a
//! definition's steps, a code run's one `code` step) is wflo-runtime's step logic, driven
//! through its one-step API.
#![allow(unreachable_pub)]

use crate::types::{
    ApprovalTicket, CODE_STEP, CancelExecution, CloseApproval, CodeExecutionOutput,
    CodeExecutionRequest, CodeRun, FinishExecution, PlannedStep, StepDone, StepRef, WfloInput,
    WfloOutcome,
};
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Marks an error as not worth retrying (bad input, misconfiguration).
pub(crate) fn non_retryable(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::non_retryable(std::io::Error::other(
        message.into(),
    )))
}

/// A failure the retry policy may try again (infrastructure).
pub(crate) fn retryable(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(std::io::Error::other(
        message.into(),
    )))
}

/// The activities every wflo worker registers.
#[derive(Clone)]
pub struct WfloActivities {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Option<wflo_runtime::Engine>,
}

impl WfloActivities {
    pub(crate) fn new(engine: Option<wflo_runtime::Engine>) -> Self {
        WfloActivities {
            shared: Arc::new(Shared { engine }),
        }
    }

    fn engine(&self) -> Result<&wflo_runtime::Engine, ActivityError> {
        self.shared.engine.as_ref().ok_or_else(|| {
            non_retryable(
                "this worker has no wflo engine: give the worker one (WorkerBuilder::engine) to run WfloWorkflow or CodeExecutionWorkflow",
            )
        })
    }
}

/// Refusals, decisions and a step that used up its own attempts (a failed program included)
/// are final; what failed around the step (the database, the sandbox's daemon) may be retried.
fn runtime_error(e: &wflo_runtime::Error) -> ActivityError {
    if e.is_retryable() {
        retryable(e.to_string())
    } else {
        non_retryable(e.to_string())
    }
}

/// Runs `work` while heartbeating, so a cancelled workflow drops it (a code step's container
/// is removed with it).
async fn heartbeating<T>(
    ctx: &ActivityContext,
    work: impl std::future::Future<Output = Result<T, ActivityError>>,
) -> Result<T, ActivityError> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let _ = ctx.record_heartbeat(()).await;
            }
        }
    }
}

fn ticket(t: wflo_runtime::ApprovalTicket) -> ApprovalTicket {
    ApprovalTicket {
        approval_id: t.approval_id,
        message: t.message,
        pending: t.pending,
        timeout: t.timeout,
    }
}

#[activities]
impl WfloActivities {
    /// The seed's greeting.
    #[activity]
    pub async fn greet(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
        Ok(format!("Hello, {name}! Workflow executed successfully."))
    }

    /// Runs a program as the one `code` step of an execution (`CodeExecutionWorkflow`):
    /// opens the execution of the code definition under the run's id (the same id again is the
    /// same execution), runs the step through wflo-runtime (memoized, its `sandbox.execution`
    /// event written with the step's update, limits from the engine's sandbox configuration)
    /// and completes the execution. Heartbeats while the program runs, so a cancelled workflow
    /// stops the container.
    #[activity]
    pub async fn run_code(
        self: Arc<Self>,
        ctx: ActivityContext,
        run: CodeRun,
    ) -> Result<CodeExecutionOutput, ActivityError> {
        let engine = self.engine()?.clone();
        let def = CodeExecutionRequest::definition().map_err(|e| non_retryable(e.to_string()))?;
        heartbeating(&ctx, async move {
            let id = run.execution_id;
            engine
                .open_execution(&def, id, run.request.inputs(), None)
                .await
                .map_err(|e| runtime_error(&e))?;
            let report = engine
                .run_step(id, CODE_STEP)
                .await
                .map_err(|e| runtime_error(&e))?;
            let output: wflo_types::CodeOutput = serde_json::from_value(report.output.clone())
                .map_err(|e| {
                    non_retryable(format!(
                        "the code step of execution {id} stored an output this worker cannot read ({e}); upgrade the worker"
                    ))
                })?;
            engine
                .finish_execution(id, Ok(serde_json::json!({ CODE_STEP: report.output })))
                .await
                .map_err(|e| runtime_error(&e))?;
            Ok(CodeExecutionOutput::of(id, output))
        })
        .await
    }

    /// Saves the execution (the save-execution activity): validates and stores the definition,
    /// creates the execution under the run's id (the same id again is the same execution) and
    /// marks it RUNNING. Returns the steps in run order.
    #[activity]
    pub async fn open_execution(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: WfloInput,
    ) -> Result<Vec<PlannedStep>, ActivityError> {
        let def = wflo_runtime::WorkflowDef::from_json(&input.definition)
            .map_err(|e| non_retryable(e.to_string()))?;
        let plan = self
            .engine()?
            .open_execution(&def, input.execution_id, input.inputs, input.budget_usd)
            .await
            .map_err(|e| runtime_error(&e))?;
        Ok(plan
            .into_iter()
            .map(|p| PlannedStep {
                id: p.id,
                approval: p.approval,
            })
            .collect())
    }

    /// Runs one step through wflo-runtime (memoized: a completed step returns its stored
    /// output; a paid LLM response is never requested again).
    #[activity]
    pub async fn run_step(
        self: Arc<Self>,
        ctx: ActivityContext,
        step: StepRef,
    ) -> Result<StepDone, ActivityError> {
        let engine = self.engine()?.clone();
        heartbeating(&ctx, async move {
            let r = engine
                .run_step(step.execution_id, &step.step)
                .await
                .map_err(|e| runtime_error(&e))?;
            Ok(StepDone {
                output: r.output,
                cost_usd: r.cost_usd,
            })
        })
        .await
    }

    /// Opens (or finds) the approval request of an approval step; auto-approval rules apply.
    #[activity]
    pub async fn open_approval(
        self: Arc<Self>,
        _ctx: ActivityContext,
        step: StepRef,
    ) -> Result<ApprovalTicket, ActivityError> {
        self.engine()?
            .open_approval(step.execution_id, &step.step)
            .await
            .map(ticket)
            .map_err(|e| runtime_error(&e))
    }

    /// Decides an approval from a signal (a decision taken elsewhere first stands), or applies
    /// its timeout policy. An escalation returns the new pending request.
    #[activity]
    pub async fn close_approval(
        self: Arc<Self>,
        _ctx: ActivityContext,
        close: CloseApproval,
    ) -> Result<ApprovalTicket, ActivityError> {
        let decision = close
            .decision
            .as_ref()
            .map(|(approve, s)| (*approve, s.approver.as_str(), s.reason.clone()));
        self.engine()?
            .close_approval(close.approval_id, decision)
            .await
            .map(ticket)
            .map_err(|e| runtime_error(&e))
    }

    /// Ends the execution COMPLETED with its outputs, or FAILED with the error.
    #[activity]
    pub async fn finish_execution(
        self: Arc<Self>,
        _ctx: ActivityContext,
        finish: FinishExecution,
    ) -> Result<WfloOutcome, ActivityError> {
        let o = self
            .engine()?
            .finish_execution(finish.execution_id, finish.result)
            .await
            .map_err(|e| runtime_error(&e))?;
        Ok(WfloOutcome {
            execution_id: o.execution_id,
            status: o.status.to_string(),
            outputs: o.outputs,
            cost_usd: o.cost_usd,
        })
    }

    /// Marks the execution CANCELLED and releases its open budget reservations.
    #[activity]
    pub async fn cancel_execution(
        self: Arc<Self>,
        _ctx: ActivityContext,
        cancel: CancelExecution,
    ) -> Result<(), ActivityError> {
        self.engine()?
            .cancel_execution(cancel.execution_id, &cancel.reason)
            .await
            .map_err(|e| runtime_error(&e))
    }

    /// Does nothing (benchmarks measure the engine, not the work).
    #[activity]
    pub async fn noop(_ctx: ActivityContext, step: u32) -> Result<u32, ActivityError> {
        Ok(step)
    }
}
