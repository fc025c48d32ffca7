#![cfg(feature = "integration")]
//! The warm pool, shutdown, and the orphan sweep (including a caller that is SIGKILLed) against
//! the real Docker engine. Run with `cargo xtask itest wflo-sandbox`.

mod common;

use common::{config, finish, py, runtime, unique_scope};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;
use wflo_sandbox::{Error, ExecRequest, SandboxConfig, SandboxRuntime};

const WARM_WITHIN: Duration = Duration::from_secs(30);

async fn pooled_ids(rt: &SandboxRuntime) -> HashSet<Uuid> {
    rt.list_managed()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.pooled && c.running)
        .filter_map(|c| c.sandbox_id)
        .collect()
}

#[tokio::test]
async fn warm_containers_serve_one_execution_each_and_the_pool_refills() {
    let rt = runtime(config("warm").pool_size(2)).await;
    assert!(rt.wait_warm(2, WARM_WITHIN).await, "the pool never filled");
    let before = pooled_ids(&rt).await;
    assert_eq!(before.len(), 2);

    let first = py(
        &rt,
        "import os\nopen('/tmp/state', 'w').write('dirty')\nopen('/workspace/state', 'w').write('dirty')\nprint('pid', os.getpid() > 0)",
    )
    .await;
    assert!(first.warm, "served by the pool");
    assert_eq!(first.stdout, "pid True\n", "stderr: {}", first.stderr);
    assert!(before.contains(&first.sandbox_id));

    let second = py(
        &rt,
        "import os\nprint(os.path.exists('/tmp/state'), os.path.exists('/workspace/state'))",
    )
    .await;
    assert!(second.warm);
    assert_ne!(
        first.sandbox_id, second.sandbox_id,
        "a container serves once"
    );
    assert_eq!(second.stdout, "False False\n", "no state carries over");

    // Used containers are gone; the pool refills with fresh ones.
    assert!(
        rt.wait_warm(2, WARM_WITHIN).await,
        "the pool never refilled"
    );
    rt.flush().await;
    let after = pooled_ids(&rt).await;
    assert!(!after.contains(&first.sandbox_id) && !after.contains(&second.sandbox_id));
    let all: HashSet<Uuid> = rt
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.sandbox_id)
        .collect();
    assert!(!all.contains(&first.sandbox_id) && !all.contains(&second.sandbox_id));
    finish(rt).await;
}

