//! Connecting, the schema and its migrations, and input the database refuses.
//!
//! Part of the wflo-db conformance suite: every case runs on SQLite (`NAME::case_1_sqlite`, in a
//! plain `cargo test -p wflo-db`, hermetic) and, with the `integration` feature (`cargo xtask
//! itest wflo-db`), on PostgreSQL (`NAME::case_2_postgres`), where a missing server is a failure,
//! never a skip. Each case gets its own fresh database (`TestDb`), so cases run in parallel.

mod common;

use common::*;
use rstest::rstest;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Db, DbConfig, Error, Executor};

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
        "api_tokens",
        "webhooks",
        "webhook_deliveries",
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
