use super::{db_err, parse_stored, repository};
use crate::entity::step;
use crate::money::nanos_to_usd;
use crate::repo::{NewOutboxEvent, Tokens};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, SubQueryStatement, UpdateStatement};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QueryTrait, Set,
};
use serde_json::Value;
use uuid::Uuid;
use wflo_types::{ExecutionId, StepId};

/// Where a step is (the shared vocabulary's type).
pub use wflo_types::StepStatus;

/// One step of an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Row id.
    pub id: StepId,
    /// The execution.
    pub execution_id: ExecutionId,
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
            id: m.id.into(),
            execution_id: m.execution_id.into(),
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
    pub execution_id: ExecutionId,
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
        new_model(new, status)
            .insert(self.conn())
            .await
            .map_err(db_err(ENTITY, "recording a step"))?
            .try_into()
    }

    /// [`Steps::start`] with `events` written to the outbox atomically with the step row: one
    /// statement on PostgreSQL, one transaction on SQLite (a savepoint inside a [`crate::Tx`]).
    /// A second step with the same key is [`Error::AlreadyExists`] and writes nothing.
    pub async fn start_with_events(
        &self,
        new: NewStep,
        events: Vec<NewOutboxEvent>,
    ) -> Result<Step> {
        let insert = step::Entity::insert(new_model(new, StepStatus::Running)).into_query();
        self.change_with_events(Change::Insert(insert), events, "recording a step")
            .await?
            .ok_or_else(|| Error::Database {
                context: "recording a step".into(),
                source: Box::new(sea_orm::DbErr::RecordNotInserted),
            })
    }

    /// [`Steps::transition`] with `events` written to the outbox atomically with it, and only
    /// when it takes place: one statement on PostgreSQL (`WITH s AS (UPDATE ... RETURNING *)
    /// INSERT INTO outbox_events ... SELECT ... FROM s`), one transaction on SQLite.
    pub async fn transition_with_events(
        &self,
        id: impl Into<StepId>,
        to: StepStatus,
        outputs: Option<Value>,
        error: Option<String>,
        events: Vec<NewOutboxEvent>,
    ) -> Result<Step> {
        let id = super::raw::<StepId>(id);
        let update = transition_update(id, to, outputs, error);
        match self
            .change_with_events(Change::Update(update), events, "changing a step's status")
            .await?
        {
            Some(s) => Ok(s),
            None => Err(self.refused(id, to).await),
        }
    }

    /// Runs `change` (given `RETURNING *` here) and, when it returns the step row, writes
    /// `events`, atomically. `None` when the change matched no row (nothing written).
    async fn change_with_events(
        &self,
        change: Change,
        events: Vec<NewOutboxEvent>,
        context: &'static str,
    ) -> Result<Option<Step>> {
        use sea_orm::FromQueryResult;
        use sea_orm::sea_query::{Alias, Asterisk, CommonTableExpression, Query, WithClause};
        let backend = self.conn().get_database_backend();
        let change = change.returning_all();
        let row = if self.ex.kind() == crate::Backend::Postgres {
            // One statement: atomic on its own, and one round trip.
            const CHANGED: &str = "changed_step";
            let mut with = WithClause::new();
            with.cte(
                CommonTableExpression::new()
                    .query(change)
                    .table_name(Alias::new(CHANGED))
                    .to_owned(),
            );
            if let Some(insert) = super::bus::insert_events_per_row_of(events, CHANGED)? {
                with.cte(
                    CommonTableExpression::new()
                        .query(insert)
                        .table_name(Alias::new("written_events"))
                        .to_owned(),
                );
            }
            let query = with.query(
                Query::select()
                    .column(Asterisk)
                    .from(Alias::new(CHANGED))
                    .to_owned(),
            );
            step::Model::find_by_statement(backend.build(&query))
                .one(self.conn())
                .await
                .map_err(step_or_outbox_err(context))?
        } else {
            let txn = crate::db::begin_write(self.conn())
                .await
                .map_err(db_err(ENTITY, context))?;
            let row = step::Model::find_by_statement(change.statement(&backend))
                .one(&txn)
                .await
                .map_err(step_or_outbox_err(context))?;
            if row.is_none() {
                // Dropping the transaction rolls it back; nothing was written.
                return Ok(None);
            }
            super::bus::insert_events(&txn, events).await?;
            txn.commit().await.map_err(db_err(ENTITY, context))?;
            row
        };
        row.map(Step::try_from).transpose()
    }

    /// The error of a refused transition: the current status, or the step is missing.
    async fn refused(&self, id: Uuid, to: StepStatus) -> Error {
        match self.get(id).await {
            Ok(current) => Error::InvalidTransition {
                entity: ENTITY,
                id: id.to_string(),
                from: current.status.to_string(),
                to: to.to_string(),
            },
            Err(e) => e,
        }
    }

    /// By id.
    pub async fn get(&self, id: impl Into<StepId>) -> Result<Step> {
        let id = super::raw::<StepId>(id);
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
    pub async fn find_by_key(
        &self,
        execution_id: impl Into<ExecutionId>,
        step_key: &str,
    ) -> Result<Option<Step>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
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
    pub async fn list(&self, execution_id: impl Into<ExecutionId>) -> Result<Vec<Step>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
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
    pub async fn record_output(&self, id: impl Into<StepId>, outputs: Value) -> Result<()> {
        let id = super::raw::<StepId>(id);
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

    /// Moves a step to `to` in one conditional UPDATE (see [`StepStatus::allowed_from`]),
    /// returning the changed row. Entering RUNNING counts an attempt.
    pub async fn transition(
        &self,
        id: impl Into<StepId>,
        to: StepStatus,
        outputs: Option<Value>,
        error: Option<String>,
    ) -> Result<Step> {
        let id = super::raw::<StepId>(id);
        use sea_orm::FromQueryResult;
        let backend = self.conn().get_database_backend();
        let mut update = transition_update(id, to, outputs, error);
        update.returning_all();
        match step::Model::find_by_statement(backend.build(&update))
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "changing a step's status"))?
        {
            Some(m) => m.try_into(),
            None => Err(self.refused(id, to).await),
        }
    }
}

