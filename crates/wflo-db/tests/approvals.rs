//! Approval requests decided once, and rollbacks.
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
use wflo_db::{
    ApprovalDecision, ApprovalStatus, Backend, Error, Executor, NewRollback, RiskLevel,
    RollbackStatus,
};

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
