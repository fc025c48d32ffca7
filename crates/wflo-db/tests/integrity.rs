//! Integrity: foreign keys and cascades, transactions and the outbox, and every event
//! committed with its change.
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
use wflo_db::{
    ApprovalDecision, ApprovalStatus, Backend, Db, Error, ExecutionStatus, Executor, NewDefinition,
    NewExecution, NewRollback, NewStep, Outcome, StepStatus,
};

// ------------------------------------------------------------------ integrity

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn foreign_key_violations_are_typed_errors(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let err = t
        .executions()
        .create(NewExecution::new(Uuid::now_v7(), json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignKey { .. }), "{err:?}");
    let err = t
        .steps()
        .create(NewStep {
            execution_id: wflo_db::ExecutionId::new(),
            step_key: "x".into(),
            step_type: "tool".into(),
            inputs: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignKey { .. }), "{err:?}");
    let (_, exec) = execution(&t).await;
    let err = t
        .rollbacks()
        .create(NewRollback {
            execution_id: exec.id,
            snapshot_id: wflo_db::SnapshotId::new(),
            reason: "r".into(),
            initiated_by: "me".into(),
            details: json!({}),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ForeignKey { .. }), "{err:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn deleting_an_execution_removes_its_children(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (def, exec) = execution(&t).await;
    let (_, keep) = {
        let e = t
            .executions()
            .create(NewExecution::new(def.id, json!({})))
            .await
            .unwrap();
        (def.clone(), e)
    };
    let step = t
        .steps()
        .create(NewStep {
            execution_id: exec.id,
            step_key: "s".into(),
            step_type: "tool".into(),
            inputs: None,
        })
        .await
        .unwrap();
    let snap = t
        .snapshots()
        .create(exec.id, None, json!({}))
        .await
        .unwrap();
    let appr = t.approvals().create(approval(exec.id)).await.unwrap();
    let rb = t
        .rollbacks()
        .create(NewRollback {
            execution_id: exec.id,
            snapshot_id: snap.id,
            reason: "r".into(),
            initiated_by: "me".into(),
            details: json!({}),
        })
        .await
        .unwrap();
    let kept_snap = t
        .snapshots()
        .create(keep.id, None, json!({}))
        .await
        .unwrap();
    t.executions().delete(exec.id).await.unwrap();
    assert!(matches!(
        t.steps().get(step.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        t.snapshots().get(snap.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        t.approvals().get(appr.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        t.rollbacks().get(rb.id).await,
        Err(Error::NotFound { .. })
    ));
    // Another execution's rows are untouched, and so is the definition.
    assert_eq!(
        t.snapshots().get(kept_snap.id).await.unwrap().execution_id,
        keep.id
    );
    assert_eq!(t.definitions().get(def.id).await.unwrap().id, def.id);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn nested_json_and_unicode_round_trip(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let doc = json!({
        "name": "Überprüfung — 検証 🚀",
        "nested": {"list": [1, 2.5, null, true, {"deep": ["a", {"b": "ç"}]}]},
        "quotes": "it's \"quoted\" \\ backslash",
        "big": 9_007_199_254_740_991i64,
    });
    let def = t
        .definitions()
        .create(NewDefinition {
            name: "ワークフロー-ü".into(),
            version: None,
            description: Some("émoji 🎉".into()),
            definition: doc.clone(),
        })
        .await
        .unwrap();
    let stored = t.definitions().latest("ワークフロー-ü").await.unwrap();
    assert_eq!(stored.id, def.id);
    assert_eq!(stored.definition, doc);
    assert_eq!(stored.description.as_deref(), Some("émoji 🎉"));
    let exec = t
        .executions()
        .create(NewExecution::new(def.id, doc.clone()))
        .await
        .unwrap();
    assert_eq!(t.executions().get(exec.id).await.unwrap().inputs, doc);
}

// ------------------------------------------------------------------ transactions and the outbox

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_state_change_and_its_event_commit_together(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;

    // Rolled back: neither the status nor the event.
    let tx = t.begin().await.unwrap();
    tx.executions()
        .transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    tx.outbox()
        .enqueue(event("wflo.workflows", &exec.id.to_string()))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        t.executions().get(exec.id).await.unwrap().status,
        ExecutionStatus::Pending
    );
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), 0);

    // Dropped without commit: same.
    {
        let tx = t.begin().await.unwrap();
        tx.outbox()
            .enqueue(event("wflo.workflows", "k"))
            .await
            .unwrap();
    }
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), 0);

    // Committed: both.
    let tx = t.begin().await.unwrap();
    tx.executions()
        .transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    let ev = tx
        .outbox()
        .enqueue(event("wflo.workflows", &exec.id.to_string()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        t.executions().get(exec.id).await.unwrap().status,
        ExecutionStatus::Running
    );
    let pending = t.outbox().unpublished(10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_id, ev.event_id);
    assert_eq!(
        pending[0].headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn outbox_keeps_order_and_publishes_once(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            t.outbox()
                .enqueue(event("wflo.steps", &format!("k{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let batch = t.outbox().unpublished(3).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    t.outbox()
        .record_failure(&ids[..1], "broker down")
        .await
        .unwrap();
    assert_eq!(t.outbox().unpublished(1).await.unwrap()[0].attempts, 1);
    assert_eq!(t.outbox().mark_published(&ids[..3]).await.unwrap(), 3);
    assert_eq!(t.outbox().mark_published(&ids[..3]).await.unwrap(), 0);
    let rest = t.outbox().unpublished(10).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), 2);
    // The same event id twice is refused.
    let dup = event("wflo.steps", "k");
    t.outbox().enqueue(dup.clone()).await.unwrap();
    let err = t.outbox().enqueue(dup).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn consumer_offsets_are_upserted(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let offsets = t.consumer_offsets();
    assert_eq!(offsets.get("g", "wflo.steps", 0).await.unwrap(), None);
    offsets.commit("g", "wflo.steps", 0, 10).await.unwrap();
    offsets.commit("g", "wflo.steps", 1, 3).await.unwrap();
    offsets.commit("g", "wflo.steps", 0, 11).await.unwrap();
    assert_eq!(offsets.get("g", "wflo.steps", 0).await.unwrap(), Some(11));
    assert_eq!(offsets.get("g", "wflo.steps", 1).await.unwrap(), Some(3));
    assert_eq!(offsets.get("other", "wflo.steps", 0).await.unwrap(), None);
    assert!(offsets.commit("g", "wflo.steps", 0, -1).await.is_err());
    // Committed with a rolled-back transaction: not stored.
    let tx = t.begin().await.unwrap();
    tx.consumer_offsets()
        .commit("g", "wflo.steps", 0, 99)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        t.consumer_offsets()
            .get("g", "wflo.steps", 0)
            .await
            .unwrap(),
        Some(11)
    );
}

// ------------------------------------------------------------------ every event with its change

/// A settle of `usd` on a fresh execution budget, whose cost event is `make` (the settle's own
/// transaction writes it).
async fn settle_with_cost_event(
    t: &Db,
    exec: wflo_db::ExecutionId,
    usd: Decimal,
    make: wflo_db::CostEventFn<'static>,
) -> (
    wflo_db::ReservationId,
    wflo_db::Result<wflo_db::BudgetOpOutcome>,
) {
    let key = wflo_db::BudgetKey::new(format!("execution:{exec}"), "");
    t.budgets()
        .ensure(wflo_db::NewBudget {
            key: key.clone(),
            limit_usd: dec!(1),
        })
        .await
        .unwrap();
    let held = match t
        .budgets()
        .reserve(wflo_db::NewReservation {
            request_id: format!("{exec}:ask"),
            amount_usd: usd,
            budgets: vec![key],
            execution_id: Some(exec),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
        })
        .await
        .unwrap()
    {
        wflo_db::ReserveOutcome::Reserved { reservation, .. } => reservation,
        other => panic!("reserved: {other:?}"),
    };
    let op = wflo_db::BudgetOp::Settle {
        settle: wflo_db::Settle {
            reservation_id: held.id,
            actual_usd: usd,
            ledger: Some(wflo_db::NewCostEntry {
                execution_id: Some(exec),
                step_id: None,
                workflow_name: Some("wf".into()),
                reservation_id: None,
                model: "gpt-4o-mini".into(),
                tokens: Default::default(),
                cost_usd: usd,
                at: None,
            }),
            thresholds: vec![],
        },
        make_event: Box::new(|c| event("wflo.costs", &format!("{}", c.threshold_pct))),
        cost_event: Some(make),
    };
    // A failed transaction fails the whole batch.
    let outcome = match t.budgets().apply(std::slice::from_ref(&op)).await {
        Ok(mut out) => out.pop().unwrap(),
        Err(e) => Err(e),
    };
    (held.id, outcome)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_charge_and_its_cost_event_commit_together_or_not_at_all(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;

    // The event insert fails after the charge was applied: nothing of the settle remains.
    let taken = t
        .outbox()
        .enqueue(event("wflo.costs", "taken"))
        .await
        .unwrap();
    let dup = taken.event_id;
    let (held, outcome) = settle_with_cost_event(
        &t,
        exec.id,
        dec!(0.25),
        Box::new(move |_| {
            let mut e = event("wflo.costs", "dup");
            e.event_id = dup;
            e
        }),
    )
    .await;
    assert!(
        outcome.is_err(),
        "the failing event insert fails the settle"
    );
    assert_eq!(t.executions().get(exec.id).await.unwrap().cost_usd, dec!(0));
    assert!(
        t.costs()
            .list_for_execution(exec.id)
            .await
            .unwrap()
            .is_empty()
    );
    let r = t.budgets().pending_for_execution(exec.id).await.unwrap();
    assert_eq!(r.len(), 1, "the reservation is still pending");
    assert_eq!(r[0].id, held);
    assert_eq!(
        t.outbox().count_unpublished().await.unwrap(),
        1,
        "only the earlier event"
    );

    // Committed: the charge, its ledger row and its event, the event seeing the total after it.
    let (_, exec2) = execution(&t).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let saw = seen.clone();
    let (_, outcome) = settle_with_cost_event(
        &t,
        exec2.id,
        dec!(0.25),
        Box::new(move |c| {
            *saw.lock().unwrap() = c.execution_total_usd;
            event("wflo.costs", "charged")
        }),
    )
    .await;
    outcome.unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(dec!(0.25)));
    assert_eq!(
        t.executions().get(exec2.id).await.unwrap().cost_usd,
        dec!(0.25)
    );
    assert_eq!(
        t.costs().list_for_execution(exec2.id).await.unwrap().len(),
        1
    );
    let keys: Vec<_> = t
        .outbox()
        .unpublished(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert!(keys.contains(&Some("charged".into())), "{keys:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_step_result_and_its_events_commit_together_or_not_at_all(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let step = t
        .steps()
        .create(wflo_db::NewStep {
            execution_id: exec.id,
            step_key: "run".into(),
            step_type: "code".into(),
            inputs: None,
        })
        .await
        .unwrap();
    let running = t
        .steps()
        .transition(step.id, StepStatus::Running, None, None)
        .await
        .unwrap();
    let before = t.outbox().count_unpublished().await.unwrap();
    let taken = t
        .outbox()
        .enqueue(event("wflo.sandbox", "taken"))
        .await
        .unwrap();

    // The second event (the sandbox result, say) fails to insert after the first went in.
    let mut dup = event("wflo.sandbox", "dup");
    dup.event_id = taken.event_id;
    let failed = t
        .steps()
        .transition_with_events(
            running.id,
            StepStatus::Completed,
            Some(json!({"stdout": "1\n"})),
            None,
            vec![event("wflo.steps", "status"), dup],
        )
        .await;
    assert!(failed.is_err());
    let now = t.steps().get(running.id).await.unwrap();
    assert_eq!(
        now.status,
        StepStatus::Running,
        "the result was not written"
    );
    assert!(now.outputs.is_none());
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), before + 1);

    // Both events and the result, together.
    let done = t
        .steps()
        .transition_with_events(
            running.id,
            StepStatus::Completed,
            Some(json!({"stdout": "1\n"})),
            None,
            vec![
                event("wflo.steps", "status"),
                event("wflo.sandbox", "result"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(done.status, StepStatus::Completed);
    assert_eq!(t.outbox().count_unpublished().await.unwrap(), before + 3);

    // An approval's decision and its event: one transaction.
    let a = t.approvals().create(approval(exec.id)).await.unwrap();
    let tx = t.begin().await.unwrap();
    tx.approvals()
        .decide(
            a.id,
            ApprovalDecision {
                status: ApprovalStatus::Approved,
                decided_by: "alice".into(),
                reason: None,
            },
        )
        .await
        .unwrap();
    let mut dup = event("wflo.approvals", "dup");
    dup.event_id = taken.event_id;
    assert!(tx.outbox().enqueue(dup).await.is_err());
    drop(tx);
    assert_eq!(
        t.approvals().get(a.id).await.unwrap().status,
        ApprovalStatus::Pending,
        "no decision without its event"
    );
}
