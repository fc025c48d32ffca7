//! The cost ledger: one row per priced LLM call, written in the same transaction as the
//! atomic accumulation on the execution and the step, and aggregated by model, workflow and
//! time window with SQL `SUM`s over integer nano-USD (exact).

use super::{counter, db_err, repository};
use crate::entity::{execution as ex, step};
use crate::money::{nanos_to_usd, usd_to_nanos};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select, Set,
    TransactionTrait,
};
use uuid::Uuid;
use wflo_types::{ExecutionId, ReservationId, StepId};

pub(crate) mod entry {
    #![allow(unreachable_pub, missing_debug_implementations)]
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "cost_entries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub execution_id: Option<Uuid>,
        pub step_id: Option<Uuid>,
        pub workflow_name: Option<String>,
        pub reservation_id: Option<Uuid>,
        pub model: String,
        pub prompt_tokens: i64,
        pub completion_tokens: i64,
        pub cached_prompt_tokens: i64,
        pub cache_write_tokens: i64,
        pub reasoning_tokens: i64,
        pub cost_nano_usd: i64,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Token counters of one call, as stored in the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerTokens {
    /// Prompt (input) tokens, cached and cache-written ones included.
    pub prompt: u64,
    /// Completion (output) tokens, reasoning ones included.
    pub completion: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_prompt: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning: u64,
}

/// A ledger row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCostEntry {
    /// The execution the call belongs to (its cost and tokens are accumulated too).
    pub execution_id: Option<ExecutionId>,
    /// The step the call belongs to (accumulated too); needs `execution_id`.
    pub step_id: Option<StepId>,
    /// The workflow definition's name, for aggregates by workflow.
    pub workflow_name: Option<String>,
    /// The budget reservation this call settled, if any.
    pub reservation_id: Option<ReservationId>,
    /// The model id as priced.
    pub model: String,
    /// Tokens.
    pub tokens: LedgerTokens,
    /// The exact cost (rounded to the nano-USD when stored).
    pub cost_usd: Decimal,
    /// When the call happened (`None`: now).
    pub at: Option<DateTime<Utc>>,
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct CostEntry {
    /// Position in the ledger.
    pub id: i64,
    /// The execution.
    pub execution_id: Option<ExecutionId>,
    /// The step.
    pub step_id: Option<StepId>,
    /// The workflow definition's name.
    pub workflow_name: Option<String>,
    /// The settled reservation.
    pub reservation_id: Option<ReservationId>,
    /// The model.
    pub model: String,
    /// Tokens.
    pub tokens: LedgerTokens,
    /// Exact cost.
    pub cost_usd: Decimal,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<entry::Model> for CostEntry {
    fn from(m: entry::Model) -> Self {
        CostEntry {
            id: m.id,
            execution_id: m.execution_id.map(Into::into),
            step_id: m.step_id.map(Into::into),
            workflow_name: m.workflow_name,
            reservation_id: m.reservation_id.map(Into::into),
            model: m.model,
            tokens: LedgerTokens {
                prompt: m.prompt_tokens as u64,
                completion: m.completion_tokens as u64,
                cached_prompt: m.cached_prompt_tokens as u64,
                cache_write: m.cache_write_tokens as u64,
                reasoning: m.reasoning_tokens as u64,
            },
            cost_usd: nanos_to_usd(m.cost_nano_usd),
            created_at: m.created_at,
        }
    }
}

/// Which ledger rows an aggregate covers (all of them by default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostFilter {
    /// Only this execution.
    pub execution_id: Option<ExecutionId>,
    /// Only this workflow definition name.
    pub workflow_name: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// From this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub until: Option<DateTime<Utc>>,
}

/// Sums over ledger rows, exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostTotals {
    /// Number of calls.
    pub calls: u64,
    /// Total cost.
    pub cost_usd: Decimal,
    /// Token sums.
    pub tokens: LedgerTokens,
}

