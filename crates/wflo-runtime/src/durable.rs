//! Driving a stored definition one step at a time, for an engine that keeps the run's control
//! flow itself (wflo-temporal's `WfloWorkflow`): open the execution, run each step, open and
//! close approvals around a wait the caller does, finish or cancel the execution.
//!
//! Every function here is idempotent, because a durable engine retries and replays: opening
//! the same execution id twice is one execution; a completed step returns its stored output
//! (a paid LLM call is never made again — its budget reservation is keyed on the step, not the
//! attempt); an approval step finds its request instead of making a second one; a decision
//! taken elsewhere first stands; finishing or cancelling an execution that already ended in
//! that state returns it as it is.

use crate::context::{Ctx, apply_timeout_policy};
use crate::definition::{StepKind, WorkflowDef};
use crate::engine::{Engine, RunOptions, RunOutcome};
use crate::{Error, Result};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use wflo_db::{ApprovalStatus, ExecutionStatus, Executor, Outcome, StepStatus};
use wflo_types::{ApprovalId, ExecutionId};

/// A step of an execution's plan, in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedStep {
    /// The step id.
    pub id: String,
    /// Whether it is an approval step (its caller waits for a decision before running it).
    pub approval: bool,
}

/// What running one step did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepReport {
    /// The step's output.
    pub output: Value,
    /// The execution's spend after it (exact).
    pub cost_usd: Decimal,
}

/// An approval request of an approval step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ApprovalTicket {
    /// The request.
    pub approval_id: ApprovalId,
    /// What the approver is asked.
    pub message: String,
    /// Whether it still waits for a decision.
    pub pending: bool,
    /// How long is left before its timeout policy applies (none: no timeout).
    pub timeout: Option<Duration>,
}

impl ApprovalTicket {
    fn of(a: &wflo_db::Approval) -> Self {
        let timeout = a
            .timeout_at
            .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO));
        ApprovalTicket {
            approval_id: a.id,
            message: a.message.clone(),
            pending: a.status == ApprovalStatus::Pending,
            timeout,
        }
    }
}

impl Engine {
    /// A context on an existing execution with the outputs of its completed steps loaded
    /// (templates of the next step can refer to them).
    async fn durable_context(&self, execution_id: ExecutionId) -> Result<(Ctx, Arc<WorkflowDef>)> {
        let exec = self.db().executions().get(execution_id).await?;
        let def = self.stored_definition(exec.workflow_id).await?;
        let ctx = self.context_of(exec, &RunOptions::default()).await?;
        ctx.load_completed_outputs();
        Ok((ctx, def))
    }

    /// A stored definition, parsed once per engine (stored definitions never change).
    async fn stored_definition(&self, id: Uuid) -> Result<Arc<WorkflowDef>> {
        if let Some(def) = self
            .inner
            .definitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
        {
            return Ok(def.clone());
        }
        let stored = self.db().definitions().get(id).await?;
        let def = Arc::new(WorkflowDef::from_json(&stored.definition)?);
        let mut cache = self
            .inner
            .definitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= 1_000 {
            cache.clear();
        }
        cache.insert(id, def.clone());
        Ok(def)
    }

