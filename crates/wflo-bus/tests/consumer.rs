#![cfg(feature = "integration")]
//! wflo-bus's consumer against the real Kafka-API broker: every event type read back, partitions
//! shared by consumers, the dead-letter topic, a consumer killed before its commit, a slow
//! handler. Every test owns its topics and its database.

mod common;

use common::*;
use futures::StreamExt;
use futures::future::BoxFuture;
use rstest::rstest;
use rust_decimal_macros::dec;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use wflo_bus::*;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Db, Executor, NewOutboxEvent, Tx};

// ------------------------------------------------------------------ consuming

#[tokio::test]
async fn produce_then_consume_every_event_type_with_its_fields() {
    let t_db = TestDb::new(Backend::Sqlite).await;
    let bus = bus().await;
    let t = topic(&bus, "roundtrip", 3).await;
    let exec = Uuid::now_v7();
    let mut sent = Vec::new();
    for p in sample_events() {
        let e = EventEnvelope::new("wflo-bus-test", p)
            .with_execution(exec)
            .with_workflow("wf-1")
            .with_trace("trace-1")
            .with_correlation("corr-1");
        bus.send_event(&t, &e).await.unwrap();
        sent.push(e);
    }
    let got = read_n(&bus, &t_db, &t, sent.len()).await;
    for (m, e) in got.iter().zip(&sent) {
        let back = m.envelope().unwrap();
        assert_eq!(&back, e);
        assert_eq!(back.typed().unwrap(), e.typed().unwrap());
        assert_eq!(m.key, Some(exec.to_string()));
        assert_eq!(m.headers[HEADER_EVENT_ID], e.event_id.to_string());
        assert_eq!(m.headers[HEADER_EVENT_TYPE], e.event_type.as_str());
    }
    // Spot-check typed fields after the trip.
    match got[3].envelope().unwrap().typed().unwrap() {
        EventPayload::BudgetAlert(c) => {
            assert_eq!(c.total_cost_usd, dec!(1.23456789));
            assert_eq!(c.cached_prompt_tokens, 1000);
            assert_eq!(c.reasoning_tokens, 64);
            assert_eq!(c.alert_type, Some(AlertType::Threshold50));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn schema_defaults_and_unknown_types_survive_the_broker() {
    let t_db = TestDb::new(Backend::Sqlite).await;
    let bus = bus().await;
    let t = topic(&bus, "defaults", 1).await;
    let minimal = json!({
        "event_id": Uuid::now_v7(), "event_type": "sandbox.execution",
        "occurred_at": "2026-11-25T10:00:00Z", "payload": {"language": "python"},
        "added_in_v2": [1, 2, 3]
    });
    let unknown = json!({
        "schema_version": 2, "event_id": Uuid::now_v7(), "event_type": "agent.thought",
        "occurred_at": "2026-11-25T10:00:01Z", "payload": {"text": "hmm"}
    });
    for v in [&minimal, &unknown] {
        bus.send(OutgoingMessage::new(
            t.clone(),
            serde_json::to_vec(v).unwrap(),
        ))
        .await
        .unwrap();
    }
    let got = read_n(&bus, &t_db, &t, 2).await;
    let a = got[0].envelope().unwrap();
    assert_eq!(a.schema_version, SCHEMA_VERSION);
    assert_eq!(
        (a.source.as_str(), a.execution_id, a.trace_id.clone()),
        ("", None, None)
    );
    match a.typed().unwrap() {
        EventPayload::Sandbox(s) => {
            assert_eq!(s.language, "python");
            assert_eq!(
                (s.exit_code, s.timed_out, s.oom_killed, s.duration_ms),
                (None, false, false, 0)
            );
        }
        other => panic!("{other:?}"),
    }
    let b = got[1].envelope().unwrap();
    assert_eq!(b.schema_version, 2);
    assert_eq!(
        b.typed().unwrap(),
        EventPayload::Raw {
            event_type: "agent.thought".into(),
            payload: json!({"text": "hmm"})
        }
    );
}

#[tokio::test]
async fn two_consumers_on_different_partitions_read_each_event_exactly_once() {
    let t_db = TestDb::new(Backend::Postgres).await;
    let bus = bus().await;
    let t = topic(&bus, "split", 2).await;
    let mut ids = HashSet::new();
    for i in 0..200 {
        let e = EventEnvelope::new(
            "test",
            EventPayload::StepStatus(StepStatusPayload {
                step_id: format!("s{i}"),
                status: "COMPLETED".into(),
                ..Default::default()
            }),
        )
        .with_execution(Uuid::now_v7());
        bus.send_event(&t, &e).await.unwrap();
        ids.insert(e.event_id);
    }
    let per_partition = [
        bus.high_watermark(&t, 0).await.unwrap(),
        bus.high_watermark(&t, 1).await.unwrap(),
    ];
    assert!(
        per_partition.iter().all(|n| *n > 0),
        "both partitions used: {per_partition:?}"
    );

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut handlers = Vec::new();
    for p in [0, 1] {
        let c = Consumer::new(
            bus.clone(),
            t_db.db().clone(),
            ConsumerConfig::builder("split-group", t.clone())
                .partitions([p])
                .buffer(16)
                .build()
                .unwrap(),
        );
        let h = Arc::new(Collect::default());
        handlers.push(Arc::clone(&h));
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { c.run(&*h, token).await }));
    }
    wait_for("all 200 events", 60, || {
        handlers
            .iter()
            .map(|h| h.seen.lock().unwrap().len())
            .sum::<usize>()
            >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut all = Vec::new();
    for (p, h) in handlers.iter().enumerate() {
        let seen = h.seen.lock().unwrap();
        assert_eq!(seen.len() as i64, per_partition[p]);
        assert!(seen.iter().all(|e| e.message.partition == p as i32));
        all.extend(seen.iter().map(|e| e.envelope.event_id));
    }
    assert_eq!(all.len(), 200);
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), ids);
    // Offsets were stored: a restart reads nothing again.
    for p in [0, 1] {
        assert_eq!(
            t_db.consumer_offsets()
                .get("split-group", &t, p)
                .await
                .unwrap(),
            Some(per_partition[p as usize])
        );
    }
}

#[rstest]
#[tokio::test]
async fn malformed_and_rejected_messages_go_to_the_dead_letter_topic_and_consumption_continues(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t_db = TestDb::new(backend).await;
    let bus = bus().await;
    let t = topic(&bus, "dlq", 1).await;
    let good = EventEnvelope::new("t", sample_events().remove(0));
    let rejected = EventEnvelope::new("t", sample_events().remove(8));
    bus.send(OutgoingMessage::new(t.clone(), b"{not json".to_vec()).header("h", "1"))
        .await
        .unwrap();
    bus.send(OutgoingMessage::new(
        t.clone(),
        br#"{"event_type":"x"}"#.to_vec(),
    ))
    .await
    .unwrap();
    bus.send_event(&t, &rejected).await.unwrap();
    bus.send_event(&t, &good).await.unwrap();

    let consumer = Consumer::new(
        bus.clone(),
        t_db.db().clone(),
        ConsumerConfig::builder("dlq-group", t.clone())
            .build()
            .unwrap(),
    );
    let h = Arc::new(Collect {
        reject_type: Some(EventType::AuditAction),
        ..Default::default()
    });
    let shutdown = CancellationToken::new();
    let task = {
        let (c, h, s) = (consumer.clone(), Arc::clone(&h), shutdown.clone());
        tokio::spawn(async move { c.run(&*h, s).await })
    };
    wait_for("the good event", 60, || h.seen.lock().unwrap().len() == 1).await;
    shutdown.cancel();
    let counts = task.await.unwrap().unwrap();
    assert_eq!(counts.handled, 1);
    assert_eq!(counts.dead_lettered, 3);
    assert_eq!(h.seen.lock().unwrap()[0].envelope, good);
    assert_eq!(
        t_db.consumer_offsets()
            .get("dlq-group", &t, 0)
            .await
            .unwrap(),
        Some(4)
    );

    let dead = read_n(&bus, &t_db, &dead_letter_name(&t), 3).await;
    assert_eq!(dead[0].value, b"{not json");
    assert_eq!(dead[0].headers["h"], "1");
    assert_eq!(dead[0].headers[HEADER_DLQ_TOPIC], t);
    assert_eq!(dead[0].headers[HEADER_DLQ_OFFSET], "0");
    assert_eq!(dead[0].headers[HEADER_DLQ_GROUP], "dlq-group");
    assert!(dead[0].headers[HEADER_DLQ_REASON].contains("malformed"));
    assert_eq!(dead[1].headers[HEADER_DLQ_OFFSET], "1");
    assert_eq!(dead[2].envelope().unwrap(), rejected);
    assert!(dead[2].headers[HEADER_DLQ_REASON].contains("rejected"));
}

/// A transactional handler whose effect is a row (an outbox row with a fresh id, so a second
/// application would show as a second row).
struct WriteEffect {
    hang_after_write: bool,
    wrote: tokio::sync::mpsc::UnboundedSender<Uuid>,
}

impl TxHandler for WriteEffect {
    fn handle<'a>(
        &'a self,
        tx: &'a Tx,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            tx.outbox()
                .enqueue(NewOutboxEvent {
                    event_id: Uuid::now_v7(),
                    topic: "effects".into(),
                    key: Some(event.envelope.event_id.to_string()),
                    payload: json!({"handled": event.envelope.event_id}),
                    headers: BTreeMap::new(),
                })
                .await
                .map_err(|e| HandlerError::Retry(e.to_string()))?;
            let _ = self.wrote.send(event.envelope.event_id);
            if self.hang_after_write {
                // Killed here: after the effect, before the commit.
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

async fn effect_rows(db: &Db, event: Uuid) -> usize {
    db.outbox()
        .unpublished(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.topic == "effects" && r.key == Some(event.to_string()))
        .count()
}

#[rstest]
#[tokio::test]
async fn consumer_killed_before_commit_handles_again_without_duplicating_the_effect(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t_db = TestDb::new(backend).await;
    let bus = bus().await;
    let t = topic(&bus, "kill", 1).await;
    let e = EventEnvelope::new("t", sample_events().remove(1)).with_execution(Uuid::now_v7());
    bus.send_event(&t, &e).await.unwrap();
    let config = ConsumerConfig::builder("kill-group", t.clone())
        .build()
        .unwrap();

    // Run 1: the handler writes its effect, then the consumer is killed before committing.
    let (wtx, mut wrx) = tokio::sync::mpsc::unbounded_channel();
    let c1 = Consumer::new(bus.clone(), t_db.db().clone(), config.clone());
    let h1 = WriteEffect {
        hang_after_write: true,
        wrote: wtx.clone(),
    };
    let task =
        tokio::spawn(async move { c1.run_transactional(&h1, CancellationToken::new()).await });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), wrx.recv())
            .await
            .unwrap(),
        Some(e.event_id)
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(
        effect_rows(&t_db, e.event_id).await,
        0,
        "uncommitted effect rolled back"
    );
    assert_eq!(
        t_db.consumer_offsets()
            .get("kill-group", &t, 0)
            .await
            .unwrap(),
        None
    );

    // Run 2: the event is handled again; effect and offset commit together.
    let c2 = Consumer::new(bus.clone(), t_db.db().clone(), config.clone());
    let h2 = Arc::new(WriteEffect {
        hang_after_write: false,
        wrote: wtx.clone(),
    });
    let s2 = CancellationToken::new();
    let task = {
        let (c, h, s) = (c2.clone(), Arc::clone(&h2), s2.clone());
        tokio::spawn(async move { c.run_transactional(&*h, s).await })
    };
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), wrx.recv())
            .await
            .unwrap(),
        Some(e.event_id)
    );
    wait_for("the commit", 30, || c2.counts().handled == 1).await;
    s2.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(effect_rows(&t_db, e.event_id).await, 1);
    assert_eq!(
        t_db.consumer_offsets()
            .get("kill-group", &t, 0)
            .await
            .unwrap(),
        Some(1)
    );

    // The same event delivered again (a relay retry): recognised, effect not repeated.
    bus.send_event(&t, &e).await.unwrap();
    let c3 = Consumer::new(bus.clone(), t_db.db().clone(), config);
    let s3 = CancellationToken::new();
    let task = {
        let (c, h, s) = (c3.clone(), Arc::clone(&h2), s3.clone());
        tokio::spawn(async move { c.run_transactional(&*h, s).await })
    };
    wait_for("the duplicate", 30, || c3.counts().duplicates == 1).await;
    s3.cancel();
    let counts = task.await.unwrap().unwrap();
    assert_eq!(counts.handled, 0);
    assert_eq!(effect_rows(&t_db, e.event_id).await, 1);
    assert_eq!(
        t_db.consumer_offsets()
            .get("kill-group", &t, 0)
            .await
            .unwrap(),
        Some(2)
    );
}

#[tokio::test]
async fn slow_handler_bounds_the_buffer() {
    let t_db = TestDb::new(Backend::Sqlite).await;
    let bus = bus().await;
    let t = topic(&bus, "backpressure", 1).await;
    for i in 0..100 {
        bus.send(OutgoingMessage::new(t.clone(), format!("{i}").into_bytes()))
            .await
            .unwrap();
    }
    let c = Consumer::new(
        bus.clone(),
        t_db.db().clone(),
        ConsumerConfig::builder("bp", t.clone())
            .buffer(4)
            .build()
            .unwrap(),
    );
    let mut s = c.stream(0, 0);
    let first = s.next().await.unwrap().unwrap();
    assert_eq!(first.offset, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The fetch task is parked on the full buffer: at most 4 more are ready.
    let mut ready = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), s.next()).await {
        ready += 1;
        if ready > 4 {
            break;
        }
    }
    // After draining, fetching resumes (the buffer refills up to its bound, not past it).
    assert!(ready <= 5, "buffer held {ready} records");
    let mut next = first.offset + ready + 1;
    while next < 100 {
        let m = s.next().await.unwrap().unwrap();
        assert_eq!(m.offset, next);
        next += 1;
    }
}
