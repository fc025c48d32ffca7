//! Budget batches: reservations, settles, releases and expiry applied together, exactly.
//!
//! Part of the wflo-db conformance suite: every case runs on SQLite (`NAME::case_1_sqlite`, in a
//! plain `cargo test -p wflo-db`, hermetic) and, with the `integration` feature (`cargo xtask
//! itest wflo-db`), on PostgreSQL (`NAME::case_2_postgres`), where a missing server is a failure,
//! never a skip. Each case gets its own fresh database (`TestDb`), so cases run in parallel.

mod common;

use common::*;
use rstest::rstest;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use uuid::Uuid;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Db, Error, Executor, NewDefinition, NewExecution, Tokens};

// ------------------------------------------------------------------ budget batches

/// The budget [`hold`] reserves in: `tenant:batch`, limit 1.00.
async fn batch_budget(db: &Db) -> wflo_db::Budget {
    db.budgets()
        .create(wflo_db::NewBudget {
            key: batch_key(),
            limit_usd: dec!(1.00),
        })
        .await
        .unwrap()
}

fn batch_key() -> wflo_db::BudgetKey {
    wflo_db::BudgetKey::new("tenant:batch", "")
}

fn hold(request: &str, usd: Decimal) -> wflo_db::BudgetOp<'static> {
    wflo_db::BudgetOp::Reserve(wflo_db::NewReservation {
        request_id: request.into(),
        amount_usd: usd,
        budgets: vec![batch_key()],
        execution_id: None,
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
    })
}

fn charge(id: wflo_db::ReservationId, usd: Decimal) -> wflo_db::BudgetOp<'static> {
    wflo_db::BudgetOp::Settle {
        settle: wflo_db::Settle {
            reservation_id: id,
            actual_usd: usd,
            ledger: None,
            thresholds: vec![50, 75, 90, 100],
        },
        make_event: Box::new(|c| event("wflo.costs", &format!("{}", c.threshold_pct))),
        cost_event: None,
    }
}

