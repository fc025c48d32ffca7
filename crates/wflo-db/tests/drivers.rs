//! One driver per execution: leases with fencing.
//!
//! Part of the wflo-db conformance suite: every case runs on SQLite (`NAME::case_1_sqlite`, in a
//! plain `cargo test -p wflo-db`, hermetic) and, with the `integration` feature (`cargo xtask
//! itest wflo-db`), on PostgreSQL (`NAME::case_2_postgres`), where a missing server is a failure,
//! never a skip. Each case gets its own fresh database (`TestDb`), so cases run in parallel.

mod common;

use common::*;
use rstest::rstest;
use serde_json::json;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Db, Error, ExecutionStatus, Executor, NewExecution, Outcome};

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
