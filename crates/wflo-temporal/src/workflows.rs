//! The workflows. Workflow code is deterministic: no IO, no wall clock, no randomness; every
//! side effect is an activity, every wait a durable timer or a condition on signalled state.
#![allow(unreachable_pub)]

use crate::activities::WfloActivities;
use crate::types::{
    ActivityPolicy, ApprovalRequest, ApprovalState, ApprovalStatus, CodeExecutionOutput,
    CodeExecutionRequest, Decision, OnTimeout,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination, workflows::select,
};

/// Activity options from a run's recorded policy; `extra` is added to the start-to-close
/// timeout (a code run's own timeout).
pub(crate) fn activity_options(policy: &ActivityPolicy, extra: Duration) -> ActivityOptions {
    let retry = RetryPolicy::builder()
        .initial_interval(policy.initial_interval)
        .backoff_coefficient(policy.backoff_coefficient)
        .maximum_interval(policy.maximum_interval)
        .maximum_attempts(policy.maximum_attempts)
        .build();
    ActivityOptions::with_start_to_close_timeout(policy.start_to_close + extra)
        .retry_policy(retry)
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
    pub(crate) request: CodeExecutionRequest,
    pub(crate) policy: ActivityPolicy,
}

/// `CodeExecutionWorkflow(code, timeout, limits)`: the sandbox result through an activity with a
/// retry policy (infrastructure failures retried; bad requests fail at once).
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
        Ok(ctx
            .execute_activity(WfloActivities::run_code, input.request, options)
            .await?)
    }
}

/// The input of [`ApprovalWorkflow`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalInput {
    pub(crate) request: ApprovalRequest,
}

/// A human decision, waited for durably: `approve` and `reject` signals, a `status` query, and a
/// durable timer that applies the timeout policy. The first decision stands.
#[workflow]
#[derive(Default)]
pub struct ApprovalWorkflow {
    state: ApprovalState,
}

impl ApprovalWorkflow {
    fn decide(&mut self, status: ApprovalStatus, d: Decision) {
        if self.state.status == ApprovalStatus::Pending {
            self.state.status = status;
            self.state.decided_by = Some(d.approver);
            self.state.reason = d.reason;
        } else {
            self.state.late_decisions += 1;
        }
    }
}

#[workflow_methods]
impl ApprovalWorkflow {
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ApprovalInput,
    ) -> WorkflowResult<ApprovalState> {
        let decided = select! {
            r = ctx.wait_condition(|s| s.state.status != ApprovalStatus::Pending) => {
                r.map_err(|_| WorkflowTermination::cancelled())?;
                true
            }
            _ = ctx.timer(input.request.timeout) => false,
        };
        if !decided {
            if ctx.cancellation_token().is_cancelled() {
                return Err(WorkflowTermination::cancelled());
            }
            let policy = input.request.on_timeout;
            ctx.state_mut(|s| {
                if s.state.status == ApprovalStatus::Pending {
                    s.state.status = match policy {
                        OnTimeout::Approve => ApprovalStatus::Approved,
                        _ => ApprovalStatus::Expired,
                    };
                    s.state.decided_by = Some("system:timeout".into());
                    s.state.reason = Some(match policy {
                        OnTimeout::Approve => "approved by the timeout policy".into(),
                        _ => "rejected by the timeout policy".into(),
                    });
                }
            });
        }
        Ok(ctx.state(|s| s.state.clone()))
    }

    #[signal]
    pub fn approve(&mut self, _ctx: &mut SyncWorkflowContext<Self>, decision: Decision) {
        self.decide(ApprovalStatus::Approved, decision);
    }

    #[signal]
    pub fn reject(&mut self, _ctx: &mut SyncWorkflowContext<Self>, decision: Decision) {
        self.decide(ApprovalStatus::Rejected, decision);
    }

    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> ApprovalState {
        self.state.clone()
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