fn reserved(
    o: &wflo_db::Result<wflo_db::BudgetOpOutcome>,
) -> (wflo_db::Reservation, Vec<wflo_db::Budget>) {
    match o {
        Ok(wflo_db::BudgetOpOutcome::Reserve(wflo_db::ReserveOutcome::Reserved {
            reservation,
            budgets,
        })) => (reservation.clone(), budgets.clone()),
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// One batch gives every operation the outcome it would have had alone, in batch order:
/// room runs out part way, repeats inside the batch count once, a second settle of the same
/// reservation is refused, and threshold alerts are written once.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_budget_batch_is_its_operations_in_order(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let budget = batch_budget(&t).await;

    // 0.40 + 0.40 fit; 0.30 no longer does; "a" again is the first "a"; an empty id is refused.
    let out = t
        .budgets()
        .apply(&[
            hold("a", dec!(0.40)),
            hold("b", dec!(0.40)),
            hold("c", dec!(0.30)),
            hold("a", dec!(0.40)),
            hold(" ", dec!(0.10)),
        ])
        .await
        .unwrap();
    let (a, after_a) = reserved(&out[0]);
    assert_eq!(after_a[0].reserved_usd, dec!(0.40));
    let (b, after_b) = reserved(&out[1]);
    assert_eq!(after_b[0].reserved_usd, dec!(0.80));
    match &out[2] {
        Ok(wflo_db::BudgetOpOutcome::Reserve(wflo_db::ReserveOutcome::Refused {
            budget,
            requested_usd,
        })) => {
            assert_eq!(budget.reserved_usd, dec!(0.80));
            assert_eq!(*requested_usd, dec!(0.30));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match &out[3] {
        Ok(wflo_db::BudgetOpOutcome::Reserve(wflo_db::ReserveOutcome::Existing(r))) => {
            assert_eq!(r.id, a.id)
        }
        other => panic!("expected the first reservation, got {other:?}"),
    }
    assert!(matches!(out[4], Err(Error::Invalid { .. })), "{:?}", out[4]);
    assert!(
        t.budgets()
            .reservation_by_request("c")
            .await
            .unwrap()
            .is_none(),
        "a refused reservation leaves no row"
    );

    // Settle "a" above its hold, settle it again, release "b", release an unknown id, then a
    // reserve that fits only once both took effect.
    let out = t
        .budgets()
        .apply(&[
            charge(a.id, dec!(0.45)),
            charge(a.id, dec!(0.45)),
            wflo_db::BudgetOp::Release(b.id),
            wflo_db::BudgetOp::Release(wflo_db::ReservationId::new()),
            hold("d", dec!(0.55)),
        ])
        .await
        .unwrap();
    match &out[0] {
        Ok(wflo_db::BudgetOpOutcome::Settle(s)) => {
            assert_eq!(s.budgets[0].spent_usd, dec!(0.45));
            assert_eq!(s.budgets[0].reserved_usd, dec!(0.40), "b still held then");
            assert!(s.alerts.is_empty(), "{:?}", s.alerts);
            assert!(!s.late);
        }
        other => panic!("expected a settlement, got {other:?}"),
    }
    assert!(
        matches!(&out[1], Err(Error::InvalidTransition { from, .. }) if from == "SETTLED"),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Ok(wflo_db::BudgetOpOutcome::Release(_))));
    assert!(
        matches!(out[3], Err(Error::NotFound { .. })),
        "{:?}",
        out[3]
    );
    let (d, after_d) = reserved(&out[4]);
    assert_eq!(after_d[0].reserved_usd, dec!(0.55));
    assert_eq!(after_d[0].spent_usd, dec!(0.45));

    // Spending exactly the limit crosses every threshold; each alert is written once even
    // when two settles in one batch cross it.
    let e = t
        .budgets()
        .apply(&[hold("e", dec!(0.00))])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let (e, _) = reserved(&e);
    let out = t
        .budgets()
        .apply(&[charge(d.id, dec!(0.55)), charge(e.id, dec!(0.00))])
        .await
        .unwrap();
    match &out[0] {
        Ok(wflo_db::BudgetOpOutcome::Settle(s)) => {
            assert_eq!(s.budgets[0].spent_usd, dec!(1.00));
            let pcts: Vec<u32> = s.alerts.iter().map(|a| a.threshold_pct).collect();
            assert_eq!(pcts, vec![50, 75, 90, 100]);
        }
        other => panic!("expected a settlement, got {other:?}"),
    }
    match &out[1] {
        Ok(wflo_db::BudgetOpOutcome::Settle(s)) => assert!(s.alerts.is_empty()),
        other => panic!("expected a settlement, got {other:?}"),
    }
    let stored = t.budgets().get(budget.id).await.unwrap();
    assert_eq!(
        (stored.spent_usd, stored.reserved_usd),
        (dec!(1.00), dec!(0))
    );
    assert_eq!(t.budgets().alerts(budget.id).await.unwrap().len(), 4);
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), 4);
    assert_eq!(
        t.budgets().settled_total(budget.id).await.unwrap(),
        dec!(1.00)
    );
    assert_eq!(t.budgets().count_pending().await.unwrap(), 0);
}