#[tokio::test]
async fn a_warm_container_honours_stdin_env_timeout_and_oom() {
    let rt = runtime(config("warm-limits").pool_size(1)).await;
    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let r = rt
        .execute(
            ExecRequest::builder("import os, sys\nprint(sys.stdin.read(), os.environ['K'])")
                .stdin("in")
                .env("K", "v")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(r.warm);
    assert_eq!(r.stdout, "in v\n");

    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let started = Instant::now();
    let r = rt
        .execute(
            ExecRequest::builder("import time; time.sleep(60)")
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(r.warm && r.timed_out && r.exit_code == 137);
    assert!(started.elapsed() < Duration::from_millis(2500));

    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let r = py(&rt, "b = bytearray(1 << 30)").await;
    assert!(r.warm && r.oom_killed && r.exit_code == 137, "{r:?}");
    finish(rt).await;
}

#[tokio::test]
async fn pools_are_keyed_by_limit_profile() {
    let rt = runtime(config("profiles").pool_size(1)).await;
    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let small = || {
        ExecRequest::builder("print('small')")
            .memory_bytes(128 * 1024 * 1024)
            .build()
            .unwrap()
    };
    // No pool for these limits yet: a cold start, which opens one.
    let r = rt.execute(small()).await.unwrap();
    assert!(!r.warm);
    let deadline = Instant::now() + WARM_WITHIN;
    while rt.warm_count() < 2 {
        assert!(Instant::now() < deadline, "the second pool never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = rt.execute(small()).await.unwrap();
    assert!(r.warm, "now served by its own pool");
    assert_eq!(r.stdout, "small\n");
    // The default pool is still there, untouched.
    assert!(rt.wait_warm(1, Duration::ZERO).await);
    finish(rt).await;
}

#[tokio::test]
async fn an_empty_pool_falls_back_to_a_cold_start() {
    let rt = runtime(config("fallback").pool_size(1)).await;
    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let (a, b) = tokio::join!(py(&rt, "print('a')"), py(&rt, "print('b')"));
    assert_eq!((a.stdout.as_str(), b.stdout.as_str()), ("a\n", "b\n"));
    let mut warm = [a.warm, b.warm];
    warm.sort();
    assert_eq!(warm, [false, true], "one warm, one cold");
    finish(rt).await;
}

#[tokio::test]
async fn shutdown_removes_pooled_containers_and_refuses_new_work() {
    let rt = runtime(config("shutdown").pool_size(3)).await;
    assert!(rt.wait_warm(3, WARM_WITHIN).await);
    assert_eq!(pooled_ids(&rt).await.len(), 3);
    rt.shutdown().await;
    assert!(rt.list_managed().await.unwrap().is_empty());
    let err = rt
        .execute(ExecRequest::builder("print(1)").build().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ShutDown), "{err}");
}

#[tokio::test]
async fn idle_warm_containers_are_removed_after_the_idle_timeout() {
    let rt = runtime(
        config("idle")
            .pool_size(1)
            .pool_idle_timeout(Duration::from_secs(1)),
    )
    .await;
    assert!(rt.wait_warm(1, WARM_WITHIN).await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.list_managed().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "an idle pool kept its containers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rt.warm_count(), 0);
    // Using it again works (cold) and wakes the pool up.
    let r = py(&rt, "print(1)").await;
    assert_eq!(r.stdout, "1\n");
    assert!(
        rt.wait_warm(1, WARM_WITHIN).await,
        "the pool did not refill after use"
    );
    finish(rt).await;
}

#[tokio::test]
async fn the_sweep_spares_young_and_owned_containers() {
    let scope = unique_scope("sweep");
    let a = runtime(config("x").scope(scope.clone()).pool_size(1)).await;
    assert!(a.wait_warm(1, WARM_WITHIN).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Its own pooled container is not an orphan, whatever its age.
    assert_eq!(a.sweep_orphans(Duration::ZERO).await.unwrap(), 0);
    // Another runtime of the scope spares containers younger than the threshold.
    let b = runtime(
        config("x")
            .scope(scope.clone())
            .orphan_age(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(b.sweep_orphans(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(pooled_ids(&a).await.len(), 1);
    b.shutdown().await;
    a.shutdown().await;
    assert!(a.list_managed().await.unwrap().is_empty());
}

const CRASH_SCOPE_VAR: &str = "WFLO_TEST_SANDBOX_CRASH_SCOPE";

/// Not a test of its own: the child process `a_container_whose_caller_was_killed_is_swept`
/// starts and SIGKILLs mid-execution.
#[tokio::test]
#[ignore = "run by a_container_whose_caller_was_killed_is_swept"]
async fn crash_child_helper() {
    let scope = std::env::var(CRASH_SCOPE_VAR)
        .expect("only a_container_whose_caller_was_killed_is_swept runs this helper");
    let rt = runtime(config("child").scope(scope)).await;
    rt.execute(
        ExecRequest::builder("import time; time.sleep(600)")
            .timeout(Duration::from_secs(110))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    panic!("the parent should have killed this process");
}

#[tokio::test]
async fn a_container_whose_caller_was_killed_is_swept() {
    let scope = unique_scope("crash");
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_SCOPE_VAR, &scope)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let observer = runtime(
        SandboxConfig::builder()
            .image(common::image())
            .scope(scope.clone())
            .pool_size(0)
            .sweep_on_start(false),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let orphan = loop {
        if let Some(c) = observer
            .list_managed()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.running)
        {
            break c;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited before starting its container"
        );
        assert!(
            Instant::now() < deadline,
            "the child never started a container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.start_kill().unwrap(); // SIGKILL: no destructor, no drop guard runs
    child.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let left = observer.list_managed().await.unwrap();
    assert!(
        left.iter().any(|c| c.id == orphan.id),
        "the killed caller's container is left behind (an orphan)"
    );

    // A runtime starting in that scope sweeps it.
    let fresh = runtime(
        SandboxConfig::builder()
            .image(common::image())
            .scope(scope)
            .pool_size(0)
            .orphan_age(Duration::from_secs(1)),
    )
    .await;
    assert!(
        fresh.list_managed().await.unwrap().is_empty(),
        "the start-up sweep removed the orphan"
    );
    finish(fresh).await;
    observer.shutdown().await;
}