/// A new step row in `status` (RUNNING counts the first attempt and its start).
fn new_model(new: NewStep, status: StepStatus) -> step::ActiveModel {
    let now = Utc::now();
    let running = status == StepStatus::Running;
    step::ActiveModel {
        id: Set(Uuid::now_v7()),
        execution_id: Set(new.execution_id.into()),
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
}

/// `UPDATE step_executions SET status = to, ... WHERE id = $id AND status IN (allowed
/// predecessors)`.
fn transition_update(
    id: Uuid,
    to: StepStatus,
    outputs: Option<Value>,
    error: Option<String>,
) -> UpdateStatement {
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
    update
        .filter(step::Column::Id.eq(id))
        .filter(step::Column::Status.is_in(from))
        .into_query()
}

/// A step row change: an insert or an update.
enum Change {
    Insert(InsertStatement),
    Update(UpdateStatement),
}

impl Change {
    /// The change, returning the changed row.
    fn returning_all(mut self) -> Self {
        match &mut self {
            Change::Insert(i) => {
                i.returning_all();
            }
            Change::Update(u) => {
                u.returning_all();
            }
        }
        self
    }

    fn statement(&self, backend: &sea_orm::DbBackend) -> sea_orm::Statement {
        match self {
            Change::Insert(i) => backend.build(i),
            Change::Update(u) => backend.build(u),
        }
    }
}

impl From<Change> for SubQueryStatement {
    fn from(c: Change) -> Self {
        match c {
            Change::Insert(i) => SubQueryStatement::InsertStatement(i),
            Change::Update(u) => SubQueryStatement::UpdateStatement(u),
        }
    }
}

/// Maps a driver error of a step change written with its events: a duplicate event id is the
/// outbox's, not the step's.
fn step_or_outbox_err(context: &'static str) -> impl Fn(sea_orm::DbErr) -> Error {
    move |e| match db_err(ENTITY, context)(e) {
        Error::AlreadyExists { detail, .. } if detail.contains("outbox_events") => {
            Error::AlreadyExists {
                entity: "outbox event",
                detail,
            }
        }
        other => other,
    }
}