/// The sweeper's expiry is a batch operation too: it frees the hold without a charge, a
/// repeat or an expiry of something already closed is refused, a settle earlier in the same
/// batch wins, and `expire_due` frees only what is due.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn expiring_reservations_frees_them_in_batches(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let budget = batch_budget(&t).await;
    let out = t
        .budgets()
        .apply(&[
            hold("x", dec!(0.10)),
            hold("y", dec!(0.20)),
            hold("z", dec!(0.30)),
        ])
        .await
        .unwrap();
    let (x, _) = reserved(&out[0]);
    let (y, _) = reserved(&out[1]);
    let (z, _) = reserved(&out[2]);

    let out = t
        .budgets()
        .apply(&[
            wflo_db::BudgetOp::Expire(x.id),
            wflo_db::BudgetOp::Expire(x.id),
            charge(y.id, dec!(0.15)),
            wflo_db::BudgetOp::Expire(y.id),
        ])
        .await
        .unwrap();
    match &out[0] {
        Ok(wflo_db::BudgetOpOutcome::Expire(r)) => {
            assert_eq!(r.id, x.id);
            assert_eq!(r.status, wflo_db::ReservationStatus::Expired);
            assert_eq!(r.actual_usd, None);
        }
        other => panic!("expected an expiry, got {other:?}"),
    }
    assert!(
        matches!(&out[1], Err(Error::InvalidTransition { from, .. }) if from == "EXPIRED"),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Ok(wflo_db::BudgetOpOutcome::Settle(_))));
    assert!(
        matches!(&out[3], Err(Error::InvalidTransition { from, .. }) if from == "SETTLED"),
        "{:?}",
        out[3]
    );
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!((b.spent_usd, b.reserved_usd), (dec!(0.15), dec!(0.30)));

    // The sweeper: z is not due at now, it is five minutes later.
    let now = chrono::Utc::now();
    assert!(t.budgets().expire_due(now, 100).await.unwrap().is_empty());
    let swept = t
        .budgets()
        .expire_due(now + chrono::Duration::minutes(6), 100)
        .await
        .unwrap();
    assert_eq!(swept.iter().map(|r| r.id).collect::<Vec<_>>(), vec![z.id]);
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!((b.spent_usd, b.reserved_usd), (dec!(0.15), dec!(0)));
    assert_eq!(t.budgets().count_pending().await.unwrap(), 0);

    // A late settle of an expired reservation still charges, freeing nothing.
    let out = t
        .budgets()
        .apply(&[charge(z.id, dec!(0.05))])
        .await
        .unwrap();
    match &out[0] {
        Ok(wflo_db::BudgetOpOutcome::Settle(s)) => assert!(s.late),
        other => panic!("expected a late settlement, got {other:?}"),
    }
    let b = t.budgets().get(budget.id).await.unwrap();
    assert_eq!((b.spent_usd, b.reserved_usd), (dec!(0.20), dec!(0)));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn contention_aborts_are_retryable_and_other_failures_are_not(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, a) = execution(&t).await;
    let (_, b) = execution(&t).await;
    let one = Tokens {
        prompt: 1,
        completion: 0,
    };
    let err = match backend {
        Backend::Postgres => {
            // Two transactions lock the two rows in opposite orders: PostgreSQL aborts one of
            // them with a deadlock.
            let tx1 = t.begin().await.unwrap();
            let tx2 = t.begin().await.unwrap();
            tx1.executions()
                .add_cost(a.id, None, dec!(0.1), one)
                .await
                .unwrap();
            tx2.executions()
                .add_cost(b.id, None, dec!(0.1), one)
                .await
                .unwrap();
            let (r1, r2) = tokio::join!(
                async {
                    let r = tx1.executions().add_cost(b.id, None, dec!(0.1), one).await;
                    (r, tx1)
                },
                async {
                    let r = tx2.executions().add_cost(a.id, None, dec!(0.1), one).await;
                    (r, tx2)
                },
            );
            match (r1, r2) {
                ((Err(e), tx_a), (Ok(()), tx_b)) | ((Ok(()), tx_b), (Err(e), tx_a)) => {
                    tx_a.rollback().await.unwrap();
                    tx_b.commit().await.unwrap();
                    e
                }
                (x, y) => panic!("expected one deadlock victim: {:?} / {:?}", x.0, y.0),
            }
        }
        Backend::Sqlite => {
            // A writer holds the database; a second writer gives up after the busy timeout.
            let tx1 = t.begin().await.unwrap();
            tx1.executions()
                .add_cost(a.id, None, dec!(0.1), one)
                .await
                .unwrap();
            let err = t.begin().await.map(|_| ()).unwrap_err();
            tx1.commit().await.unwrap();
            err
        }
        other => panic!("no contention case for {other:?}"),
    };
    assert!(err.is_retryable(), "{err:?}");
    // What committed is there exactly once.
    let total = t.executions().get(a.id).await.unwrap().cost_usd
        + t.executions().get(b.id).await.unwrap().cost_usd;
    let expected = if backend == Backend::Postgres {
        dec!(0.2)
    } else {
        dec!(0.1)
    };
    assert_eq!(total, expected);

    // Constraint violations are final.
    let fk = t
        .executions()
        .create(NewExecution::new(Uuid::now_v7(), json!({})))
        .await
        .unwrap_err();
    assert!(!fk.is_retryable(), "{fk:?}");
    let dup = t
        .definitions()
        .create(NewDefinition {
            name: "wf".into(),
            version: Some(1),
            description: None,
            definition: json!({}),
        })
        .await
        .unwrap_err();
    assert!(!dup.is_retryable(), "{dup:?}");
}
