//! The examples through the `wflo` binary, with real code steps in the Docker sandbox:
//! `cargo xtask itest wflo-cli` (Docker and the sandbox image).
#![cfg(feature = "integration")]

mod common;

use common::{Run, World, example};
use std::time::{Duration, Instant};

fn sandbox_image() -> String {
    std::env::var("WFLO_TEST_SANDBOX_IMAGE").expect(
        "WFLO_TEST_SANDBOX_IMAGE is not set; run `cargo xtask itest wflo-cli` (it starts Docker and builds the sandbox image)",
    )
}

/// A world with the sandbox image and the shipped cassette (offline LLM answers).
fn world() -> World {
    World::new().env("WFLO_SANDBOX_IMAGE", sandbox_image()).env(
        "WFLO_LLM_CASSETTE",
        example("quickstart.cassette.json").display().to_string(),
    )
}

fn path(name: &str) -> String {
    example(name).display().to_string()
}

/// The row of `table_text` whose first cell is `key`.
fn row<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row `{key}` in:\n{text}"))
}

#[test]
fn the_quickstart_runs_offline_and_prints_the_cost_breakdown() {
    let w = world();
    let run = w.run(&["run", &path("quickstart.yaml")]);
    run.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains("status COMPLETED"), "{out}");
    // The program the LLM wrote ran in the sandbox and printed the answer.
    assert!(out.contains("execute printed:\n385"), "{out}");
    // Per step and per model, against the budget; the cassette's usage is 71 + 27 tokens.
    for step in ["plan", "execute", "save", "publish"] {
        assert!(row(out, step).contains("COMPLETED"), "{out}");
    }
    assert!(row(out, "plan").contains("71+27"), "{out}");
    let model = row(out, "gpt-4o-mini");
    assert!(model.contains(" 71 ") && model.contains(" 27 "), "{model}");
    assert!(out.contains("of budget 0.05 USD"), "{out}");
    assert!(
        out.contains("98 tokens (71 prompt + 27 completion)"),
        "{out}"
    );
    // The live display (plain lines: stderr is not a terminal here).
    assert!(
        run.stderr.contains("step plan (llm) started"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("spend "), "{}", run.stderr);

    let id = run.execution_id();
    let show = w.run(&["executions", "show", &id]);
    show.expect_code(0);
    let s = &show.stdout;
    assert!(s.contains("status    COMPLETED"), "{s}");
    assert!(s.contains("workflow  quickstart v1"), "{s}");
    for (step, kind) in [
        ("plan", "llm"),
        ("execute", "code"),
        ("save", "checkpoint"),
        ("publish", "approval"),
    ] {
        let r = row(s, step);
        assert!(r.contains(kind) && r.contains("COMPLETED"), "{r}");
    }
    // The gate was approved by the rule, the checkpoint made snapshot 1.
    assert!(s.contains("rule:auto-approve"), "{s}");
    assert!(row(s, "1").contains("save"), "{s}");

    let by_model = w.run(&["cost", "report", "--by", "model"]);
    by_model.expect_code(0);
    assert!(
        row(&by_model.stdout, "gpt-4o-mini").contains(" 1 "),
        "{}",
        by_model.stdout
    );
    let by_workflow = w.run(&["cost", "report", "--by", "workflow"]);
    assert!(
        by_workflow.stdout.contains("quickstart"),
        "{}",
        by_workflow.stdout
    );
    let by_day = w.run(&["cost", "report", "--by", "day"]);
    let today = chrono_today();
    assert!(
        row(&by_day.stdout, &today).contains(" 1 "),
        "{}",
        by_day.stdout
    );

    // A completed execution cannot be resumed.
    w.run(&["run", "--resume", &id]).expect_code(2);
}

