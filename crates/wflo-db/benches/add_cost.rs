//! Atomic `add_cost` increments per second on PostgreSQL with 16 concurrent tasks, beside a raw
//! sqlx loop of the same statements through a pool of the same size, in the same run.
//!
//! Run with `cargo xtask bench db` (starts PostgreSQL, exports WFLO_TEST_DATABASE_URL).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal_macros::dec;
use serde_json::json;
use std::time::{Duration, Instant};
use wflo_db::testing::TestDb;
use wflo_db::{Backend, Executor, NewDefinition, NewExecution, NewStep, Tokens};

const TASKS: u64 = 16;

struct Fixture {
    db: TestDb,
    raw: sqlx::PgPool,
    execution: wflo_db::ExecutionId,
    step: wflo_db::StepId,
}

async fn fixture() -> Fixture {
    let db = TestDb::named(Backend::Postgres, "bench-add-cost").await;
    let def = db
        .definitions()
        .create(NewDefinition::new("bench", json!({})))
        .await
        .unwrap();
    let exec = db
        .executions()
        .create(NewExecution::new(def.id, json!({})))
        .await
        .unwrap();
    let step = db
        .steps()
        .create(NewStep {
            execution_id: exec.id,
            step_key: "s".into(),
            step_type: "llm".into(),
            inputs: None,
        })
        .await
        .unwrap();
    let raw = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&db.url())
        .await
        .unwrap();
    Fixture {
        db,
        raw,
        execution: exec.id,
        step: step.id,
    }
}

/// Runs `iters` operations spread over 16 tasks and returns the wall time.
async fn spread<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let op = op.clone();
            let n = iters / TASKS + u64::from(t < iters % TASKS);
            tokio::spawn(async move {
                for _ in 0..n {
                    op().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

const RAW_EXEC: &str = "UPDATE workflow_executions SET cost_nano_usd = cost_nano_usd + $1, \
     prompt_tokens = prompt_tokens + $2, completion_tokens = completion_tokens + $3, \
     updated_at = $4 WHERE id = $5";
const RAW_STEP: &str = "UPDATE step_executions SET cost_nano_usd = cost_nano_usd + $1, \
     prompt_tokens = prompt_tokens + $2, completion_tokens = completion_tokens + $3, \
     updated_at = $4 WHERE id = $5 AND execution_id = $6";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());

    let mut g = c.benchmark_group("db_add_cost_16_tasks");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let db = f.db.db().clone();
    let exec = f.execution;
    g.bench_function("ours", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let db = db.clone();
            spread(iters, move || {
                let db = db.clone();
                async move {
                    db.executions()
                        .add_cost(exec, None, dec!(0.000001), Tokens::new(10, 5))
                        .await
                        .unwrap()
                }
            })
        })
    });
    let raw = f.raw.clone();
    g.bench_function("baseline", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            spread(iters, move || {
                let raw = raw.clone();
                async move {
                    let res = sqlx::query(RAW_EXEC)
                        .bind(1_000i64)
                        .bind(10i64)
                        .bind(5i64)
                        .bind(chrono::Utc::now())
                        .bind(exec.as_uuid())
                        .execute(&raw)
                        .await
                        .unwrap();
                    assert_eq!(res.rows_affected(), 1);
                }
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("db_add_cost_with_step_16_tasks");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    let step = f.step;
    g.bench_function("ours", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let db = db.clone();
            spread(iters, move || {
                let db = db.clone();
                async move {
                    db.executions()
                        .add_cost(exec, Some(step), dec!(0.000001), Tokens::new(10, 5))
                        .await
                        .unwrap()
                }
            })
        })
    });
    g.bench_function("baseline", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            spread(iters, move || {
                let raw = raw.clone();
                async move {
                    let now = chrono::Utc::now();
                    let mut tx = raw.begin().await.unwrap();
                    sqlx::query(RAW_EXEC)
                        .bind(1_000i64)
                        .bind(10i64)
                        .bind(5i64)
                        .bind(now)
                        .bind(exec.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    sqlx::query(RAW_STEP)
                        .bind(1_000i64)
                        .bind(10i64)
                        .bind(5i64)
                        .bind(now)
                        .bind(step.as_uuid())
                        .bind(exec.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
    });
    g.finish();
    rt.block_on(f.raw.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
