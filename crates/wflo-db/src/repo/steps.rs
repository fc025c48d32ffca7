use super::{db_err, parse_stored, repository, text_enum};
use crate::entity::step;
use crate::money::nanos_to_usd;
use crate::repo::Tokens;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;
use uuid::Uuid;

text_enum!(
    /// Where a step is in its life.
    StepStatus {
        /// Recorded, not started.
        Pending = "PENDING",
        /// Running (an attempt is in progress).
        Running = "RUNNING",
        /// Done; its output is stored (final).
        Completed = "COMPLETED",
        /// The last attempt failed; may be retried.
        Failed = "FAILED",
        /// Not run (final).
        Skipped = "SKIPPED",
        /// Cancelled (final).
        Cancelled = "CANCELLED",
        /// Completed, then undone by a rollback; runs again when the execution continues.
        RolledBack = "ROLLED_BACK",
    }
);

impl StepStatus {
    /// The statuses from which `self` may be entered.
    pub fn allowed_from(self) -> &'static [StepStatus] {
        use StepStatus::*;
        match self {
            Pending => &[],
            Running => &[Pending, Running, Failed, RolledBack],
            Completed => &[Running],
            Failed => &[Pending, Running],
            Skipped => &[Pending],
            Cancelled => &[Pending, Running, Failed],
            RolledBack => &[Completed],
        }
    }
}

