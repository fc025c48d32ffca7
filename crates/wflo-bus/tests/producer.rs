#![cfg(feature = "integration")]
//! wflo-bus's producer against the real Kafka-API broker (`cargo xtask itest wflo-bus`):
//! connecting, topics, sending every event type. Every test owns its topics (a unique prefix).

mod common;

use common::*;
use rstest::rstest;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;
use wflo_bus::*;
use wflo_db::Backend;
use wflo_db::testing::TestDb;

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
