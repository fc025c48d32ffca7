//! One execution as a person or a page reads it: the run, its steps with their typed outputs,
//! snapshots, approvals, rollbacks and what each model cost.

use crate::{Result, Wflo};
use std::collections::BTreeMap;
use wflo_db::Executor;
use wflo_types::{ExecutionId, SnapshotId};
use wflo_types::{StepKind, StepOutput};

/// Everything recorded about one execution, read by [`Wflo::execution_summary`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExecutionSummary {
    /// The execution row (status, budget, cost, tokens, labels, driver).
    pub execution: wflo_db::Execution,
    /// The version of its workflow definition.
    pub workflow_version: i32,
    /// Its steps, oldest first.
    pub steps: Vec<StepSummary>,
    /// Its snapshots, by version.
    pub snapshots: Vec<wflo_db::Snapshot>,
    /// Its approval requests, oldest first.
    pub approvals: Vec<wflo_db::Approval>,
    /// Its rollbacks, oldest first.
    pub rollbacks: Vec<wflo_db::Rollback>,
    /// The ledger's totals per model.
    pub costs_by_model: BTreeMap<String, wflo_cost::CostSummary>,
}

/// A step and its output read through its kind's type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepSummary {
    /// The step row.
    pub step: wflo_db::Step,
    /// Its kind, when the stored kind is one this build knows.
    pub kind: Option<StepKind>,
    /// Its completed output, typed (none: not completed, or not readable as its kind's).
    pub output: Option<StepOutput>,
}

impl StepSummary {
    fn of(step: wflo_db::Step) -> StepSummary {
        let kind = step.step_type.parse::<StepKind>().ok();
        let output = match (kind, &step.outputs) {
            (Some(k), Some(v)) if step.status == wflo_db::StepStatus::Completed => {
                StepOutput::read(k, v).ok()
            }
            _ => None,
        };
        StepSummary { step, kind, output }
    }

    /// What a code step printed, when it is one and printed something.
    pub fn stdout(&self) -> Option<&str> {
        match &self.output {
            Some(StepOutput::Code(c)) if !c.stdout.trim().is_empty() => Some(&c.stdout),
            _ => None,
        }
    }
}

impl ExecutionSummary {
    /// The snapshot version of a snapshot id (rollbacks name their target by id).
    pub fn snapshot_version(&self, id: SnapshotId) -> Option<i32> {
        self.snapshots
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.version)
    }
}

impl Wflo {
    /// Everything recorded about execution `id`; an unknown id is a not-found error.
    pub async fn execution_summary(&self, id: impl Into<ExecutionId>) -> Result<ExecutionSummary> {
        let id: ExecutionId = id.into();
        let db = &self.db;
        let execution = db.executions().get(id).await?;
        let definition = db.definitions().get(execution.workflow_id).await?;
        let steps = db.steps().list(id).await?;
        let snapshots = db.snapshots().list(id).await?;
        let approvals = db.approvals().list(id).await?;
        let rollbacks = db.rollbacks().list(id).await?;
        let costs_by_model = self
            .engine
            .costs()
            .totals_by_model(&wflo_cost::CostQuery {
                execution_id: Some(id),
                ..Default::default()
            })
            .await?;
        Ok(ExecutionSummary {
            execution,
            workflow_version: definition.version,
            steps: steps.into_iter().map(StepSummary::of).collect(),
            snapshots,
            approvals,
            rollbacks,
            costs_by_model,
        })
    }
}
