//! Budgets that cannot be overshot: every change of a budget's `spent` or `reserved` amount is
//! one conditional, atomic UPDATE, and a reservation across several budgets is one transaction
//! (all or nothing).
//!
//! * [`Budgets::reserve`] first inserts the reservation row (unique `request_id`: a second
//!   reserve with the same id returns the first and changes nothing), then for each budget, in
//!   `(scope, period)` order, runs `UPDATE budgets SET reserved = reserved + n WHERE … AND
//!   spent + reserved + n <= limit`. A budget that refuses rolls the whole transaction back.
//! * [`Budgets::settle`] first moves the reservation PENDING→SETTLED in a conditional UPDATE (a
//!   second settle changes nothing and is [`Error::InvalidTransition`]), writes the ledger row,
//!   then moves the reserved amount out of `reserved` and adds the actual cost to `spent`. In the
//!   same transaction it claims each threshold the spend crossed with an
//!   `INSERT … ON CONFLICT DO NOTHING` of a (budget, threshold) marker and writes the outbox
//!   event only when that insert took effect: each alert is written once.
//! * [`Budgets::release`] and [`Budgets::expire_due`] (the sweeper) free a pending reservation
//!   the same way.
//!
//! Every transaction starts with a write, so on SQLite no transaction has to upgrade a read lock
//! (the cause of immediate `database is locked` errors); the busy timeout orders the writers.

use super::costs::{self, CostEntry, NewCostEntry};
use super::{NewOutboxEvent, db_err, parse_stored, repository, text_enum};
use crate::entity::outbox as ob;
use crate::money::{nanos_to_usd, usd_to_nanos};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;
use wflo_types::{ExecutionId, ReservationId};

mod ent {
    #![allow(unreachable_pub, missing_debug_implementations)]

    pub(super) mod budget {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "budgets")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            pub scope: String,
            pub period: String,
            pub limit_nano_usd: i64,
            pub spent_nano_usd: i64,
            pub reserved_nano_usd: i64,
            pub last_reservation_id: Option<Uuid>,
            pub created_at: DateTimeUtc,
            pub updated_at: DateTimeUtc,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub(super) mod reservation {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "budget_reservations")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            pub request_id: String,
            pub amount_nano_usd: i64,
            pub actual_nano_usd: Option<i64>,
            pub status: String,
            pub execution_id: Option<Uuid>,
            pub expires_at: DateTimeUtc,
            pub created_at: DateTimeUtc,
            pub closed_at: Option<DateTimeUtc>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub(super) mod reservation_scope {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "budget_reservation_scopes")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub reservation_id: Uuid,
            #[sea_orm(primary_key, auto_increment = false)]
            pub budget_id: Uuid,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub(super) mod alert {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "budget_alerts")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub budget_id: Uuid,
            #[sea_orm(primary_key, auto_increment = false)]
            pub threshold_pct: i32,
            pub spent_nano_usd: i64,
            pub event_id: Uuid,
            pub created_at: DateTimeUtc,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use ent::{alert, budget as bg, reservation as rs, reservation_scope as rsc};

mod batch;
pub use batch::{AlertEventFn, BudgetOp, BudgetOpOutcome, ChargeRecorded, CostEventFn};

/// The one outcome of a batch of one.
fn single(mut v: Vec<Result<BudgetOpOutcome>>) -> Result<BudgetOpOutcome> {
    v.pop().unwrap_or_else(|| Err(mismatch()))
}

fn mismatch() -> Error {
    Error::Invalid {
        entity: RES,
        detail: "a budget operation got another operation's outcome; this is a bug in wflo-db, report it"
            .into(),
    }
}

text_enum!(
    /// Where a budget reservation is in its life.
    ReservationStatus {
        /// Holding its amount in every budget it covers.
        Pending = "PENDING",
        /// The call's actual cost was charged (final).
        Settled = "SETTLED",
        /// Given back by the caller without a charge (final).
        Released = "RELEASED",
        /// Given back by the sweeper after its expiry; a late settle still charges it.
        Expired = "EXPIRED",
    }
);

/// Names a budget: a scope (`execution:<uuid>`, `workflow:<name>`, `tenant:<name>`, …) and a
/// period (`""` for a budget that never resets, `2026-11` or `2026-11-25` for periodic ones).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BudgetKey {
    /// The scope.
    pub scope: String,
    /// The period (empty when not periodic).
    pub period: String,
}

