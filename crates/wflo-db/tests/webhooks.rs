//! Webhooks: created once by name, events fanned out once per (webhook, event), deliveries
//! leased to one dispatcher at a time, attempts recorded only by the lease holder, and a cursor
//! that only moves forward.
//!
//! Part of the wflo-db conformance suite: every case runs on SQLite (`NAME::case_1_sqlite`, in a
//! plain `cargo test -p wflo-db`, hermetic) and, with the `integration` feature (`cargo xtask
//! itest wflo-db`), on PostgreSQL (`NAME::case_2_postgres`), where a missing server is a failure,
//! never a skip. Each case gets its own fresh database (`TestDb`), so cases run in parallel.

use rstest::rstest;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;
use wflo_db::testing::TestDb;
use wflo_db::{
    Backend, DeliveryOutcome, DeliveryStatus, Error, Executor, NewOutboxEvent, NewWebhook,
    OutboxEvent, WebhookEvent, WebhookFormat,
};
use wflo_types::{
    ApprovalPayload, CostPayload, EventEnvelope, EventPayload, ExecutionId, WorkflowStatusPayload,
};

const SECRET: &str = "whsec_0123456789abcdef";

fn hook(name: &str, events: &[WebhookEvent]) -> NewWebhook {
    NewWebhook::new(
        name,
        format!("http://127.0.0.1:9/{name}"),
        events.to_vec(),
        SECRET,
    )
}

fn finished(status: &str) -> EventPayload {
    EventPayload::WorkflowStatus(WorkflowStatusPayload {
        status: status.into(),
        ..Default::default()
    })
}

