//! The workflows. Workflow code is deterministic: no IO, no wall clock, no randomness; every
//! side effect is an activity, every wait a durable timer or a condition on signalled state.
#![allow(unreachable_pub)]

use crate::activities::WfloActivities;
use crate::types::{
    ActivityPolicy, ApprovalSignal, CancelExecution, CloseApproval, CodeExecutionOutput,
    CodeExecutionRequest, CodeRun, FinishExecution, PendingApproval, PlannedStep, StepRef,
    WfloInput, WfloOutcome, WfloStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::{
    ActivityCancellationType, ActivityOptions, LocalActivityOptions, SyncWorkflowContext,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination, workflows::select,
};

/// Activity options from a run's recorded policy; `extra` is added to the start-to-close
/// timeout (a code run's own timeout).
pub(crate) fn activity_options(policy: &ActivityPolicy, extra: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(policy.start_to_close + extra)
        .retry_policy(retry_policy(policy))
        .build()
}

/// The retry policy a run recorded when it started.
fn retry_policy(policy: &ActivityPolicy) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(policy.initial_interval)
        .backoff_coefficient(policy.backoff_coefficient)
        .maximum_interval(policy.maximum_interval)
        .maximum_attempts(policy.maximum_attempts)
        .build()
}

/// Local-activity options from a run's recorded policy: for the short database steps of
/// `WfloWorkflow` (saving, approvals, finishing), which then need no task-queue round trip.
pub(crate) fn local_options(policy: &ActivityPolicy) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .retry_policy(retry_policy(policy))
        .start_to_close_timeout(policy.start_to_close)
        .build()
}

/// `SimpleWorkflow(name)`: "Hello, {name}! Workflow executed successfully." through an activity.
#[workflow]
#[derive(Default)]
pub struct SimpleWorkflow;

#[workflow_methods]
impl SimpleWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, name: String) -> WorkflowResult<String> {
        let policy = ActivityPolicy::new(&Default::default(), Duration::from_secs(10));
        Ok(ctx
            .execute_activity(
                WfloActivities::greet,
                name,
                activity_options(&policy, Duration::ZERO),
            )
            .await?)
    }
}

/// The input of [`CodeExecutionWorkflow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeExecutionInput {
    /// The execution the run records under (chosen by the client).
    pub(crate) execution_id: wflo_types::ExecutionId,
    pub(crate) request: CodeExecutionRequest,
    pub(crate) policy: ActivityPolicy,
}

/// `CodeExecutionWorkflow(code, timeout)`: the program runs as the one `code` step of an
/// execution, through wflo-runtime's step logic like any definition's code step (its step row
/// and `sandbox.execution` event, limits from the worker engine's sandbox configuration), in
/// one activity with the run's retry policy (infrastructure failures retried; a failed program,
/// a bad request or a missing sandbox fail at once). A program that fails, times out or is
/// killed fails the run and its execution; a cancelled run stops the container and cancels
/// the execution.
#[workflow]
#[derive(Default)]
pub struct CodeExecutionWorkflow;

#[workflow_methods]
impl CodeExecutionWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: CodeExecutionInput,
    ) -> WorkflowResult<CodeExecutionOutput> {
        let mut options = activity_options(&input.policy, input.request.timeout);
        options.heartbeat_timeout = Some(Duration::from_secs(15));
        // A cancelled run waits for the container to be dropped before it cancels the
        // execution.
        options.cancellation_type = ActivityCancellationType::WaitCancellationCompleted;
        let local = local_options(&input.policy);
        let execution_id = input.execution_id;
        let run = CodeRun {
            execution_id,
            request: input.request,
        };
        let error = match ctx
            .execute_activity(WfloActivities::run_code, run, options)
            .await
        {
            Ok(output) => return Ok(output),
            Err(e) => crate::error::chain(&e),
        };
        if ctx.cancellation_token().is_cancelled() {
            let mut cleanup = local;
            cleanup.cancellation_token = Some(WorkflowCancellationToken::new());
            // Best effort: an execution that was never opened has nothing to cancel.
            let _ = ctx
                .execute_local_activity(
                    WfloActivities::cancel_execution,
                    CancelExecution {
                        execution_id,
                        reason: "cancelled through temporal".into(),
                    },
                    cleanup,
                )
                .await;
            return Err(WorkflowTermination::cancelled());
        }
        // The execution fails with the step's error (best effort, as above).
        let _ = ctx
            .execute_local_activity(
                WfloActivities::finish_execution,
                FinishExecution {
                    execution_id,
                    result: Err(error.clone()),
                },
                local,
            )
            .await;
        Err(WorkflowTermination::failed_application(
            ApplicationFailure::non_retryable(std::io::Error::other(error)),
        ))
    }
}

