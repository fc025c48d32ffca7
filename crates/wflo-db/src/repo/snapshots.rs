use super::{db_err, repository};
use crate::entity::{execution as ex, snapshot as snap};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;
use wflo_types::{ExecutionId, SnapshotId};

/// A saved state of an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Row id.
    pub id: SnapshotId,
    /// The execution.
    pub execution_id: ExecutionId,
    /// 1, 2, 3, ... per execution, assigned atomically; unique per execution.
    pub version: i32,
    /// The step after which it was taken.
    pub step_key: Option<String>,
    /// The state.
    pub state: Value,
    /// Set when a rollback to an earlier snapshot made this one obsolete.
    pub superseded_at: Option<DateTime<Utc>>,
    /// Taken.
    pub created_at: DateTime<Utc>,
}

impl From<snap::Model> for Snapshot {
    fn from(m: snap::Model) -> Self {
        Snapshot {
            id: m.id.into(),
            execution_id: m.execution_id.into(),
            version: m.version,
            step_key: m.step_key,
            state: m.state,
            superseded_at: m.superseded_at,
            created_at: m.created_at,
        }
    }
}

repository!(
    /// State snapshots.
    Snapshots
);

const ENTITY: &str = "state snapshot";

impl<E: crate::Executor> Snapshots<'_, E> {
    /// Saves a snapshot with the next version of its execution. The version comes from an
    /// atomic increment of the execution's counter in the same transaction as the insert, so
    /// concurrent writers get distinct, consecutive versions.
    pub async fn create(
        &self,
        execution_id: impl Into<ExecutionId>,
        step_key: Option<&str>,
        state: Value,
    ) -> Result<Snapshot> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(db_err(ENTITY, "beginning a snapshot"))?;
        let res = ex::Entity::update_many()
            .col_expr(
                ex::Column::SnapshotSeq,
                Expr::col(ex::Column::SnapshotSeq).add(1),
            )
            .filter(ex::Column::Id.eq(execution_id))
            .exec(&txn)
            .await
            .map_err(db_err(ENTITY, "assigning a snapshot version"))?;
        if res.rows_affected == 0 {
            return Err(Error::NotFound {
                entity: "workflow execution",
                id: execution_id.to_string(),
            });
        }
        let version: i32 = ex::Entity::find_by_id(execution_id)
            .select_only()
            .column(ex::Column::SnapshotSeq)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(db_err(ENTITY, "reading a snapshot version"))?
            .ok_or_else(|| Error::NotFound {
                entity: "workflow execution",
                id: execution_id.to_string(),
            })?;
        let model = snap::ActiveModel {
            id: Set(Uuid::now_v7()),
            execution_id: Set(execution_id),
            version: Set(version),
            step_key: Set(step_key.map(str::to_string)),
            state: Set(state),
            superseded_at: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(db_err(ENTITY, "saving a snapshot"))?;
        txn.commit()
            .await
            .map_err(db_err(ENTITY, "committing a snapshot"))?;
        Ok(model.into())
    }

    /// By id.
    pub async fn get(&self, id: impl Into<SnapshotId>) -> Result<Snapshot> {
        let id = super::raw::<SnapshotId>(id);
        snap::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a snapshot"))?
            .map(Snapshot::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })
    }

    /// One version of an execution's snapshots.
    pub async fn get_version(
        &self,
        execution_id: impl Into<ExecutionId>,
        version: i32,
    ) -> Result<Snapshot> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        snap::Entity::find()
            .filter(snap::Column::ExecutionId.eq(execution_id))
            .filter(snap::Column::Version.eq(version))
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a snapshot"))?
            .map(Snapshot::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: format!("v{version} of execution {execution_id}"),
            })
    }

    /// The newest snapshot that is not superseded.
    pub async fn latest(&self, execution_id: impl Into<ExecutionId>) -> Result<Option<Snapshot>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        snap::Entity::find()
            .filter(snap::Column::ExecutionId.eq(execution_id))
            .filter(snap::Column::SupersededAt.is_null())
            .order_by_desc(snap::Column::Version)
            .one(self.conn())
            .await
            .map(|m| m.map(Snapshot::from))
            .map_err(db_err(ENTITY, "reading a snapshot"))
    }

    /// Every snapshot of an execution, by version.
    pub async fn list(&self, execution_id: impl Into<ExecutionId>) -> Result<Vec<Snapshot>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        snap::Entity::find()
            .filter(snap::Column::ExecutionId.eq(execution_id))
            .order_by_asc(snap::Column::Version)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(Snapshot::from).collect())
            .map_err(db_err(ENTITY, "listing snapshots"))
    }

    /// Marks every snapshot after `version` superseded; returns how many changed.
    pub async fn supersede_after(
        &self,
        execution_id: impl Into<ExecutionId>,
        version: i32,
    ) -> Result<u64> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        snap::Entity::update_many()
            .col_expr(snap::Column::SupersededAt, Expr::value(Utc::now()))
            .filter(snap::Column::ExecutionId.eq(execution_id))
            .filter(snap::Column::Version.gt(version))
            .filter(snap::Column::SupersededAt.is_null())
            .exec(self.conn())
            .await
            .map(|r| r.rows_affected)
            .map_err(db_err(ENTITY, "superseding snapshots"))
    }
}
