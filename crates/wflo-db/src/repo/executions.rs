use super::{counter, db_err, parse_stored, repository, text_enum};
use crate::entity::execution as ex;
use crate::money::{nanos_to_usd, usd_to_nanos};
use crate::{Error, Result};
use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;
use wflo_types::{ExecutionId, StepId};

/// Which executions [`Executions::page`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionFilter {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only runs of this workflow (by name).
    pub workflow: Option<String>,
    /// Only executions created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only executions after this one in the order (newest first): the previous page's last.
    pub after: Option<ExecutionId>,
    /// At most this many (1 to 1000).
    pub limit: u64,
}

impl ExecutionFilter {
    /// Every execution, `limit` at a time.
    pub fn all(limit: u64) -> ExecutionFilter {
        ExecutionFilter {
            status: None,
            workflow: None,
            since: None,
            after: None,
            limit,
        }
    }
}

/// Where an execution is in its life (the shared vocabulary's type).
pub use wflo_types::ExecutionStatus;

text_enum!(
    /// The engine that drives an execution. Decisions and signals go through it: an approval of
    /// a Temporal run is delivered to its workflow, not only written to the row.
    ExecutionEngine {
        /// The in-process engine (`wflo run`, an embedding program), guarded by a lease.
        Local = "LOCAL",
        /// A `WfloWorkflow` on Temporal (`wflo run --engine temporal`, executed by `wflo worker`).
        Temporal = "TEMPORAL",
    }
);

/// A driver's hold on an execution: only its holder runs steps until `expires_at`; every
/// acquisition increments `fence`, so a stale holder is recognised by its older fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (host, process and a per-process token).
    pub holder: String,
    /// Until when, unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The fencing counter of this acquisition.
    pub fence: i64,
}

/// Who drives an execution now, as far as the database knows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Driver {
    /// A Temporal workflow (its worker holds no lease here).
    Temporal,
    /// An in-process driver whose lease has not expired.
    Held {
        /// The lease holder.
        holder: String,
        /// When its lease expires unless renewed.
        until: DateTime<Utc>,
    },
    /// No live driver: the last lease expired or was released at `since` (none: never driven).
    None {
        /// When the last driver's lease ended.
        since: Option<DateTime<Utc>>,
    },
}

/// Token counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
}

impl Tokens {
    /// Both counters.
    pub fn new(prompt: u64, completion: u64) -> Self {
        Tokens { prompt, completion }
    }
    /// Prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// A workflow execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// Row id.
    pub id: ExecutionId,
    /// The definition it runs.
    pub workflow_id: Uuid,
    /// That definition's name.
    pub workflow_name: String,
    /// Current status.
    pub status: ExecutionStatus,
    /// Inputs it was started with.
    pub inputs: Value,
    /// Its own budget (the whole run's spend limit), when it was started with one.
    pub budget_usd: Option<Decimal>,
    /// Outputs, once completed.
    pub outputs: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Money spent, exact.
    pub cost_usd: Decimal,
    /// Tokens used.
    pub tokens: Tokens,
    /// Distributed trace id.
    pub trace_id: Option<String>,
    /// The embedder's own tag for the run (a request id, a ticket).
    pub correlation_id: Option<String>,
    /// First entered RUNNING.
    pub started_at: Option<DateTime<Utc>>,
    /// Entered a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The engine that drives it.
    pub engine: ExecutionEngine,
    /// The in-process driver's lease holder (none: released or never taken).
    pub lease_holder: Option<String>,
    /// When the latest lease expires or expired (kept after a release: "no driver since").
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The fencing counter: how many times a lease was acquired.
    pub lease_fence: i64,
}

impl Execution {
    /// Who drives it at `now`.
    pub fn driver(&self, now: DateTime<Utc>) -> Driver {
        if self.engine == ExecutionEngine::Temporal {
            return Driver::Temporal;
        }
        match (&self.lease_holder, self.lease_expires_at) {
            (Some(holder), Some(until)) if until > now => Driver::Held {
                holder: holder.clone(),
                until,
            },
            (_, since) => Driver::None { since },
        }
    }
}