    /// Saves an execution of `def` under `execution_id` (the same id again is the same
    /// execution) with its inputs and budget, marks it RUNNING with its event, and returns its
    /// steps in run order. A definition that fails validation is refused.
    pub async fn open_execution(
        &self,
        def: &WorkflowDef,
        execution_id: ExecutionId,
        inputs: Map<String, Value>,
        budget_usd: Option<Decimal>,
    ) -> Result<Vec<PlannedStep>> {
        def.validate()?;
        let order = def.run_order()?;
        let exists = match self.db().executions().get(execution_id).await {
            Ok(_) => true,
            Err(wflo_db::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !exists {
            let options = RunOptions {
                execution_id: Some(execution_id),
                inputs,
                budget_usd,
                ..Default::default()
            };
            self.create_execution_on(def, &options, wflo_db::ExecutionEngine::Temporal)
                .await?;
        }
        let exec = self.db().executions().get(execution_id).await?;
        if exec.status == ExecutionStatus::Pending {
            self.bare_context(&exec, &RunOptions::default())
                .set_execution_status(ExecutionStatus::Running, Outcome::default())
                .await?;
        }
        Ok(order
            .into_iter()
            .map(|id| {
                let approval = def.step(&id).is_some_and(|s| s.kind == StepKind::Approval);
                PlannedStep { id, approval }
            })
            .collect())
    }

    /// Runs one step of an execution's definition through the shared step logic (memoized:
    /// a completed step returns its stored output). An approval step runs once its request
    /// is decided (see [`Engine::open_approval`]); an undecided one waits as in-process.
    pub async fn run_step(&self, execution_id: ExecutionId, step_id: &str) -> Result<StepReport> {
        let (ctx, def) = self.durable_context(execution_id).await?;
        let step = def
            .step(step_id)
            .cloned()
            .ok_or_else(|| Error::Definition {
                step: Some(step_id.to_string()),
                line: None,
                message: format!("workflow `{}` has no step `{step_id}`", def.name),
            })?;
        let output = ctx.run_definition_step(&def, &step).await?;
        let exec = self.db().executions().get(execution_id).await?;
        Ok(StepReport {
            output,
            cost_usd: exec.cost_usd,
        })
    }

    /// Opens the approval request of an approval step, or finds the one a previous attempt
    /// opened; auto-approval rules apply. A pending request marks the execution
    /// WAITING_APPROVAL; the caller waits (for a decision or the returned timeout), then calls
    /// [`Engine::close_approval`] and runs the step.
    pub async fn open_approval(
        &self,
        execution_id: ExecutionId,
        step_id: &str,
    ) -> Result<ApprovalTicket> {
        let (ctx, def) = self.durable_context(execution_id).await?;
        let step = def
            .step(step_id)
            .filter(|s| s.kind == StepKind::Approval)
            .cloned()
            .ok_or_else(|| Error::Definition {
                step: Some(step_id.to_string()),
                line: None,
                message: format!("workflow `{}` has no approval step `{step_id}`", def.name),
            })?;
        if let Some(done) = ctx.known_completed(step_id) {
            let id = done
                .outputs
                .as_ref()
                .and_then(|o| serde_json::from_value::<wflo_types::ApprovalOutput>(o.clone()).ok())
                .and_then(|o| o.approval_id)
                .unwrap_or_else(|| ApprovalId::from_uuid(Uuid::nil()));
            return Ok(ApprovalTicket {
                approval_id: id,
                message: String::new(),
                pending: false,
                timeout: None,
            });
        }
        let call = ctx.approval_call(&def, &step)?;
        let fingerprint = crate::context::action_fingerprint(step_id, &call.action);
        let approval = ctx.open_approval_row(step_id, &call, &fingerprint).await?;
        let status = self.db().executions().get(execution_id).await?.status;
        match approval.status {
            ApprovalStatus::Pending if status == ExecutionStatus::Running => {
                ctx.set_execution_status(ExecutionStatus::WaitingApproval, Outcome::default())
                    .await?;
            }
            // Decided while no worker ran (an earlier attempt marked the execution waiting,
            // then its worker died before the workflow recorded the ticket): running again.
            ApprovalStatus::Pending => {}
            _ if status == ExecutionStatus::WaitingApproval => {
                ctx.set_execution_status(ExecutionStatus::Running, Outcome::default())
                    .await?;
            }
            _ => {}
        }
        Ok(ApprovalTicket::of(&approval))
    }

    /// Closes an approval request: with a decision (`approve`, approver, reason) — a decision
    /// taken first elsewhere stands — or, without one, by its timeout policy. An escalation
    /// returns the new pending request. Once decided, the execution is RUNNING again.
    pub async fn close_approval(
        &self,
        approval_id: ApprovalId,
        decision: Option<(bool, &str, Option<String>)>,
    ) -> Result<ApprovalTicket> {
        let current = self.db().approvals().get(approval_id).await?;
        let approval = match decision {
            _ if current.status != ApprovalStatus::Pending => current,
            Some((approve, approver, reason)) => {
                match self.decide(approval_id, approve, approver, reason).await {
                    Ok(a) => a,
                    Err(Error::AlreadyDecided { .. }) => {
                        self.db().approvals().get(approval_id).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => apply_timeout_policy(self.db(), &current).await?,
        };
        if approval.status != ApprovalStatus::Pending {
            let exec = self.db().executions().get(approval.execution_id).await?;
            if exec.status == ExecutionStatus::WaitingApproval {
                let (ctx, _) = self.durable_context(approval.execution_id).await?;
                ctx.set_execution_status(ExecutionStatus::Running, Outcome::default())
                    .await?;
            }
        }
        Ok(ApprovalTicket::of(&approval))
    }

    /// Ends an execution: COMPLETED with `result`'s outputs, or FAILED with its error, with
    /// the status event. An execution that already ended so is returned as it is.
    pub async fn finish_execution(
        &self,
        execution_id: ExecutionId,
        result: std::result::Result<Value, String>,
    ) -> Result<RunOutcome> {
        let current = self.db().executions().get(execution_id).await?;
        let ctx = self.bare_context(&current, &RunOptions::default());
        let (to, outcome) = match result {
            Ok(outputs) => (
                ExecutionStatus::Completed,
                Outcome {
                    outputs: Some(outputs),
                    error: None,
                },
            ),
            Err(error) => (
                ExecutionStatus::Failed,
                Outcome {
                    outputs: None,
                    error: Some(error),
                },
            ),
        };
        let exec = if current.status == to {
            current
        } else {
            ctx.set_execution_status(to, outcome).await?
        };
        Ok(RunOutcome {
            execution_id,
            status: exec.status,
            outputs: exec.outputs.clone().unwrap_or(Value::Null),
            cost_usd: exec.cost_usd,
            budget_usd: ctx.budget,
        })
    }

    /// Cancels an execution: CANCELLED with its event and `reason`, and every budget
    /// reservation it still holds released (a cancelled call is not paid for). Steps left
    /// RUNNING are marked FAILED with the reason. Cancelling a cancelled execution changes
    /// nothing.
    pub async fn cancel_execution(&self, execution_id: ExecutionId, reason: &str) -> Result<()> {
        let exec = self.db().executions().get(execution_id).await?;
        let ctx = self.bare_context(&exec, &RunOptions::default());
        self.costs().release_for_execution(execution_id).await?;
        if exec.status == ExecutionStatus::Cancelled {
            return Ok(());
        }
        for step in self.db().steps().list(execution_id).await? {
            if step.status == StepStatus::Running {
                self.db()
                    .steps()
                    .transition(
                        step.id,
                        StepStatus::Failed,
                        None,
                        Some(format!("cancelled: {reason}")),
                    )
                    .await?;
            }
        }
        ctx.set_execution_status(
            ExecutionStatus::Cancelled,
            Outcome {
                outputs: None,
                error: Some(format!("cancelled: {reason}")),
            },
        )
        .await?;
        Ok(())
    }
}
