//! An approval is decided once on every engine, and every decider is told the truth: two
//! `wflo approvals` processes racing on one request (one approves, one rejects) — exactly one
//! exits 0, the other exits 1 with "already decided (STATUS by WHO at T)", and the run acts on
//! the winner's decision. On Temporal the decision also needs no live worker.
//!
//! `cargo xtask itest wflo-cli` (starts the Temporal dev server, exports
//! WFLO_TEST_TEMPORAL_ADDRESS).
#![cfg(feature = "integration")]

mod common;

use common::{Guard, World, output, spawn, temporal_address};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ROUNDS: usize = 50;
const BATCH: usize = 10;

const GATED: &str = r#"
name: decided-once
steps:
  - id: gate
    kind: approval
    message: "Ship it?"
    risk: high
    action: {deploy: v2}
    timeout_secs: 600
  - id: last
    kind: checkpoint
    depends_on: [gate]
"#;

/// A world on its own task queue of the dev server.
fn temporal_world() -> World {
    World::new()
        .env("TEMPORAL_ADDRESS", temporal_address())
        .env(
            "TEMPORAL_TASK_QUEUE",
            format!("once-{}", uuid::Uuid::now_v7().simple()),
        )
}

/// Pending approvals by execution id, once at least `n` are listed.
fn pending(w: &World, n: usize) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = w.run(&["approvals", "list"]);
        list.expect_code(0);
        let found: HashMap<String, String> = list
            .stdout
            .lines()
            .filter(|l| l.contains("Ship it?"))
            .map(|l| {
                let mut cols = l.split_whitespace();
                let approval = cols.next().unwrap().to_string();
                let execution = cols.next().unwrap().to_string();
                (execution, approval)
            })
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} approval requests appeared:\n{}",
            found.len(),
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two processes decide one approval at the same instant. Returns whether "approve" won,
/// after checking that exactly one exited 0 and the loser was told who won.
fn race(w: &World, approval: &str) -> bool {
    let approve = spawn(
        w,
        &[
            "approvals",
            "approve",
            approval,
            "--as",
            "alice",
            "--reason",
            "ok",
        ],
    );
    let reject = spawn(
        w,
        &[
            "approvals",
            "reject",
            approval,
            "--as",
            "bob",
            "--reason",
            "no",
        ],
    );
    let (a, r) = (output(approve), output(reject));
    let winners = [a.code, r.code].iter().filter(|c| **c == 0).count();
    assert_eq!(
        winners, 1,
        "exactly one decider exits 0\n--- approve: {a:?}\n--- reject: {r:?}"
    );
    let (winner, loser) = if a.code == 0 { (&a, &r) } else { (&r, &a) };
    assert_eq!(
        loser.code, 1,
        "the loser exits 1, never a usage error: {loser:?}"
    );
    let stands = if a.code == 0 {
        "APPROVED by alice"
    } else {
        "REJECTED by bob"
    };
    assert!(
        loser
            .stderr
            .contains(&format!("already decided ({stands} at ")),
        "the loser is told which decision stands: {loser:?}"
    );
    assert!(
        winner.stdout.contains(if a.code == 0 {
            "approved approval"
        } else {
            "rejected approval"
        }),
        "{winner:?}"
    );
    a.code == 0
}

#[test]
fn simultaneous_approve_and_reject_on_the_local_engine_one_wins_and_the_run_obeys_it() {
    let w = World::new();
    let file = w.file("gated.yaml", GATED);
    let (mut approved, mut rejected) = (0, 0);
    for _ in 0..ROUNDS / BATCH {
        let mut runs: Vec<Guard> = (0..BATCH)
            .map(|_| Guard(Some(spawn(&w, &["run", &file]))))
            .collect();
        let approvals = pending(&w, BATCH);
        let mut won = HashMap::new();
        for (execution, approval) in &approvals {
            won.insert(execution.clone(), race(&w, approval));
        }
        for run in &mut runs {
            let out = output(run.take());
            let id = out.execution_id();
            let approve_won = won[&id];
            if approve_won {
                approved += 1;
                assert_eq!(out.code, 0, "approved, the run completes: {out:?}");
                assert!(out.stdout.contains("status COMPLETED"), "{out:?}");
            } else {
                rejected += 1;
                assert_eq!(out.code, 1, "rejected, the run fails: {out:?}");
                assert!(out.stderr.contains("was rejected by bob"), "{out:?}");
            }
            let show = w.run(&["executions", "show", &id]);
            show.expect_code(0);
            assert!(
                show.stdout
                    .contains(if approve_won { "APPROVED" } else { "REJECTED" }),
                "{}",
                show.stdout
            );
        }
    }
    println!("local engine: {ROUNDS} rounds, approve won {approved}, reject won {rejected}");
    assert_eq!(approved + rejected, ROUNDS);
}

