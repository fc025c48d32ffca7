//! Per-step engine overhead: a no-op tool step, persisted with its events (step row, two status
//! transitions, two outbox rows), on SQLite and PostgreSQL, beside bare inserts of the same rows
//! through sqlx in the same run.
//!
//! Run with `cargo xtask bench e2e` (starts PostgreSQL, exports WFLO_TEST_DATABASE_URL).

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;
use wflo_core::db::Backend;
use wflo_core::{Config, FnTool, RunOptions, Wflo};
use wflo_db::testing::TestDb;

const INSERT_STEP: &str = "INSERT INTO step_executions (id, execution_id, step_key, step_type, status, attempt, inputs, outputs, cost_nano_usd, prompt_tokens, completion_tokens, created_at, updated_at, started_at, completed_at) VALUES ($1, $2, $3, 'tool', 'COMPLETED', 1, $4, $5, 0, 0, 0, $6, $6, $6, $6)";
const INSERT_EVENT: &str = "INSERT INTO outbox_events (event_id, topic, message_key, payload, headers, attempts, created_at) VALUES ($1, 'wflo.steps', $2, $3, $4, 0, $5)";

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: Backend, label: &str) {
    let t = rt.block_on(TestDb::named(backend, &format!("bench-steps-{label}")));
    let w = rt
        .block_on(Wflo::connect_with(
            Config::builder().database_url(t.url()).build().unwrap(),
            |b| b.tool("noop", FnTool::new(|_| async { Ok(json!(null)) })),
        ))
        .unwrap();
    // One execution holds every measured step.
    let exec_id = Uuid::now_v7();
    let mut g = c.benchmark_group(format!("engine_step_overhead_{label}"));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let mut run_no = 0u64;
    g.bench_function("ours", |b| {
        b.to_async(rt).iter_custom(|iters| {
            run_no += 1;
            let engine = w.engine().clone();
            let run = run_no;
            async move {
                let id = wflo_core::types::ExecutionId::new();
                let elapsed = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
                let e2 = elapsed.clone();
                engine
                    .run_fn(
                        "bench",
                        RunOptions {
                            execution_id: Some(id),
                            ..Default::default()
                        },
                        |ctx| async move {
                            let start = Instant::now();
                            for i in 0..iters {
                                ctx.tool(&format!("r{run}-s{i}"), "noop", json!({})).await?;
                            }
                            *e2.lock().unwrap() = start.elapsed();
                            Ok(json!(null))
                        },
                    )
                    .await
                    .unwrap();
                *elapsed.lock().unwrap()
            }
        })
    });
    // Bare inserts of the same rows: the step row and its two events, in one transaction.
    let url = t.url();
    let payload =
        json!({"event_type": "step.status", "payload": {"step_id": "s", "status": "COMPLETED"}});
    let headers = json!({"wflo-event-type": "step.status"});
    match backend {
        Backend::Postgres => {
            let pool = rt.block_on(sqlx::PgPool::connect(&url)).unwrap();
            rt.block_on(seed_execution_pg(&pool, exec_id));
            g.bench_function("baseline", |b| {
                b.to_async(rt).iter(|| async {
                    let now = chrono::Utc::now();
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query(INSERT_STEP)
                        .bind(Uuid::now_v7())
                        .bind(exec_id)
                        .bind(Uuid::now_v7().to_string())
                        .bind(json!({"tool": "noop"}))
                        .bind(json!(null))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    for _ in 0..2 {
                        sqlx::query(INSERT_EVENT)
                            .bind(Uuid::now_v7())
                            .bind(exec_id.to_string())
                            .bind(&payload)
                            .bind(&headers)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                    tx.commit().await.unwrap();
                })
            });
        }
        _ => {
            let pool = rt.block_on(sqlx::SqlitePool::connect(&url)).unwrap();
            rt.block_on(seed_execution_sqlite(&pool, exec_id));
            g.bench_function("baseline", |b| {
                b.to_async(rt).iter(|| async {
                    let now = chrono::Utc::now();
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query(INSERT_STEP)
                        .bind(Uuid::now_v7())
                        .bind(exec_id)
                        .bind(Uuid::now_v7().to_string())
                        .bind(json!({"tool": "noop"}).to_string())
                        .bind(json!(null).to_string())
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    for _ in 0..2 {
                        sqlx::query(INSERT_EVENT)
                            .bind(Uuid::now_v7())
                            .bind(exec_id.to_string())
                            .bind(payload.to_string())
                            .bind(headers.to_string())
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                    tx.commit().await.unwrap();
                })
            });
        }
    }
    g.finish();
}

async fn seed_execution_pg(pool: &sqlx::PgPool, id: Uuid) {
    let def = Uuid::now_v7();
    sqlx::query("INSERT INTO workflow_definitions (id, name, version, definition) VALUES ($1, 'bare', 1, '{}')")
        .bind(def)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO workflow_executions (id, workflow_id, inputs) VALUES ($1, $2, '{}')")
        .bind(id)
        .bind(def)
        .execute(pool)
        .await
        .unwrap();
}

async fn seed_execution_sqlite(pool: &sqlx::SqlitePool, id: Uuid) {
    let def = Uuid::now_v7();
    sqlx::query("INSERT INTO workflow_definitions (id, name, version, definition) VALUES ($1, 'bare', 1, '{}')")
        .bind(def)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO workflow_executions (id, workflow_id, inputs) VALUES ($1, $2, '{}')")
        .bind(id)
        .bind(def)
        .execute(pool)
        .await
        .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_backend(c, &rt, Backend::Postgres, "postgres");
    bench_backend(c, &rt, Backend::Sqlite, "sqlite");
}

criterion_group!(benches, bench);
criterion_main!(benches);
