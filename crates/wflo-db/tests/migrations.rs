//! Rows stored by an earlier version stay readable: the execution-contract migration moves a
//! run's budget out of `inputs` (`{"inputs": {...}, "budget_usd": "0.50"}`, the shape every
//! earlier version wrote) into its column, fills the workflow name, and leaves rows of any
//! other shape as they were. The SQLite half runs in a plain `cargo test`; `integration` adds
//! PostgreSQL.

use rstest::rstest;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use uuid::Uuid;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Error, Executor, NewDefinition, NewExecution};

/// The migration these cases are about.
const CONTRACT: &str = "m20261201_000006_execution_contract";

/// How many migrations to undo to get back to the schema before `name` (it and every later
/// one), so the cases hold however many migrations come after it.
async fn steps_back_before(t: &TestDb, name: &str) -> u32 {
    let applied = t.schema_status().await.unwrap().applied;
    let at = applied
        .iter()
        .position(|m| m == name)
        .unwrap_or_else(|| panic!("{name} is applied: {applied:?}"));
    (applied.len() - at) as u32
}

/// Overwrites one execution's `inputs` with `doc` as an earlier version would have stored it.
async fn store_old_inputs(t: &TestDb, id: Uuid, doc: &Value) {
    let text = doc.to_string();
    match t.backend() {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&t.url()).await.unwrap();
            sqlx::query("UPDATE workflow_executions SET inputs = $1::jsonb WHERE id = $2")
                .bind(text)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        _ => {
            let pool = sqlx::SqlitePool::connect(&t.url()).await.unwrap();
            let done = sqlx::query("UPDATE workflow_executions SET inputs = ?1 WHERE id = ?2")
                .bind(text)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1, "the row is found by its id");
            pool.close().await;
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn rows_of_the_previous_format_are_moved_into_columns(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let def = t
        .definitions()
        .create(NewDefinition {
            name: "triage".into(),
            version: None,
            description: None,
            definition: json!({"steps": []}),
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let e = t
            .executions()
            .create(NewExecution::new(def.id, json!({})))
            .await
            .unwrap();
        ids.push(e.id);
    }
    // Back to the schema before the migration, then rows exactly as that version wrote them.
    let back = steps_back_before(&t, CONTRACT).await;
    t.migrate_down(Some(back)).await.unwrap();
    let old = [
        json!({"inputs": {"ticket": 42, "tag": "a"}, "budget_usd": "0.50"}),
        json!({"inputs": {"tag": "b"}, "budget_usd": null}),
        // Written by an embedder through the repository, not by the engine: left alone.
        json!({"ticket": 7}),
        json!({"inputs": {"tag": "d"}, "budget_usd": "1.000000001", "other": true}),
    ];
    for (id, doc) in ids.iter().zip(&old) {
        store_old_inputs(&t, id.as_uuid(), doc).await;
    }
    t.migrate_up().await.unwrap();

    let a = t.executions().get(ids[0]).await.unwrap();
    assert_eq!(a.inputs, json!({"ticket": 42, "tag": "a"}));
    assert_eq!(a.budget_usd, Some(dec!(0.50)));
    assert_eq!(a.workflow_name, "triage");
    let b = t.executions().get(ids[1]).await.unwrap();
    assert_eq!(b.inputs, json!({"tag": "b"}));
    assert_eq!(b.budget_usd, None);
    let c = t.executions().get(ids[2]).await.unwrap();
    assert_eq!(c.inputs, json!({"ticket": 7}));
    assert_eq!(c.budget_usd, None);
    assert_eq!(c.workflow_name, "triage");
    let d = t.executions().get(ids[3]).await.unwrap();
    assert_eq!(d.inputs, old[3], "a key the old shape never had: not moved");
    assert_eq!(d.budget_usd, None);

    // Down and up again keeps what the columns hold.
    t.migrate_down(Some(back)).await.unwrap();
    t.migrate_up().await.unwrap();
    let a = t.executions().get(ids[0]).await.unwrap();
    assert_eq!(a.inputs, json!({"ticket": 42, "tag": "a"}));
    assert_eq!(a.budget_usd, Some(dec!(0.5)));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn an_execution_keeps_its_budget_name_and_ids(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let def = t
        .definitions()
        .create(NewDefinition {
            name: "deploy".into(),
            version: None,
            description: None,
            definition: json!({"steps": []}),
        })
        .await
        .unwrap();
    let mut new = NewExecution::new(def.id, json!({"env": "prod"}));
    new.budget_usd = Some(dec!(0.000000001));
    new.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    new.correlation_id = Some("ticket-1234".into());
    let e = t.executions().create(new.clone()).await.unwrap();
    let read = t.executions().get(e.id).await.unwrap();
    assert_eq!(read.workflow_name, "deploy", "read from the definition");
    assert_eq!(read.budget_usd, Some(dec!(0.000000001)));
    assert_eq!(
        read.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(read.correlation_id.as_deref(), Some("ticket-1234"));
    assert_eq!(read.inputs, json!({"env": "prod"}));

    for (budget, trace, corr) in [
        (Some(dec!(0)), None, None),
        (Some(dec!(-1)), None, None),
        (None, Some("x".repeat(65)), None),
        (None, None, Some(String::new())),
        (None, None, Some("c".repeat(256))),
    ] {
        let mut bad = NewExecution::new(def.id, json!({}));
        bad.budget_usd = budget;
        bad.trace_id = trace;
        bad.correlation_id = corr;
        let err = t.executions().create(bad).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    }
    let mut missing = NewExecution::new(Uuid::now_v7(), json!({}));
    missing.workflow_name = None;
    let err = t.executions().create(missing).await.unwrap_err();
    assert!(matches!(err, Error::ForeignKey { .. }), "{err:?}");
    assert_eq!(
        t.executions().recent(100).await.unwrap().len(),
        1,
        "nothing refused was stored"
    );
}
