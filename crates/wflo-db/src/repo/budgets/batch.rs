//! Many budget operations in one transaction: the group commit behind high reserve/settle rates.
//!
//! A hot budget (one tenant, many concurrent calls) is one row every reserve and settle must
//! change; with one transaction per operation its row lock is held across a commit for each,
//! and throughput is bounded by lock hand-offs. [`Budgets::apply`] runs a batch of operations in
//! one transaction with a fixed number of statements:
//!
//! 1. insert the new reservations (`ON CONFLICT (request_id) DO NOTHING`: existing request ids
//!    are reported as [`ReserveOutcome::Existing`]) — the first statement is a write, as on
//!    SQLite every transaction's must be;
//! 2. close the settled and released reservations with conditional UPDATEs (only a PENDING one,
//!    or an EXPIRED one for a late settle, moves; anything else is refused with a typed error);
//! 3. lock every budget the batch touches with one `SELECT … ORDER BY scope, period FOR UPDATE`
//!    (on SQLite the first write already holds the database's write lock);
//! 4. decide each operation in memory, in batch order, on the locked rows: closes free and
//!    charge, reserves take room only when `spent + reserved + amount <= limit` in every budget
//!    (all or nothing);
//! 5. write the results: refused reservations deleted, links inserted, one UPDATE per changed
//!    budget (by delta), the ledger rows in one INSERT with their accumulations, the threshold
//!    markers in one `INSERT … ON CONFLICT DO NOTHING` whose claimed rows get their outbox
//!    events.
//!
//! The outcome is exactly that of running the operations one after another in batch order.

use super::*;
use sea_orm::{Condition, DbErr};
use std::collections::{HashMap, HashSet};

/// Builds the outbox event of a threshold a settle crossed.
pub type AlertEventFn<'a> = Box<dyn Fn(&ThresholdCrossed) -> NewOutboxEvent + Send + Sync + 'a>;

/// Builds the outbox event of a settled charge (`cost.recorded`), written in the settle's own
/// transaction: the charge and its event commit together or not at all.
pub type CostEventFn<'a> = Box<dyn Fn(&ChargeRecorded<'_>) -> NewOutboxEvent + Send + Sync + 'a>;

/// What a settle charged, as its cost event describes it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChargeRecorded<'x> {
    /// The ledger row written.
    pub entry: &'x CostEntry,
    /// The execution's total after the charge (none: the charge names no execution).
    pub execution_total_usd: Option<Decimal>,
    /// The reservation's budgets after the charge.
    pub budgets: &'x [Budget],
}

/// One operation of a batch ([`Budgets::apply`]).
#[non_exhaustive]
pub enum BudgetOp<'a> {
    /// [`Budgets::reserve`].
    Reserve(NewReservation),
    /// [`Budgets::settle`].
    Settle {
        /// What to settle.
        settle: Settle,
        /// The alert event of a crossed threshold.
        make_event: AlertEventFn<'a>,
        /// The charge's own event, written with it (none: no event).
        cost_event: Option<CostEventFn<'a>>,
    },
    /// [`Budgets::release`].
    Release(ReservationId),
    /// Frees a pending reservation whose time ran out, without a charge (the sweeper,
    /// [`Budgets::expire_due`]); a late settle may still charge it.
    Expire(ReservationId),
}

impl std::fmt::Debug for BudgetOp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetOp::Reserve(r) => f.debug_tuple("Reserve").field(r).finish(),
            BudgetOp::Settle { settle, .. } => f.debug_tuple("Settle").field(settle).finish(),
            BudgetOp::Release(id) => f.debug_tuple("Release").field(id).finish(),
            BudgetOp::Expire(id) => f.debug_tuple("Expire").field(id).finish(),
        }
    }
}

/// What one operation of a batch did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BudgetOpOutcome {
    /// A reserve's outcome.
    Reserve(ReserveOutcome),
    /// A settle's outcome.
    Settle(Box<Settlement>),
    /// The released reservation.
    Release(Reservation),
    /// The expired reservation.
    Expire(Reservation),
}

struct NewHold {
    idx: usize,
    id: Uuid,
    new: NewReservation,
    amount: i64,
    keys: Vec<BudgetKey>,
}

struct Close<'o, 'a> {
    idx: usize,
    id: Uuid,
    /// `Some` for a settle: the actual cost, the ledger row and the alert builder.
    settle: Option<SettleParts<'o, 'a>>,
    /// Without a settle: expire (the sweeper) rather than release.
    expire: bool,
}