fn chrono_today() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts the approval example and waits for its pending request; returns the process and
/// the approval id.
fn start_gate(w: &World) -> (std::process::Child, String) {
    // Migrate first, so the run and the polling commands do not race to create the schema.
    w.run(&["migrate"]).expect_code(0);
    let mut child = w
        .command(&["run", &path("approval.yaml")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wflo starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().expect("wflo is there").is_some() {
            let run = finish(child);
            panic!(
                "the run ended before its gate:\n{}\n{}",
                run.stdout, run.stderr
            );
        }
        let list = w.run(&["approvals", "list"]);
        list.expect_code(0);
        if let Some(line) = list.stdout.lines().find(|l| l.contains("deploy-gate")) {
            assert!(line.contains("HIGH") || line.contains("high"), "{line}");
            return (child, line[..36].to_string());
        }
        assert!(
            Instant::now() < deadline,
            "no pending approval appeared: {}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn finish(child: std::process::Child) -> Run {
    let o = child.wait_with_output().expect("wflo ends");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn the_approval_example_waits_for_wflo_approvals_approve() {
    let w = world();
    let (child, approval) = start_gate(&w);
    // Still waiting: nothing decides a high-risk gate on its own.
    std::thread::sleep(Duration::from_millis(800));
    let list = w.run(&["approvals", "list"]);
    assert!(list.stdout.contains(&approval), "{}", list.stdout);

    let ok = w.run(&[
        "approvals",
        "approve",
        &approval,
        "--as",
        "ana",
        "--reason",
        "latencies look fine",
    ]);
    ok.expect_code(0);
    assert!(ok.stdout.contains("approved approval"), "{}", ok.stdout);
    let run = finish(child);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains(&format!("wflo approvals approve {approval}")),
        "the wait says how to decide: {}",
        run.stderr
    );
    assert!(run.stdout.contains("status COMPLETED"), "{}", run.stdout);

    let show = w.run(&["executions", "show", &run.execution_id()]);
    let r = row(&show.stdout, &approval);
    assert!(
        r.contains("APPROVED") && r.contains("ana") && r.contains("latencies look fine"),
        "{r}"
    );
    // A decision is taken once.
    let again = w.run(&["approvals", "reject", &approval, "--reason", "too late"]);
    again.expect_code(1);
    assert!(again.stderr.contains("already decided"), "{}", again.stderr);
}

#[test]
fn a_rejected_gate_fails_the_run_with_exit_1() {
    let w = world();
    let (child, approval) = start_gate(&w);
    w.run(&[
        "approvals",
        "reject",
        &approval,
        "--as",
        "bo",
        "--reason",
        "not during the freeze",
    ])
    .expect_code(0);
    let run = finish(child);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("step `deploy-gate` was rejected by bo: not during the freeze"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("status FAILED"), "{}", run.stdout);
}

#[test]
fn rollback_restores_a_snapshot_and_resume_runs_the_undone_steps_again() {
    let w = world();
    let file = w.file(
        "flaky.yaml",
        r#"name: flaky
steps:
  - id: first
    kind: code
    code: "print('one')"
  - id: s1
    kind: checkpoint
    depends_on: [first]
  - id: second
    kind: code
    depends_on: [s1]
    code: "print('two')"
  - id: s2
    kind: checkpoint
    depends_on: [second]
  - id: boom
    kind: code
    depends_on: [s2]
    code: "import sys; print('failing', file=sys.stderr); sys.exit(3)"
"#,
    );
    let run = w.run(&["run", &file]);
    run.expect_code(1);
    assert!(run.stderr.contains("step `boom`"), "{}", run.stderr);
    assert!(run.stderr.contains("wflo run --resume"), "{}", run.stderr);
    let id = run.execution_id();

    let rb = w.run(&[
        "rollback",
        &id,
        "--to",
        "1",
        "--reason",
        "bad second pass",
        "--as",
        "ops",
    ]);
    rb.expect_code(0);
    assert!(
        rb.stdout.contains("steps undone: s2, second"),
        "{}",
        rb.stdout
    );
    assert!(
        rb.stdout.contains("later snapshots superseded: 1"),
        "{}",
        rb.stdout
    );

    let show = w.run(&["executions", "show", &id]);
    let s = &show.stdout;
    assert!(row(s, "second").contains("ROLLED_BACK"), "{s}");
    assert!(row(s, "first").contains("COMPLETED"), "{s}");
    assert!(s.contains("bad second pass") && s.contains("ops"), "{s}");
    assert!(
        row(s, "2").contains("s2") && !row(s, "2").trim_end().ends_with('-'),
        "snapshot 2 superseded: {s}"
    );

    // Resume: `first` is reused, the undone steps run again, `boom` fails again.
    let again = w.run(&["run", "--resume", &id]);
    again.expect_code(1);
    assert!(
        again.stderr.contains("step first COMPLETED earlier"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("step second (code) started"),
        "{}",
        again.stderr
    );
    let show = w.run(&["executions", "show", &id]);
    assert!(
        row(&show.stdout, "second").contains("COMPLETED"),
        "{}",
        show.stdout
    );
    assert!(
        row(&show.stdout, "3").contains("s2"),
        "a new snapshot 3: {}",
        show.stdout
    );
}