repository!(
    /// The cost ledger and its aggregates.
    Costs
);

const ENTITY: &str = "cost entry";

/// `CAST(SUM(col) AS BIGINT)`: PostgreSQL sums BIGINT into NUMERIC.
fn sum(col: &str, alias: &'static str) -> (Expr, &'static str) {
    (
        Expr::cust(format!("CAST(COALESCE(SUM({col}), 0) AS BIGINT)")),
        alias,
    )
}

type TotalsRow = (i64, i64, i64, i64, i64, i64, i64);

fn totals_from(row: TotalsRow) -> CostTotals {
    CostTotals {
        calls: row.0 as u64,
        cost_usd: nanos_to_usd(row.1),
        tokens: LedgerTokens {
            prompt: row.2 as u64,
            completion: row.3 as u64,
            cached_prompt: row.4 as u64,
            cache_write: row.5 as u64,
            reasoning: row.6 as u64,
        },
    }
}

fn with_sums(select: Select<entry::Entity>) -> Select<entry::Entity> {
    let mut select = select.column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "calls");
    for (expr, alias) in [
        sum("cost_nano_usd", "cost"),
        sum("prompt_tokens", "prompt"),
        sum("completion_tokens", "completion"),
        sum("cached_prompt_tokens", "cached"),
        sum("cache_write_tokens", "cache_write"),
        sum("reasoning_tokens", "reasoning"),
    ] {
        select = select.column_as(expr, alias);
    }
    select
}

fn filtered(filter: &CostFilter) -> Select<entry::Entity> {
    let mut q = entry::Entity::find().select_only();
    if let Some(id) = filter.execution_id {
        q = q.filter(entry::Column::ExecutionId.eq(id.as_uuid()));
    }
    if let Some(name) = &filter.workflow_name {
        q = q.filter(entry::Column::WorkflowName.eq(name.clone()));
    }
    if let Some(model) = &filter.model {
        q = q.filter(entry::Column::Model.eq(model.clone()));
    }
    if let Some(since) = filter.since {
        q = q.filter(entry::Column::CreatedAt.gte(since));
    }
    if let Some(until) = filter.until {
        q = q.filter(entry::Column::CreatedAt.lt(until));
    }
    q
}

/// Adds cost and tokens to an execution (and one of its steps): one atomic `SET x = x + n`
/// UPDATE each, the same statements as [`crate::Executions::add_cost`].
pub(crate) async fn accumulate<C: sea_orm::ConnectionTrait>(
    conn: &C,
    execution: Uuid,
    step_id: Option<Uuid>,
    nanos: i64,
    prompt: i64,
    completion: i64,
) -> Result<()> {
    let now = Utc::now();
    let res = ex::Entity::update_many()
        .col_expr(
            ex::Column::CostNanoUsd,
            Expr::col(ex::Column::CostNanoUsd).add(nanos),
        )
        .col_expr(
            ex::Column::PromptTokens,
            Expr::col(ex::Column::PromptTokens).add(prompt),
        )
        .col_expr(
            ex::Column::CompletionTokens,
            Expr::col(ex::Column::CompletionTokens).add(completion),
        )
        .col_expr(ex::Column::UpdatedAt, Expr::value(now))
        .filter(ex::Column::Id.eq(execution))
        .exec(conn)
        .await
        .map_err(db_err("workflow execution", "adding cost to an execution"))?;
    if res.rows_affected == 0 {
        return Err(Error::NotFound {
            entity: "workflow execution",
            id: execution.to_string(),
        });
    }
    if let Some(step_id) = step_id {
        accumulate_step(conn, execution, step_id, nanos, prompt, completion).await?;
    }
    Ok(())
}