impl BudgetKey {
    /// A key.
    pub fn new(scope: impl Into<String>, period: impl Into<String>) -> Self {
        BudgetKey {
            scope: scope.into(),
            period: period.into(),
        }
    }
}

/// A budget and where it stands, exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Row id.
    pub id: Uuid,
    /// Scope and period.
    pub key: BudgetKey,
    /// The limit (inclusive: spending exactly the limit is within budget).
    pub limit_usd: Decimal,
    /// Charged by settled calls.
    pub spent_usd: Decimal,
    /// Held by pending reservations.
    pub reserved_usd: Decimal,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Budget {
    /// `limit - spent - reserved` (negative only if a settle charged more than reserved).
    pub fn available_usd(&self) -> Decimal {
        self.limit_usd - self.spent_usd - self.reserved_usd
    }
}

impl From<bg::Model> for Budget {
    fn from(m: bg::Model) -> Self {
        Budget {
            id: m.id,
            key: BudgetKey::new(m.scope, m.period),
            limit_usd: nanos_to_usd(m.limit_nano_usd),
            spent_usd: nanos_to_usd(m.spent_nano_usd),
            reserved_usd: nanos_to_usd(m.reserved_nano_usd),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A budget to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBudget {
    /// Scope and period.
    pub key: BudgetKey,
    /// The limit; must be greater than zero.
    pub limit_usd: Decimal,
}

/// A reservation of an amount in every budget of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Row id.
    pub id: ReservationId,
    /// The caller's idempotency key.
    pub request_id: String,
    /// The amount held in each budget.
    pub amount_usd: Decimal,
    /// The actual cost, once settled.
    pub actual_usd: Option<Decimal>,
    /// Status.
    pub status: ReservationStatus,
    /// The execution the call belongs to.
    pub execution_id: Option<ExecutionId>,
    /// When the sweeper may release it.
    pub expires_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Settled, released or expired.
    pub closed_at: Option<DateTime<Utc>>,
}

impl TryFrom<rs::Model> for Reservation {
    type Error = Error;
    fn try_from(m: rs::Model) -> Result<Self> {
        Ok(Reservation {
            id: m.id.into(),
            request_id: m.request_id,
            amount_usd: nanos_to_usd(m.amount_nano_usd),
            actual_usd: m.actual_nano_usd.map(nanos_to_usd),
            status: parse_stored(&m.status)?,
            execution_id: m.execution_id.map(Into::into),
            expires_at: m.expires_at,
            created_at: m.created_at,
            closed_at: m.closed_at,
        })
    }
}

/// A reservation to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReservation {
    /// Idempotency key: reserving the same id twice holds the amount once.
    pub request_id: String,
    /// The amount to hold in every budget (the call's worst-case cost).
    pub amount_usd: Decimal,
    /// The budgets to hold it in; keys without a budget row are skipped.
    pub budgets: Vec<BudgetKey>,
    /// The execution the call belongs to.
    pub execution_id: Option<ExecutionId>,
    /// When the sweeper may release it.
    pub expires_at: DateTime<Utc>,
}

/// What [`Budgets::reserve`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ReserveOutcome {
    /// The amount is now held in every budget listed (after the update).
    Reserved {
        /// The new reservation.
        reservation: Reservation,
        /// The budgets that hold it.
        budgets: Vec<Budget>,
    },
    /// A reservation with this request id existed; nothing changed.
    Existing(Reservation),
    /// A budget had no room; nothing changed.
    Refused {
        /// The budget that refused, exactly as the refusing statement saw it
        /// (`spent + reserved + requested > limit`).
        budget: Budget,
        /// The amount asked for.
        requested_usd: Decimal,
    },
}

