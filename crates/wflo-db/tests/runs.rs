//! Definitions, executions, steps and snapshots: what a run stores.
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
    Backend, Error, ExecutionStatus, Executor, NewDefinition, NewExecution, NewStep, Outcome,
    StepStatus, Tokens,
};

// ------------------------------------------------------------------ definitions

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn definition_create_stores_every_field(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let def = definition(&t, "triage").await;
    assert_eq!(def.name, "triage");
    assert_eq!(def.version, 1);
    let stored = t.definitions().get(def.id).await.unwrap();
    assert_eq!(stored.name, "triage");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.description.as_deref(), Some("a test workflow"));
    assert_eq!(
        stored.definition,
        json!({"steps": [{"id": "plan", "kind": "llm"}]})
    );
    assert!(stored.created_at <= chrono::Utc::now());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn definitions_are_queried_by_name(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    definition(&t, "alpha").await;
    let beta = definition(&t, "beta").await;
    let found = t.definitions().latest("beta").await.unwrap();
    assert_eq!(found.id, beta.id);
    assert_eq!(t.definitions().versions("alpha").await.unwrap().len(), 1);
    let missing = t.definitions().latest("gamma").await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn duplicate_name_and_version_is_a_typed_error(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let new = NewDefinition {
        name: "dup".into(),
        version: Some(1),
        description: None,
        definition: json!({}),
    };
    t.definitions().create(new.clone()).await.unwrap();
    let err = t.definitions().create(new).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(t.definitions().versions("dup").await.unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn versions_coexist_and_order(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let v1 = definition(&t, "wf").await;
    let v2 = t
        .definitions()
        .create(NewDefinition::new("wf", json!({"steps": [], "v": 2})))
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let all = t.definitions().versions("wf").await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(t.definitions().latest("wf").await.unwrap().id, v2.id);
    assert_eq!(
        t.definitions().get_version("wf", 1).await.unwrap().id,
        v1.id
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_definition_writers_get_distinct_versions(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let db = t.db().clone();
            tokio::spawn(async move {
                db.definitions()
                    .create(NewDefinition::new("race", json!({ "writer": i })))
                    .await
                    .map(|d| d.version)
            })
        })
        .collect();
    let mut versions: Vec<i32> = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn an_empty_name_is_refused(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let err = t
        .definitions()
        .create(NewDefinition::new("  ", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
}

// ------------------------------------------------------------------ executions

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn execution_round_trips_inputs_cost_and_tokens(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (def, exec) = execution(&t).await;
    assert_eq!(exec.status, ExecutionStatus::Pending);
    assert_eq!(exec.cost_usd, Decimal::ZERO);
    t.executions()
        .add_cost(exec.id, None, dec!(0.006), Tokens::new(100, 50))
        .await
        .unwrap();
    t.executions()
        .add_cost(exec.id, None, dec!(0.012), Tokens::new(200, 100))
        .await
        .unwrap();
    let stored = t.executions().get(exec.id).await.unwrap();
    assert_eq!(stored.workflow_id, def.id);
    assert_eq!(stored.inputs, json!({"ticket": 42}));
    assert_eq!(stored.cost_usd, dec!(0.018));
    assert_eq!(stored.tokens, Tokens::new(300, 150));
    assert_eq!(stored.tokens.total(), 450);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn execution_relates_to_its_definition(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (def, exec) = execution(&t).await;
    let other = definition(&t, "other").await;
    t.executions()
        .create(NewExecution::new(other.id, json!({})))
        .await
        .unwrap();
    let of_def = t.executions().list_for_workflow(def.id).await.unwrap();
    assert_eq!(
        of_def.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![exec.id]
    );
    let parent = t.definitions().get(of_def[0].workflow_id).await.unwrap();
    assert_eq!(parent.name, "wf");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn executions_are_queried_by_status(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let def = definition(&t, "wf").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            t.executions()
                .create(NewExecution::new(def.id, json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    t.executions()
        .transition(ids[1], ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    let running = t
        .executions()
        .list_by_status(ExecutionStatus::Running)
        .await
        .unwrap();
    assert_eq!(
        running.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert!(running[0].started_at.is_some());
    let pending = t
        .executions()
        .list_by_status(ExecutionStatus::Pending)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn status_transitions_are_validated(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let ex = t.executions();
    // PENDING cannot jump to COMPLETED.
    let err = ex
        .transition(exec.id, ExecutionStatus::Completed, Outcome::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTransition { from, to, .. } if from == "PENDING" && to == "COMPLETED"),
        "{err:?}"
    );
    ex.transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    let done = ex
        .transition(
            exec.id,
            ExecutionStatus::Completed,
            Outcome {
                outputs: Some(json!({"answer": 42})),
                error: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.outputs, Some(json!({"answer": 42})));
    assert!(done.completed_at.is_some());
    // A COMPLETED execution cannot return to RUNNING, and nothing changed.
    let err = ex
        .transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTransition { from, .. } if from == "COMPLETED"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("cannot go from COMPLETED to RUNNING"),
        "{err}"
    );
    assert_eq!(
        ex.get(exec.id).await.unwrap().status,
        ExecutionStatus::Completed
    );
    // Unknown execution.
    let err = ex
        .transition(Uuid::now_v7(), ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_transitions_have_one_winner(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    t.executions()
        .transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let db = t.db().clone();
            let to = if i % 2 == 0 {
                ExecutionStatus::Completed
            } else {
                ExecutionStatus::Cancelled
            };
            tokio::spawn(async move {
                db.executions()
                    .transition(exec.id, to, Outcome::default())
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += task.await.unwrap() as usize;
    }
    assert_eq!(winners, 1, "exactly one final transition may win");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_add_cost_calls_lose_nothing(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let step = t
        .steps()
        .create(NewStep {
            execution_id: exec.id,
            step_key: "plan".into(),
            step_type: "llm".into(),
            inputs: None,
        })
        .await
        .unwrap();
    // 50 distinct amounts with up to 9 decimals: the exact sum is known.
    let amounts: Vec<Decimal> = (1..=50)
        .map(|i| Decimal::new(i * 1_234_567 + 1, 9))
        .collect();
    let expected: Decimal = amounts.iter().copied().sum();
    let tasks: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| {
            let db = t.db().clone();
            let amount = *amount;
            let step_id = (i % 2 == 0).then_some(step.id);
            tokio::spawn(async move {
                db.executions()
                    .add_cost(exec.id, step_id, amount, Tokens::new(10, 5))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = t.executions().get(exec.id).await.unwrap();
    assert_eq!(stored.cost_usd, expected.normalize());
    assert_eq!(stored.tokens, Tokens::new(500, 250));
    let step_expected: Decimal = amounts.iter().step_by(2).copied().sum();
    let stored_step = t.steps().get(step.id).await.unwrap();
    assert_eq!(stored_step.cost_usd, step_expected.normalize());
    assert_eq!(stored_step.tokens, Tokens::new(250, 125));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn negative_cost_and_unknown_targets_are_refused(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let err = t
        .executions()
        .add_cost(exec.id, None, dec!(-0.01), Tokens::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    let err = t
        .executions()
        .add_cost(Uuid::now_v7(), None, dec!(0.01), Tokens::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    // A step of another execution: refused, and the execution's total is untouched (one
    // transaction).
    let err = t
        .executions()
        .add_cost(
            exec.id,
            Some(wflo_db::StepId::new()),
            dec!(0.01),
            Tokens::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        t.executions().get(exec.id).await.unwrap().cost_usd,
        Decimal::ZERO
    );
}

// ------------------------------------------------------------------ steps

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn steps_belong_to_their_execution(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let new = |key: &str| NewStep {
        execution_id: exec.id,
        step_key: key.into(),
        step_type: "tool".into(),
        inputs: Some(json!({"k": key})),
    };
    let a = t.steps().create(new("a")).await.unwrap();
    let b = t.steps().create(new("b")).await.unwrap();
    let listed = t.steps().list(exec.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    assert!(listed.iter().all(|s| s.execution_id == exec.id));
    assert_eq!(listed[1].inputs, Some(json!({"k": "b"})));
    let found = t.steps().find_by_key(exec.id, "b").await.unwrap().unwrap();
    assert_eq!(found.id, b.id);
    assert!(t.steps().find_by_key(exec.id, "c").await.unwrap().is_none());
    // (execution, step_key) is unique.
    let err = t.steps().create(new("a")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    // Attempts count and outputs are kept.
    let s = t
        .steps()
        .transition(a.id, StepStatus::Running, None, None)
        .await
        .unwrap();
    assert_eq!(s.attempt, 1);
    let s = t
        .steps()
        .transition(a.id, StepStatus::Failed, None, Some("boom".into()))
        .await
        .unwrap();
    assert_eq!(s.error.as_deref(), Some("boom"));
    let s = t
        .steps()
        .transition(a.id, StepStatus::Running, None, None)
        .await
        .unwrap();
    assert_eq!(s.attempt, 2);
    let s = t
        .steps()
        .transition(a.id, StepStatus::Completed, Some(json!("ok")), None)
        .await
        .unwrap();
    assert_eq!(
        (s.status, s.outputs),
        (StepStatus::Completed, Some(json!("ok")))
    );
    let err = t
        .steps()
        .transition(a.id, StepStatus::Running, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
}

/// The unpublished outbox events among `ids`.
async fn written(t: &TestDb, ids: &[Uuid]) -> Vec<Uuid> {
    t.outbox()
        .unpublished(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .filter(|id| ids.contains(id))
        .collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_step_change_and_its_events_are_written_together_or_not_at_all(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let new = NewStep {
        execution_id: exec.id,
        step_key: "fetch".into(),
        step_type: "tool".into(),
        inputs: Some(json!({"url": "x"})),
    };
    let (e1, e2) = (event("wflo.steps", "a"), event("wflo.steps", "a"));
    let s = t
        .steps()
        .start_with_events(new.clone(), vec![e1.clone(), e2.clone()])
        .await
        .unwrap();
    assert_eq!((s.status, s.attempt), (StepStatus::Running, 1));
    assert!(s.started_at.is_some());
    assert_eq!(s.inputs, Some(json!({"url": "x"})));
    // Written in the given order.
    assert_eq!(
        written(&t, &[e1.event_id, e2.event_id]).await,
        vec![e1.event_id, e2.event_id]
    );

    // The same key again: refused, and its event is not written.
    let e3 = event("wflo.steps", "a");
    let err = t
        .steps()
        .start_with_events(new, vec![e3.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                entity: "step execution",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(written(&t, &[e3.event_id]).await.is_empty());

    // A transition returns the changed row and writes its event.
    let e4 = event("wflo.steps", "a");
    let done = t
        .steps()
        .transition_with_events(
            s.id,
            StepStatus::Completed,
            Some(json!({"ok": true})),
            None,
            vec![e4.clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.outputs.clone()),
        (StepStatus::Completed, Some(json!({"ok": true})))
    );
    assert!(done.completed_at.is_some());
    assert_eq!(t.steps().get(s.id).await.unwrap(), done);
    assert_eq!(written(&t, &[e4.event_id]).await, vec![e4.event_id]);

    // A refused transition writes no event and names the current status.
    let e5 = event("wflo.steps", "a");
    let err = t
        .steps()
        .transition_with_events(s.id, StepStatus::Running, None, None, vec![e5.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTransition { from, .. } if from == "COMPLETED"),
        "{err:?}"
    );
    assert!(written(&t, &[e5.event_id]).await.is_empty());

    // An event that cannot be written undoes the change.
    let other = t
        .steps()
        .start_with_events(
            NewStep {
                execution_id: exec.id,
                step_key: "other".into(),
                step_type: "tool".into(),
                inputs: None,
            },
            vec![],
        )
        .await
        .unwrap();
    let err = t
        .steps()
        .transition_with_events(
            other.id,
            StepStatus::Completed,
            Some(json!(1)),
            None,
            vec![e4.clone()],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                entity: "outbox event",
                ..
            }
        ),
        "{err:?}"
    );
    let still = t.steps().get(other.id).await.unwrap();
    assert_eq!((still.status, still.outputs), (StepStatus::Running, None));
    // A missing step is NotFound.
    let err = t
        .steps()
        .transition_with_events(Uuid::now_v7(), StepStatus::Completed, None, None, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_step_change_with_events_in_a_transaction_rolls_back_with_it(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let ev = event("wflo.steps", "a");
    let tx = t.begin().await.unwrap();
    tx.steps()
        .start_with_events(
            NewStep {
                execution_id: exec.id,
                step_key: "a".into(),
                step_type: "tool".into(),
                inputs: None,
            },
            vec![ev.clone()],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(t.steps().find_by_key(exec.id, "a").await.unwrap().is_none());
    assert!(written(&t, &[ev.event_id]).await.is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn several_events_are_enqueued_in_one_statement(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    assert_eq!(t.outbox().enqueue_many(vec![]).await.unwrap(), 0);
    let evs: Vec<_> = (0..3)
        .map(|i| event("wflo.steps", &format!("k{i}")))
        .collect();
    assert_eq!(t.outbox().enqueue_many(evs.clone()).await.unwrap(), 3);
    let ids: Vec<_> = evs.iter().map(|e| e.event_id).collect();
    assert_eq!(written(&t, &ids).await, ids);
    // One bad event: nothing is written.
    let mut bad = vec![event("wflo.steps", "x"), event("", "y")];
    let err = t.outbox().enqueue_many(bad.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    bad[1] = evs[0].clone();
    let err = t.outbox().enqueue_many(bad.clone()).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert!(written(&t, &[bad[0].event_id]).await.is_empty());
}

#[tokio::test]
async fn a_sqlite_file_uses_the_write_ahead_log() {
    let t = TestDb::new(Backend::Sqlite).await;
    let pool = sqlx::SqlitePool::connect(&t.url()).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

// ------------------------------------------------------------------ snapshots

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_snapshot_is_stored(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let snap = t
        .snapshots()
        .create(exec.id, Some("plan"), json!({"vars": {"x": 1}}))
        .await
        .unwrap();
    assert_eq!(snap.version, 1);
    let stored = t.snapshots().get(snap.id).await.unwrap();
    assert_eq!(stored.state, json!({"vars": {"x": 1}}));
    assert_eq!(stored.step_key.as_deref(), Some("plan"));
    assert_eq!(stored.execution_id, exec.id);
    assert!(stored.superseded_at.is_none());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn several_snapshots_are_ordered_and_superseded(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    for i in 1..=4 {
        t.snapshots()
            .create(exec.id, None, json!({ "step": i }))
            .await
            .unwrap();
    }
    let all = t.snapshots().list(exec.id).await.unwrap();
    assert_eq!(
        all.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(all[2].state, json!({"step": 3}));
    assert_eq!(
        t.snapshots()
            .latest(exec.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        4
    );
    assert_eq!(t.snapshots().supersede_after(exec.id, 2).await.unwrap(), 2);
    assert_eq!(t.snapshots().supersede_after(exec.id, 2).await.unwrap(), 0);
    assert_eq!(
        t.snapshots()
            .latest(exec.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    // Versions keep increasing after a rollback: v5, never a reused v3.
    let next = t
        .snapshots()
        .create(exec.id, None, json!({}))
        .await
        .unwrap();
    assert_eq!(next.version, 5);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_snapshot_writers_get_consecutive_versions(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let db = t.db().clone();
            tokio::spawn(async move {
                db.snapshots()
                    .create(exec.id, None, json!({ "writer": i }))
                    .await
                    .map(|s| s.version)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    assert_eq!(t.snapshots().list(exec.id).await.unwrap().len(), 20);
}
