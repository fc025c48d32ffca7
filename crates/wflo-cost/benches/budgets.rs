//! Budget reserve+settle pairs per second with 64 concurrent tasks against one budget, on
//! PostgreSQL and on SQLite (`cargo xtask bench wflo-cost`, needs WFLO_TEST_DATABASE_URL).
//!
//! Baseline, same run, same database: the same 64 tasks doing two raw single-statement sqlx
//! UPDATEs of the same budget row per pair (an unguarded `reserved + n`, then `reserved - n,
//! spent + n`): the floor cost of touching the row twice without the transaction, the guard,
//! the idempotency row or the ledger. Rows go to target/wflo-bench/rows.jsonl.

use rust_decimal::Decimal;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use wflo_cost::{
    CostConfig, CostTracker, ModelPrice, Period, PriceCatalog, ReserveRequest, Scope, TokenUsage,
};
use wflo_db::Backend;
use wflo_db::testing::TestDb;

const TASKS: usize = 64;
const PAIRS_PER_TASK: usize = 40;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn ours(t: &TestDb, tag: &str, max_batch: usize) -> f64 {
    let catalog = PriceCatalog::builder()
        .price("bench", ModelPrice::new(Decimal::ONE, Decimal::ONE))
        .build()
        .unwrap();
    let tracker = Arc::new(CostTracker::new(
        t.db().clone(),
        catalog,
        CostConfig::builder().max_batch(max_batch).build().unwrap(),
    ));
    let scope = Scope::Tenant(format!("bench-{tag}"));
    tracker
        .set_budget(
            &scope,
            Period::Total,
            chrono::Utc::now(),
            Decimal::from(1_000_000),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let tracker = tracker.clone();
            let scope = scope.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                for k in 0..PAIRS_PER_TASK {
                    let r = tracker
                        .reserve(&ReserveRequest {
                            request_id: format!("{tag}-{i}-{k}"),
                            scopes: vec![scope.clone()],
                            amount_usd: Decimal::new(2, 3),
                            execution_id: None,
                            labels: None,
                        })
                        .await
                        .unwrap();
                    tracker
                        .settle(&r, None, &TokenUsage::new("bench", 1000, 500))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    (TASKS * PAIRS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

async fn baseline(t: &TestDb, backend: Backend, tag: &str) -> f64 {
    let tracker = CostTracker::new(
        t.db().clone(),
        PriceCatalog::embedded().clone(),
        CostConfig::builder().build().unwrap(),
    );
    let b = tracker
        .set_budget(
            &Scope::Tenant(format!("raw-{tag}")),
            Period::Total,
            chrono::Utc::now(),
            Decimal::from(1_000_000),
        )
        .await
        .unwrap();
    let url = t.url();
    let start;
    match backend {
        Backend::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(20)
                .connect(&url)
                .await
                .unwrap();
            let id = b.id;
            start = Instant::now();
            let hs: Vec<_> = (0..TASKS)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        for _ in 0..PAIRS_PER_TASK {
                            sqlx::query("UPDATE budgets SET reserved_nano_usd = reserved_nano_usd + $1 WHERE id = $2")
                                .bind(2_000_000i64).bind(id).execute(&pool).await.unwrap();
                            sqlx::query("UPDATE budgets SET reserved_nano_usd = reserved_nano_usd - $1, spent_nano_usd = spent_nano_usd + $2 WHERE id = $3")
                                .bind(2_000_000i64).bind(1_500_000i64).bind(id).execute(&pool).await.unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        }
        _ => {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(8)
                .connect(&url)
                .await
                .unwrap();
            let id = b.id;
            start = Instant::now();
            let hs: Vec<_> = (0..TASKS)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        for _ in 0..PAIRS_PER_TASK {
                            // Busy errors are retried (the baseline gets no retry policy otherwise).
                            while sqlx::query("UPDATE budgets SET reserved_nano_usd = reserved_nano_usd + ?1 WHERE id = ?2")
                                .bind(2_000_000i64).bind(id).execute(&pool).await.is_err() {}
                            // Busy errors are retried (the baseline gets no retry policy otherwise).
                            while sqlx::query("UPDATE budgets SET reserved_nano_usd = reserved_nano_usd - ?1, spent_nano_usd = spent_nano_usd + ?2 WHERE id = ?3")
                                .bind(2_000_000i64).bind(1_500_000i64).bind(id).execute(&pool).await.is_err() {}
                        }
                    })
                })
                .collect();
            for h in hs {
                h.await.unwrap();
            }
        }
    }
    (TASKS * PAIRS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wflo-bench");
    std::fs::create_dir_all(&out).unwrap();
    let mut rows = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("rows.jsonl"))
        .unwrap();
    for (backend, name) in [(Backend::Postgres, "postgres"), (Backend::Sqlite, "sqlite")] {
        // Rounds interleave ours, ours without group commit (max_batch 1) and the baseline, so
        // machine noise hits all three alike; medians are reported.
        let (mut o, mut single, mut b) = (Vec::new(), Vec::new(), Vec::new());
        rt.block_on(async {
            let t = TestDb::named(backend, "bench").await;
            // Warm up the pool and statement caches.
            let _ = ours(&t, "warm", 128).await;
            for round in 0..ROUNDS {
                o.push(ours(&t, &format!("run{round}"), 128).await);
                single.push(ours(&t, &format!("single{round}"), 1).await);
                b.push(baseline(&t, backend, &format!("run{round}")).await);
            }
        });
        let (o, single, b) = (median(o), median(single), median(b));
        println!(
            "budget_reserve_settle_64_tasks_{name}: median of {ROUNDS} rounds: ours {o:.0} pairs/s, \
             ours without group commit {single:.0} pairs/s, baseline (raw sqlx updates) {b:.0} pairs/s, \
             ratio {:.2} (without group commit {:.2})",
            o / b,
            single / b
        );
        writeln!(
            rows,
            "{}",
            serde_json::json!({
                "figure": format!("wflo-cost budget reserve+settle pairs/s, 64 tasks, {name} (baseline: 2 raw sqlx UPDATEs per pair)"),
                "ours": (o * 10.0).round() / 10.0,
                "baseline": (b * 10.0).round() / 10.0,
                "unit": "pairs/s",
                "better": "higher"
            })
        )
        .unwrap();
    }
}
