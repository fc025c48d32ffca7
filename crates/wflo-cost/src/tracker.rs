//! [`CostTracker`]: the cost ledger and budgets, persisted through wflo-db.

use crate::prices::PriceCatalog;
use crate::usage::{CostBreakdown, TokenUsage};
use crate::{Error, Result};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use wflo_db::{Db, Executor};
use wflo_types::RunLabels;

/// Topic of cost events.
pub const COSTS_TOPIC: &str = wflo_types::topic::COSTS;
/// Event type of a budget threshold alert.
pub const BUDGET_ALERT_EVENT: &str = "cost.budget_alert";
/// The `source` of events this crate writes.
pub const EVENT_SOURCE: &str = "wflo-cost";

/// What a budget limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// One workflow execution.
    Execution(Uuid),
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

/// Settings of a [`CostTracker`]. Built with [`CostConfig::builder`].
#[derive(Debug, Clone)]
pub struct CostConfig {
    reservation_ttl: Duration,
    thresholds: Vec<u32>,
    policies: Vec<BudgetPolicy>,
    busy_retries: usize,
    max_batch: usize,
    writers: usize,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            reservation_ttl: Duration::from_secs(600),
            thresholds: vec![50, 75, 90, 100],
            policies: Vec::new(),
            busy_retries: 10,
            max_batch: 128,
            writers: 2,
        }
    }
}

impl CostConfig {
    /// Defaults: reservations expire after 10 minutes; alerts at 50, 75, 90 and 100 %.
    pub fn builder() -> CostConfigBuilder {
        CostConfigBuilder {
            config: CostConfig::default(),
        }
    }
}

/// Builder of [`CostConfig`]; `build` validates.
#[derive(Debug, Clone)]
pub struct CostConfigBuilder {
    config: CostConfig,
}