/// The input of [`NoopWorkflow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoopInput {
    pub(crate) activities: u32,
    pub(crate) policy: ActivityPolicy,
}

/// Runs `activities` no-op activities in sequence (measures the engine's own overhead).
#[workflow]
#[derive(Default)]
pub struct NoopWorkflow;

#[workflow_methods]
impl NoopWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: NoopInput) -> WorkflowResult<u32> {
        let mut done = 0;
        for i in 0..input.activities {
            ctx.execute_activity(
                WfloActivities::noop,
                i,
                activity_options(&input.policy, Duration::ZERO),
            )
            .await?;
            done += 1;
        }
        Ok(done)
    }
}

/// Runs a Wflo definition durably: every step is an activity that drives wflo-runtime's step
/// logic (budget reserve and settle, LLM, code, checkpoint, tool, events through the outbox);
/// an approval step waits for an `approve` or `reject` signal or a durable timer that applies
/// its timeout policy. Queries: `status`, `current_step`, `cost`, `pending_approval`. Signals:
/// `approve`, `reject`, `cancel_request`. Identifiers come from the input (the client picks
/// the execution id) and from activities; nothing here reads a clock or draws a random number.
#[workflow]
#[derive(Default)]
pub struct WfloWorkflow {
    state: WfloStatus,
    /// Decisions by approval id; the first signal for an approval stands.
    decisions: BTreeMap<wflo_types::ApprovalId, (bool, ApprovalSignal)>,
    cancel_requested: Option<String>,
}

/// Why a run stops before its end.
enum Stop {
    Cancel(String),
    Fail(String),
}

impl WfloWorkflow {
    fn decide(&mut self, approve: bool, signal: ApprovalSignal) {
        self.decisions
            .entry(signal.approval_id)
            .or_insert((approve, signal));
    }

    fn cancel_reason(ctx: &WorkflowContext<Self>) -> Option<String> {
        ctx.state(|s| s.cancel_requested.clone()).or_else(|| {
            ctx.cancellation_token()
                .is_cancelled()
                .then(|| "cancelled through temporal".to_string())
        })
    }