#[test]
fn simultaneous_approve_and_reject_on_temporal_one_wins_and_the_workflow_obeys_it() {
    let w = temporal_world();
    let file = w.file("gated.yaml", GATED);
    let _worker = Guard(Some(spawn(&w, &["worker"])));
    let (mut approved, mut rejected) = (0, 0);
    for _ in 0..ROUNDS / BATCH {
        let mut runs: Vec<Guard> = (0..BATCH)
            .map(|_| Guard(Some(spawn(&w, &["run", "--engine", "temporal", &file]))))
            .collect();
        let approvals = pending(&w, BATCH);
        let mut won = HashMap::new();
        for (execution, approval) in &approvals {
            won.insert(execution.clone(), race(&w, approval));
        }
        for run in &mut runs {
            let out = output(run.take());
            let id = out.execution_id();
            let approve_won = won[&id];
            if approve_won {
                approved += 1;
                assert_eq!(out.code, 0, "approved, the workflow completes: {out:?}");
                assert!(out.stdout.contains("status COMPLETED"), "{out:?}");
            } else {
                rejected += 1;
                assert_eq!(out.code, 1, "rejected, the workflow fails: {out:?}");
                assert!(out.stdout.contains("status FAILED"), "{out:?}");
                assert!(
                    format!("{}{}", out.stdout, out.stderr).contains("rejected by bob"),
                    "the run acted on the stored rejection: {out:?}"
                );
            }
        }
    }
    println!("temporal engine: {ROUNDS} rounds, approve won {approved}, reject won {rejected}");
    assert_eq!(approved + rejected, ROUNDS);
}

#[test]
fn deciding_a_temporal_run_needs_no_worker_and_the_run_goes_on_when_one_returns() {
    let w = temporal_world();
    let file = w.file("gated.yaml", GATED);
    let mut worker = Guard(Some(spawn(&w, &["worker"])));
    let mut run = Guard(Some(spawn(&w, &["run", "--engine", "temporal", &file])));
    let approvals = pending(&w, 1);
    let (execution, approval) = approvals.into_iter().next().unwrap();
    let doctor = w.run(&["doctor"]);
    assert!(
        doctor.stdout.contains("1 worker(s) polling"),
        "doctor sees the worker: {doctor:?}"
    );

    // Every worker down (killed, not stopped cleanly).
    let mut killed = worker.take();
    killed.kill().expect("kill the worker");
    killed.wait().expect("the worker is gone");
    let down = Instant::now();

    // Without TEMPORAL_ADDRESS nothing is recorded: the run would never see it.
    let db = format!(
        "sqlite://{}?mode=rwc",
        w.dir.path().join("wflo.db").display()
    );
    let bare = World::new().env("DATABASE_URL", db);
    let refused = bare.run(&["approvals", "approve", &approval, "--as", "carol"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("runs on temporal") && refused.stderr.contains("TEMPORAL_ADDRESS"),
        "{refused:?}"
    );
    assert!(
        refused.stderr.contains("nothing was recorded"),
        "{refused:?}"
    );
    assert!(
        w.run(&["approvals", "list"]).stdout.contains(&approval),
        "the request is still pending"
    );

    // With Temporal configured the decision is recorded and delivered, worker or not. A
    // killed worker's last long poll stays on the server's list for up to a minute: wait until
    // it is older than any live worker's could be, so "no worker" is the truth.
    std::thread::sleep(Duration::from_secs(80).saturating_sub(down.elapsed()));
    let approve = w.run(&[
        "approvals",
        "approve",
        &approval,
        "--as",
        "alice",
        "--reason",
        "go",
    ]);
    approve.expect_code(0);
    assert!(
        approve.stdout.contains("signalled temporal workflow"),
        "{approve:?}"
    );
    assert!(
        approve
            .stdout
            .contains("no worker is polling task queue once-"),
        "{approve:?}"
    );
    let show = w.run(&["executions", "show", &execution]);
    assert!(show.stdout.contains("APPROVED"), "{}", show.stdout);
    let doctor = w.run(&["doctor"]);
    assert!(
        doctor
            .stdout
            .contains("no worker is polling task queue once-"),
        "doctor says no worker polls: {doctor:?}"
    );

    // A worker returns: the run completes on the stored decision.
    let _worker = Guard(Some(spawn(&w, &["worker"])));
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.0.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the run did not continue within 120 s of a worker's return"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = output(run.take());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("status COMPLETED"), "{out:?}");
    println!("decided with no worker: {}", approve.stdout.trim());
}