impl CostConfigBuilder {
    /// How long a reservation holds its amount before the sweeper may free it (a crashed
    /// caller's reservation does not leak). Longer than your slowest LLM call.
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.config.reservation_ttl = ttl;
        self
    }

    /// Alert thresholds in percent of a budget's limit (1..=1000).
    pub fn thresholds(mut self, pct: impl IntoIterator<Item = u32>) -> Self {
        self.config.thresholds = pct.into_iter().collect();
        self
    }

    /// Adds a periodic (or total) budget policy.
    pub fn policy(mut self, policy: BudgetPolicy) -> Self {
        self.config.policies.push(policy);
        self
    }

    /// How many times a reserve or settle is retried when the database is momentarily busy
    /// (SQLite `database is locked`, PostgreSQL deadlock or serialization failure).
    pub fn busy_retries(mut self, n: usize) -> Self {
        self.config.busy_retries = n;
        self
    }

    /// Most budget operations (reserves, settles, releases) committed in one transaction by
    /// the tracker's writer (default 128; 1 turns group commit off).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.config.max_batch = n;
        self
    }

    /// How many writers commit batches concurrently on PostgreSQL (default 2; SQLite always
    /// uses one, as it has one writer).
    pub fn writers(mut self, n: usize) -> Self {
        self.config.writers = n;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<CostConfig> {
        let c = &mut self.config;
        if c.max_batch == 0 || c.writers == 0 {
            return Err(Error::InvalidConfig {
                what: "budget writer",
                detail: "max_batch and writers must be at least 1".into(),
            });
        }
        if c.reservation_ttl.is_zero() {
            return Err(Error::InvalidConfig {
                what: "reservation ttl",
                detail: "it must be greater than zero".into(),
            });
        }
        if let Some(bad) = c.thresholds.iter().find(|p| **p == 0 || **p > 1000) {
            return Err(Error::InvalidConfig {
                what: "alert threshold",
                detail: format!("{bad} % is outside 1..=1000"),
            });
        }
        c.thresholds.sort_unstable();
        c.thresholds.dedup();
        for p in &c.policies {
            if p.limit_usd <= Decimal::ZERO {
                return Err(Error::InvalidLimit {
                    scope: p.scope.key(),
                    limit: p.limit_usd,
                });
            }
        }
        Ok(self.config)
    }
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

    fn label(&self) -> String {
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
    /// Its id: pass it to [`CostTracker::settle`] or [`CostTracker::release`].
    pub id: Uuid,
    /// The caller's idempotency key.
    pub request_id: String,
    /// The amount held in each budget.
    pub amount_usd: Decimal,
    /// The execution of the call.
    pub execution_id: Option<Uuid>,
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
    fn from_db(
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
    pub execution_id: Option<Uuid>,
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

/// What [`CostTracker::settle`] did.
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

/// Sums over ledger rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostSummary {
    /// Calls.
    pub calls: u64,
    /// Total cost, exact.
    pub cost_usd: Decimal,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_prompt_tokens: u64,
    /// Cache-write tokens.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
}

impl From<wflo_db::CostTotals> for CostSummary {
    fn from(t: wflo_db::CostTotals) -> Self {
        CostSummary {
            calls: t.calls,
            cost_usd: t.cost_usd,
            prompt_tokens: t.tokens.prompt,
            completion_tokens: t.tokens.completion,
            cached_prompt_tokens: t.tokens.cached_prompt,
            cache_write_tokens: t.tokens.cache_write,
            reasoning_tokens: t.tokens.reasoning,
        }
    }
}

/// Which calls an aggregate covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostQuery {
    /// Only this execution.
    pub execution_id: Option<Uuid>,
    /// Only this workflow definition.
    pub workflow: Option<String>,
    /// Only this model (catalogue id).
    pub model: Option<String>,
    /// From (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until (exclusive).
    pub until: Option<DateTime<Utc>>,
}

impl CostQuery {
    fn filter(&self) -> wflo_db::CostFilter {
        wflo_db::CostFilter {
            execution_id: self.execution_id,
            workflow_name: self.workflow.clone(),
            model: self.model.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

/// Prices, records and budgets LLM calls. Cheap to clone.
///
/// Reserves, settles and releases go through the tracker's writer, which commits the
/// operations waiting at that moment together in one transaction (group commit, up to
/// [`CostConfigBuilder::max_batch`]): each call resolves only after the commit that holds it,
/// and the outcome is that of running them one after another. Under load this turns one
/// contended row lock and one commit per call into one per batch.
#[derive(Debug, Clone)]
pub struct CostTracker {
    db: Db,
    catalog: PriceCatalog,
    config: Arc<CostConfig>,
    workflow_names: Arc<Mutex<HashMap<Uuid, String>>>,
    writer: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

/// One budget operation waiting for the writer.
struct Job {
    op: wflo_db::BudgetOp<'static>,
    reply: oneshot::Sender<wflo_db::Result<wflo_db::BudgetOpOutcome>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("op", &self.op).finish()
    }
}

/// Runs `op` again while it fails with a transient database error (see [`is_transient`]).
async fn retry_transient<T, F, Fut>(times: usize, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    op.retry(
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_max_times(times)
            .with_jitter(),
    )
    .when(is_transient)
    .await
}

/// A writer: takes the operations waiting (up to `max_batch`), applies them in one
/// transaction, answers each. Ends when every tracker holding the sender is gone.
async fn write_loop(
    db: Db,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    config: Arc<CostConfig>,
) {
    loop {
        let mut jobs = Vec::with_capacity(config.max_batch);
        if rx.lock().await.recv_many(&mut jobs, config.max_batch).await == 0 {
            return;
        }
        let (ops, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.reply)).unzip();
        let batch = retry_transient(config.busy_retries, || async {
            Ok(db.budgets().apply(&ops).await?)
        })
        .await;
        match batch {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    let _ = reply.send(outcome);
                }
            }
            Err(_) => {
                // The transaction failed as a whole: apply each operation alone, so one
                // operation's failure is only its own.
                for (op, reply) in ops.iter().zip(replies) {
                    let one = retry_transient(config.busy_retries, || async {
                        Ok(db.budgets().apply(std::slice::from_ref(op)).await?)
                    })
                    .await;
                    let outcome = match one {
                        Ok(mut v) => v.pop().unwrap_or_else(|| {
                            Err(wflo_db::Error::Invalid {
                                entity: "budget reservation",
                                detail: "the ledger returned no outcome; report this bug".into(),
                            })
                        }),
                        Err(Error::Db(e)) => Err(e),
                        Err(other) => Err(wflo_db::Error::Invalid {
                            entity: "budget reservation",
                            detail: other.to_string(),
                        }),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

fn ledger_tokens(u: &TokenUsage) -> wflo_db::LedgerTokens {
    wflo_db::LedgerTokens {
        prompt: u.prompt,
        completion: u.completion,
        cached_prompt: u.cached_prompt,
        cache_write: u.cache_write,
        reasoning: u.reasoning,
    }
}

/// Whether retrying may succeed: the database rolled the operation's transaction back under
/// contention ([`wflo_db::Error::is_retryable`]), so a retry is safe.
fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Db(db) if db.is_retryable())
}

impl CostTracker {
    /// A tracker over `db`, pricing with `catalog`.
    pub fn new(db: Db, catalog: PriceCatalog, config: CostConfig) -> Self {
        CostTracker {
            db,
            catalog,
            config: Arc::new(config),
            workflow_names: Arc::default(),
            writer: Arc::default(),
        }
    }

    /// The writer's queue, starting the writers on the current runtime when none runs (first
    /// use, or the runtime that ran them has shut down).
    fn queue(&self) -> mpsc::Sender<Job> {
        let mut slot = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.max_batch.max(64) * 8);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let writers = match self.db.backend() {
            wflo_db::Backend::Postgres => self.config.writers,
            _ => 1,
        };
        for _ in 0..writers {
            tokio::spawn(write_loop(self.db.clone(), rx.clone(), self.config.clone()));
        }
        *slot = Some(tx.clone());
        tx
    }

    /// Hands `op` to the writer and waits for the commit that applied it.
    async fn submit(
        &self,
        op: wflo_db::BudgetOp<'static>,
    ) -> Result<wflo_db::Result<wflo_db::BudgetOpOutcome>> {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send(Job { op, reply })
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())
    }

    /// The price catalogue.
    pub fn catalog(&self) -> &PriceCatalog {
        &self.catalog
    }

    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        retry_transient(self.config.busy_retries, op).await
    }

    async fn workflow_name(&self, execution: Uuid) -> Result<String> {
        if let Some(n) = self
            .workflow_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&execution)
        {
            return Ok(n.clone());
        }
        let name = self.db.executions().get(execution).await?.workflow_name;
        let mut cache = self
            .workflow_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(execution, name.clone());
        Ok(name)
    }

    /// Prices a call and records it: one ledger row plus an atomic accumulation on the
    /// execution and (when given) the step, in one transaction.
    pub async fn track(
        &self,
        execution: Uuid,
        step: Option<Uuid>,
        usage: &TokenUsage,
    ) -> Result<Tracked> {
        let cost = self.catalog.cost(usage)?;
        let workflow = self.workflow_name(execution).await?;
        let entry = wflo_db::NewCostEntry {
            execution_id: Some(execution),
            step_id: step,
            workflow_name: Some(workflow),
            reservation_id: None,
            model: cost.model.clone(),
            tokens: ledger_tokens(usage),
            cost_usd: cost.total_usd,
            at: None,
        };
        let row = self
            .retrying(|| async { Ok(self.db.costs().record(entry.clone()).await?) })
            .await?;
        Ok(Tracked {
            entry_id: row.id,
            charged_usd: row.cost_usd,
            cost,
        })
    }

    /// Totals over the calls `query` selects.
    pub async fn totals(&self, query: &CostQuery) -> Result<CostSummary> {
        Ok(self.db.costs().totals(&query.filter()).await?.into())
    }

    /// Totals per model.
    pub async fn totals_by_model(
        &self,
        query: &CostQuery,
    ) -> Result<BTreeMap<String, CostSummary>> {
        Ok(self
            .db
            .costs()
            .totals_by_model(&query.filter())
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect())
    }

    /// Totals per workflow definition name.
    pub async fn totals_by_workflow(
        &self,
        query: &CostQuery,
    ) -> Result<BTreeMap<String, CostSummary>> {
        Ok(self
            .db
            .costs()
            .totals_by_workflow(&query.filter())
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect())
    }

    /// Sets (creates or changes) the limit of a scope's budget for the period containing
    /// `at`. A limit of zero or less is [`Error::InvalidLimit`].
    pub async fn set_budget(
        &self,
        scope: &Scope,
        period: Period,
        at: DateTime<Utc>,
        limit_usd: Decimal,
    ) -> Result<BudgetState> {
        if limit_usd <= Decimal::ZERO {
            return Err(Error::InvalidLimit {
                scope: scope.key(),
                limit: limit_usd,
            });
        }
        let key = wflo_db::BudgetKey::new(scope.key(), period.key(at));
        let b = self
            .db
            .budgets()
            .ensure(wflo_db::NewBudget { key, limit_usd })
            .await?;
        if b.limit_usd == limit_usd {
            return Ok(b.into());
        }
        Ok(self.db.budgets().set_limit(b.id, limit_usd).await?.into())
    }

    /// A scope's budget for the period containing `at` (policies create it on demand).
    pub async fn budget(
        &self,
        scope: &Scope,
        period: Period,
        at: DateTime<Utc>,
    ) -> Result<Option<BudgetState>> {
        self.ensure_policies(std::slice::from_ref(scope), at)
            .await?;
        let key = wflo_db::BudgetKey::new(scope.key(), period.key(at));
        Ok(self.db.budgets().find(&key).await?.map(Into::into))
    }

    /// Whether `amount_usd` more fits every budget of `scopes` now (spent + reserved + amount
    /// <= limit; the limit is inclusive). An advisory check: only [`CostTracker::reserve`]
    /// holds the room.
    pub async fn check(
        &self,
        scopes: &[Scope],
        amount_usd: Decimal,
    ) -> Result<Vec<(BudgetState, bool)>> {
        let now = Utc::now();
        let keys = self.keys(scopes, now).await?;
        let mut out = Vec::new();
        for key in keys {
            if let Some(b) = self.db.budgets().find(&key).await? {
                let state = BudgetState::from(b);
                let ok = state.has_room_for(amount_usd);
                out.push((state, ok));
            }
        }
        Ok(out)
    }

    async fn ensure_policies(&self, scopes: &[Scope], at: DateTime<Utc>) -> Result<()> {
        for p in self
            .config
            .policies
            .iter()
            .filter(|p| scopes.contains(&p.scope))
        {
            let key = wflo_db::BudgetKey::new(p.scope.key(), p.period.key(at));
            self.retrying(|| async {
                Ok(self
                    .db
                    .budgets()
                    .ensure(wflo_db::NewBudget {
                        key: key.clone(),
                        limit_usd: p.limit_usd,
                    })
                    .await?)
            })
            .await?;
        }
        Ok(())
    }

    /// The budget keys that apply to `scopes` at `at`: each scope's total budget, plus its
    /// policies' periodic budgets (created on demand).
    async fn keys(&self, scopes: &[Scope], at: DateTime<Utc>) -> Result<Vec<wflo_db::BudgetKey>> {
        self.ensure_policies(scopes, at).await?;
        let mut keys: Vec<wflo_db::BudgetKey> = scopes
            .iter()
            .map(|s| wflo_db::BudgetKey::new(s.key(), ""))
            .collect();
        for p in self
            .config
            .policies
            .iter()
            .filter(|p| scopes.contains(&p.scope))
        {
            keys.push(wflo_db::BudgetKey::new(p.scope.key(), p.period.key(at)));
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Holds `request.amount_usd` in every budget that applies to `request.scopes`, all or
    /// nothing. A budget without room is [`Error::BudgetExceeded`] (and nothing is held); the
    /// same `request_id` reserved again returns the first reservation (`created: false`).
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<BudgetReservation> {
        if request.amount_usd.is_sign_negative() {
            return Err(Error::InvalidConfig {
                what: "reservation amount",
                detail: format!("{} USD is negative", request.amount_usd),
            });
        }
        let now = Utc::now();
        let keys = self.keys(&request.scopes, now).await?;
        let ttl = chrono::Duration::from_std(self.config.reservation_ttl)
            .unwrap_or(chrono::Duration::MAX);
        let new = wflo_db::NewReservation {
            request_id: request.request_id.clone(),
            amount_usd: request.amount_usd,
            budgets: keys,
            execution_id: request.execution_id,
            expires_at: now + ttl,
        };
        let outcome = match self.submit(wflo_db::BudgetOp::Reserve(new)).await?? {
            wflo_db::BudgetOpOutcome::Reserve(o) => o,
            _ => return Err(wrong_outcome()),
        };
        match outcome {
            wflo_db::ReserveOutcome::Reserved {
                reservation,
                budgets,
            } => Ok(BudgetReservation::from_db(
                reservation,
                request.labels.clone(),
                true,
                budgets.into_iter().map(Into::into).collect(),
            )),
            wflo_db::ReserveOutcome::Existing(r) => Ok(BudgetReservation::from_db(
                r,
                request.labels.clone(),
                false,
                Vec::new(),
            )),
            wflo_db::ReserveOutcome::Refused {
                budget,
                requested_usd,
            } => {
                let b = BudgetState::from(budget);
                Err(Error::BudgetExceeded {
                    scope: b.label(),
                    limit: b.limit_usd,
                    spent: b.spent_usd,
                    reserved: b.reserved_usd,
                    requested: requested_usd,
                })
            }
            _ => Err(Error::InvalidConfig {
                what: "reservation",
                detail:
                    "the ledger returned an outcome this build does not know; upgrade wflo-cost"
                        .into(),
            }),
        }
    }

    /// Charges a call's actual cost (priced from `usage`) to every budget of the reservation,
    /// frees what it held, records the ledger row (on the reservation's execution and `step`)
    /// and writes the threshold alerts it crossed, in one transaction. Settling an unknown
    /// reservation is [`Error::UnknownReservation`]; an already settled or released one is
    /// [`Error::ReservationClosed`], and nothing is charged again.
    pub async fn settle(
        &self,
        reservation: &BudgetReservation,
        step: Option<Uuid>,
        usage: &TokenUsage,
    ) -> Result<Settled> {
        let cost = self.catalog.cost(usage)?;
        let labels = match (&reservation.labels, reservation.execution_id) {
            (Some(labels), _) => Some(labels.clone()),
            (None, Some(e)) => Some(RunLabels::workflow(self.workflow_name(e).await?)),
            (None, None) => None,
        };
        let workflow = labels.as_ref().map(|l| l.workflow.clone());
        let ledger = wflo_db::NewCostEntry {
            execution_id: reservation.execution_id,
            step_id: step,
            workflow_name: workflow.clone(),
            reservation_id: Some(reservation.id),
            model: cost.model.clone(),
            tokens: ledger_tokens(usage),
            cost_usd: cost.total_usd,
            at: None,
        };
        let settle = wflo_db::Settle {
            reservation_id: reservation.id,
            actual_usd: cost.total_usd,
            ledger: Some(ledger),
            thresholds: self.config.thresholds.clone(),
        };
        let execution = reservation.execution_id;
        let (event_usage, event_cost, alert_labels) = (usage.clone(), cost.clone(), labels.clone());
        let make_event: wflo_db::AlertEventFn<'static> = Box::new(move |c| {
            alert_event(
                c,
                execution,
                alert_labels.as_ref(),
                &event_usage,
                &event_cost,
            )
        });
        // The charge's own event commits with it (never after, where a crash would lose it).
        let charge_usage = usage.clone();
        let cost_event: wflo_db::CostEventFn<'static> =
            Box::new(move |c| cost_event(c, &charge_usage, labels.as_ref()));
        let op = wflo_db::BudgetOp::Settle {
            settle,
            make_event,
            cost_event: Some(cost_event),
        };
        let done = match self
            .submit(op)
            .await?
            .map_err(|e| closed_error(e, reservation.id))?
        {
            wflo_db::BudgetOpOutcome::Settle(s) => *s,
            _ => return Err(wrong_outcome()),
        };
        Ok(Settled {
            charged_usd: done.ledger.as_ref().map(|l| l.cost_usd).unwrap_or_default(),
            cost,
            budgets: done.budgets.into_iter().map(Into::into).collect(),
            alerts: done
                .alerts
                .into_iter()
                .map(|a| ThresholdAlert {
                    budget: a.budget.into(),
                    threshold_pct: a.threshold_pct,
                })
                .collect(),
            late: done.late,
        })
    }

    /// Gives a reservation back without a charge (the call was not made).
    pub async fn release(&self, reservation: &BudgetReservation) -> Result<()> {
        self.submit(wflo_db::BudgetOp::Release(reservation.id))
            .await?
            .map(|_| ())
            .map_err(|e| closed_error(e, reservation.id))
    }

    /// Releases every reservation an execution still holds (it was cancelled: the calls they
    /// were for will not be paid). Returns how many were released; one settled or released
    /// meanwhile is left as it is.
    pub async fn release_for_execution(&self, execution_id: Uuid) -> Result<usize> {
        let pending = self
            .retrying(|| async {
                Ok(self
                    .db
                    .budgets()
                    .pending_for_execution(execution_id)
                    .await?)
            })
            .await?;
        let mut released = 0;
        for r in pending {
            match self.submit(wflo_db::BudgetOp::Release(r.id)).await? {
                Ok(_) => released += 1,
                Err(wflo_db::Error::InvalidTransition { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(released)
    }

    /// The sweeper: frees up to `limit` reservations whose expiry passed by `now`. Returns how
    /// many it freed. Run it periodically (wflo-runtime does).
    pub async fn sweep_expired(&self, now: DateTime<Utc>, limit: u64) -> Result<usize> {
        let swept = self
            .retrying(|| async { Ok(self.db.budgets().expire_due(now, limit).await?) })
            .await?;
        Ok(swept.len())
    }
}

fn writer_stopped() -> Error {
    Error::InvalidConfig {
        what: "budget writer",
        detail: "it stopped before answering (its runtime shut down); the operation may have \
                 been applied: reserve again with the same request id, or check the reservation"
            .into(),
    }
}

fn wrong_outcome() -> Error {
    Error::InvalidConfig {
        what: "budget writer",
        detail: "the ledger answered with another operation's outcome; report this bug".into(),
    }
}

fn closed_error(e: wflo_db::Error, id: Uuid) -> Error {
    match e {
        wflo_db::Error::NotFound {
            entity: "budget reservation",
            ..
        } => Error::UnknownReservation(id.to_string()),
        wflo_db::Error::InvalidTransition {
            entity: "budget reservation",
            from,
            ..
        } => Error::ReservationClosed {
            id: id.to_string(),
            status: from.to_lowercase(),
        },
        other => Error::Db(other),
    }
}

/// The outbox event of a crossed threshold (`cost.budget_alert`), keyed by the execution or,
/// for a budget of no execution, by its scope.
fn alert_event(
    c: &wflo_db::ThresholdCrossed,
    execution: Option<Uuid>,
    labels: Option<&RunLabels>,
    usage: &TokenUsage,
    cost: &CostBreakdown,
) -> wflo_db::NewOutboxEvent {
    let b = &c.budget;
    let percentage = (b.spent_usd * Decimal::ONE_HUNDRED / b.limit_usd).normalize();
    let scope = b.key.scope.clone();
    let alert_type = match c.threshold_pct {
        50 => Some(wflo_types::AlertType::Threshold50),
        75 => Some(wflo_types::AlertType::Threshold75),
        90 => Some(wflo_types::AlertType::Threshold90),
        100 => Some(wflo_types::AlertType::Threshold100),
        _ => None,
    };
    let payload = wflo_types::EventPayload::BudgetAlert(wflo_types::CostPayload {
        model: Some(cost.model.clone()),
        prompt_tokens: usage.prompt,
        completion_tokens: usage.completion,
        cached_prompt_tokens: usage.cached_prompt,
        reasoning_tokens: usage.reasoning,
        cost_usd: cost.total_usd,
        total_cost_usd: b.spent_usd,
        budget_limit_usd: Some(b.limit_usd),
        percentage: Some(percentage),
        alert_type,
        scope: Some(scope.clone()),
    });
    let mut env = wflo_types::EventEnvelope::new(EVENT_SOURCE, payload);
    if let Some(e) = execution {
        env = env.with_execution(e);
    }
    if let Some(l) = labels {
        env = env.with_labels(l);
    }
    let event = wflo_db::NewOutboxEvent::from_envelope(&env);
    match execution {
        Some(_) => event,
        None => event.keyed(scope),
    }
}

/// The `cost.recorded` event of a settled charge, built inside the settle's transaction: the
/// execution's total after the charge, and its budget's limit when it has one.
fn cost_event(
    c: &wflo_db::ChargeRecorded<'_>,
    usage: &TokenUsage,
    labels: Option<&RunLabels>,
) -> wflo_db::NewOutboxEvent {
    let execution = c.entry.execution_id;
    let scope = execution.map(|e| Scope::Execution(e).key());
    let limit = scope.as_ref().and_then(|k| {
        c.budgets
            .iter()
            .find(|b| &b.key.scope == k && b.key.period.is_empty())
            .map(|b| b.limit_usd)
    });
    let total = c.execution_total_usd.unwrap_or(c.entry.cost_usd);
    let payload = wflo_types::EventPayload::CostRecorded(wflo_types::CostPayload {
        model: Some(c.entry.model.clone()),
        prompt_tokens: usage.prompt,
        completion_tokens: usage.completion,
        cached_prompt_tokens: usage.cached_prompt,
        reasoning_tokens: usage.reasoning,
        cost_usd: c.entry.cost_usd,
        total_cost_usd: total,
        budget_limit_usd: limit,
        percentage: limit
            .filter(|l| !l.is_zero())
            .map(|l| (total * Decimal::ONE_HUNDRED / l).round_dp(2)),
        alert_type: None,
        scope,
    });
    let mut env = wflo_types::EventEnvelope::new(EVENT_SOURCE, payload);
    if let Some(e) = execution {
        env = env.with_execution(e);
    }
    if let Some(l) = labels {
        env = env.with_labels(l);
    }
    wflo_db::NewOutboxEvent::from_envelope(&env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;

    #[test]
    fn scope_and_period_keys() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 23, 59, 59).unwrap();
        assert_eq!(Scope::Tenant("acme".into()).key(), "tenant:acme");
        assert_eq!(Scope::Workflow("triage".into()).key(), "workflow:triage");
        assert_eq!(Period::Monthly.key(at), "2026-11");
        assert_eq!(Period::Daily.key(at), "2026-11-25");
        assert_eq!(Period::Total.key(at), "");
    }

    #[test]
    fn config_validates() {
        assert!(
            CostConfig::builder()
                .reservation_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(CostConfig::builder().thresholds([0]).build().is_err());
        assert!(matches!(
            CostConfig::builder()
                .policy(BudgetPolicy {
                    scope: Scope::Tenant("a".into()),
                    period: Period::Monthly,
                    limit_usd: dec!(0)
                })
                .build(),
            Err(Error::InvalidLimit { .. })
        ));
        let c = CostConfig::builder()
            .thresholds([90, 50, 50])
            .build()
            .unwrap();
        assert_eq!(c.thresholds, vec![50, 90]);
    }

    #[test]
    fn budget_state_limit_is_inclusive() {
        let b = BudgetState {
            id: Uuid::nil(),
            scope: "execution:x".into(),
            period: String::new(),
            limit_usd: dec!(1.00),
            spent_usd: dec!(1.00),
            reserved_usd: dec!(0),
        };
        assert!(b.within_budget());
        assert!(b.has_room_for(dec!(0)));
        assert!(!b.has_room_for(dec!(0.000000001)));
        assert_eq!(b.percent_spent(), dec!(100));
    }

    #[test]
    fn alert_event_follows_the_envelope() {
        let budget = wflo_db::Budget {
            id: Uuid::nil(),
            key: wflo_db::BudgetKey::new("tenant:acme", "2026-11"),
            limit_usd: dec!(1),
            spent_usd: dec!(0.5),
            reserved_usd: dec!(0),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let c = wflo_db::ThresholdCrossed {
            budget,
            threshold_pct: 50,
        };
        let usage = TokenUsage::new("gpt-4", 100, 50);
        let cost = PriceCatalog::embedded().cost(&usage).unwrap();
        let e = alert_event(&c, None, None, &usage, &cost);
        assert_eq!(e.topic, "wflo.costs");
        assert_eq!(e.key.as_deref(), Some("tenant:acme"));
        let p = &e.payload;
        assert_eq!(p["schema_version"], 1);
        assert_eq!(p["event_id"], e.event_id.to_string());
        assert_eq!(p["event_type"], "cost.budget_alert");
        assert_eq!(p["source"], "wflo-cost");
        assert_eq!(p["payload"]["alert_type"], "threshold_50");
        assert_eq!(p["payload"]["percentage"], "50");
        assert_eq!(p["payload"]["cost_usd"], "0.006");
        assert_eq!(p["payload"]["total_cost_usd"], "0.5");
        assert_eq!(p["payload"]["budget_limit_usd"], "1");
        assert!(p["execution_id"].is_null());
        assert!(DateTime::parse_from_rfc3339(p["occurred_at"].as_str().unwrap()).is_ok());
    }
}