/// A settle to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    /// The reservation.
    pub reservation_id: ReservationId,
    /// The call's actual cost, charged to every budget of the reservation.
    pub actual_usd: Decimal,
    /// The ledger row to write in the same transaction (it accumulates on the execution and
    /// step it names; without an execution, the reservation's execution is used).
    pub ledger: Option<NewCostEntry>,
    /// Thresholds in percent of the limit (e.g. 50, 75, 90, 100) whose crossing writes an
    /// alert.
    pub thresholds: Vec<u32>,
}

/// A threshold a settle crossed for the first time in a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdCrossed {
    /// The budget, after the settle.
    pub budget: Budget,
    /// The threshold, in percent.
    pub threshold_pct: u32,
}

/// What [`Budgets::settle`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The reservation, now SETTLED.
    pub reservation: Reservation,
    /// Its budgets after the charge.
    pub budgets: Vec<Budget>,
    /// The ledger row written.
    pub ledger: Option<CostEntry>,
    /// Whether the reservation had already expired (its amount was no longer held).
    pub late: bool,
    /// Thresholds crossed for the first time (their outbox events are written).
    pub alerts: Vec<ThresholdCrossed>,
}

/// A threshold alert that was written.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAlert {
    /// The budget.
    pub budget_id: Uuid,
    /// The threshold, in percent.
    pub threshold_pct: u32,
    /// The budget's spend when it was crossed.
    pub spent_usd: Decimal,
    /// The outbox event written for it.
    pub event_id: Uuid,
    /// When.
    pub created_at: DateTime<Utc>,
}

repository!(
    /// Budgets, reservations and threshold alerts.
    Budgets
);

const ENTITY: &str = "budget";
const RES: &str = "budget reservation";
/// How many reservations one sweeper transaction expires.
const EXPIRE_BATCH: usize = 128;

