//! wflo-bus throughput beside the confluent-kafka (librdkafka) producer, same broker, same run
//! (`cargo xtask bench bus`). Writes rows to target/wflo-bench/rows.jsonl:
//! * `bus publish 1KB acked (msg/s)`: `Bus::send` of N 1 KB events, all acknowledged (median of
//!   5 interleaved rounds), against
//!   the Python confluent-kafka producer sending the same N messages (acks=all, linger 5 ms, zstd).
//! * `bus outbox relay 1KB (msg/s)`: N outbox rows in PostgreSQL published and marked by the
//!   relay, against the same baseline.

use futures::StreamExt;
use std::io::Write;
use std::time::{Duration, Instant};
use uuid::Uuid;
use wflo_bus::{
    Bus, BusConfig, EventEnvelope, EventPayload, OutgoingMessage, Relay, RelayConfig, TopicSpec,
};
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Executor, NewOutboxEvent};

const N: usize = 100_000;
const RELAY_N: usize = 20_000;
const SIZE: usize = 1024;
const PARTITIONS: i32 = 3;
const ROUNDS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn payload(size: usize) -> Vec<u8> {
    // The same generator as confluent_baseline.py.
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x2545_F491;
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        x = (x.wrapping_mul(1_103_515_245).wrapping_add(12_345)) & 0x7FFF_FFFF;
        out.push(alphabet[(x % alphabet.len() as u64) as usize]);
    }
    out
}

fn row(figure: &str, ours: f64, baseline: f64) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wflo-bench");
    std::fs::create_dir_all(root).expect("create target/wflo-bench");
    let line = serde_json::json!({
        "figure": figure, "ours": ours.round(), "baseline": baseline.round(),
        "unit": "msg/s", "better": "higher"
    });
    println!("{line}  (ratio {:.2})", ours / baseline);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{root}/rows.jsonl"))
        .expect("open rows.jsonl");
    writeln!(f, "{line}").expect("write rows.jsonl");
}

fn baseline(bootstrap: &str, topic: &str, n: usize) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/confluent_baseline.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            bootstrap,
            topic,
            &n.to_string(),
            &SIZE.to_string(),
            "zstd",
        ])
        .output()
        .expect("run python3 (pip install confluent-kafka)");
    assert!(
        out.status.success(),
        "the confluent-kafka baseline failed (pip install confluent-kafka): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("baseline JSON line");
    assert_eq!(
        v["delivered"].as_u64(),
        Some(n as u64),
        "baseline delivered all: {v}"
    );
    eprintln!("baseline: {v}");
    v["rate"].as_f64().expect("rate")
}

async fn publish(bus: &Bus, topic: &str, n: usize) -> f64 {
    let value = payload(SIZE);
    let start = Instant::now();
    let acked = futures::stream::iter(0..n)
        .map(|i| {
            let msg = OutgoingMessage::new(topic, value.clone()).key(format!("k{}", i % 64));
            bus.send(msg)
        })
        .buffer_unordered(20_000)
        .fold(0usize, |acc, r| async move {
            r.expect("acknowledged");
            acc + 1
        })
        .await;
    assert_eq!(acked, n);
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let bootstrap = std::env::var("WFLO_TEST_KAFKA_BOOTSTRAP")
        .expect("WFLO_TEST_KAFKA_BOOTSTRAP: run `cargo xtask bench bus`");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bus = Bus::connect(
            BusConfig::builder(&bootstrap)
                .client_id("wflo-bus-bench")
                .linger(Duration::from_millis(5))
                .build()
                .expect("config"),
        )
        .await
        .expect("connect");
        let run = Uuid::now_v7().simple().to_string();
        let ours_topic = format!("bench.{run}.ours");
        let base_topic = format!("bench.{run}.baseline");
        let relay_topic = format!("bench.{run}.relay");
        let specs: Vec<TopicSpec> = [&ours_topic, &base_topic, &relay_topic]
            .iter()
            .map(|t| TopicSpec::new(t.as_str(), PARTITIONS))
            .collect();
        bus.ensure_topics(&specs).await.expect("topics");

        // Warm-up (connections, partition clients), then interleaved measured rounds (the
        // machine is shared: medians of several rounds, alternating which side goes first).
        publish(&bus, &ours_topic, 2_000).await;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                base.push(baseline(&bootstrap, &base_topic, N));
                ours.push(publish(&bus, &ours_topic, N).await);
            } else {
                ours.push(publish(&bus, &ours_topic, N).await);
                base.push(baseline(&bootstrap, &base_topic, N));
            }
            eprintln!(
                "round {round}: ours {:.0} msg/s, baseline {:.0} msg/s",
                ours[round], base[round]
            );
        }
        row(
            "bus publish 1KB acked (msg/s)",
            median(&mut ours),
            median(&mut base),
        );

        // `cargo bench -p wflo-bus --bench bus -- publish`: the producer figure only.
        if std::env::args().any(|a| a == "publish") {
            for s in &specs {
                let _ = bus.delete_topic(&s.name).await;
            }
            return;
        }
        // Relay: rows already in the outbox, published and marked.
        let db = TestDb::named(Backend::Postgres, "relay-bench").await;
        let body = String::from_utf8(payload(SIZE - 300)).expect("ascii");
        let mut tx = db.begin().await.expect("tx");
        for i in 0..RELAY_N {
            let e = EventEnvelope::new(
                "bench",
                EventPayload::Raw {
                    event_type: "bench.blob".into(),
                    payload: serde_json::json!({ "blob": body }),
                },
            );
            tx.outbox()
                .enqueue(NewOutboxEvent {
                    event_id: e.event_id,
                    topic: relay_topic.clone(),
                    key: Some(format!("k{}", i % 64)),
                    payload: e.to_value().expect("json"),
                    headers: Default::default(),
                })
                .await
                .expect("enqueue");
            if i % 5_000 == 4_999 {
                tx.commit().await.expect("commit");
                tx = db.begin().await.expect("tx");
            }
        }
        tx.commit().await.expect("commit");
        let relay = Relay::new(
            bus.clone(),
            db.db().clone(),
            RelayConfig::builder()
                .batch_size(2_000)
                .topics(vec![])
                .build()
                .expect("relay config"),
        );
        let start = Instant::now();
        let mut published = 0;
        while published < RELAY_N {
            published += relay.relay_once().await.expect("relay batch");
        }
        let relay_rate = RELAY_N as f64 / start.elapsed().as_secs_f64();
        assert_eq!(relay.lag().await.expect("lag"), 0);
        let base = baseline(&bootstrap, &base_topic, RELAY_N);
        row("bus outbox relay 1KB (msg/s)", relay_rate, base);
        for s in &specs {
            let _ = bus.delete_topic(&s.name).await;
        }
    });
}