/// Writes events to the outbox and reads them back (with their positions).
async fn write(t: &TestDb, payloads: Vec<EventPayload>) -> Vec<OutboxEvent> {
    let head = t.outbox().head().await.unwrap();
    let exec = ExecutionId::new();
    for p in payloads {
        let env = EventEnvelope::new("test", p).with_execution(exec);
        t.outbox()
            .enqueue(NewOutboxEvent::from_envelope(&env))
            .await
            .unwrap();
    }
    t.outbox().after(head, None, 1000).await.unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn webhooks_are_created_once_by_name_and_removed_with_their_deliveries(
    #[case] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let a = t
        .webhooks()
        .create(
            hook(
                "ops",
                &[
                    WebhookEvent::ExecutionFinished,
                    WebhookEvent::ApprovalRequested,
                ],
            )
            .format(WebhookFormat::Slack),
        )
        .await
        .unwrap();
    assert_eq!(
        a.events,
        [
            WebhookEvent::ApprovalRequested,
            WebhookEvent::ExecutionFinished
        ]
    );
    assert_eq!(a.format, WebhookFormat::Slack);
    assert_eq!(a.secret, SECRET, "the secret is stored: signing needs it");
    assert!(a.enabled);
    assert_eq!(t.webhooks().get("ops").await.unwrap(), a);

    let again = t
        .webhooks()
        .create(hook("ops", &[WebhookEvent::BudgetAlert]))
        .await
        .unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again}");
    assert!(again.to_string().contains("`ops`"), "{again}");
    let bad = t
        .webhooks()
        .create(NewWebhook::new(
            "x",
            "file:///etc/passwd",
            vec![WebhookEvent::BudgetAlert],
            SECRET,
        ))
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::Invalid { .. }), "{bad}");

    t.webhooks()
        .create(hook("budget", &[WebhookEvent::BudgetAlert]))
        .await
        .unwrap();
    let names: Vec<String> = t
        .webhooks()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["budget", "ops"]);

    let events = write(&t, vec![finished("COMPLETED")]).await;
    assert_eq!(
        t.webhooks()
            .fan_out(&events, std::slice::from_ref(&a))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        t.webhooks().deliveries(a.id, None, 10).await.unwrap().len(),
        1
    );
    let off = t.webhooks().set_enabled("ops", false).await.unwrap();
    assert!(!off.enabled);
    assert_eq!(
        t.webhooks().enabled().await.unwrap().len(),
        1,
        "only `budget` is enabled"
    );
    assert!(
        t.webhooks()
            .claim_due(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "a disabled webhook's deliveries wait"
    );

    let removed = t.webhooks().remove("ops").await.unwrap();
    assert_eq!(removed.id, a.id);
    assert!(
        t.webhooks()
            .deliveries(a.id, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "its deliveries went with it"
    );
    let gone = t.webhooks().remove("ops").await.unwrap_err();
    assert!(matches!(gone, Error::NotFound { .. }), "{gone}");
    assert!(matches!(
        t.webhooks().get("ops").await.unwrap_err(),
        Error::NotFound { .. }
    ));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn events_fan_out_once_to_the_webhooks_that_want_them(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    // Written before any webhook existed: nobody gets it.
    let early = write(&t, vec![finished("FAILED")]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let approvals = t
        .webhooks()
        .create(hook(
            "approvals",
            &[
                WebhookEvent::ApprovalRequested,
                WebhookEvent::ApprovalDecided,
            ],
        ))
        .await
        .unwrap();
    let ends = t
        .webhooks()
        .create(hook(
            "ends",
            &[WebhookEvent::ExecutionFinished, WebhookEvent::BudgetAlert],
        ))
        .await
        .unwrap();
    let hooks = t.webhooks().enabled().await.unwrap();
    assert_eq!(t.webhooks().fan_out(&early, &hooks).await.unwrap(), 0);

    let events = write(
        &t,
        vec![
            finished("RUNNING"),
            EventPayload::ApprovalRequested(ApprovalPayload::default()),
            finished("WAITING_APPROVAL"),
            EventPayload::ApprovalDecided(ApprovalPayload::default()),
            EventPayload::CostRecorded(CostPayload::default()),
            EventPayload::BudgetAlert(CostPayload::default()),
            finished("COMPLETED"),
        ],
    )
    .await;
    assert_eq!(t.webhooks().fan_out(&events, &hooks).await.unwrap(), 4);
    assert_eq!(
        t.webhooks().fan_out(&events, &hooks).await.unwrap(),
        0,
        "fanning out again stores nothing new"
    );
    let kinds = |id| {
        let t = &t;
        async move {
            let mut k: Vec<WebhookEvent> = t
                .webhooks()
                .deliveries(id, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|d| {
                    assert_eq!(d.status, DeliveryStatus::Pending);
                    assert_eq!(d.attempts, 0);
                    d.event_type
                })
                .collect();
            k.sort();
            k
        }
    };
    assert_eq!(
        kinds(approvals.id).await,
        [
            WebhookEvent::ApprovalRequested,
            WebhookEvent::ApprovalDecided
        ]
    );
    assert_eq!(
        kinds(ends.id).await,
        [WebhookEvent::ExecutionFinished, WebhookEvent::BudgetAlert]
    );
    let d = &t.webhooks().deliveries(ends.id, None, 1).await.unwrap()[0];
    let completed = events.last().unwrap();
    assert_eq!(
        (d.outbox_id, d.event_id),
        (completed.id, completed.event_id),
        "newest first"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn concurrent_claimers_never_hold_one_delivery_at_once(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let w = t
        .webhooks()
        .create(hook("all", &[WebhookEvent::ExecutionFinished]))
        .await
        .unwrap();
    let events = write(&t, (0..120).map(|_| finished("COMPLETED")).collect()).await;
    assert_eq!(t.webhooks().fan_out(&events, &[w]).await.unwrap(), 120);

    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let db = t.db().clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = db
                        .webhooks()
                        .claim_due(7, Duration::from_secs(60))
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    for c in batch {
                        assert!(c.event.is_some(), "the claim carries its event");
                        mine.push(c.delivery.id);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let distinct: BTreeSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 120, "every delivery claimed exactly once");
    assert_eq!(distinct.len(), 120);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn only_the_lease_holder_records_an_attempt(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    let w = t
        .webhooks()
        .create(hook("one", &[WebhookEvent::ExecutionFinished]))
        .await
        .unwrap();
    let events = write(&t, vec![finished("COMPLETED"), finished("CANCELLED")]).await;
    t.webhooks()
        .fan_out(&events, std::slice::from_ref(&w))
        .await
        .unwrap();
    let wh = t.webhooks();

    // A short lease that ends: the delivery is due again, and the first holder's record of
    // its attempt is refused once someone else holds it.
    let first = wh.claim_due(1, Duration::from_millis(50)).await.unwrap();
    assert_eq!(first.len(), 1);
    let first = &first[0];
    assert_eq!(first.webhook.id, w.id);
    assert_eq!(
        first.event.as_ref().unwrap().event_id,
        first.delivery.event_id
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = wh.claim_due(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(second.len(), 2, "the expired lease and the other delivery");
    let retaken = second
        .iter()
        .find(|c| c.delivery.id == first.delivery.id)
        .unwrap();
    assert!(
        !wh.finish(first, DeliveryOutcome::Delivered { http_status: 200 })
            .await
            .unwrap(),
        "a lost lease records nothing"
    );
    assert!(
        wh.claim_due(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "both are leased"
    );

    // A failure to retry later: not due before then, and the error and status are kept.
    let later = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    assert!(
        wh.finish(
            retaken,
            DeliveryOutcome::Retry {
                http_status: Some(503),
                error: "the receiver answered 503".into(),
                at: later,
            },
        )
        .await
        .unwrap()
    );
    let d = wh
        .deliveries(w.id, Some(DeliveryStatus::Pending), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == retaken.delivery.id)
        .unwrap();
    assert_eq!(
        (d.attempts, d.last_status, d.last_error.as_deref()),
        (1, Some(503), Some("the receiver answered 503"))
    );
    assert!(
        wh.claim_due(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "not due before its retry time"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let third = wh.claim_due(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].delivery.attempts, 1);
    assert!(
        wh.finish(&third[0], DeliveryOutcome::Delivered { http_status: 204 })
            .await
            .unwrap()
    );
    assert!(
        !wh.finish(&third[0], DeliveryOutcome::Delivered { http_status: 204 })
            .await
            .unwrap(),
        "recorded once"
    );
    let other = second
        .iter()
        .find(|c| c.delivery.id != first.delivery.id)
        .unwrap();
    assert!(
        wh.finish(
            other,
            DeliveryOutcome::GiveUp {
                http_status: None,
                error: "connection refused".into(),
            },
        )
        .await
        .unwrap()
    );
    let all = wh.deliveries(w.id, None, 10).await.unwrap();
    let by_id = |id| all.iter().find(|d| d.id == id).unwrap();
    let delivered = by_id(retaken.delivery.id);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!((delivered.attempts, delivered.last_status), (2, Some(204)));
    assert!(delivered.delivered_at.is_some() && delivered.last_error.is_none());
    let failed = by_id(other.delivery.id);
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("connection refused"));
    assert_eq!(
        wh.deliveries(w.id, Some(DeliveryStatus::Failed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        wh.claim_due(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "delivered and failed deliveries are done"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[cfg_attr(feature = "integration", case::postgres(Backend::Postgres))]
#[tokio::test]
async fn the_cursor_only_moves_forward(#[case] backend: Backend) {
    let t = TestDb::new(backend).await;
    assert_eq!(t.webhooks().cursor().await.unwrap(), 0);
    t.webhooks().advance_cursor(5).await.unwrap();
    assert_eq!(t.webhooks().cursor().await.unwrap(), 5);
    t.webhooks().advance_cursor(3).await.unwrap();
    assert_eq!(t.webhooks().cursor().await.unwrap(), 5, "never back");
    t.webhooks().advance_cursor(9).await.unwrap();
    assert_eq!(t.webhooks().cursor().await.unwrap(), 9);
    assert!(matches!(
        t.webhooks().advance_cursor(-1).await.unwrap_err(),
        Error::Invalid { .. }
    ));
}
