//! `wflo run --engine temporal` with `wflo worker` against the Temporal dev server:
//! `cargo xtask itest wflo-cli` (starts the dev server and exports WFLO_TEST_TEMPORAL_ADDRESS).
#![cfg(feature = "integration")]

mod common;

use common::{World, temporal_address};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A world on its own task queue of the dev server.
fn world() -> World {
    World::new()
        .env("TEMPORAL_ADDRESS", temporal_address())
        .env(
            "TEMPORAL_TASK_QUEUE",
            format!("cli-{}", uuid::Uuid::now_v7().simple()),
        )
}

const GATED: &str = r#"
name: cli-temporal
steps:
  - id: first
    kind: checkpoint
  - id: gate
    kind: approval
    depends_on: [first]
    message: "Ship it?"
    risk: high
    action: {deploy: v2}
    timeout_secs: 120
  - id: last
    kind: checkpoint
    depends_on: [gate]
"#;

/// Stops a child on drop (a failed assertion must not leave a worker behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_temporal_run_waits_for_an_approval_from_the_cli_and_the_worker_stops_on_sigterm() {
    let w = world();
    let file = w.file("gated.yaml", GATED);
    let mut worker = Child(
        w.command(&["worker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wflo worker starts"),
    );
    let run = w
        .command(&["run", "--engine", "temporal", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wflo run starts");

    // The approval request appears in the shared database once the worker reaches the gate.
    let deadline = Instant::now() + Duration::from_secs(60);
    let approval = loop {
        let list = w.run(&["approvals", "list"]);
        list.expect_code(0);
        if let Some(line) = list.stdout.lines().find(|l| l.contains("Ship it?")) {
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no approval request appeared: {}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let approve = w.run(&[
        "approvals",
        "approve",
        &approval,
        "--as",
        "alice",
        "--reason",
        "fine",
    ]);
    approve.expect_code(0);
    assert!(
        approve.stdout.contains("signalled temporal workflow"),
        "{}",
        approve.stdout
    );

    let out = run.wait_with_output().expect("wflo run ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("running cli-temporal on temporal"),
        "{stdout}"
    );
    assert!(stdout.contains("done  last"), "{stdout}");
    assert!(stdout.contains("status COMPLETED"), "{stdout}");

    // The decision went through the workflow into the database.
    let id = stdout
        .split("execution ")
        .nth(1)
        .map(|s| s[..36].to_string())
        .expect("an execution id");
    let show = w.run(&["executions", "show", &id]);
    show.expect_code(0);
    assert!(show.stdout.contains("APPROVED"), "{}", show.stdout);
    assert!(show.stdout.contains("alice"), "{}", show.stdout);

    // SIGTERM stops the worker gracefully.
    let pid = worker.0.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = worker.0.try_wait().expect("wait for the worker") {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("worker stopped"), "{err}");
}
