//! Budgets and reservations: what a budget limits and for how long, where it stands, and what
//! reserving, settling and tracking a call return.

use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;
use wflo_types::RunLabels;
use wflo_types::{ExecutionId, ReservationId};

use crate::usage::CostBreakdown;

/// What a budget limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// One workflow execution.
    Execution(ExecutionId),
    /// Every execution of a workflow definition (by name).
    Workflow(String),
    /// A tenant (customer, team).
    Tenant(String),
    /// An agent.
    Agent(String),
}

impl Scope {
    /// The stored key: `execution:<uuid>`, `workflow:<name>`, `tenant:<name>`, `agent:<name>`.
    pub fn key(&self) -> String {
        match self {
            Scope::Execution(id) => format!("execution:{id}"),
            Scope::Workflow(n) => format!("workflow:{n}"),
            Scope::Tenant(n) => format!("tenant:{n}"),
            Scope::Agent(n) => format!("agent:{n}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// How often a budget starts over (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Period {
    /// Never: one budget for the scope's life.
    Total,
    /// Per calendar day (`2026-11-25`).
    Daily,
    /// Per calendar month (`2026-11`).
    Monthly,
}

impl Period {
    /// The period key at `at` (`""` for [`Period::Total`]).
    pub fn key(self, at: DateTime<Utc>) -> String {
        match self {
            Period::Total => String::new(),
            Period::Daily => at.format("%Y-%m-%d").to_string(),
            Period::Monthly => format!("{:04}-{:02}", at.year(), at.month()),
        }
    }
}

/// A budget created on demand, per period, for a scope: e.g. tenant `acme`, $100 per month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// The scope.
    pub scope: Scope,
    /// The period.
    pub period: Period,
    /// The limit for each period.
    pub limit_usd: Decimal,
}

/// A budget and where it stands, exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetState {
    /// Row id.
    pub id: Uuid,
    /// Scope key.
    pub scope: String,
    /// Period key (`""` when not periodic).
    pub period: String,
    /// Limit (inclusive).
    pub limit_usd: Decimal,
    /// Charged.
    pub spent_usd: Decimal,
    /// Held by pending reservations.
    pub reserved_usd: Decimal,
}

impl BudgetState {
    /// `limit - spent - reserved`.
    pub fn available_usd(&self) -> Decimal {
        self.limit_usd - self.spent_usd - self.reserved_usd
    }

    /// Spent is at most the limit (spent == limit is within budget).
    pub fn within_budget(&self) -> bool {
        self.spent_usd <= self.limit_usd
    }

    /// Whether `amount` more fits: `spent + reserved + amount <= limit`.
    pub fn has_room_for(&self, amount: Decimal) -> bool {
        self.spent_usd + self.reserved_usd + amount <= self.limit_usd
    }

    /// Spent as a percentage of the limit.
    pub fn percent_spent(&self) -> Decimal {
        (self.spent_usd * Decimal::ONE_HUNDRED / self.limit_usd).normalize()
    }

    pub(crate) fn label(&self) -> String {
        if self.period.is_empty() {
            self.scope.clone()
        } else {
            format!("{}@{}", self.scope, self.period)
        }
    }
}

impl From<wflo_db::Budget> for BudgetState {
    fn from(b: wflo_db::Budget) -> Self {
        BudgetState {
            id: b.id,
            scope: b.key.scope,
            period: b.key.period,
            limit_usd: b.limit_usd,
            spent_usd: b.spent_usd,
            reserved_usd: b.reserved_usd,
        }
    }
}

/// A reservation held in every budget of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetReservation {
    /// Its id: pass it to [`CostTracker::settle`](crate::CostTracker::settle) or [`CostTracker::release`](crate::CostTracker::release).
    pub id: ReservationId,
    /// The caller's idempotency key.
    pub request_id: String,
    /// The amount held in each budget.
    pub amount_usd: Decimal,
    /// The execution of the call.
    pub execution_id: Option<ExecutionId>,
    /// The labels of that execution's run, as the request gave them (the settle's ledger row
    /// and events take them from here; `None`: the workflow name is read from the execution).
    pub labels: Option<RunLabels>,
    /// When the sweeper may free it.
    pub expires_at: DateTime<Utc>,
    /// `false` when this request id had been reserved before (nothing changed this time).
    pub created: bool,
    /// The budgets holding it (empty for an existing reservation).
    pub budgets: Vec<BudgetState>,
}

impl BudgetReservation {
    pub(crate) fn from_db(
        r: wflo_db::Reservation,
        labels: Option<RunLabels>,
        created: bool,
        budgets: Vec<BudgetState>,
    ) -> Self {
        BudgetReservation {
            id: r.id,
            request_id: r.request_id,
            amount_usd: r.amount_usd,
            execution_id: r.execution_id,
            labels,
            expires_at: r.expires_at,
            created,
            budgets,
        }
    }
}

/// A reservation to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Idempotency key (e.g. the step's attempt id): the same key reserves once.
    pub request_id: String,
    /// Every scope the call counts against.
    pub scopes: Vec<Scope>,
    /// The worst-case cost ([`crate::CostEstimate::cost_usd`]).
    pub amount_usd: Decimal,
    /// The execution of the call.
    pub execution_id: Option<ExecutionId>,
    /// The labels of that execution's run (workflow name, trace and correlation ids) when the
    /// caller knows them: settling then reads nothing back to label the ledger row and events.
    pub labels: Option<RunLabels>,
}

/// A threshold alert written by a settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdAlert {
    /// The budget after the settle.
    pub budget: BudgetState,
    /// The threshold crossed, in percent.
    pub threshold_pct: u32,
}

/// What [`CostTracker::settle`](crate::CostTracker::settle) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The call's exact cost.
    pub cost: CostBreakdown,
    /// The amount charged (the cost rounded to the nano-USD, as the ledger stores it).
    pub charged_usd: Decimal,
    /// The budgets after the charge.
    pub budgets: Vec<BudgetState>,
    /// Alerts written (each threshold once per budget).
    pub alerts: Vec<ThresholdAlert>,
    /// The reservation had expired and been freed before this settle (still charged).
    pub late: bool,
}

/// A tracked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Ledger row id.
    pub entry_id: i64,
    /// The exact cost.
    pub cost: CostBreakdown,
    /// The amount recorded (rounded to the nano-USD).
    pub charged_usd: Decimal,
}
