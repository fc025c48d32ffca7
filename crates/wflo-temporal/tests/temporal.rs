#![cfg(feature = "integration")]
//! The Temporal suite's probes: the dev server from `cargo xtask services up temporal`, the
//! probe workflows (`SimpleWorkflow`, the testing `ProbeWorkflow`) and the worker's lifecycle.
//! Each test has a task queue of its own and runs its worker inside the test process, so tests
//! run in parallel. Wflo's own work (definitions, approvals, code runs) is in `wflo.rs`.

mod common;

use common::{config, unique};
use std::time::{Duration, Instant};
use wflo_temporal::testing::{ProbeStep, Probes};
use wflo_temporal::{
    CodeExecutionRequest, Error, RunStatus, TemporalClient, TemporalConfig, TemporalWorker,
    WorkerHandle,
};

async fn client(config: &TemporalConfig) -> TemporalClient {
    TemporalClient::connect(config.clone())
        .await
        .expect("the temporal dev server is needed; run `cargo xtask itest wflo-temporal`")
}

async fn worker(config: &TemporalConfig, probes: &Probes) -> WorkerHandle {
    TemporalWorker::builder(config.clone())
        .probes(probes.clone())
        .spawn()
        .await
        .expect("worker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_workflow_greets_several_names_and_is_listed() {
    let cfg = config("simple");
    let w = worker(&cfg, &Probes::new()).await;
    let c = client(&cfg).await;
    let names = ["World", "Wflo", "Zoë 世界", "O'Brien \"quoted\""];
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let id = format!("{}-{i}", cfg.task_queue());
        let started = c.start_simple(&id, name).await.unwrap();
        assert_eq!(started.workflow_id, id);
        assert!(started.run_id.is_some());
        ids.push((id, *name));
    }
    for (id, name) in &ids {
        assert_eq!(
            c.simple_result(id).await.unwrap(),
            format!("Hello, {name}! Workflow executed successfully.")
        );
        let run = c.describe(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.workflow_type, "SimpleWorkflow");
        assert!(run.close_time.is_some());
    }
    // Visibility is eventually consistent: allow it a few seconds.
    let query = format!("TaskQueue = '{}'", cfg.task_queue());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = c.list(&query, 100).await.unwrap();
        let done = runs
            .iter()
            .filter(|r| r.status == RunStatus::Completed && r.workflow_type == "SimpleWorkflow")
            .count();
        if done == names.len() {
            assert!(
                runs.iter()
                    .all(|r| ids.iter().any(|(id, _)| *id == r.workflow_id))
            );
            break;
        }
        assert!(Instant::now() < deadline, "list shows {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_workflow_runs_its_activities_in_sequence() {
    let cfg = config("noop");
    let w = worker(&cfg, &Probes::new()).await;
    let c = client(&cfg).await;
    let id = unique("noop");
    c.start_noop(&id, 3).await.unwrap();
    assert_eq!(c.noop_result(&id).await.unwrap(), 3);
    assert_eq!(c.describe(&id).await.unwrap().workflow_type, "NoopWorkflow");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_code_request_is_refused_before_a_workflow_starts() {
    let cfg = config("code-bad");
    let c = client(&cfg).await;
    let id = unique("code-bad");
    let mut req = CodeExecutionRequest::python("print(1)");
    req.language = "cobol".into();
    let e = c.start_code_execution(&id, req).await.unwrap_err();
    assert!(e.to_string().contains("unknown language"), "{e}");
    assert!(matches!(e, Error::Sandbox(_)), "{e}");
    for bad in [
        CodeExecutionRequest::python("  "),
        CodeExecutionRequest::python("print(1)").timeout(Duration::ZERO),
    ] {
        let e = c.start_code_execution(&id, bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
    }
    assert!(
        matches!(c.describe(&id).await, Err(Error::NotFound { .. })),
        "nothing may have started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_runs_on_a_worker_without_an_engine_fail_at_once_saying_so() {
    let cfg = config("no-engine");
    let w = worker(&cfg, &Probes::new()).await;
    let c = client(&cfg).await;
    let id = unique("no-engine");
    let t0 = Instant::now();
    c.start_code_execution(&id, CodeExecutionRequest::python("print(1)"))
        .await
        .unwrap();
    let e = c.code_execution_result(&id).await.unwrap_err();
    match &e {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("no wflo engine"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_failing_twice_succeeds_on_the_third_attempt() {
    let cfg = config("retry");
    let probes = Probes::new();
    let w = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("retry");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Flaky {
                name: "flaky".into(),
                failures: 2,
            },
            ProbeStep::Count("after".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.probe_result(&id).await.unwrap(), ["flaky", "after"]);
    assert_eq!(probes.attempts(&id, "flaky"), 3);
    assert_eq!(probes.attempts(&id, "after"), 1);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_policy_maximum_and_fail_the_workflow() {
    let cfg = config("retry-max");
    let probes = Probes::new();
    let w = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("retry-max");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Flaky {
                name: "always".into(),
                failures: 100,
            },
            ProbeStep::Count("never".into()),
        ],
    )
    .await
    .unwrap();
    let e = c.probe_result(&id).await.unwrap_err();
    match &e {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("transient failure 4 of 100"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    assert_eq!(
        probes.attempts(&id, "always"),
        4,
        "the policy allows 4 attempts"
    );
    assert_eq!(probes.attempts(&id, "never"), 0);
    assert_eq!(c.describe(&id).await.unwrap().status, RunStatus::Failed);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_error_fails_the_workflow_at_once() {
    let cfg = config("nonretry");
    let probes = Probes::new();
    let w = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("nonretry");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Fail("boom".into()),
            ProbeStep::Count("never".into()),
        ],
    )
    .await
    .unwrap();
    let e = c.probe_result(&id).await.unwrap_err();
    match &e {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("boom: permanent failure"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    // Retries are 100 ms apart: give a wrong policy time to show itself.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(probes.attempts(&id, "boom"), 1);
    assert_eq!(probes.attempts(&id, "never"), 0);
    assert_eq!(c.describe(&id).await.unwrap().status, RunStatus::Failed);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflow_is_observed_as_cancelled_and_stops() {
    let cfg = config("cancel");
    let probes = Probes::new();
    let w = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("cancel");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Count("before".into()),
            ProbeStep::Sleep(Duration::from_secs(120)),
            ProbeStep::Count("after".into()),
        ],
    )
    .await
    .unwrap();
    assert!(
        probes
            .wait_for(&id, "before", 1, Duration::from_secs(10))
            .await
    );
    c.cancel(&id, "the user gave up").await.unwrap();
    let t0 = Instant::now();
    let e = c.probe_result(&id).await.unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(c.describe(&id).await.unwrap().status, RunStatus::Cancelled);
    assert_eq!(probes.attempts(&id, "after"), 0);

    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_completed_activities_do_not_run_again() {
    let cfg = config("kill");
    let probes = Probes::new();
    let first = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("kill");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Count("a".into()),
            ProbeStep::Sleep(Duration::from_secs(3)),
            ProbeStep::Count("b".into()),
            ProbeStep::Count("c".into()),
        ],
    )
    .await
    .unwrap();
    assert!(probes.wait_for(&id, "a", 1, Duration::from_secs(10)).await);
    // Let the completion of `a` reach the server, then kill the worker during the timer.
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill().await.unwrap();
    assert_eq!(c.describe(&id).await.unwrap().status, RunStatus::Running);
    assert_eq!(probes.attempts(&id, "b"), 0);

    let second = worker(&cfg, &probes).await;
    let done = tokio::time::timeout(Duration::from_secs(60), c.probe_result(&id))
        .await
        .expect("the new worker finishes the run")
        .unwrap();
    assert_eq!(done, ["a", "b", "c"]);
    for step in ["a", "b", "c"] {
        assert_eq!(
            probes.attempts(&id, step),
            1,
            "step {step} ran more than once"
        );
    }
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_worker_lets_another_finish_the_run() {
    let cfg = config("graceful");
    let probes = Probes::new();
    let first = worker(&cfg, &probes).await;
    let c = client(&cfg).await;
    let id = unique("graceful");
    c.start_probe(
        &id,
        vec![
            ProbeStep::Count("a".into()),
            ProbeStep::Sleep(Duration::from_secs(2)),
            ProbeStep::Count("b".into()),
        ],
    )
    .await
    .unwrap();
    assert!(probes.wait_for(&id, "a", 1, Duration::from_secs(10)).await);
    first.shutdown().await.unwrap();
    let second = worker(&cfg, &probes).await;
    assert_eq!(c.probe_result(&id).await.unwrap(), ["a", "b"]);
    assert_eq!(probes.attempts(&id, "a"), 1);
    assert_eq!(probes.attempts(&id, "b"), 1);
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_typed_error_naming_the_address() {
    // Port 1 on loopback: nothing listens there.
    let cfg = TemporalConfig::builder()
        .address("http://127.0.0.1:1")
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let e = TemporalClient::connect(cfg.clone()).await.unwrap_err();
    match &e {
        Error::Unreachable { address, .. } => assert_eq!(address, "http://127.0.0.1:1"),
        other => panic!("expected Unreachable, got {other}"),
    }
    assert!(e.to_string().contains("cargo xtask services up temporal"));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let e = TemporalWorker::builder(cfg).spawn().await.unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    // The real server answers (the suite needs it).
    let _ = client(&config("reachable")).await;
}