/// Adds a call's cost and tokens to a step of `execution` (`SET x = x + n`).
async fn accumulate_step<C: sea_orm::ConnectionTrait>(
    conn: &C,
    execution: Uuid,
    step_id: Uuid,
    nanos: i64,
    prompt: i64,
    completion: i64,
) -> Result<()> {
    let now = Utc::now();
    let res = step::Entity::update_many()
        .col_expr(
            step::Column::CostNanoUsd,
            Expr::col(step::Column::CostNanoUsd).add(nanos),
        )
        .col_expr(
            step::Column::PromptTokens,
            Expr::col(step::Column::PromptTokens).add(prompt),
        )
        .col_expr(
            step::Column::CompletionTokens,
            Expr::col(step::Column::CompletionTokens).add(completion),
        )
        .col_expr(step::Column::UpdatedAt, Expr::value(now))
        .filter(step::Column::Id.eq(step_id))
        .filter(step::Column::ExecutionId.eq(execution))
        .exec(conn)
        .await
        .map_err(db_err("step execution", "adding cost to a step"))?;
    if res.rows_affected == 0 {
        return Err(Error::NotFound {
            entity: "step execution",
            id: format!("{step_id} of execution {execution}"),
        });
    }
    Ok(())
}

/// Builds the ledger row to insert (validated).
pub(crate) fn ledger_row(new: &NewCostEntry) -> Result<entry::ActiveModel> {
    let t = new.tokens;
    if new.model.trim().is_empty() {
        return Err(Error::Invalid {
            entity: ENTITY,
            detail: "the model must not be empty".into(),
        });
    }
    if new.step_id.is_some() && new.execution_id.is_none() {
        return Err(Error::Invalid {
            entity: ENTITY,
            detail: "a step needs its execution; pass execution_id too".into(),
        });
    }
    Ok(entry::ActiveModel {
        execution_id: Set(new.execution_id.map(Into::into)),
        step_id: Set(new.step_id.map(Into::into)),
        workflow_name: Set(new.workflow_name.clone()),
        reservation_id: Set(new.reservation_id.map(Into::into)),
        model: Set(new.model.clone()),
        prompt_tokens: Set(counter(ENTITY, "prompt tokens", t.prompt)?),
        completion_tokens: Set(counter(ENTITY, "completion tokens", t.completion)?),
        cached_prompt_tokens: Set(counter(ENTITY, "cached prompt tokens", t.cached_prompt)?),
        cache_write_tokens: Set(counter(ENTITY, "cache write tokens", t.cache_write)?),
        reasoning_tokens: Set(counter(ENTITY, "reasoning tokens", t.reasoning)?),
        cost_nano_usd: Set(usd_to_nanos(new.cost_usd)?),
        created_at: Set(new.at.unwrap_or_else(Utc::now)),
        ..Default::default()
    })
}

/// Writes the ledger row and accumulates on the execution and step, on `conn` (which the
/// caller makes a transaction).
pub(crate) async fn record_on<C: sea_orm::ConnectionTrait>(
    conn: &C,
    new: &NewCostEntry,
) -> Result<CostEntry> {
    let model = ledger_row(new)?;
    let row = model
        .insert(conn)
        .await
        .map_err(db_err(ENTITY, "writing a ledger row"))?;
    if let Some(execution) = new.execution_id {
        accumulate(
            conn,
            execution.into(),
            new.step_id.map(Into::into),
            row.cost_nano_usd,
            row.prompt_tokens,
            row.completion_tokens,
        )
        .await?;
    }
    Ok(row.into())
}