impl TryFrom<ex::Model> for Execution {
    type Error = Error;
    fn try_from(m: ex::Model) -> Result<Self> {
        Ok(Execution {
            id: m.id.into(),
            workflow_id: m.workflow_id,
            workflow_name: m.workflow_name,
            status: parse_stored(&m.status)?,
            inputs: m.inputs,
            budget_usd: m.budget_nano_usd.map(nanos_to_usd),
            outputs: m.outputs,
            error: m.error,
            cost_usd: nanos_to_usd(m.cost_nano_usd),
            tokens: Tokens::new(m.prompt_tokens as u64, m.completion_tokens as u64),
            trace_id: m.trace_id,
            correlation_id: m.correlation_id,
            started_at: m.started_at,
            completed_at: m.completed_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
            engine: parse_stored(&m.engine)?,
            lease_holder: m.lease_holder,
            lease_expires_at: m.lease_expires_at,
            lease_fence: m.lease_fence,
        })
    }
}

/// An execution to create (status PENDING).
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    /// A chosen id (for idempotent creation), or `None` for a new UUIDv7.
    pub id: Option<ExecutionId>,
    /// The definition to run.
    pub workflow_id: Uuid,
    /// That definition's name (`None`: read from the definition while creating).
    pub workflow_name: Option<String>,
    /// Inputs.
    pub inputs: Value,
    /// The run's own budget in USD (greater than zero).
    pub budget_usd: Option<Decimal>,
    /// Distributed trace id (at most 64 characters).
    pub trace_id: Option<String>,
    /// The embedder's own tag for the run (at most 255 characters).
    pub correlation_id: Option<String>,
    /// The engine that will drive it.
    pub engine: ExecutionEngine,
}

impl NewExecution {
    /// An execution of `workflow_id` with `inputs`, driven by the in-process engine.
    pub fn new(workflow_id: Uuid, inputs: Value) -> Self {
        NewExecution {
            id: None,
            workflow_id,
            workflow_name: None,
            inputs,
            budget_usd: None,
            trace_id: None,
            correlation_id: None,
            engine: ExecutionEngine::Local,
        }
    }
}

/// What a transition records besides the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Outputs to store (kept when `None`).
    pub outputs: Option<Value>,
    /// Error to store (kept when `None`).
    pub error: Option<String>,
}

repository!(
    /// Workflow executions: creation, validated status transitions, atomic cost accumulation.
    Executions
);

const ENTITY: &str = "workflow execution";

fn ttl_of(ttl: Duration) -> Result<chrono::Duration> {
    if ttl.is_zero() {
        return Err(Error::Invalid {
            entity: ENTITY,
            detail: "a lease must last longer than zero".into(),
        });
    }
    chrono::Duration::from_std(ttl).map_err(|_| Error::Invalid {
        entity: ENTITY,
        detail: format!("a lease of {ttl:?} is too long"),
    })
}

