use super::{db_err, parse_stored, repository};
use crate::entity::rollback as rb;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;
use uuid::Uuid;
use wflo_types::{ExecutionId, SnapshotId};

/// The state of a rollback (the shared vocabulary's type).
pub use wflo_types::RollbackStatus;

/// A rollback of an execution to a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    /// Row id.
    pub id: Uuid,
    /// The execution.
    pub execution_id: ExecutionId,
    /// The snapshot restored.
    pub snapshot_id: SnapshotId,
    /// Current state.
    pub status: RollbackStatus,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub initiated_by: String,
    /// What was done (compensations run, their results).
    pub details: Value,
    /// What failed.
    pub error: Option<String>,
    /// Requested.
    pub created_at: DateTime<Utc>,
    /// Finished.
    pub completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<rb::Model> for Rollback {
    type Error = Error;
    fn try_from(m: rb::Model) -> Result<Self> {
        Ok(Rollback {
            id: m.id,
            execution_id: m.execution_id.into(),
            snapshot_id: m.snapshot_id.into(),
            status: parse_stored(&m.status)?,
            reason: m.reason,
            initiated_by: m.initiated_by,
            details: m.details,
            error: m.error,
            created_at: m.created_at,
            completed_at: m.completed_at,
        })
    }
}

/// A rollback to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRollback {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The snapshot to restore.
    pub snapshot_id: SnapshotId,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub initiated_by: String,
    /// Initial details.
    pub details: Value,
}

repository!(
    /// Rollback actions.
    Rollbacks
);

const ENTITY: &str = "rollback action";

impl<E: crate::Executor> Rollbacks<'_, E> {
    /// Records a rollback in PENDING.
    pub async fn create(&self, new: NewRollback) -> Result<Rollback> {
        rb::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(new.execution_id.into()),
            snapshot_id: Set(new.snapshot_id.into()),
            status: Set(RollbackStatus::Pending.as_str().into()),
            reason: Set(new.reason),
            initiated_by: Set(new.initiated_by),
            details: Set(new.details),
            error: Set(None),
            created_at: Set(Utc::now()),
            completed_at: Set(None),
        }
        .insert(self.conn())
        .await
        .map_err(db_err(ENTITY, "recording a rollback"))?
        .try_into()
    }

    /// By id.
    pub async fn get(&self, id: Uuid) -> Result<Rollback> {
        rb::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a rollback"))?
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })?
            .try_into()
    }

    /// The rollbacks of an execution, oldest first.
    pub async fn list(&self, execution_id: impl Into<ExecutionId>) -> Result<Vec<Rollback>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        rb::Entity::find()
            .filter(rb::Column::ExecutionId.eq(execution_id))
            .order_by_asc(rb::Column::CreatedAt)
            .order_by_asc(rb::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing rollbacks"))?
            .into_iter()
            .map(Rollback::try_from)
            .collect()
    }

    /// Records the outcome (COMPLETED or FAILED) of an unfinished rollback, with its details.
    pub async fn finish(
        &self,
        id: Uuid,
        status: RollbackStatus,
        details: Value,
        error: Option<String>,
    ) -> Result<Rollback> {
        if !matches!(status, RollbackStatus::Completed | RollbackStatus::Failed) {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: format!("a rollback finishes COMPLETED or FAILED, not {status}"),
            });
        }
        let res = rb::Entity::update_many()
            .col_expr(rb::Column::Status, Expr::value(status.as_str()))
            .col_expr(rb::Column::Details, Expr::value(details))
            .col_expr(rb::Column::Error, Expr::value(error))
            .col_expr(rb::Column::CompletedAt, Expr::value(Utc::now()))
            .filter(rb::Column::Id.eq(id))
            .filter(rb::Column::Status.is_in([
                RollbackStatus::Pending.as_str(),
                RollbackStatus::Running.as_str(),
            ]))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "finishing a rollback"))?;
        let current = self.get(id).await?;
        if res.rows_affected == 0 {
            return Err(Error::InvalidTransition {
                entity: ENTITY,
                id: id.to_string(),
                from: current.status.to_string(),
                to: status.to_string(),
            });
        }
        Ok(current)
    }
}