/// Writes several ledger rows in one INSERT and accumulates them on their executions and steps
/// (one update per execution and per step, in id order), on `conn` (a transaction). Returns
/// the rows in the order given.
pub(crate) async fn record_many_on<C: sea_orm::ConnectionTrait>(
    conn: &C,
    news: &[NewCostEntry],
) -> Result<Vec<CostEntry>> {
    if news.is_empty() {
        return Ok(Vec::new());
    }
    let models = news.iter().map(ledger_row).collect::<Result<Vec<_>>>()?;
    let mut rows = entry::Entity::insert_many(models)
        .exec_with_returning(conn)
        .await
        .map_err(db_err(ENTITY, "writing ledger rows"))?;
    // Serial ids are drawn in VALUES order.
    rows.sort_by_key(|r| r.id);
    type Sums = (i64, i64, i64);
    let add = |t: &mut Sums, r: &entry::Model| {
        t.0 += r.cost_nano_usd;
        t.1 += r.prompt_tokens;
        t.2 += r.completion_tokens;
    };
    let mut per_execution: std::collections::BTreeMap<Uuid, Sums> = Default::default();
    let mut per_step: std::collections::BTreeMap<(Uuid, Uuid), Sums> = Default::default();
    for r in &rows {
        if let Some(e) = r.execution_id {
            add(per_execution.entry(e).or_default(), r);
            if let Some(s) = r.step_id {
                add(per_step.entry((e, s)).or_default(), r);
            }
        }
    }
    for (e, (n, p, c)) in per_execution {
        accumulate(conn, e, None, n, p, c).await?;
    }
    for ((e, s), (n, p, c)) in per_step {
        accumulate_step(conn, e, s, n, p, c).await?;
    }
    Ok(rows.into_iter().map(CostEntry::from).collect())
}

impl<E: crate::Executor> Costs<'_, E> {
    /// Writes a ledger row and, when it names an execution (and step), adds its cost and
    /// tokens to them with atomic `SET x = x + n` updates, all in one transaction.
    pub async fn record(&self, new: NewCostEntry) -> Result<CostEntry> {
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(db_err(ENTITY, "beginning a ledger write"))?;
        let entry = record_on(&txn, &new).await?;
        txn.commit()
            .await
            .map_err(db_err(ENTITY, "committing a ledger write"))?;
        Ok(entry)
    }

    /// The ledger rows of an execution, in order.
    pub async fn list_for_execution(
        &self,
        execution_id: impl Into<ExecutionId>,
    ) -> Result<Vec<CostEntry>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        entry::Entity::find()
            .filter(entry::Column::ExecutionId.eq(execution_id))
            .order_by_asc(entry::Column::Id)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(CostEntry::from).collect())
            .map_err(db_err(ENTITY, "listing ledger rows"))
    }

    /// Sums over the rows `filter` selects.
    pub async fn totals(&self, filter: &CostFilter) -> Result<CostTotals> {
        with_sums(filtered(filter))
            .into_tuple::<TotalsRow>()
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "summing the ledger"))
            .map(|row| row.map(totals_from).unwrap_or_default())
    }

    /// Sums per model over the rows `filter` selects, by model name.
    pub async fn totals_by_model(&self, filter: &CostFilter) -> Result<Vec<(String, CostTotals)>> {
        with_sums(filtered(filter).column(entry::Column::Model))
            .group_by(entry::Column::Model)
            .order_by_asc(entry::Column::Model)
            .into_tuple::<(String, i64, i64, i64, i64, i64, i64, i64)>()
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "summing the ledger by model"))
            .map(|rows| {
                rows.into_iter()
                    .map(|(m, a, b, c, d, e, f, g)| (m, totals_from((a, b, c, d, e, f, g))))
                    .collect()
            })
    }

    /// Sums per workflow definition name over the rows `filter` selects (rows without a
    /// workflow name are left out).
    pub async fn totals_by_workflow(
        &self,
        filter: &CostFilter,
    ) -> Result<Vec<(String, CostTotals)>> {
        with_sums(filtered(filter).column(entry::Column::WorkflowName))
            .filter(entry::Column::WorkflowName.is_not_null())
            .group_by(entry::Column::WorkflowName)
            .order_by_asc(entry::Column::WorkflowName)
            .into_tuple::<(String, i64, i64, i64, i64, i64, i64, i64)>()
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "summing the ledger by workflow"))
            .map(|rows| {
                rows.into_iter()
                    .map(|(m, a, b, c, d, e, f, g)| (m, totals_from((a, b, c, d, e, f, g))))
                    .collect()
            })
    }
}