    /// Why an activity failed: a cancellation of the run, or the activity's own error.
    fn stop_for(ctx: &WorkflowContext<Self>, e: &(dyn std::error::Error + 'static)) -> Stop {
        match Self::cancel_reason(ctx) {
            Some(reason) => Stop::Cancel(reason),
            None => Stop::Fail(crate::error::chain(e)),
        }
    }

    async fn await_approval(
        ctx: &mut WorkflowContext<Self>,
        local: &LocalActivityOptions,
        step: &StepRef,
    ) -> Result<(), Stop> {
        let mut ticket = ctx
            .execute_local_activity(WfloActivities::open_approval, step.clone(), local.clone())
            .await
            .map_err(|e| Self::stop_for(ctx, &e))?;
        while ticket.pending {
            let id = ticket.approval_id;
            let pending = PendingApproval {
                approval_id: id,
                step: step.step.clone(),
                message: ticket.message.clone(),
            };
            ctx.state_mut(|s| {
                s.state.status = "WAITING_APPROVAL".into();
                s.state.pending_approval = Some(pending);
            });
            let answered =
                move |s: &Self| s.decisions.contains_key(&id) || s.cancel_requested.is_some();
            let decided = match ticket.timeout {
                Some(timeout) => select! {
                    r = ctx.wait_condition(answered) => r.is_ok(),
                    _ = ctx.timer(timeout) => false,
                },
                None => ctx.wait_condition(answered).await.is_ok(),
            };
            if let Some(reason) = Self::cancel_reason(ctx) {
                return Err(Stop::Cancel(reason));
            }
            let decision = if decided {
                ctx.state(|s| s.decisions.get(&id).cloned())
            } else {
                None
            };
            ticket = ctx
                .execute_local_activity(
                    WfloActivities::close_approval,
                    CloseApproval {
                        approval_id: id,
                        decision,
                    },
                    local.clone(),
                )
                .await
                .map_err(|e| Self::stop_for(ctx, &e))?;
            ctx.state_mut(|s| {
                s.state.status = "RUNNING".into();
                s.state.pending_approval = None;
            });
        }
        Ok(())
    }

    async fn steps(
        ctx: &mut WorkflowContext<Self>,
        options: &ActivityOptions,
        local: &LocalActivityOptions,
        execution_id: wflo_types::ExecutionId,
        plan: Vec<PlannedStep>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Stop> {
        let mut outputs = serde_json::Map::new();
        let mut step_options = options.clone();
        step_options.heartbeat_timeout = Some(Duration::from_secs(15));
        // A cancelled run waits for the step to stop (its LLM call or container dropped)
        // before it releases the execution's reservations.
        step_options.cancellation_type = ActivityCancellationType::WaitCancellationCompleted;
        for planned in plan {
            if let Some(reason) = Self::cancel_reason(ctx) {
                return Err(Stop::Cancel(reason));
            }
            let step = StepRef {
                execution_id,
                step: planned.id.clone(),
            };
            ctx.state_mut(|s| s.state.current_step = Some(planned.id.clone()));
            if planned.approval {
                Self::await_approval(ctx, local, &step).await?;
            }
            let done = ctx
                .execute_activity(WfloActivities::run_step, step, step_options.clone())
                .await
                .map_err(|e| Self::stop_for(ctx, &e))?;
            outputs.insert(planned.id.clone(), done.output);
            ctx.state_mut(|s| {
                s.state.cost_usd = done.cost_usd;
                s.state.completed_steps.push(planned.id);
                s.state.current_step = None;
            });
        }
        Ok(outputs)
    }
}

#[workflow_methods]
impl WfloWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: WfloInput,
    ) -> WorkflowResult<WfloOutcome> {
        let options = activity_options(&input.policy, Duration::ZERO);
        let local = local_options(&input.policy);
        let execution_id = input.execution_id;
        ctx.state_mut(|s| {
            s.state.execution_id = Some(execution_id);
            s.state.status = "STARTING".into();
        });
        let plan = ctx
            .execute_local_activity(WfloActivities::open_execution, input, local.clone())
            .await?;
        ctx.state_mut(|s| s.state.status = "RUNNING".into());
        let (result, stop) = match Self::steps(ctx, &options, &local, execution_id, plan).await {
            Ok(outputs) => (Ok(serde_json::Value::Object(outputs)), None),
            Err(Stop::Fail(message)) => (Err(message.clone()), Some(Stop::Fail(message))),
            Err(Stop::Cancel(reason)) => {
                // The clean-up runs even though the run is cancelled: a token of its own.
                let mut cleanup = local.clone();
                cleanup.cancellation_token = Some(WorkflowCancellationToken::new());
                ctx.state_mut(|s| {
                    s.state.status = "CANCELLED".into();
                    s.state.pending_approval = None;
                    s.state.error = Some(reason.clone());
                });
                ctx.execute_local_activity(
                    WfloActivities::cancel_execution,
                    CancelExecution {
                        execution_id,
                        reason,
                    },
                    cleanup,
                )
                .await?;
                return Err(WorkflowTermination::cancelled());
            }
        };
        let outcome = ctx
            .execute_local_activity(
                WfloActivities::finish_execution,
                FinishExecution {
                    execution_id,
                    result,
                },
                local,
            )
            .await?;
        ctx.state_mut(|s| {
            s.state.cost_usd = outcome.cost_usd;
            s.state.status = outcome.status.clone();
        });
        if let Some(Stop::Fail(message)) = stop {
            ctx.state_mut(|s| {
                s.state.status = "FAILED".into();
                s.state.error = Some(message.clone());
            });
            return Err(WorkflowTermination::failed_application(
                ApplicationFailure::non_retryable(std::io::Error::other(message)),
            ));
        }
        Ok(outcome)
    }

    #[signal]
    pub fn approve(&mut self, _ctx: &mut SyncWorkflowContext<Self>, signal: ApprovalSignal) {
        self.decide(true, signal);
    }

    #[signal]
    pub fn reject(&mut self, _ctx: &mut SyncWorkflowContext<Self>, signal: ApprovalSignal) {
        self.decide(false, signal);
    }

    #[signal]
    pub fn cancel_request(&mut self, _ctx: &mut SyncWorkflowContext<Self>, reason: String) {
        if self.cancel_requested.is_none() {
            self.cancel_requested = Some(reason);
        }
    }

    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> WfloStatus {
        self.state.clone()
    }

    #[query]
    pub fn current_step(&self, _ctx: &WorkflowContextView) -> Option<String> {
        self.state.current_step.clone()
    }

    #[query]
    pub fn cost(&self, _ctx: &WorkflowContextView) -> rust_decimal::Decimal {
        self.state.cost_usd
    }

    #[query]
    pub fn pending_approval(&self, _ctx: &WorkflowContextView) -> Option<PendingApproval> {
        self.state.pending_approval.clone()
    }
}
