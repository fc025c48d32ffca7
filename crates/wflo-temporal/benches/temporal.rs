//! `cargo xtask bench temporal`: on the local Temporal dev server, end-to-end p50 latency (start
//! to result, one at a time) and workflows completed per second with 16 in flight at once, of
//! * a 3-activity no-op workflow (`NoopWorkflow`: the SDK's own overhead), and
//! * a 3-step `WfloWorkflow` of no-op tool steps (the real thing: save-execution, three step
//!   activities through wflo-runtime with their rows and events in PostgreSQL, finish),
//!
//! beside the 3-activity workflow written with the Temporal Python SDK
//! (`benches/temporal_py_baseline.py`, worker in its process, unsandboxed runner), run against
//! the same server in the same run. Rows go to target/wflo-bench/rows.jsonl.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wflo_db::Backend;
use wflo_db::testing::TestDb;
use wflo_runtime::{Engine, FnTool, WorkflowDef};
use wflo_temporal::{TemporalClient, TemporalConfig, TemporalWorker, wflo_workflow_id};

const LATENCY_RUNS: usize = 25;
const TOTAL_RUNS: usize = 96;
const CONCURRENCY: usize = 16;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What one measured run is.
#[derive(Clone)]
enum Kind {
    /// `NoopWorkflow` with 3 activities.
    Noop,
    /// `WfloWorkflow` of this definition.
    Wflo(Arc<WorkflowDef>),
}

async fn one(c: &TemporalClient, queue: &str, kind: &Kind) -> f64 {
    let t0 = Instant::now();
    match kind {
        Kind::Noop => {
            let id = format!("{queue}-{}", uuid::Uuid::now_v7().simple());
            c.start_noop(&id, 3).await.expect("start");
            assert_eq!(c.noop_result(&id).await.expect("result"), 3);
        }
        Kind::Wflo(def) => {
            let execution = wflo_types::ExecutionId::new();
            c.start_wflo(execution, def, serde_json::Map::new(), None)
                .await
                .expect("start");
            let out = c
                .wflo_result(&wflo_workflow_id(execution))
                .await
                .expect("result");
            assert_eq!(out.status, "COMPLETED");
        }
    }
    t0.elapsed().as_secs_f64() * 1000.0
}

const NOOP_STEPS: &str = r#"
name: bench-noop-steps
steps:
  - {id: one, kind: tool, tool: noop}
  - {id: two, kind: tool, tool: noop, depends_on: [one]}
  - {id: three, kind: tool, tool: noop, depends_on: [two]}
"#;

