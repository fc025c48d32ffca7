//! The wflo-db conformance suite: every case runs on SQLite and on PostgreSQL.
//!
//! * `cargo test -p wflo-db` runs the SQLite half (hermetic: a temporary file per case) and the
//!   cases that need no server at all.
//! * `cargo xtask itest wflo-db` (starts PostgreSQL, exports WFLO_TEST_DATABASE_URL) runs both
//!   halves: the `integration` feature adds the PostgreSQL case of each test
//!   (`NAME::case_2_postgres`, beside `NAME::case_1_sqlite`) and the PostgreSQL-only tests.
//!   There a missing server is a failure, never a skip.
//!
//! Each case gets its own fresh database (`TestDb`), so cases run in parallel.

use rstest::rstest;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;
use wflo_db::testing::TestDb;
use wflo_db::{
    ApprovalDecision, ApprovalStatus, Backend, Db, DbConfig, Error, ExecutionStatus, Executor,
    NewApproval, NewDefinition, NewExecution, NewOutboxEvent, NewRollback, NewStep, Outcome,
    RiskLevel, RollbackStatus, StepStatus, TimeoutPolicy, Tokens,
};

async fn definition(db: &Db, name: &str) -> wflo_db::Definition {
    db.definitions()
        .create(NewDefinition {
            name: name.into(),
            version: None,
            description: Some("a test workflow".into()),
            definition: json!({"steps": [{"id": "plan", "kind": "llm"}]}),
        })
        .await
        .expect("create definition")
}

async fn execution(db: &Db) -> (wflo_db::Definition, wflo_db::Execution) {
    let def = definition(db, "wf").await;
    let exec = db
        .executions()
        .create(NewExecution::new(def.id, json!({"ticket": 42})))
        .await
        .expect("create execution");
    (def, exec)
}

fn approval(execution_id: wflo_db::ExecutionId) -> NewApproval {
    NewApproval {
        execution_id,
        step_key: Some("deploy".into()),
        message: "deploy to production?".into(),
        context: json!({"diff": "+1 line"}),
        risk_level: RiskLevel::High,
        action_fingerprint: "sha256:abc".into(),
        approver_group: Some("ops".into()),
        timeout_at: None,
        timeout_policy: TimeoutPolicy::Reject,
        escalate_to: None,
    }
}

