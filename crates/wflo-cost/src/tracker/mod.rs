//! [`CostTracker`]: the cost ledger and budgets, persisted through wflo-db.

mod events;
mod writer;

pub use events::{BUDGET_ALERT_EVENT, COSTS_TOPIC, EVENT_SOURCE};

use crate::budget::{
    BudgetReservation, BudgetState, Period, ReserveRequest, Scope, Settled, ThresholdAlert, Tracked,
};
use crate::config::CostConfig;
use crate::prices::PriceCatalog;
use crate::usage::TokenUsage;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use events::{alert_event, cost_event};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use wflo_db::{Db, Executor};
use wflo_types::RunLabels;
use wflo_types::{ExecutionId, ReservationId, StepId};
use writer::{Job, retry_transient, write_loop, writer_stopped, wrong_outcome};

/// Prices, records and budgets LLM calls. Cheap to clone.
///
/// Reserves, settles and releases go through the tracker's writer, which commits the
/// operations waiting at that moment together in one transaction (group commit, up to
/// [`CostConfigBuilder::max_batch`](crate::CostConfigBuilder::max_batch)): each call resolves only after the commit that holds it,
/// and the outcome is that of running them one after another. Under load this turns one
/// contended row lock and one commit per call into one per batch.
#[derive(Debug, Clone)]
pub struct CostTracker {
    pub(crate) db: Db,
    catalog: PriceCatalog,
    config: Arc<CostConfig>,
    workflow_names: Arc<Mutex<HashMap<ExecutionId, String>>>,
    writer: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
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

    async fn workflow_name(&self, execution: ExecutionId) -> Result<String> {
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
        execution: impl Into<ExecutionId>,
        step: Option<StepId>,
        usage: &TokenUsage,
    ) -> Result<Tracked> {
        let execution = execution.into();
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
        step: Option<StepId>,
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
    pub async fn release_for_execution(
        &self,
        execution_id: impl Into<ExecutionId>,
    ) -> Result<usize> {
        let execution_id = execution_id.into();
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

fn closed_error(e: wflo_db::Error, id: ReservationId) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetPolicy;
    use chrono::TimeZone;
    use rust_decimal_macros::dec;
    use std::time::Duration;
    use uuid::Uuid;

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