fn row(figure: &str, ours: f64, baseline: f64, unit: &str, better: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wflo-bench");
    std::fs::create_dir_all(dir).expect("create target/wflo-bench");
    let line = serde_json::json!({
        "figure": figure, "ours": ours, "baseline": baseline, "unit": unit, "better": better,
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/rows.jsonl"))
        .expect("open rows.jsonl");
    writeln!(f, "{line}").expect("write rows.jsonl");
    println!("{line}");
}

/// One Rust phase: latency samples (one at a time) and the wall time of `TOTAL_RUNS` runs with
/// `CONCURRENCY` in flight.
async fn rust_phase(c: &TemporalClient, queue: &str, kind: &Kind) -> (Vec<f64>, f64) {
    let mut lat = Vec::with_capacity(LATENCY_RUNS);
    for _ in 0..LATENCY_RUNS {
        lat.push(one(c, queue, kind).await);
    }
    let remaining = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(TOTAL_RUNS));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let c = c.clone();
        let q = queue.to_string();
        let remaining = remaining.clone();
        let kind = kind.clone();
        tasks.push(tokio::spawn(async move {
            while remaining
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                one(&c, &q, &kind).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("runner");
    }
    (lat, t0.elapsed().as_secs_f64())
}

/// One Python phase: the same measurements from the Python SDK in a process of its own.
///
/// The SDK's interpreter occasionally crashes while shutting down ("PyGILState_Release …
/// finalizing"), after it printed its result: a complete result line is used (with a warning);
/// a run without one is repeated once.
async fn python_phase(address: &str) -> (Vec<f64>, f64) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/temporal_py_baseline.py"
    );
    let mut attempt = 1;
    loop {
        let out = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::process::Command::new("python3")
                .arg(script)
                .arg(address)
                .arg(format!("bench-py-{}", uuid::Uuid::now_v7().simple()))
                .arg(LATENCY_RUNS.to_string())
                .arg(TOTAL_RUNS.to_string())
                .arg(CONCURRENCY.to_string())
                .output(),
        )
        .await
        .expect("the python baseline finishes within 5 minutes")
        .expect("run python3 (the baseline needs `pip install temporalio`)");
        let result = out
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .and_then(|v| {
                let lat: Vec<f64> = v["latencies_ms"]
                    .as_array()?
                    .iter()
                    .map(|x| x.as_f64())
                    .collect::<Option<_>>()?;
                Some((lat, v["elapsed_s"].as_f64()?))
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        match result {
            Some(r) => {
                if !out.status.success() {
                    eprintln!(
                        "python baseline exited with {} after printing its result (used): {}",
                        out.status,
                        stderr.lines().last().unwrap_or_default()
                    );
                }
                return r;
            }
            None if attempt < 2 => {
                eprintln!(
                    "python baseline gave no result ({}); running it again",
                    out.status
                );
                attempt += 1;
            }
            None => panic!(
                "python baseline failed twice (needs `pip install temporalio`): {} {stderr}",
                out.status
            ),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let address = std::env::var("WFLO_TEST_TEMPORAL_ADDRESS").expect(
        "WFLO_TEST_TEMPORAL_ADDRESS is not set; run `cargo xtask bench temporal` \
         (it starts the temporal dev server and exports the variable)",
    );
    let queue = format!("bench-rs-{}", uuid::Uuid::now_v7().simple());
    let config = TemporalConfig::builder()
        .address(address.clone())
        .task_queue(queue.clone())
        .build()
        .expect("config");
    let t = TestDb::named(Backend::Postgres, "bench-temporal").await;
    let engine = Engine::builder(t.db().clone())
        .tool(
            "noop",
            FnTool::new(|_| async { Ok(serde_json::Value::Null) }),
        )
        .build()
        .expect("engine");
    let worker = TemporalWorker::builder(config.clone())
        .engine(engine)
        .spawn()
        .await
        .expect("worker (is the temporal dev server up?)");
    let c = TemporalClient::connect(config).await.expect("client");
    let wflo = Kind::Wflo(Arc::new(
        WorkflowDef::from_yaml(NOOP_STEPS).expect("definition"),
    ));
    for kind in [&Kind::Noop, &wflo] {
        for _ in 0..5 {
            one(&c, &queue, kind).await;
        }
    }

    // Rust, Python, Python, Rust: load on the shared machine changes over time, so neither
    // side gets all the quiet (or all the busy) moments.
    let (mut ours_lat, mut ours_s) = (Vec::new(), 0.0);
    let (mut wflo_lat, mut wflo_s) = (Vec::new(), 0.0);
    let (mut base_lat, mut base_s) = (Vec::new(), 0.0);
    for rust_first in [true, false] {
        for rust in [rust_first, !rust_first] {
            if rust {
                let (l, s) = rust_phase(&c, &queue, &Kind::Noop).await;
                ours_lat.extend(l);
                ours_s += s;
                let (l, s) = rust_phase(&c, &queue, &wflo).await;
                wflo_lat.extend(l);
                wflo_s += s;
            } else {
                let (l, s) = python_phase(&address).await;
                base_lat.extend(l);
                base_s += s;
            }
        }
    }
    worker.shutdown().await.expect("worker shutdown");

    row(
        "temporal: 3-activity workflow p50 latency (vs python sdk)",
        p50(ours_lat),
        p50(base_lat.clone()),
        "ms",
        "lower",
    );
    row(
        "temporal: workflows/s, 16 in flight (vs python sdk)",
        (2 * TOTAL_RUNS) as f64 / ours_s,
        (2 * TOTAL_RUNS) as f64 / base_s,
        "workflows/s",
        "higher",
    );
    let base_p50 = p50(base_lat);
    row(
        "temporal: 3-step WfloWorkflow p50 latency (vs python sdk 3-activity workflow)",
        p50(wflo_lat),
        base_p50,
        "ms",
        "lower",
    );
    row(
        "temporal: WfloWorkflow/s, 16 in flight (vs python sdk 3-activity workflow)",
        (2 * TOTAL_RUNS) as f64 / wflo_s,
        (2 * TOTAL_RUNS) as f64 / base_s,
        "workflows/s",
        "higher",
    );
}