/// One step of an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Row id.
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// The step's id in the definition; unique per execution.
    pub step_key: String,
    /// Its kind (`llm`, `code`, `approval`, `checkpoint`, `tool`, ...).
    pub step_type: String,
    /// Current status.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempt: i32,
    /// Inputs.
    pub inputs: Option<Value>,
    /// Output, once completed.
    pub outputs: Option<Value>,
    /// Last error.
    pub error: Option<String>,
    /// Money spent by this step, exact.
    pub cost_usd: Decimal,
    /// Tokens used by this step.
    pub tokens: Tokens,
    /// First attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<step::Model> for Step {
    type Error = Error;
    fn try_from(m: step::Model) -> Result<Self> {
        Ok(Step {
            id: m.id,
            execution_id: m.execution_id,
            step_key: m.step_key,
            step_type: m.step_type,
            status: parse_stored(&m.status)?,
            attempt: m.attempt,
            inputs: m.inputs,
            outputs: m.outputs,
            error: m.error,
            cost_usd: nanos_to_usd(m.cost_nano_usd),
            tokens: Tokens::new(m.prompt_tokens as u64, m.completion_tokens as u64),
            started_at: m.started_at,
            completed_at: m.completed_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

/// A step to record (status PENDING).
#[derive(Debug, Clone, PartialEq)]
pub struct NewStep {
    /// The execution.
    pub execution_id: Uuid,
    /// The step's id in the definition.
    pub step_key: String,
    /// Its kind.
    pub step_type: String,
    /// Inputs.
    pub inputs: Option<Value>,
}

repository!(
    /// Step executions: `(execution_id, step_key)` is unique.
    Steps
);

const ENTITY: &str = "step execution";

impl<E: crate::Executor> Steps<'_, E> {
    /// Records a step in PENDING. A second step with the same key in one execution is
    /// [`Error::AlreadyExists`]; a missing execution is [`Error::ForeignKey`].
    pub async fn create(&self, new: NewStep) -> Result<Step> {
        self.insert(new, StepStatus::Pending).await
    }

    /// Records a step directly in RUNNING with its first attempt counted (one statement where
    /// `create` then `transition` would take two).
    pub async fn start(&self, new: NewStep) -> Result<Step> {
        self.insert(new, StepStatus::Running).await
    }

    async fn insert(&self, new: NewStep, status: StepStatus) -> Result<Step> {
        let now = Utc::now();
        let running = status == StepStatus::Running;
        step::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(new.execution_id),
            step_key: Set(new.step_key),
            step_type: Set(new.step_type),
            status: Set(status.as_str().into()),
            attempt: Set(i32::from(running)),
            inputs: Set(new.inputs),
            outputs: Set(None),
            error: Set(None),
            cost_nano_usd: Set(0),
            prompt_tokens: Set(0),
            completion_tokens: Set(0),
            started_at: Set(running.then_some(now)),
            completed_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(self.conn())
        .await
        .map_err(db_err(ENTITY, "recording a step"))?
        .try_into()
    }

    /// By id.
    pub async fn get(&self, id: Uuid) -> Result<Step> {
        step::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a step"))?
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })?
            .try_into()
    }

    /// By its key within an execution, if recorded.
    pub async fn find_by_key(&self, execution_id: Uuid, step_key: &str) -> Result<Option<Step>> {
        step::Entity::find()
            .filter(step::Column::ExecutionId.eq(execution_id))
            .filter(step::Column::StepKey.eq(step_key))
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a step"))?
            .map(Step::try_from)
            .transpose()
    }

    /// The steps of an execution, in the order they were recorded.
    pub async fn list(&self, execution_id: Uuid) -> Result<Vec<Step>> {
        step::Entity::find()
            .filter(step::Column::ExecutionId.eq(execution_id))
            .order_by_asc(step::Column::CreatedAt)
            .order_by_asc(step::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing steps"))?
            .into_iter()
            .map(Step::try_from)
            .collect()
    }

    /// Stores a partial output of a RUNNING step without changing its status (for example a
    /// paid LLM response, before its cost is settled, so a crash never repeats the call).
    pub async fn record_output(&self, id: Uuid, outputs: Value) -> Result<()> {
        let res = step::Entity::update_many()
            .col_expr(step::Column::Outputs, Expr::value(outputs))
            .col_expr(step::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(step::Column::Id.eq(id))
            .filter(step::Column::Status.eq(StepStatus::Running.as_str()))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "recording a step's output"))?;
        if res.rows_affected == 0 {
            let current = self.get(id).await?;
            return Err(Error::InvalidTransition {
                entity: ENTITY,
                id: id.to_string(),
                from: current.status.to_string(),
                to: "RUNNING (output recorded)".into(),
            });
        }
        Ok(())
    }

    /// Moves a step to `to` in one conditional UPDATE (see [`StepStatus::allowed_from`]).
    /// Entering RUNNING counts an attempt.
    pub async fn transition(
        &self,
        id: Uuid,
        to: StepStatus,
        outputs: Option<Value>,
        error: Option<String>,
    ) -> Result<Step> {
        let now = Utc::now();
        let from: Vec<&str> = to.allowed_from().iter().map(|s| s.as_str()).collect();
        let mut update = step::Entity::update_many()
            .col_expr(step::Column::Status, Expr::value(to.as_str()))
            .col_expr(step::Column::UpdatedAt, Expr::value(now));
        match to {
            StepStatus::Running => {
                update = update
                    .col_expr(
                        step::Column::Attempt,
                        Expr::col(step::Column::Attempt).add(1),
                    )
                    .col_expr(
                        step::Column::StartedAt,
                        Expr::col(step::Column::StartedAt).if_null(now),
                    );
            }
            StepStatus::Completed
            | StepStatus::Skipped
            | StepStatus::Cancelled
            | StepStatus::Failed => {
                update = update.col_expr(step::Column::CompletedAt, Expr::value(now));
            }
            _ => {}
        }
        if let Some(outputs) = outputs {
            update = update.col_expr(step::Column::Outputs, Expr::value(outputs));
        }
        if let Some(error) = error {
            update = update.col_expr(step::Column::Error, Expr::value(error));
        }
        let res = update
            .filter(step::Column::Id.eq(id))
            .filter(step::Column::Status.is_in(from))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "changing a step's status"))?;
        let current = self.get(id).await?;
        if res.rows_affected == 0 {
            return Err(Error::InvalidTransition {
                entity: ENTITY,
                id: id.to_string(),
                from: current.status.to_string(),
                to: to.to_string(),
            });
        }
        Ok(current)
    }
}
