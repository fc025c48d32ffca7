//! `cargo xtask bench sandbox`: end-to-end `print(1)` latency through the warm pool, through
//! the cold path (create, attach, start, run, wait, inspect, remove) and with `docker run --rm`
//! from the CLI (same image and limits), as p50/p95; and executions per second with 2
//! concurrent callers, pool against no pool.
//!
//! Latency samples are taken one at a time on a quiet engine (before each: background removals
//! finished, and for the warm path the pool full), the same way for both paths; the
//! throughput figure shows the loaded case, where refills and removals compete with the runs. Rows go to `target/wflo-bench/rows.jsonl` (the
//! xtask table); a summary is printed.

use anyhow::{Context, Result, ensure};
use std::io::Write;
use std::time::{Duration, Instant};
use wflo_sandbox::{ExecRequest, SandboxConfig, SandboxRuntime};

const SAMPLES: usize = 30;
const POOL: usize = 2;
const CLI_SAMPLES: usize = 15;
const THROUGHPUT_FOR: Duration = Duration::from_secs(6);

fn image() -> String {
    std::env::var("WFLO_TEST_SANDBOX_IMAGE").expect(
        "WFLO_TEST_SANDBOX_IMAGE is not set; run `cargo xtask bench sandbox` (it builds the image)",
    )
}

fn print1() -> ExecRequest {
    ExecRequest::builder("print(1)").build().expect("valid")
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn runtime(pool: usize, scope: &str) -> Result<SandboxRuntime> {
    Ok(SandboxRuntime::new(
        SandboxConfig::builder()
            .image(image())
            .scope(format!("bench-{scope}-{}", uuid::Uuid::now_v7().simple()))
            .pool_size(pool)
            .build()?,
    )
    .await?)
}

async fn warm_latencies(rt: &SandboxRuntime) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES + 2 {
        // One execution on a quiet engine: the pool full, earlier removals done.
        ensure!(
            rt.wait_warm(POOL, Duration::from_secs(30)).await,
            "the pool never filled"
        );
        rt.flush().await;
        let t = Instant::now();
        let r = rt.execute(print1()).await?;
        let took = ms(t.elapsed());
        ensure!(r.stdout == "1\n" && r.warm, "unexpected result {r:?}");
        out.push(took);
    }
    Ok(out.split_off(2))
}

async fn cold_latencies(rt: &SandboxRuntime) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES + 2 {
        rt.flush().await;
        let t = Instant::now();
        let r = rt.execute(print1()).await?;
        let took = ms(t.elapsed());
        ensure!(r.stdout == "1\n" && !r.warm, "unexpected result {r:?}");
        out.push(took);
    }
    Ok(out.split_off(2))
}

fn cli_latencies() -> Result<Vec<f64>> {
    let img = image();
    let mut out = Vec::with_capacity(CLI_SAMPLES);
    for _ in 0..CLI_SAMPLES + 1 {
        let t = Instant::now();
        let o = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                "1000:1000",
                "--read-only",
                "--tmpfs",
                "/tmp:size=64m",
                "--tmpfs",
                "/workspace:exec,size=64m,uid=1000,gid=1000",
                "--memory",
                "256m",
                "--memory-swap",
                "256m",
                "--cpus",
                "1",
                "--pids-limit",
                "64",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--init",
                &img,
                "python3",
                "-c",
                "print(1)",
            ])
            .output()
            .context("run the docker CLI")?;
        let took = ms(t.elapsed());
        ensure!(
            o.status.success() && o.stdout == b"1\n",
            "docker run failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out.push(took);
    }
    Ok(out.split_off(1))
}

async fn throughput(rt: &SandboxRuntime) -> Result<(f64, usize)> {
    let start = Instant::now();
    let caller = |rt: SandboxRuntime| async move {
        let mut n = 0usize;
        let mut warm = 0usize;
        while start.elapsed() < THROUGHPUT_FOR {
            let r = rt.execute(print1()).await?;
            ensure!(r.stdout == "1\n", "unexpected result {r:?}");
            n += 1;
            warm += usize::from(r.warm);
        }
        anyhow::Ok((n, warm))
    };
    let (a, b) = tokio::join!(caller(rt.clone()), caller(rt.clone()));
    let (a, b) = (a?, b?);
    Ok((
        (a.0 + b.0) as f64 / start.elapsed().as_secs_f64(),
        a.1 + b.1,
    ))
}

fn row(
    out: &mut std::fs::File,
    figure: &str,
    ours: f64,
    baseline: f64,
    unit: &str,
    better: &str,
) -> Result<()> {
    let line = serde_json::json!({
        "figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "better": better,
    });
    writeln!(out, "{line}")?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // `cargo bench` passes --bench (and maybe a filter); nothing to parse.
    let pooled = runtime(POOL, "warm").await?;
    let cold = runtime(0, "cold").await?;

    let mut warm = warm_latencies(&pooled).await?;
    let mut coldv = cold_latencies(&cold).await?;
    let mut cli = cli_latencies()?;
    let (w50, w95) = (percentile(&mut warm, 0.5), percentile(&mut warm, 0.95));
    let (c50, c95) = (percentile(&mut coldv, 0.5), percentile(&mut coldv, 0.95));
    let (d50, d95) = (percentile(&mut cli, 0.5), percentile(&mut cli, 0.95));

    let (tp_pool, warm_served) = throughput(&pooled).await?;
    let (tp_cold, _) = throughput(&cold).await?;
    pooled.shutdown().await;
    cold.shutdown().await;

    println!("sandbox print(1), end to end ({SAMPLES} samples; CLI {CLI_SAMPLES}):");
    println!("  warm pool       p50 {w50:7.1} ms  p95 {w95:7.1} ms");
    println!("  cold path       p50 {c50:7.1} ms  p95 {c95:7.1} ms");
    println!("  docker run --rm p50 {d50:7.1} ms  p95 {d95:7.1} ms");
    println!("  warm p50 / cold p50 = {:.2} (target <= 0.25)", w50 / c50);
    println!(
        "  2 concurrent callers: pool {tp_pool:.1}/s ({warm_served} served warm), no pool {tp_cold:.1}/s"
    );

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wflo-bench");
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/rows.jsonl"))?;
    let lower = "lower";
    row(
        &mut f,
        "sandbox print(1) p50: warm pool vs cold path",
        w50,
        c50,
        "ms",
        lower,
    )?;
    row(
        &mut f,
        "sandbox print(1) p95: warm pool vs cold path",
        w95,
        c95,
        "ms",
        lower,
    )?;
    row(
        &mut f,
        "sandbox print(1) p50: warm pool vs docker run --rm",
        w50,
        d50,
        "ms",
        lower,
    )?;
    row(
        &mut f,
        "sandbox print(1) p95: warm pool vs docker run --rm",
        w95,
        d95,
        "ms",
        lower,
    )?;
    row(
        &mut f,
        "sandbox print(1) p50: cold path vs docker run --rm",
        c50,
        d50,
        "ms",
        lower,
    )?;
    row(
        &mut f,
        "sandbox exec/s, 2 callers: pool vs no pool",
        tp_pool,
        tp_cold,
        "/s",
        "higher",
    )?;
    Ok(())
}
