//! The server's costs, each beside what it wraps, measured in the same run on PostgreSQL:
//! * `GET /api/v1/executions/{id}` of a 50-step execution beside the facade call it wraps
//!   (`Wflo::execution_summary`): the HTTP, auth and JSON the API adds;
//! * start-run requests per second with 16 concurrent clients over HTTP, beside 16 tasks
//!   calling `Wflo::start_run` in process;
//! * Server-Sent Events: from an event's commit to the last of 1,000 subscribers receiving it
//!   (p50, p99), beside the same with one subscriber.
//!
//! Run with `cargo xtask bench server` (starts PostgreSQL, exports WFLO_TEST_DATABASE_URL).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{QUICK, harness};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wflo_core::db::{Backend, Executor, NewOutboxEvent};
use wflo_core::types::Role;
use wflo_core::{RunOptions, StartRun, WorkflowDef, WorkflowSource};

fn row(figure: &str, ours: f64, baseline: f64, unit: &str, better: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wflo-bench/rows.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let line = json!({"figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "better": better});
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    println!("{figure}: ours {ours:.3} {unit}, baseline {baseline:.3} {unit}");
}

fn fifty_steps() -> String {
    let mut y = String::from("name: fifty\nsteps:\n");
    for i in 0..50 {
        y.push_str(&format!("  - id: s{i}\n    kind: checkpoint\n"));
        if i > 0 {
            y.push_str(&format!("    depends_on: [s{}]\n", i - 1));
        }
    }
    y
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(harness(Backend::Postgres));
    let def = WorkflowDef::from_yaml(&fifty_steps()).unwrap();
    let out = rt
        .block_on(h.wflo.engine().run(&def, RunOptions::default()))
        .unwrap();
    let id = out.execution_id;
    let path = format!("/api/v1/executions/{id}");

    // 1. One execution over HTTP beside the facade call.
    let mut g = c.benchmark_group("server_get_execution_50_steps");
    g.sample_size(50).measurement_time(Duration::from_secs(8));
    g.bench_function("ours", |b| {
        b.to_async(&rt).iter(|| async {
            let r = h.get(Role::Viewer, &path).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap()
        })
    });
    g.bench_function("baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { h.wflo.execution_summary(id).await.unwrap() })
    });
    g.finish();

    // 2. Starting runs, 16 clients.
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 25;
    let http_rate = rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let req = h.post(Role::Operator, "/api/v1/executions", json!({"yaml": QUICK}));
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_CLIENT {
                    let r = req.try_clone().unwrap().send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 202);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
    });
    let facade_rate = rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let w = h.wflo.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_CLIENT {
                    w.start_run(StartRun::new(WorkflowSource::Yaml(QUICK.into()), "bench"))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (CLIENTS * PER_CLIENT) as f64 / started.elapsed().as_secs_f64()
    });
    row(
        "server start-run, 16 clients (runs/s)",
        http_rate,
        facade_rate,
        "req/s",
        "higher",
    );
    // Let the started runs finish before measuring events.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let busy = h
                .wflo
                .db()
                .executions()
                .list_by_status(wflo_core::db::ExecutionStatus::Running)
                .await
                .unwrap()
                .len()
                + h.wflo
                    .db()
                    .executions()
                    .list_by_status(wflo_core::db::ExecutionStatus::Pending)
                    .await
                    .unwrap()
                    .len();
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // 3. Events to 1,000 subscribers, beside 1.
    let (p50_many, p99_many) = rt.block_on(fan_out(&h, 1000, 30));
    let (p50_one, p99_one) = rt.block_on(fan_out(&h, 1, 30));
    row(
        "sse commit -> last of 1000 subscribers, p50 (ms)",
        p50_many,
        p50_one,
        "ms",
        "lower",
    );
    row(
        "sse commit -> last of 1000 subscribers, p99 (ms)",
        p99_many,
        p99_one,
        "ms",
        "lower",
    );
}

/// Commits `events` outbox events one by one and measures, for each, the time from its commit
/// to the moment the last of `subscribers` SSE clients received it.
async fn fan_out(h: &common::Harness, subscribers: usize, events: usize) -> (f64, f64) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let req = http
            .get(h.url("/api/v1/events"))
            .bearer_auth(&h.tokens[&Role::Viewer]);
        let tx = tx.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            ready.add_permits(1);
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(at) = buf.find("\"bench-mark-") {
                    let rest = &buf[at + 12..];
                    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                    if let Ok(k) = n.parse::<usize>() {
                        let _ = tx.send((k, Instant::now()));
                    }
                    buf.drain(..at + 12);
                }
            }
        }));
    }
    let _ = ready.acquire_many(subscribers as u32).await.unwrap();
    // The subscription is registered once the response started; give the server a beat.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::new();
    for k in 0..events {
        let ev = NewOutboxEvent {
            event_id: uuid::Uuid::now_v7(),
            topic: "wflo.metrics".into(),
            key: Some("bench".into()),
            payload: json!({"event_type": "bench", "mark": format!("bench-mark-{k}")}),
            headers: Default::default(),
        };
        h.wflo.db().outbox().enqueue(ev).await.unwrap();
        let committed = Instant::now();
        let mut got = 0;
        let mut last = committed;
        while got < subscribers {
            let (kk, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("every subscriber receives the event")
                .unwrap();
            if kk == k {
                got += 1;
                last = last.max(at);
            }
        }
        lat.push(last.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.abort();
    }
    let p50 = percentile(&mut lat.clone(), 0.5);
    let p99 = percentile(&mut lat, 0.99);
    (p50, p99)
}

criterion_group!(server, benches);
criterion_main!(server);