impl<E: crate::Executor> Executions<'_, E> {
    /// Creates an execution in PENDING. A missing definition is [`Error::ForeignKey`]; a budget
    /// that is not above zero, or an over-long trace or correlation id, is [`Error::Invalid`].
    pub async fn create(&self, new: NewExecution) -> Result<Execution> {
        let invalid = |detail: String| Error::Invalid {
            entity: ENTITY,
            detail,
        };
        let budget = match new.budget_usd {
            Some(b) if b <= Decimal::ZERO => {
                return Err(invalid(format!(
                    "a budget must be greater than zero, not {b}"
                )));
            }
            Some(b) => Some(usd_to_nanos(b)?),
            None => None,
        };
        for (what, value, max) in [
            ("trace id", &new.trace_id, 64),
            ("correlation id", &new.correlation_id, 255),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.chars().count() > max)
            {
                return Err(invalid(format!(
                    "a {what} must be 1 to {max} characters, not {}",
                    v.chars().count()
                )));
            }
        }
        let workflow_name = match new.workflow_name {
            Some(n) => n,
            None => match crate::entity::definition::Entity::find_by_id(new.workflow_id)
                .one(self.conn())
                .await
                .map_err(db_err(ENTITY, "reading the definition's name"))?
            {
                Some(d) => d.name,
                None => {
                    return Err(Error::ForeignKey {
                        entity: ENTITY,
                        detail: format!("no workflow definition {}", new.workflow_id),
                    });
                }
            },
        };
        let now = Utc::now();
        ex::ActiveModel {
            id: Set(new.id.unwrap_or_default().into()),
            workflow_id: Set(new.workflow_id),
            status: Set(ExecutionStatus::Pending.as_str().into()),
            inputs: Set(new.inputs),
            outputs: Set(None),
            error: Set(None),
            cost_nano_usd: Set(0),
            prompt_tokens: Set(0),
            completion_tokens: Set(0),
            snapshot_seq: Set(0),
            trace_id: Set(new.trace_id),
            started_at: Set(None),
            completed_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            engine: Set(new.engine.as_str().into()),
            lease_holder: Set(None),
            lease_expires_at: Set(None),
            lease_fence: Set(0),
            workflow_name: Set(workflow_name),
            budget_nano_usd: Set(budget),
            correlation_id: Set(new.correlation_id),
        }
        .insert(self.conn())
        .await
        .map_err(db_err(ENTITY, "creating an execution"))?
        .try_into()
    }

    /// By id.
    pub async fn get(&self, id: impl Into<ExecutionId>) -> Result<Execution> {
        let id = super::raw::<ExecutionId>(id);
        ex::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading an execution"))?
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })?
            .try_into()
    }

    /// Executions in a status, oldest first.
    pub async fn list_by_status(&self, status: ExecutionStatus) -> Result<Vec<Execution>> {
        ex::Entity::find()
            .filter(ex::Column::Status.eq(status.as_str()))
            .order_by_asc(ex::Column::CreatedAt)
            .order_by_asc(ex::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing executions"))?
            .into_iter()
            .map(Execution::try_from)
            .collect()
    }

    /// Executions of one definition, oldest first.
    pub async fn list_for_workflow(&self, workflow_id: Uuid) -> Result<Vec<Execution>> {
        ex::Entity::find()
            .filter(ex::Column::WorkflowId.eq(workflow_id))
            .order_by_asc(ex::Column::CreatedAt)
            .order_by_asc(ex::Column::Id)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing executions"))?
            .into_iter()
            .map(Execution::try_from)
            .collect()
    }

    /// A page of executions, newest first, selected by `filter`; pass the last id of a page as
    /// `filter.after` for the next one (an unknown cursor is [`Error::NotFound`]).
    pub async fn page(&self, filter: &ExecutionFilter) -> Result<Vec<Execution>> {
        let mut q = ex::Entity::find();
        if let Some(status) = filter.status {
            q = q.filter(ex::Column::Status.eq(status.as_str()));
        }
        if let Some(name) = &filter.workflow {
            q = q.filter(ex::Column::WorkflowName.eq(name.as_str()));
        }
        if let Some(since) = filter.since {
            q = q.filter(ex::Column::CreatedAt.gte(since));
        }
        if let Some(after) = filter.after {
            let cursor = self.get(after).await?;
            q = q.filter(
                Condition::any()
                    .add(ex::Column::CreatedAt.lt(cursor.created_at))
                    .add(
                        Condition::all()
                            .add(ex::Column::CreatedAt.eq(cursor.created_at))
                            .add(ex::Column::Id.lt(super::raw::<ExecutionId>(after))),
                    ),
            );
        }
        q.order_by_desc(ex::Column::CreatedAt)
            .order_by_desc(ex::Column::Id)
            .limit(filter.limit.clamp(1, 1000))
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing executions"))?
            .into_iter()
            .map(Execution::try_from)
            .collect()
    }

    /// The newest executions, newest first.
    pub async fn recent(&self, limit: u64) -> Result<Vec<Execution>> {
        ex::Entity::find()
            .order_by_desc(ex::Column::CreatedAt)
            .order_by_desc(ex::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing executions"))?
            .into_iter()
            .map(Execution::try_from)
            .collect()
    }

    /// Moves an execution to `to`, in one conditional UPDATE: it happens only when the current
    /// status is one of `to.allowed_from()`, so two racing writers cannot both win and a
    /// COMPLETED execution never returns to RUNNING. Refused moves are
    /// [`Error::InvalidTransition`].
    pub async fn transition(
        &self,
        id: impl Into<ExecutionId>,
        to: ExecutionStatus,
        outcome: Outcome,
    ) -> Result<Execution> {
        let id = super::raw::<ExecutionId>(id);
        self.transition_from(id, to.allowed_from(), to, outcome)
            .await
    }

    /// Reopens a COMPLETED execution after a rollback undid some of its steps: it becomes
    /// FAILED with `error` (the rollback) and can be resumed. The only way out of COMPLETED;
    /// any other status is [`Error::InvalidTransition`].
    pub async fn reopen(&self, id: impl Into<ExecutionId>, error: String) -> Result<Execution> {
        let id = super::raw::<ExecutionId>(id);
        self.transition_from(
            id,
            &[ExecutionStatus::Completed],
            ExecutionStatus::Failed,
            Outcome {
                outputs: None,
                error: Some(error),
            },
        )
        .await
    }

    async fn transition_from(
        &self,
        id: impl Into<ExecutionId>,
        allowed: &[ExecutionStatus],
        to: ExecutionStatus,
        outcome: Outcome,
    ) -> Result<Execution> {
        let id = super::raw::<ExecutionId>(id);
        let now = Utc::now();
        let from: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        let mut update = ex::Entity::update_many()
            .col_expr(ex::Column::Status, Expr::value(to.as_str()))
            .col_expr(ex::Column::UpdatedAt, Expr::value(now));
        if to == ExecutionStatus::Running {
            update = update.col_expr(
                ex::Column::StartedAt,
                Expr::col(ex::Column::StartedAt).if_null(now),
            );
        }
        if to.is_terminal() {
            update = update.col_expr(ex::Column::CompletedAt, Expr::value(now));
        } else {
            update = update.col_expr(
                ex::Column::CompletedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            );
        }
        if let Some(outputs) = outcome.outputs {
            update = update.col_expr(ex::Column::Outputs, Expr::value(outputs));
        }
        if let Some(error) = outcome.error {
            update = update.col_expr(ex::Column::Error, Expr::value(error));
        }
        // The changed row comes back with the UPDATE (RETURNING): no second read.
        let changed = update
            .filter(ex::Column::Id.eq(id))
            .filter(ex::Column::Status.is_in(from))
            .exec_with_returning(self.conn())
            .await
            .map_err(db_err(ENTITY, "changing an execution's status"))?;
        match changed.into_iter().next() {
            Some(m) => m.try_into(),
            None => {
                let current = self.get(id).await?;
                Err(Error::InvalidTransition {
                    entity: ENTITY,
                    id: id.to_string(),
                    from: current.status.to_string(),
                    to: to.to_string(),
                })
            }
        }
    }

    /// Adds `amount` and `tokens` to the execution (and to one of its steps), each as one
    /// atomic `SET x = x + n` UPDATE (the two in one transaction when a step is given):
    /// concurrent callers never lose an increment. The amount is rounded to the nano-USD.
    pub async fn add_cost(
        &self,
        execution: impl Into<ExecutionId>,
        step_id: Option<StepId>,
        amount: Decimal,
        tokens: Tokens,
    ) -> Result<()> {
        let step_id = step_id.map(Uuid::from);
        let execution = super::raw::<ExecutionId>(execution);
        let nanos = usd_to_nanos(amount)?;
        let prompt = counter(ENTITY, "prompt tokens", tokens.prompt)?;
        let completion = counter(ENTITY, "completion tokens", tokens.completion)?;
        if step_id.is_none() {
            // One statement is atomic on its own: no transaction needed.
            return super::costs::accumulate(
                self.conn(),
                execution,
                None,
                nanos,
                prompt,
                completion,
            )
            .await;
        }
        let txn = self
            .conn()
            .begin()
            .await
            .map_err(db_err(ENTITY, "beginning a cost update"))?;
        super::costs::accumulate(&txn, execution, step_id, nanos, prompt, completion).await?;
        txn.commit()
            .await
            .map_err(db_err(ENTITY, "committing a cost update"))
    }

    /// Takes the lease of an in-process driver: one conditional UPDATE that succeeds only when
    /// the execution is driven by the in-process engine and no other holder's lease is live,
    /// and increments the fencing counter. A live lease of another holder is [`Error::Leased`]
    /// (naming the holder and its expiry); an execution of another engine is
    /// [`Error::Invalid`].
    pub async fn acquire_lease(
        &self,
        id: impl Into<ExecutionId>,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease> {
        let id = super::raw::<ExecutionId>(id);
        let now = Utc::now().trunc_subsecs(3);
        let expires = now + ttl_of(ttl)?;
        let changed = ex::Entity::update_many()
            .col_expr(ex::Column::LeaseHolder, Expr::value(holder))
            .col_expr(ex::Column::LeaseExpiresAt, Expr::value(expires))
            .col_expr(
                ex::Column::LeaseFence,
                Expr::col(ex::Column::LeaseFence).add(1),
            )
            .filter(ex::Column::Id.eq(id))
            .filter(ex::Column::Engine.eq(ExecutionEngine::Local.as_str()))
            .filter(
                Condition::any()
                    .add(ex::Column::LeaseHolder.is_null())
                    .add(ex::Column::LeaseExpiresAt.is_null())
                    .add(ex::Column::LeaseExpiresAt.lte(now)),
            )
            .exec_with_returning(self.conn())
            .await
            .map_err(db_err(ENTITY, "taking an execution's lease"))?;
        if let Some(m) = changed.into_iter().next() {
            return Ok(Lease {
                holder: holder.to_string(),
                expires_at: expires,
                fence: m.lease_fence,
            });
        }
        let current = self.get(id).await?;
        match current.driver(now) {
            Driver::Temporal => Err(Error::Invalid {
                entity: ENTITY,
                detail: format!(
                    "execution {id} is driven by temporal (workflow wflo-{id}); it continues there \
                     once a worker runs (`wflo worker`)"
                ),
            }),
            Driver::Held { holder, until } => Err(Error::Leased {
                id: id.to_string(),
                holder,
                until,
            }),
            // Released between the two statements: report it as held by nobody known.
            Driver::None { .. } => Err(Error::Leased {
                id: id.to_string(),
                holder: "another driver".into(),
                until: now,
            }),
        }
    }

    /// Extends a held lease by `ttl` from now. A lease taken over by another holder (its fence
    /// moved on), released, or on an execution cancelled meanwhile is [`Error::LeaseLost`]; the
    /// caller must stop driving.
    pub async fn renew_lease(
        &self,
        id: impl Into<ExecutionId>,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Lease> {
        let id = super::raw::<ExecutionId>(id);
        let expires = Utc::now().trunc_subsecs(3) + ttl_of(ttl)?;
        let res = ex::Entity::update_many()
            .col_expr(ex::Column::LeaseExpiresAt, Expr::value(expires))
            .filter(ex::Column::Id.eq(id))
            .filter(ex::Column::LeaseHolder.eq(lease.holder.as_str()))
            .filter(ex::Column::LeaseFence.eq(lease.fence))
            // A cancelled execution keeps no driver: its holder learns it here and stops.
            .filter(ex::Column::Status.ne(ExecutionStatus::Cancelled.as_str()))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "renewing an execution's lease"))?;
        if res.rows_affected == 0 {
            return Err(Error::LeaseLost {
                id: id.to_string(),
                holder: lease.holder.clone(),
            });
        }
        Ok(Lease {
            expires_at: expires,
            ..lease.clone()
        })
    }

    /// Gives a lease up (when its holder stops driving): the execution has no driver from now
    /// on, and another may take it at once. Releasing a lease that was lost changes nothing.
    pub async fn release_lease(&self, id: impl Into<ExecutionId>, lease: &Lease) -> Result<bool> {
        let id = super::raw::<ExecutionId>(id);
        let res = ex::Entity::update_many()
            .col_expr(ex::Column::LeaseHolder, Expr::value(Option::<String>::None))
            .col_expr(
                ex::Column::LeaseExpiresAt,
                Expr::value(Utc::now().trunc_subsecs(3)),
            )
            .filter(ex::Column::Id.eq(id))
            .filter(ex::Column::LeaseHolder.eq(lease.holder.as_str()))
            .filter(ex::Column::LeaseFence.eq(lease.fence))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "releasing an execution's lease"))?;
        Ok(res.rows_affected > 0)
    }

    /// Unfinished in-process executions (RUNNING or WAITING_APPROVAL) whose driver's lease
    /// expired or was released before `now`: their driver died or stopped, so what they hold
    /// (budget reservations) can be given back.
    pub async fn without_driver(&self, now: DateTime<Utc>) -> Result<Vec<Execution>> {
        ex::Entity::find()
            .filter(ex::Column::Engine.eq(ExecutionEngine::Local.as_str()))
            .filter(ex::Column::Status.is_in([
                ExecutionStatus::Running.as_str(),
                ExecutionStatus::WaitingApproval.as_str(),
            ]))
            .filter(ex::Column::LeaseExpiresAt.lte(now))
            .order_by_asc(ex::Column::LeaseExpiresAt)
            .all(self.conn())
            .await
            .map_err(db_err(ENTITY, "listing executions without a driver"))?
            .into_iter()
            .map(Execution::try_from)
            .collect()
    }

    /// Deletes an execution; its steps, snapshots, approvals and rollback actions go with it.
    pub async fn delete(&self, id: impl Into<ExecutionId>) -> Result<()> {
        let id = super::raw::<ExecutionId>(id);
        let res = ex::Entity::delete_by_id(id)
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "deleting an execution"))?;
        if res.rows_affected == 0 {
            return Err(Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            });
        }
        Ok(())
    }
}