// ------------------------------------------------------------------ connectivity and schema

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn connects_and_pings(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    t.ping().await.unwrap();
    assert_eq!(t.backend(), backend);
    let status = t.schema_status().await.unwrap();
    assert!(
        status.pending.is_empty() && status.unknown.is_empty(),
        "{status:?}"
    );
    assert!(status.applied.len() >= 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn all_tables_exist(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let tables = t.table_names().await.unwrap();
    for table in [
        "workflow_definitions",
        "workflow_executions",
        "step_executions",
        "state_snapshots",
        "approval_requests",
        "rollback_actions",
        "outbox_events",
        "consumer_offsets",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn migrations_go_up_down_and_up(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    definition(&t, "before").await;
    t.migrate_down(None).await.unwrap();
    let tables = t.table_names().await.unwrap();
    assert!(
        !tables
            .iter()
            .any(|t| t.starts_with("workflow_") || t == "outbox_events"),
        "down left {tables:?}"
    );
    let status = t.schema_status().await.unwrap();
    assert!(status.applied.is_empty(), "{status:?}");
    t.migrate_up().await.unwrap();
    // The schema works again, and is empty.
    assert!(t.definitions().list().await.unwrap().is_empty());
    definition(&t, "after").await;
    assert_eq!(t.definitions().list().await.unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    // A newer Wflo recorded a migration this build does not know.
    let url = t.url();
    let raw = Db::connect(&DbConfig::builder(&url).build().unwrap())
        .await
        .unwrap();
    drop(raw);
    insert_fake_migration(&t, "m20991231_000001_from_the_future").await;
    let err = Db::connect(&DbConfig::builder(&url).build().unwrap())
        .await
        .expect_err("a newer schema must be refused");
    match &err {
        Error::SchemaTooNew { unknown } => {
            assert_eq!(
                unknown,
                &vec!["m20991231_000001_from_the_future".to_string()]
            )
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

async fn insert_fake_migration(t: &TestDb, name: &str) {
    // Through sqlx directly: wflo-db offers no way to forge a migration row, by design.
    let url = t.url();
    let sql = format!("INSERT INTO seaql_migrations (version, applied_at) VALUES ('{name}', 0)");
    match t.backend() {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        _ => {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn auto_migrate_off_refuses_a_schema_that_is_behind(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    t.migrate_down(Some(1)).await.unwrap();
    let err = Db::connect(
        &DbConfig::builder(t.url())
            .auto_migrate(false)
            .build()
            .unwrap(),
    )
    .await
    .expect_err("pending migrations with auto_migrate off");
    assert!(
        matches!(err, Error::SchemaOutdated { pending: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("wflo migrate"), "{err}");
}

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

// ------------------------------------------------------------------ approvals and rollbacks

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn an_approval_request_is_stored_and_decided_once(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let req = t.approvals().create(approval(exec.id)).await.unwrap();
    let stored = t.approvals().get(req.id).await.unwrap();
    assert_eq!(stored.status, ApprovalStatus::Pending);
    assert_eq!(stored.message, "deploy to production?");
    assert_eq!(stored.risk_level, RiskLevel::High);
    assert_eq!(stored.context, json!({"diff": "+1 line"}));
    assert_eq!(stored.action_fingerprint, "sha256:abc");
    assert_eq!(t.approvals().pending().await.unwrap().len(), 1);
    let decided = t
        .approvals()
        .decide(
            req.id,
            ApprovalDecision {
                status: ApprovalStatus::Approved,
                decided_by: "alice".into(),
                reason: Some("looks fine".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("alice"));
    assert_eq!(decided.decision_reason.as_deref(), Some("looks fine"));
    assert!(decided.decided_at.is_some());
    let err = t
        .approvals()
        .decide(
            req.id,
            ApprovalDecision {
                status: ApprovalStatus::Rejected,
                decided_by: "mallory".into(),
                reason: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidTransition { from, .. } if from == "APPROVED"),
        "{err:?}"
    );
    assert_eq!(
        t.approvals()
            .get(req.id)
            .await
            .unwrap()
            .decided_by
            .as_deref(),
        Some("alice")
    );
    assert!(t.approvals().pending().await.unwrap().is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_have_one_winner(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let req = t.approvals().create(approval(exec.id)).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let db = t.db().clone();
            tokio::spawn(async move {
                db.approvals()
                    .decide(
                        req.id,
                        ApprovalDecision {
                            status: if i % 2 == 0 {
                                ApprovalStatus::Approved
                            } else {
                                ApprovalStatus::Rejected
                            },
                            decided_by: format!("approver-{i}"),
                            reason: None,
                        },
                    )
                    .await
                    .ok()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(a) = task.await.unwrap() {
            winners.push(a);
        }
    }
    assert_eq!(winners.len(), 1);
    let stored = t.approvals().get(req.id).await.unwrap();
    assert_eq!(stored.decided_by, winners[0].decided_by);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn a_rollback_action_is_stored(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let snap = t
        .snapshots()
        .create(exec.id, None, json!({"x": 1}))
        .await
        .unwrap();
    let rb = t
        .rollbacks()
        .create(NewRollback {
            execution_id: exec.id,
            snapshot_id: snap.id,
            reason: "bad deploy".into(),
            initiated_by: "bob".into(),
            details: json!({}),
        })
        .await
        .unwrap();
    assert_eq!(rb.status, RollbackStatus::Pending);
    let done = t
        .rollbacks()
        .finish(
            rb.id,
            RollbackStatus::Completed,
            json!({"compensations": ["undo-deploy"]}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, RollbackStatus::Completed);
    assert_eq!(done.details, json!({"compensations": ["undo-deploy"]}));
    assert_eq!(done.reason, "bad deploy");
    assert_eq!(done.initiated_by, "bob");
    assert!(done.completed_at.is_some());
    let listed = t.rollbacks().list(exec.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot_id, snap.id);
    let err = t
        .rollbacks()
        .finish(
            rb.id,
            RollbackStatus::Failed,
            json!({}),
            Some("late".into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTransition { .. }), "{err:?}");
}

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

fn event(topic: &str, key: &str) -> NewOutboxEvent {
    NewOutboxEvent {
        event_id: Uuid::now_v7(),
        topic: topic.into(),
        key: Some(key.into()),
        payload: json!({"event_type": "workflow.status"}),
        headers: BTreeMap::from([("content-type".to_string(), "application/json".to_string())]),
    }
}

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

// ------------------------------------------------------------------ bad input

#[tokio::test]
async fn an_unreachable_server_names_the_url_without_its_password() {
    // Port 1 on loopback: nothing listens there.
    let config = DbConfig::builder("postgres://wflo_user:s3cret@127.0.0.1:1/wflo")
        .connect_timeout(std::time::Duration::from_secs(2))
        .acquire_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let err = Db::connect(&config).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1/wflo"), "{text}");
    assert!(!text.contains("s3cret"), "password leaked: {text}");
    assert!(text.contains("cargo xtask services up postgres"), "{text}");
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[cfg(feature = "integration")]
#[tokio::test]
async fn a_wrong_password_is_a_connect_error() {
    let admin = wflo_db::testing::postgres_admin_url();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_password(Some("definitely-wrong")).unwrap();
    let err = Db::connect(&DbConfig::builder(url.as_str()).build().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(!err.to_string().contains("definitely-wrong"), "{err}");
    assert!(err.to_string().contains("password"), "{err}");
}

#[test]
fn bad_urls_are_refused_before_connecting() {
    let err = DbConfig::builder("mysql://u:p@h/db").build().unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains(":p@"), "{err}");
    assert!(
        DbConfig::builder("sqlite::memory:")
            .max_connections(0)
            .build()
            .is_err()
    );
}

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

// ------------------------------------------------------------------ one driver per execution

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn one_lease_holder_at_a_time_with_a_growing_fence(#[case] backend: Backend) {
    use std::time::Duration;
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    assert_eq!(exec.engine, wflo_db::ExecutionEngine::Local);
    assert_eq!(exec.lease_fence, 0);

    let a = t
        .executions()
        .acquire_lease(exec.id, "host:1:a", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(a.fence, 1);
    // A second driver is refused, naming the holder and its expiry.
    match t
        .executions()
        .acquire_lease(exec.id, "host:2:b", Duration::from_secs(30))
        .await
    {
        Err(Error::Leased { holder, until, .. }) => {
            assert_eq!(holder, "host:1:a");
            assert_eq!(until, a.expires_at);
        }
        other => panic!("a second holder must be refused: {other:?}"),
    }
    // Even the same holder name cannot take it twice (one run per lease).
    assert!(matches!(
        t.executions()
            .acquire_lease(exec.id, "host:1:a", Duration::from_secs(30))
            .await,
        Err(Error::Leased { .. })
    ));
    let renewed = t
        .executions()
        .renew_lease(exec.id, &a, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(renewed.expires_at > a.expires_at);
    assert_eq!(renewed.fence, 1);
    match t
        .executions()
        .get(exec.id)
        .await
        .unwrap()
        .driver(chrono::Utc::now())
    {
        wflo_db::Driver::Held { holder, .. } => assert_eq!(holder, "host:1:a"),
        other => panic!("held: {other:?}"),
    }

    // Released: another driver takes it at once, with the next fence.
    assert!(
        t.executions()
            .release_lease(exec.id, &renewed)
            .await
            .unwrap()
    );
    assert!(matches!(
        t.executions()
            .get(exec.id)
            .await
            .unwrap()
            .driver(chrono::Utc::now()),
        wflo_db::Driver::None { since: Some(_) }
    ));
    let b = t
        .executions()
        .acquire_lease(exec.id, "host:2:b", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(b.fence, 2);
    // The old holder lost it: renewing and releasing with the old fence do nothing.
    assert!(matches!(
        t.executions()
            .renew_lease(exec.id, &renewed, Duration::from_secs(30))
            .await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(
        !t.executions()
            .release_lease(exec.id, &renewed)
            .await
            .unwrap()
    );

    // An expired lease is taken over; its holder's renewal then fails.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c = t
        .executions()
        .acquire_lease(exec.id, "host:3:c", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(c.fence, 3);
    assert!(matches!(
        t.executions()
            .renew_lease(exec.id, &b, Duration::from_secs(30))
            .await,
        Err(Error::LeaseLost { .. })
    ));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn concurrent_drivers_race_for_one_lease_and_one_wins(#[case] backend: Backend) {
    use std::time::Duration;
    let t = TestDb::new(backend).await;
    let (_, exec) = execution(&t).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let db: Db = (*t).clone();
        tasks.push(tokio::spawn(async move {
            db.executions()
                .acquire_lease(exec.id, &format!("racer:{i}"), Duration::from_secs(30))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(l) => {
                won += 1;
                assert_eq!(l.fence, 1);
            }
            Err(Error::Leased { .. }) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one driver takes the lease");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn executions_without_a_live_driver_are_found_and_temporal_ones_take_no_lease(
    #[case] backend: Backend,
) {
    use std::time::Duration;
    let t = TestDb::new(backend).await;
    let (def, exec) = execution(&t).await;
    t.executions()
        .transition(exec.id, ExecutionStatus::Running, Outcome::default())
        .await
        .unwrap();
    let lease = t
        .executions()
        .acquire_lease(exec.id, "host:1:a", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        t.executions()
            .without_driver(chrono::Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let orphans = t
        .executions()
        .without_driver(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].id, exec.id);
    assert_eq!(orphans[0].lease_expires_at, Some(lease.expires_at));

    let mut on_temporal = NewExecution::new(def.id, json!({}));
    on_temporal.engine = wflo_db::ExecutionEngine::Temporal;
    let tx = t.executions().create(on_temporal).await.unwrap();
    assert_eq!(tx.engine, wflo_db::ExecutionEngine::Temporal);
    assert!(matches!(
        tx.driver(chrono::Utc::now()),
        wflo_db::Driver::Temporal
    ));
    match t
        .executions()
        .acquire_lease(tx.id, "host:1:a", Duration::from_secs(30))
        .await
    {
        Err(Error::Invalid { detail, .. }) => assert!(detail.contains("temporal"), "{detail}"),
        other => panic!("a temporal execution takes no local lease: {other:?}"),
    }
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