impl<E: crate::Executor> Budgets<'_, E> {
    async fn begin(&self, what: &'static str) -> Result<DatabaseTransaction> {
        self.conn().begin().await.map_err(db_err(ENTITY, what))
    }

    /// Creates a budget; its key existing already is [`Error::AlreadyExists`], a limit of zero
    /// or less is [`Error::Invalid`].
    pub async fn create(&self, new: NewBudget) -> Result<Budget> {
        let model = Self::row(&new)?;
        model
            .insert(self.conn())
            .await
            .map(Budget::from)
            .map_err(db_err(ENTITY, "creating a budget"))
    }

    /// The budget of `new.key`, created with `new.limit_usd` when missing (for periodic
    /// budgets made on demand from a policy). An existing budget keeps its limit.
    pub async fn ensure(&self, new: NewBudget) -> Result<Budget> {
        let key = new.key.clone();
        let model = Self::row(&new)?;
        bg::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([bg::Column::Scope, bg::Column::Period])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(self.conn())
            .await
            .map_err(db_err(ENTITY, "creating a budget"))?;
        self.find(&key).await?.ok_or_else(|| Error::NotFound {
            entity: ENTITY,
            id: format!("{}@{}", key.scope, key.period),
        })
    }

    fn row(new: &NewBudget) -> Result<bg::ActiveModel> {
        if new.key.scope.trim().is_empty() {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: "the scope must not be empty".into(),
            });
        }
        if new.limit_usd <= Decimal::ZERO {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: format!("the limit {} USD must be greater than zero", new.limit_usd),
            });
        }
        let limit = usd_to_nanos(new.limit_usd)?;
        if limit == 0 {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: format!("the limit {} USD is below one nano-USD", new.limit_usd),
            });
        }
        let now = Utc::now();
        Ok(bg::ActiveModel {
            id: Set(Uuid::now_v7()),
            scope: Set(new.key.scope.clone()),
            period: Set(new.key.period.clone()),
            limit_nano_usd: Set(limit),
            spent_nano_usd: Set(0),
            reserved_nano_usd: Set(0),
            last_reservation_id: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
    }

    /// By id.
    pub async fn get(&self, id: Uuid) -> Result<Budget> {
        bg::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(ENTITY, "reading a budget"))?
            .map(Budget::from)
            .ok_or_else(|| Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            })
    }

    /// By key.
    pub async fn find(&self, key: &BudgetKey) -> Result<Option<Budget>> {
        find_on(self.conn(), key).await
    }

    /// The budgets of a scope, every period, oldest period first.
    pub async fn list_for_scope(&self, scope: &str) -> Result<Vec<Budget>> {
        bg::Entity::find()
            .filter(bg::Column::Scope.eq(scope))
            .order_by_asc(bg::Column::Period)
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(Budget::from).collect())
            .map_err(db_err(ENTITY, "listing budgets"))
    }

    /// Budgets, most recently changed first: every scope, or those whose scope starts with
    /// `scope_prefix` (`workflow:`, `tenant:acme`), at most `limit` (1 to 1000).
    pub async fn list(&self, scope_prefix: Option<&str>, limit: u64) -> Result<Vec<Budget>> {
        let mut q = bg::Entity::find();
        if let Some(prefix) = scope_prefix {
            q = q.filter(bg::Column::Scope.starts_with(prefix));
        }
        q.order_by_desc(bg::Column::UpdatedAt)
            .order_by_asc(bg::Column::Scope)
            .limit(limit.clamp(1, 1000))
            .all(self.conn())
            .await
            .map(|v| v.into_iter().map(Budget::from).collect())
            .map_err(db_err(ENTITY, "listing budgets"))
    }

    /// Changes a budget's limit (greater than zero).
    pub async fn set_limit(&self, id: Uuid, limit_usd: Decimal) -> Result<Budget> {
        if limit_usd <= Decimal::ZERO {
            return Err(Error::Invalid {
                entity: ENTITY,
                detail: format!("the limit {limit_usd} USD must be greater than zero"),
            });
        }
        let nanos = usd_to_nanos(limit_usd)?;
        let res = bg::Entity::update_many()
            .col_expr(bg::Column::LimitNanoUsd, Expr::value(nanos))
            .col_expr(bg::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(bg::Column::Id.eq(id))
            .exec(self.conn())
            .await
            .map_err(db_err(ENTITY, "changing a budget's limit"))?;
        if res.rows_affected == 0 {
            return Err(Error::NotFound {
                entity: ENTITY,
                id: id.to_string(),
            });
        }
        self.get(id).await
    }

    /// Holds `new.amount_usd` in every budget of `new.budgets` that exists, atomically: either
    /// every budget had room (`spent + reserved + amount <= limit`) and holds it, or nothing
    /// changed and the first budget without room is returned in [`ReserveOutcome::Refused`].
    /// The same `request_id` reserved again returns [`ReserveOutcome::Existing`].
    pub async fn reserve(&self, new: NewReservation) -> Result<ReserveOutcome> {
        match single(self.apply(&[BudgetOp::Reserve(new)]).await?)? {
            BudgetOpOutcome::Reserve(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// Charges a reservation's actual cost to each of its budgets and frees the amount it held,
    /// writes the ledger row and the alerts of the thresholds crossed, all in one transaction.
    /// A reservation that is unknown is [`Error::NotFound`]; one already settled or released is
    /// [`Error::InvalidTransition`] and nothing is charged. An expired one is still charged
    /// (the call happened): `late` is set and no held amount is freed.
    ///
    /// `make_event` builds the outbox event of a crossed threshold.
    pub async fn settle<F>(&self, settle: Settle, make_event: F) -> Result<Settlement>
    where
        F: Fn(&ThresholdCrossed) -> NewOutboxEvent + Send + Sync,
    {
        let op = BudgetOp::Settle {
            settle,
            make_event: Box::new(make_event),
            cost_event: None,
        };
        match single(self.apply(std::slice::from_ref(&op)).await?)? {
            BudgetOpOutcome::Settle(o) => Ok(*o),
            _ => Err(mismatch()),
        }
    }

    /// Gives a pending reservation back without a charge. Unknown is [`Error::NotFound`];
    /// settled, released or expired is [`Error::InvalidTransition`].
    pub async fn release(&self, reservation_id: impl Into<ReservationId>) -> Result<Reservation> {
        match single(
            self.apply(&[BudgetOp::Release(reservation_id.into())])
                .await?,
        )? {
            BudgetOpOutcome::Release(o) => Ok(o),
            _ => Err(mismatch()),
        }
    }

    /// The sweeper: frees up to `limit` pending reservations whose expiry is at or before
    /// `now`, in batches of [`BudgetOp::Expire`] (a reservation settled or released meanwhile
    /// is left alone). Returns the expired reservations.
    pub async fn expire_due(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<Reservation>> {
        let due: Vec<Uuid> = rs::Entity::find()
            .select_only()
            .column(rs::Column::Id)
            .filter(rs::Column::Status.eq(ReservationStatus::Pending.as_str()))
            .filter(rs::Column::ExpiresAt.lte(now))
            .order_by_asc(rs::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(self.conn())
            .await
            .map_err(db_err(RES, "finding expired reservations"))?;
        let mut expired = Vec::with_capacity(due.len());
        for chunk in due.chunks(EXPIRE_BATCH) {
            let ops: Vec<BudgetOp<'_>> = chunk
                .iter()
                .map(|&id| BudgetOp::Expire(id.into()))
                .collect();
            for outcome in self.apply(&ops).await? {
                match outcome {
                    Ok(BudgetOpOutcome::Expire(r)) => expired.push(r),
                    // Closed by a settle or release since it was listed.
                    Err(Error::InvalidTransition { .. }) => {}
                    Ok(_) => return Err(mismatch()),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(expired)
    }

    /// A reservation by id.
    pub async fn reservation(&self, id: impl Into<ReservationId>) -> Result<Reservation> {
        let id = super::raw::<ReservationId>(id);
        rs::Entity::find_by_id(id)
            .one(self.conn())
            .await
            .map_err(db_err(RES, "reading a reservation"))?
            .ok_or_else(|| Error::NotFound {
                entity: RES,
                id: id.to_string(),
            })?
            .try_into()
    }

    /// A reservation by request id.
    pub async fn reservation_by_request(&self, request_id: &str) -> Result<Option<Reservation>> {
        rs::Entity::find()
            .filter(rs::Column::RequestId.eq(request_id))
            .one(self.conn())
            .await
            .map_err(db_err(RES, "reading a reservation"))?
            .map(Reservation::try_from)
            .transpose()
    }

    /// The ids of the budgets a reservation holds its amount in.
    pub async fn reservation_budgets(
        &self,
        reservation_id: impl Into<ReservationId>,
    ) -> Result<Vec<Uuid>> {
        let reservation_id = super::raw::<ReservationId>(reservation_id);
        rsc::Entity::find()
            .select_only()
            .column(rsc::Column::BudgetId)
            .filter(rsc::Column::ReservationId.eq(reservation_id))
            .into_tuple()
            .all(self.conn())
            .await
            .map_err(db_err(RES, "reading a reservation's budgets"))
    }

    /// The pending reservations of an execution, oldest first (to release them when the
    /// execution is cancelled).
    pub async fn pending_for_execution(
        &self,
        execution_id: impl Into<ExecutionId>,
    ) -> Result<Vec<Reservation>> {
        let execution_id = super::raw::<ExecutionId>(execution_id);
        rs::Entity::find()
            .filter(rs::Column::ExecutionId.eq(execution_id))
            .filter(rs::Column::Status.eq(ReservationStatus::Pending.as_str()))
            .order_by_asc(rs::Column::CreatedAt)
            .all(self.conn())
            .await
            .map_err(db_err(RES, "listing an execution's reservations"))?
            .into_iter()
            .map(Reservation::try_from)
            .collect()
    }

    /// How many reservations are pending (in all budgets).
    pub async fn count_pending(&self) -> Result<u64> {
        rs::Entity::find()
            .filter(rs::Column::Status.eq(ReservationStatus::Pending.as_str()))
            .count(self.conn())
            .await
            .map_err(db_err(RES, "counting pending reservations"))
    }

    /// Sum of the actual cost of the settled reservations linked to a budget (for audits).
    pub async fn settled_total(&self, budget_id: Uuid) -> Result<Decimal> {
        let ids: Vec<Uuid> = rsc::Entity::find()
            .select_only()
            .column(rsc::Column::ReservationId)
            .filter(rsc::Column::BudgetId.eq(budget_id))
            .into_tuple()
            .all(self.conn())
            .await
            .map_err(db_err(RES, "reading a budget's reservations"))?;
        let mut total = 0i64;
        for chunk in ids.chunks(500) {
            let amounts: Vec<Option<i64>> = rs::Entity::find()
                .select_only()
                .column(rs::Column::ActualNanoUsd)
                .filter(rs::Column::Id.is_in(chunk.iter().copied()))
                .filter(rs::Column::Status.eq(ReservationStatus::Settled.as_str()))
                .into_tuple()
                .all(self.conn())
                .await
                .map_err(db_err(RES, "reading settled amounts"))?;
            total += amounts.into_iter().flatten().sum::<i64>();
        }
        Ok(nanos_to_usd(total))
    }

    /// The threshold alerts written for a budget, lowest threshold first.
    pub async fn alerts(&self, budget_id: Uuid) -> Result<Vec<BudgetAlert>> {
        alert::Entity::find()
            .filter(alert::Column::BudgetId.eq(budget_id))
            .order_by_asc(alert::Column::ThresholdPct)
            .all(self.conn())
            .await
            .map_err(db_err("budget alert", "listing alerts"))
            .map(|v| {
                v.into_iter()
                    .map(|m| BudgetAlert {
                        budget_id: m.budget_id,
                        threshold_pct: u32::try_from(m.threshold_pct).unwrap_or(0),
                        spent_usd: nanos_to_usd(m.spent_nano_usd),
                        event_id: m.event_id,
                        created_at: m.created_at,
                    })
                    .collect()
            })
    }
}

async fn find_model<C: sea_orm::ConnectionTrait>(
    conn: &C,
    key: &BudgetKey,
) -> Result<Option<bg::Model>> {
    bg::Entity::find()
        .filter(bg::Column::Scope.eq(key.scope.as_str()))
        .filter(bg::Column::Period.eq(key.period.as_str()))
        .one(conn)
        .await
        .map_err(db_err(ENTITY, "reading a budget"))
}

async fn find_on<C: sea_orm::ConnectionTrait>(conn: &C, key: &BudgetKey) -> Result<Option<Budget>> {
    Ok(find_model(conn, key).await?.map(Budget::from))
}

/// Writes an outbox event on the settle's transaction.
async fn enqueue(txn: &DatabaseTransaction, new: NewOutboxEvent) -> Result<()> {
    if new.topic.is_empty() {
        return Err(Error::Invalid {
            entity: "outbox event",
            detail: "the topic must not be empty".into(),
        });
    }
    ob::ActiveModel {
        event_id: Set(new.event_id),
        topic: Set(new.topic),
        message_key: Set(new.key),
        payload: Set(new.payload),
        headers: Set(serde_json::to_value(new.headers).unwrap_or(serde_json::Value::Null)),
        attempts: Set(0),
        last_error: Set(None),
        created_at: Set(Utc::now()),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await
    .map(|_| ())
    .map_err(db_err("outbox event", "writing to the outbox"))
}
