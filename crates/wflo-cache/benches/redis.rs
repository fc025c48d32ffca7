//! Lock cycles per second and cache-hit latency over loopback, each beside a same-run baseline:
//! a raw `GET` through the same client (criterion groups `FIGURE/ours` + `FIGURE/baseline`), and
//! `redis-benchmark` against the same server (rows in target/wflo-bench/rows.jsonl).
//!
//! Needs WFLO_TEST_REDIS_URL (run `cargo xtask bench wflo-cache`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use wflo_cache::{
    CacheValue, DistributedLock, LlmCache, LlmCacheConfig, LlmCacheKey, LockOptions, RedisClient,
    RedisConfig,
};

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    text: String,
}

impl CacheValue for Reply {
    const KIND: &'static str = "bench-reply";
    const SCHEMA_VERSION: u32 = 1;
}

struct Setup {
    rt: tokio::runtime::Runtime,
    client: RedisClient,
    locks: DistributedLock,
    cache: LlmCache,
    key: LlmCacheKey,
    url: url::Url,
}

fn setup() -> Setup {
    let raw = std::env::var("WFLO_TEST_REDIS_URL")
        .expect("WFLO_TEST_REDIS_URL is not set: run `cargo xtask bench wflo-cache`");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let n: u64 = rand::random();
    let config = RedisConfig::builder(&raw)
        .key_prefix(format!("wflo-bench:{n:016x}:"))
        .pool_size(1)
        .build()
        .unwrap();
    let client = rt.block_on(RedisClient::connect(&config)).unwrap();
    let locks = DistributedLock::redis(client.clone());
    let cache = LlmCache::redis(client.clone(), LlmCacheConfig::default());
    let key = LlmCacheKey::builder("bench", "gpt-4o-mini")
        .messages(serde_json::json!([{"role": "user", "content": "hello there"}]))
        .temperature(0.0)
        .max_tokens(256)
        .build()
        .unwrap();
    let value = Reply {
        text: "x".repeat(512),
    };
    rt.block_on(async {
        cache.set(&key, &value).await.unwrap();
        client
            .set(
                "raw",
                &serde_json::to_vec(&value).unwrap(),
                Some(Duration::from_secs(600)),
            )
            .await
            .unwrap();
    });
    Setup {
        rt,
        client,
        locks,
        cache,
        key,
        url: url::Url::parse(&raw).unwrap(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn row(figure: &str, ours: f64, baseline: f64, unit: &str, better: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/wflo-bench/rows.jsonl"
    );
    std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let line = serde_json::json!({"figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "better": better});
    writeln!(f, "{line}").unwrap();
    println!("{line}");
}

/// `redis-benchmark --csv` for one command, one client, no pipelining: (rps, p50 ms, p99 ms).
fn redis_benchmark(url: &url::Url, args: &[&str]) -> (f64, f64, f64) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            url.host_str().unwrap_or("127.0.0.1"),
            "-p",
            &url.port().unwrap_or(6379).to_string(),
            "-c",
            "1",
            "-n",
            "20000",
            "-P",
            "1",
            "--csv",
        ])
        .args(args)
        .output()
        .expect("redis-benchmark (Debian redis-tools) must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.contains(','))
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"));
    let f: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|x| x.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    (f[0], f[3], f[5])
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let opts = LockOptions::builder(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut g = c.benchmark_group("cache_hit_latency");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("ours", |b| {
        b.to_async(&s.rt)
            .iter(|| async { s.cache.get::<Reply>(&s.key).await.unwrap().unwrap() })
    });
    g.bench_function("baseline", |b| {
        b.to_async(&s.rt).iter(|| async {
            let raw = s.client.get("raw").await.unwrap().unwrap();
            serde_json::from_slice::<Reply>(&raw).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lock_cycle");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("ours", |b| {
        b.to_async(&s.rt).iter(|| async {
            let guard = s
                .locks
                .try_acquire("bench-lock", &opts)
                .await
                .unwrap()
                .unwrap();
            assert!(guard.release().await.unwrap());
        })
    });
    // Two raw round trips (SET NX PX + DEL) through the same client: the floor of any lock.
    g.bench_function("baseline", |b| {
        b.to_async(&s.rt).iter(|| async {
            assert!(
                s.client
                    .set_nx("bench-raw-lock", b"t", Some(Duration::from_secs(30)))
                    .await
                    .unwrap()
            );
            assert!(s.client.delete("bench-raw-lock").await.unwrap());
        })
    });
    g.finish();

    // Percentiles and external baselines.
    let samples = 5_000;
    let (mut ours, mut raw) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    s.rt.block_on(async {
        for _ in 0..samples {
            let t = Instant::now();
            s.cache.get::<Reply>(&s.key).await.unwrap().unwrap();
            ours.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            let b = s.client.get("raw").await.unwrap().unwrap();
            serde_json::from_slice::<Reply>(&b).unwrap();
            raw.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    ours.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    row(
        "cache hit p50 vs raw GET (same client)",
        percentile(&ours, 0.5),
        percentile(&raw, 0.5),
        "us",
        "lower",
    );
    row(
        "cache hit p99 vs raw GET (same client)",
        percentile(&ours, 0.99),
        percentile(&raw, 0.99),
        "us",
        "lower",
    );

    let (_, get_p50_ms, get_p99_ms) = redis_benchmark(&s.url, &["-t", "get"]);
    row(
        "cache hit p50 vs redis-benchmark GET p50",
        percentile(&ours, 0.5),
        get_p50_ms * 1000.0,
        "us",
        "lower",
    );
    row(
        "cache hit p99 vs redis-benchmark GET p99",
        percentile(&ours, 0.99),
        get_p99_ms * 1000.0,
        "us",
        "lower",
    );

    // Interleaved, so both see the same machine load: our cycle vs SET NX PX + DEL (same client).
    let cycles = 3_000;
    let (mut ours_t, mut raw_t) = (Duration::ZERO, Duration::ZERO);
    s.rt.block_on(async {
        for _ in 0..cycles {
            let t = Instant::now();
            let guard = s
                .locks
                .try_acquire("bench-lock", &opts)
                .await
                .unwrap()
                .unwrap();
            guard.release().await.unwrap();
            ours_t += t.elapsed();
            let t = Instant::now();
            s.client
                .set_nx("bench-raw-lock", b"t", Some(Duration::from_secs(30)))
                .await
                .unwrap();
            s.client.delete("bench-raw-lock").await.unwrap();
            raw_t += t.elapsed();
        }
    });
    let ours_cps = cycles as f64 / ours_t.as_secs_f64();
    row(
        "lock cycles/s vs raw SET NX PX + DEL (same client)",
        ours_cps,
        cycles as f64 / raw_t.as_secs_f64(),
        "cycles/s",
        "higher",
    );
    let (set_rps, _, _) = redis_benchmark(
        &s.url,
        &[
            "SET",
            "wflo-bench:rb-lock:__rand_int__",
            "t",
            "NX",
            "PX",
            "30000",
        ],
    );
    let (del_rps, _, _) = redis_benchmark(&s.url, &["DEL", "wflo-bench:rb-lock:__rand_int__"]);
    // A lock cycle is two round trips: SET NX PX then DEL, one client, no pipelining.
    let baseline_cps = 1.0 / (1.0 / set_rps + 1.0 / del_rps);
    row(
        "lock acquire+release cycles/s vs redis-benchmark SET NX PX + DEL",
        ours_cps,
        baseline_cps,
        "cycles/s",
        "higher",
    );
    s.rt.block_on(s.client.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);
