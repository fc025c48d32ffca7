//! Rollback to a snapshot: compensations newest first, undone steps marked to run again, later
//! snapshots superseded, the outcome recorded.

use super::Engine;
use crate::events;
use crate::{Error, Result};
use serde_json::{Value, json};
use uuid::Uuid;
use wflo_db::{ExecutionStatus, Executor, NewRollback, RollbackStatus, StepStatus};
use wflo_types::ExecutionId;

/// What a rollback did.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackOutcome {
    /// The rollback_actions row.
    pub rollback_id: Uuid,
    /// The snapshot restored.
    pub snapshot_version: i32,
    /// Steps undone, in the order their compensations ran (reverse completion order).
    pub undone_steps: Vec<String>,
    /// Compensations that ran.
    pub compensations: Vec<String>,
    /// Snapshots marked superseded.
    pub superseded: u64,
}

impl Engine {
    /// Rolls an execution back to one of its snapshots: runs the compensations of the steps that
    /// completed after it (newest first), marks those steps ROLLED_BACK so they run again when
    /// the execution continues, marks later snapshots superseded, restores the snapshot's
    /// variables, and records a rollback_actions row with the outcome.
    pub async fn rollback(
        &self,
        execution: ExecutionId,
        snapshot_version: i32,
        reason: &str,
        initiated_by: &str,
    ) -> Result<RollbackOutcome> {
        let db = &self.inner.db;
        let exec = db.executions().get(execution).await?;
        if exec.status == ExecutionStatus::Running
            || exec.status == ExecutionStatus::WaitingApproval
        {
            return Err(Error::InvalidState(format!(
                "execution {execution} is {}; roll back a stopped execution (FAILED or finished)",
                exec.status
            )));
        }
        let snap = db
            .snapshots()
            .get_version(execution, snapshot_version)
            .await?;
        let record = db
            .rollbacks()
            .create(NewRollback {
                execution_id: execution,
                snapshot_id: snap.id,
                reason: reason.to_string(),
                initiated_by: initiated_by.to_string(),
                details: json!({}),
            })
            .await?;
        let labels = events::labels_of(&exec);
        // Steps completed after the snapshot, newest first.
        let mut later: Vec<wflo_db::Step> = db
            .steps()
            .list(execution)
            .await?
            .into_iter()
            .filter(|s| s.status == StepStatus::Completed)
            // The checkpoint step that took the snapshot completes just after it: it stays.
            .filter(|s| Some(&s.step_key) != snap.step_key.as_ref())
            .filter(|s| s.completed_at.is_some_and(|t| t > snap.created_at))
            .collect();
        later.sort_by_key(|s| std::cmp::Reverse(s.completed_at));
        let mut undone = Vec::new();
        let mut compensations = Vec::new();
        let mut failure = None;
        for step in &later {
            let tool_name = step
                .inputs
                .as_ref()
                .and_then(|i| i.get("tool"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(name) = &tool_name
                && let Some(tool) = self.inner.tools.get(name)
                && tool.compensable()
            {
                let input = step
                    .inputs
                    .as_ref()
                    .and_then(|i| i.get("input"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let output = step.outputs.clone().unwrap_or(Value::Null);
                match tool.compensate(&input, &output).await {
                    Ok(()) => compensations.push(format!("{}:{name}", step.step_key)),
                    Err(e) => {
                        failure = Some(format!(
                            "compensation of step `{}` ({name}) failed: {e}",
                            step.step_key
                        ));
                        break;
                    }
                }
            }
            db.steps()
                .transition_with_events(
                    step.id,
                    StepStatus::RolledBack,
                    None,
                    None,
                    vec![events::outbox(
                        events::step_status(
                            &step.step_key,
                            &step.step_type,
                            StepStatus::RolledBack.as_str(),
                            None,
                        ),
                        execution,
                        &labels,
                    )],
                )
                .await?;
            undone.push(step.step_key.clone());
        }
        let superseded = if failure.is_none() {
            db.snapshots()
                .supersede_after(execution, snap.version)
                .await?
        } else {
            0
        };
        let details = json!({
            "snapshot_version": snap.version,
            "undone_steps": undone,
            "compensations": compensations,
            "superseded_snapshots": superseded,
            "restored_vars": snap.state.get("vars"),
        });
        let tx = db.begin().await?;
        tx.rollbacks()
            .finish(
                record.id,
                if failure.is_none() {
                    RollbackStatus::Completed
                } else {
                    RollbackStatus::Failed
                },
                details.clone(),
                failure.clone(),
            )
            .await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::audit(
                    initiated_by,
                    "execution.rollback",
                    format!("execution/{execution}"),
                    details,
                    failure.is_none(),
                ),
                execution,
                &labels,
            ))
            .await?;
        // A completed execution is complete no more: it is reopened (FAILED with the rollback
        // as its reason) so that resuming runs the undone steps again.
        if failure.is_none() && exec.status == ExecutionStatus::Completed {
            let reopened = tx
                .executions()
                .reopen(
                    execution,
                    format!(
                        "rolled back to snapshot {} by {initiated_by}: {reason}; resume it to run the undone steps again",
                        snap.version
                    ),
                )
                .await?;
            tx.outbox()
                .enqueue(events::outbox(
                    events::workflow_status(
                        reopened.status.as_str(),
                        Some(ExecutionStatus::Completed.as_str()),
                        reopened.error.clone(),
                        Some(reopened.cost_usd),
                    ),
                    execution,
                    &labels,
                ))
                .await?;
        }
        tx.commit().await?;
        if let Some(f) = failure {
            return Err(Error::InvalidState(f));
        }
        Ok(RollbackOutcome {
            rollback_id: record.id,
            snapshot_version: snap.version,
            undone_steps: undone,
            compensations,
            superseded,
        })
    }
}