struct SettleParts<'o, 'a> {
    actual: i64,
    ledger: Option<NewCostEntry>,
    thresholds: &'o [u32],
    make_event: &'o AlertEventFn<'a>,
    cost_event: Option<&'o CostEventFn<'a>>,
}

impl Close<'_, '_> {
    fn target(&self) -> ReservationStatus {
        if self.settle.is_some() {
            ReservationStatus::Settled
        } else if self.expire {
            ReservationStatus::Expired
        } else {
            ReservationStatus::Released
        }
    }
}

fn validate_reserve(new: &NewReservation) -> Result<i64> {
    if new.request_id.trim().is_empty() {
        return Err(Error::Invalid {
            entity: RES,
            detail: "the request id must not be empty".into(),
        });
    }
    usd_to_nanos(new.amount_usd)
}

/// `Ok(None)` for a statement that changed nothing (`ON CONFLICT DO NOTHING` on every row).
fn none_inserted<T>(r: std::result::Result<Vec<T>, DbErr>) -> std::result::Result<Vec<T>, DbErr> {
    match r {
        Err(DbErr::RecordNotInserted) => Ok(Vec::new()),
        other => other,
    }
}

impl<E: crate::Executor> Budgets<'_, E> {
    /// Runs `ops` in one transaction, as if one after another in order, and returns each
    /// one's outcome. An operation refused for its own reasons (an unknown or closed
    /// reservation, invalid input) gets its typed error and the others still apply; an error of
    /// the transaction itself (a lost connection, a deadlock) is the outer `Err` and nothing
    /// was applied — retrying the whole batch is then safe.
    pub async fn apply(&self, ops: &[BudgetOp<'_>]) -> Result<Vec<Result<BudgetOpOutcome>>> {
        let mut out: Vec<Option<Result<BudgetOpOutcome>>> =
            std::iter::repeat_with(|| None).take(ops.len()).collect();
        let mut holds: Vec<NewHold> = Vec::new();
        let mut closes: Vec<Close<'_, '_>> = Vec::new();
        // Repeats inside the batch: (op index, index of the first in holds / closes).
        let mut repeated_holds: Vec<(usize, usize)> = Vec::new();
        let mut repeated_closes: Vec<(usize, usize)> = Vec::new();
        let mut hold_by_request: HashMap<&str, usize> = HashMap::new();
        let mut close_by_id: HashMap<Uuid, usize> = HashMap::new();
        for (idx, op) in ops.iter().enumerate() {
            match op {
                BudgetOp::Reserve(new) => match validate_reserve(new) {
                    Err(e) => out[idx] = Some(Err(e)),
                    Ok(amount) => {
                        if let Some(&first) = hold_by_request.get(new.request_id.as_str()) {
                            repeated_holds.push((idx, first));
                            continue;
                        }
                        let mut keys = new.budgets.clone();
                        keys.sort();
                        keys.dedup();
                        hold_by_request.insert(new.request_id.as_str(), holds.len());
                        holds.push(NewHold {
                            idx,
                            id: Uuid::now_v7(),
                            new: new.clone(),
                            amount,
                            keys,
                        });
                    }
                },
                BudgetOp::Settle {
                    settle,
                    make_event,
                    cost_event,
                } => {
                    let actual = match usd_to_nanos(settle.actual_usd) {
                        Ok(a) => a,
                        Err(e) => {
                            out[idx] = Some(Err(e));
                            continue;
                        }
                    };
                    let ledger = settle.ledger.clone().map(|mut entry| {
                        entry.reservation_id = Some(settle.reservation_id);
                        entry.cost_usd = nanos_to_usd(actual);
                        entry
                    });
                    if let Some(Err(e)) = ledger.as_ref().map(costs::ledger_row) {
                        out[idx] = Some(Err(e));
                        continue;
                    }
                    let id = settle.reservation_id.as_uuid();
                    if let Some(&first) = close_by_id.get(&id) {
                        repeated_closes.push((idx, first));
                        continue;
                    }
                    close_by_id.insert(id, closes.len());
                    closes.push(Close {
                        idx,
                        id,
                        settle: Some(SettleParts {
                            actual,
                            ledger,
                            thresholds: &settle.thresholds,
                            make_event,
                            cost_event: cost_event.as_ref(),
                        }),
                        expire: false,
                    });
                }
                BudgetOp::Release(id) | BudgetOp::Expire(id) => {
                    let id = &id.as_uuid();
                    if let Some(&first) = close_by_id.get(id) {
                        repeated_closes.push((idx, first));
                        continue;
                    }
                    close_by_id.insert(*id, closes.len());
                    closes.push(Close {
                        idx,
                        id: *id,
                        settle: None,
                        expire: matches!(op, BudgetOp::Expire(_)),
                    });
                }
            }
        }
        if holds.is_empty() && closes.is_empty() {
            return Ok(out.into_iter().map(|o| o.unwrap_or_else(missing)).collect());
        }

        let now = Utc::now();
        let txn = self.begin("beginning a budget batch").await?;

        // 1. New reservations; a request id that exists already is reported as it is.
        let mut created: HashSet<Uuid> = HashSet::new();
        if !holds.is_empty() {
            let rows = holds.iter().map(|h| rs::ActiveModel {
                id: Set(h.id),
                request_id: Set(h.new.request_id.clone()),
                amount_nano_usd: Set(h.amount),
                actual_nano_usd: Set(None),
                status: Set(ReservationStatus::Pending.as_str().into()),
                execution_id: Set(h.new.execution_id.map(Uuid::from)),
                expires_at: Set(h.new.expires_at),
                created_at: Set(now),
                closed_at: Set(None),
            });
            let ids = none_inserted(
                rs::Entity::insert_many(rows)
                    .on_conflict(
                        OnConflict::column(rs::Column::RequestId)
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_with_returning_keys(&txn)
                    .await,
            )
            .map_err(db_err(RES, "inserting reservations"))?;
            created.extend(ids);
            let existing: Vec<&NewHold> =
                holds.iter().filter(|h| !created.contains(&h.id)).collect();
            if !existing.is_empty() {
                let found: HashMap<String, rs::Model> = rs::Entity::find()
                    .filter(
                        rs::Column::RequestId
                            .is_in(existing.iter().map(|h| h.new.request_id.as_str())),
                    )
                    .all(&txn)
                    .await
                    .map_err(db_err(RES, "reading reservations"))?
                    .into_iter()
                    .map(|m| (m.request_id.clone(), m))
                    .collect();
                for h in existing {
                    out[h.idx] = Some(match found.get(&h.new.request_id) {
                        Some(m) => Reservation::try_from(m.clone())
                            .map(|r| BudgetOpOutcome::Reserve(ReserveOutcome::Existing(r))),
                        None => Err(Error::NotFound {
                            entity: RES,
                            id: h.new.request_id.clone(),
                        }),
                    });
                }
            }
        }

        // 2. Close what is settled or released: (row after, late).
        let mut closed: HashMap<Uuid, (rs::Model, bool)> = HashMap::new();
        let settle_ids: Vec<Uuid> = closes
            .iter()
            .filter(|c| c.settle.is_some())
            .map(|c| c.id)
            .collect();
        let free_ids = |expire: bool| -> Vec<Uuid> {
            closes
                .iter()
                .filter(|c| c.settle.is_none() && c.expire == expire)
                .map(|c| c.id)
                .collect()
        };
        if !settle_ids.is_empty() {
            let mut actual = CaseStatement::new();
            for c in &closes {
                if let Some(s) = &c.settle {
                    actual = actual.case(rs::Column::Id.eq(c.id), Expr::value(s.actual));
                }
            }
            let actual: Expr = actual.finally(Expr::col(rs::Column::ActualNanoUsd)).into();
            for (from, late) in [
                (ReservationStatus::Pending, false),
                (ReservationStatus::Expired, true),
            ] {
                let rest: Vec<Uuid> = settle_ids
                    .iter()
                    .copied()
                    .filter(|id| !closed.contains_key(id))
                    .collect();
                if rest.is_empty() {
                    break;
                }
                let rows = rs::Entity::update_many()
                    .col_expr(
                        rs::Column::Status,
                        Expr::value(ReservationStatus::Settled.as_str()),
                    )
                    .col_expr(rs::Column::ActualNanoUsd, actual.clone())
                    .col_expr(rs::Column::ClosedAt, Expr::value(now))
                    .filter(rs::Column::Id.is_in(rest))
                    .filter(rs::Column::Status.eq(from.as_str()))
                    .exec_with_returning(&txn)
                    .await
                    .map_err(db_err(RES, "settling reservations"))?;
                closed.extend(rows.into_iter().map(|r| (r.id, (r, late))));
            }
        }
        for (to, ids, doing) in [
            (
                ReservationStatus::Released,
                free_ids(false),
                "releasing reservations",
            ),
            (
                ReservationStatus::Expired,
                free_ids(true),
                "expiring reservations",
            ),
        ] {
            if ids.is_empty() {
                continue;
            }
            let rows = rs::Entity::update_many()
                .col_expr(rs::Column::Status, Expr::value(to.as_str()))
                .col_expr(rs::Column::ClosedAt, Expr::value(now))
                .filter(rs::Column::Id.is_in(ids))
                .filter(rs::Column::Status.eq(ReservationStatus::Pending.as_str()))
                .exec_with_returning(&txn)
                .await
                .map_err(db_err(RES, doing))?;
            closed.extend(rows.into_iter().map(|r| (r.id, (r, false))));
        }
        // The status of what could not be closed (None: unknown).
        let mut refused_status: HashMap<Uuid, Option<String>> = HashMap::new();
        let unclosed: Vec<Uuid> = closes
            .iter()
            .map(|c| c.id)
            .filter(|id| !closed.contains_key(id))
            .collect();
        if !unclosed.is_empty() {
            let found: HashMap<Uuid, String> = rs::Entity::find()
                .select_only()
                .column(rs::Column::Id)
                .column(rs::Column::Status)
                .filter(rs::Column::Id.is_in(unclosed.iter().copied()))
                .into_tuple::<(Uuid, String)>()
                .all(&txn)
                .await
                .map_err(db_err(RES, "reading reservations"))?
                .into_iter()
                .collect();
            for id in unclosed {
                refused_status.insert(id, found.get(&id).cloned());
            }
        }

        // 3. Lock every budget the batch touches, in key order.
        let links: Vec<(Uuid, Uuid)> = if closed.is_empty() {
            Vec::new()
        } else {
            rsc::Entity::find()
                .select_only()
                .column(rsc::Column::ReservationId)
                .column(rsc::Column::BudgetId)
                .filter(rsc::Column::ReservationId.is_in(closed.keys().copied()))
                .into_tuple()
                .all(&txn)
                .await
                .map_err(db_err(RES, "reading reservations' budgets"))?
        };
        let mut any = Condition::any();
        let mut lock = false;
        if !links.is_empty() {
            any = any.add(bg::Column::Id.is_in(links.iter().map(|l| l.1)));
            lock = true;
        }
        let mut wanted: Vec<&BudgetKey> = holds
            .iter()
            .filter(|h| created.contains(&h.id))
            .flat_map(|h| h.keys.iter())
            .collect();
        wanted.sort();
        wanted.dedup();
        for k in &wanted {
            any = any.add(
                Condition::all()
                    .add(bg::Column::Scope.eq(k.scope.as_str()))
                    .add(bg::Column::Period.eq(k.period.as_str())),
            );
            lock = true;
        }
        let locked: Vec<bg::Model> = if lock {
            bg::Entity::find()
                .filter(any)
                .order_by_asc(bg::Column::Scope)
                .order_by_asc(bg::Column::Period)
                .lock_exclusive()
                .all(&txn)
                .await
                .map_err(db_err(ENTITY, "locking budgets"))?
        } else {
            Vec::new()
        };
        let order: HashMap<Uuid, usize> =
            locked.iter().enumerate().map(|(i, b)| (b.id, i)).collect();
        let by_key: HashMap<BudgetKey, Uuid> = locked
            .iter()
            .map(|b| (BudgetKey::new(b.scope.clone(), b.period.clone()), b.id))
            .collect();
        let before: Vec<(i64, i64)> = locked
            .iter()
            .map(|b| (b.spent_nano_usd, b.reserved_nano_usd))
            .collect();
        let mut state: Vec<bg::Model> = locked;
        let mut changed = vec![false; state.len()];
        let mut budgets_of: HashMap<Uuid, Vec<usize>> = HashMap::new();
        for (res, budget) in &links {
            if let Some(&i) = order.get(budget) {
                budgets_of.entry(*res).or_default().push(i);
            }
        }
        for v in budgets_of.values_mut() {
            v.sort_unstable();
        }

        // 4a. Closes, in batch order.
        struct Settled {
            budgets: Vec<Budget>,
            candidates: Vec<ThresholdCrossed>,
        }
        let mut settled: HashMap<usize, Settled> = HashMap::new();
        let mut claimed_here: HashSet<(Uuid, u32)> = HashSet::new();
        for (ci, c) in closes.iter().enumerate() {
            let Some((row, late)) = closed.get(&c.id) else {
                continue;
            };
            let idxs = budgets_of.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
            match &c.settle {
                Some(s) => {
                    let freed = if *late { 0 } else { row.amount_nano_usd };
                    let mut after = Vec::with_capacity(idxs.len());
                    let mut candidates = Vec::new();
                    for &i in idxs {
                        let b = &mut state[i];
                        b.reserved_nano_usd -= freed;
                        b.spent_nano_usd += s.actual;
                        b.updated_at = now;
                        changed[i] = true;
                        for &pct in s.thresholds {
                            // spent * 100 >= limit * pct, in exact integers.
                            let crossed = pct != 0
                                && i128::from(b.spent_nano_usd) * 100
                                    >= i128::from(b.limit_nano_usd) * i128::from(pct);
                            if crossed && claimed_here.insert((b.id, pct)) {
                                candidates.push(ThresholdCrossed {
                                    budget: Budget::from(b.clone()),
                                    threshold_pct: pct,
                                });
                            }
                        }
                        after.push(Budget::from(b.clone()));
                    }
                    settled.insert(
                        ci,
                        Settled {
                            budgets: after,
                            candidates,
                        },
                    );
                }
                None => {
                    for &i in idxs {
                        let b = &mut state[i];
                        b.reserved_nano_usd -= row.amount_nano_usd;
                        b.updated_at = now;
                        changed[i] = true;
                    }
                }
            }
        }

        // 4b. Reserves, in batch order: all or nothing over the budgets that exist.
        let mut refused: Vec<Uuid> = Vec::new();
        let mut new_links: Vec<rsc::ActiveModel> = Vec::new();
        let mut last_reservation: HashMap<usize, Uuid> = HashMap::new();
        for h in holds.iter().filter(|h| created.contains(&h.id)) {
            let idxs: Vec<usize> = h
                .keys
                .iter()
                .filter_map(|k| by_key.get(k))
                .map(|id| order[id])
                .collect();
            let no_room = idxs.iter().copied().find(|&i| {
                let b = &state[i];
                i128::from(b.spent_nano_usd)
                    + i128::from(b.reserved_nano_usd)
                    + i128::from(h.amount)
                    > i128::from(b.limit_nano_usd)
            });
            if let Some(i) = no_room {
                refused.push(h.id);
                out[h.idx] = Some(Ok(BudgetOpOutcome::Reserve(ReserveOutcome::Refused {
                    budget: Budget::from(state[i].clone()),
                    requested_usd: nanos_to_usd(h.amount),
                })));
                continue;
            }
            let mut held = Vec::with_capacity(idxs.len());
            for i in idxs {
                let b = &mut state[i];
                b.reserved_nano_usd += h.amount;
                b.last_reservation_id = Some(h.id);
                b.updated_at = now;
                changed[i] = true;
                last_reservation.insert(i, h.id);
                new_links.push(rsc::ActiveModel {
                    reservation_id: Set(h.id),
                    budget_id: Set(b.id),
                });
                held.push(Budget::from(b.clone()));
            }
            out[h.idx] = Some(Ok(BudgetOpOutcome::Reserve(ReserveOutcome::Reserved {
                reservation: Reservation {
                    id: h.id.into(),
                    request_id: h.new.request_id.clone(),
                    amount_usd: nanos_to_usd(h.amount),
                    actual_usd: None,
                    status: ReservationStatus::Pending,
                    execution_id: h.new.execution_id,
                    expires_at: h.new.expires_at,
                    created_at: now,
                    closed_at: None,
                },
                budgets: held,
            })));
        }

        // 5. Write the results.
        if !refused.is_empty() {
            rs::Entity::delete_many()
                .filter(rs::Column::Id.is_in(refused))
                .exec(&txn)
                .await
                .map_err(db_err(RES, "dropping refused reservations"))?;
        }
        if !new_links.is_empty() {
            rsc::Entity::insert_many(new_links)
                .exec_without_returning(&txn)
                .await
                .map_err(db_err(RES, "linking reservations to their budgets"))?;
        }
        for (i, b) in state.iter().enumerate() {
            if !changed[i] {
                continue;
            }
            let (spent0, reserved0) = before[i];
            let mut update = bg::Entity::update_many()
                .col_expr(bg::Column::UpdatedAt, Expr::value(now))
                .col_expr(
                    bg::Column::ReservedNanoUsd,
                    Expr::col(bg::Column::ReservedNanoUsd).add(b.reserved_nano_usd - reserved0),
                )
                .col_expr(
                    bg::Column::SpentNanoUsd,
                    Expr::col(bg::Column::SpentNanoUsd).add(b.spent_nano_usd - spent0),
                );
            if let Some(id) = last_reservation.get(&i) {
                update = update.col_expr(bg::Column::LastReservationId, Expr::value(*id));
            }
            update
                .filter(bg::Column::Id.eq(b.id))
                .exec(&txn)
                .await
                .map_err(db_err(ENTITY, "moving amounts in a budget"))?;
        }
        // Ledger rows, in batch order.
        let mut ledger_of: Vec<usize> = Vec::new();
        let mut entries: Vec<NewCostEntry> = Vec::new();
        for (ci, c) in closes.iter().enumerate() {
            let (Some(s), Some((row, _))) = (&c.settle, closed.get(&c.id)) else {
                continue;
            };
            if let Some(entry) = &s.ledger {
                let mut entry = entry.clone();
                if entry.execution_id.is_none() {
                    entry.execution_id = row.execution_id.map(Into::into);
                }
                ledger_of.push(ci);
                entries.push(entry);
            }
        }
        let written = costs::record_many_on(&txn, &entries).await?;
        let mut ledger: HashMap<usize, CostEntry> = ledger_of.into_iter().zip(written).collect();
        // Each charge's own event, in the same transaction; the executions' totals after the
        // charges are read once for the whole batch.
        let wants_event: Vec<usize> = closes
            .iter()
            .enumerate()
            .filter(|(ci, c)| {
                c.settle.as_ref().is_some_and(|s| s.cost_event.is_some()) && ledger.contains_key(ci)
            })
            .map(|(ci, _)| ci)
            .collect();
        if !wants_event.is_empty() {
            let ids: Vec<Uuid> = wants_event
                .iter()
                .filter_map(|ci| ledger.get(ci).and_then(|e| e.execution_id).map(Uuid::from))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let totals: HashMap<Uuid, i64> = if ids.is_empty() {
                HashMap::new()
            } else {
                crate::entity::execution::Entity::find()
                    .select_only()
                    .column(crate::entity::execution::Column::Id)
                    .column(crate::entity::execution::Column::CostNanoUsd)
                    .filter(crate::entity::execution::Column::Id.is_in(ids))
                    .into_tuple::<(Uuid, i64)>()
                    .all(&txn)
                    .await
                    .map_err(db_err(ENTITY, "reading the executions' totals"))?
                    .into_iter()
                    .collect()
            };
            for ci in wants_event {
                let (Some(s), Some(entry)) = (&closes[ci].settle, ledger.get(&ci)) else {
                    continue;
                };
                let Some(make) = s.cost_event else { continue };
                let budgets = settled
                    .get(&ci)
                    .map(|d| d.budgets.as_slice())
                    .unwrap_or_default();
                let event = make(&ChargeRecorded {
                    entry,
                    execution_total_usd: entry
                        .execution_id
                        .and_then(|e| totals.get(&e.as_uuid()))
                        .map(|n| nanos_to_usd(*n)),
                    budgets,
                });
                enqueue(&txn, event).await?;
            }
        }
        // Threshold alerts: claimed once per (budget, threshold), across batches and processes.
        let mut alerts: HashMap<usize, Vec<ThresholdCrossed>> = HashMap::new();
        let mut markers = Vec::new();
        let mut events: HashMap<(Uuid, u32), (usize, NewOutboxEvent, ThresholdCrossed)> =
            HashMap::new();
        for (ci, c) in closes.iter().enumerate() {
            let (Some(s), Some(done)) = (&c.settle, settled.get(&ci)) else {
                continue;
            };
            for cross in &done.candidates {
                let event = (s.make_event)(cross);
                markers.push(alert::ActiveModel {
                    budget_id: Set(cross.budget.id),
                    threshold_pct: Set(i32::try_from(cross.threshold_pct).unwrap_or(i32::MAX)),
                    spent_nano_usd: Set(usd_to_nanos(cross.budget.spent_usd)?),
                    event_id: Set(event.event_id),
                    created_at: Set(now),
                });
                events.insert(
                    (cross.budget.id, cross.threshold_pct),
                    (ci, event, cross.clone()),
                );
            }
        }
        if !markers.is_empty() {
            let claimed = none_inserted(
                alert::Entity::insert_many(markers)
                    .on_conflict(
                        OnConflict::columns([alert::Column::BudgetId, alert::Column::ThresholdPct])
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_with_returning(&txn)
                    .await,
            )
            .map_err(db_err("budget alert", "claiming threshold alerts"))?;
            let mut claimed: Vec<(Uuid, u32)> = claimed
                .into_iter()
                .map(|m| (m.budget_id, u32::try_from(m.threshold_pct).unwrap_or(0)))
                .collect();
            claimed.sort_by_key(|k| events.get(k).map(|e| e.0));
            for key in claimed {
                if let Some((ci, event, cross)) = events.remove(&key) {
                    enqueue(&txn, event).await?;
                    alerts.entry(ci).or_default().push(cross);
                }
            }
        }
        txn.commit()
            .await
            .map_err(db_err(RES, "committing a budget batch"))?;

        // Outcomes of the closes.
        for (ci, c) in closes.iter().enumerate() {
            let result = match closed.get(&c.id) {
                Some((row, late)) => {
                    Reservation::try_from(row.clone()).map(|reservation| match &c.settle {
                        Some(_) => {
                            let done = settled.remove(&ci);
                            let mut crossed = alerts.remove(&ci).unwrap_or_default();
                            crossed.sort_by_key(|a| a.threshold_pct);
                            BudgetOpOutcome::Settle(Box::new(Settlement {
                                reservation,
                                budgets: done.map(|d| d.budgets).unwrap_or_default(),
                                ledger: ledger.remove(&ci),
                                late: *late,
                                alerts: crossed,
                            }))
                        }
                        None if c.expire => BudgetOpOutcome::Expire(reservation),
                        None => BudgetOpOutcome::Release(reservation),
                    })
                }
                None => Err(refused_close(
                    c.id,
                    refused_status.get(&c.id).cloned().flatten(),
                    c.target(),
                )),
            };
            out[c.idx] = Some(result);
        }
        // Repeats inside the batch see the state the first one left.
        for (idx, first) in repeated_holds {
            let h = &holds[first];
            out[idx] = Some(match &out[h.idx] {
                Some(Ok(BudgetOpOutcome::Reserve(ReserveOutcome::Reserved {
                    reservation,
                    ..
                }))) => Ok(BudgetOpOutcome::Reserve(ReserveOutcome::Existing(
                    reservation.clone(),
                ))),
                Some(Ok(o)) => Ok(o.clone()),
                _ => Err(Error::NotFound {
                    entity: RES,
                    id: h.new.request_id.clone(),
                }),
            });
        }
        for (idx, first) in repeated_closes {
            let c = &closes[first];
            let status = match closed.get(&c.id) {
                Some(_) => Some(c.target().as_str().to_string()),
                None => refused_status.get(&c.id).cloned().flatten(),
            };
            let target = match &ops[idx] {
                BudgetOp::Release(_) => ReservationStatus::Released,
                BudgetOp::Expire(_) => ReservationStatus::Expired,
                _ => ReservationStatus::Settled,
            };
            out[idx] = Some(Err(refused_close(c.id, status, target)));
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_else(missing)).collect())
    }
}

fn refused_close(id: Uuid, status: Option<String>, to: ReservationStatus) -> Error {
    match status {
        Some(from) => Error::InvalidTransition {
            entity: RES,
            id: id.to_string(),
            from,
            to: to.as_str().into(),
        },
        None => Error::NotFound {
            entity: RES,
            id: id.to_string(),
        },
    }
}

/// Every operation gets an outcome above; this marks a bug rather than panicking.
fn missing() -> Result<BudgetOpOutcome> {
    Err(Error::Invalid {
        entity: RES,
        detail: "a batched budget operation got no outcome; this is a bug in wflo-db, report it"
            .into(),
    })
}
