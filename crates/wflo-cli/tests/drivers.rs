//! One driver per execution, with real processes: a second `wflo run --resume` of a running
//! execution is refused naming the holder; a driver killed with SIGKILL leaves its run listed
//! as "no driver since T" and its budget reservation is released once the lease expired; Ctrl-C
//! releases the reservation at once and prints the resume command; a driver whose lease was
//! taken over stops before its next step.
#![cfg(feature = "integration")]

mod common;

use common::{Guard, World, chat_completion, output};
use rust_decimal::Decimal;
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const GATED: &str = r#"
name: driven
steps:
  - id: gate
    kind: approval
    message: "Ship it?"
    action: {deploy: v2}
    timeout_secs: 600
  - id: last
    kind: checkpoint
    depends_on: [gate]
"#;

const PAID: &str = r#"
name: paid
policies:
  budget_usd: "0.50"
steps:
  - id: ask
    kind: llm
    model: gpt-4o-mini
    prompt: "Write print(1) in Python."
    max_tokens: 200
  - id: after
    kind: checkpoint
    depends_on: [ask]
"#;

fn wait_for(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first execution listed with `status`.
fn execution_in(w: &World, status: &str) -> Option<String> {
    let list = w.run(&["executions", "list"]);
    list.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(status) || l.contains(&format!(" {status} ")))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
}

/// The execution budget's reserved amount, read through the facade.
async fn reserved(w: &World, execution: &str) -> Decimal {
    let url = format!(
        "sqlite://{}?mode=rwc",
        w.dir.path().join("wflo.db").display()
    );
    let wflo = wflo_core::Wflo::connect(
        wflo_core::Config::builder()
            .database_url(url)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let id: wflo_core::types::ExecutionId = execution.parse().unwrap();
    wflo.engine()
        .costs()
        .budget(
            &wflo_core::cost::Scope::Execution(id),
            wflo_core::cost::Period::Total,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .expect("the execution has a budget")
        .reserved_usd
}

async fn slow_provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(chat_completion("print(1)\n", 20, 10))
                .set_delay(Duration::from_secs(120)),
        )
        .mount(&server)
        .await;
    server
}

#[test]
fn a_second_driver_is_refused_while_the_first_runs() {
    let w = World::new();
    let file = w.file("gated.yaml", GATED);
    let mut first = Guard(Some(common::spawn(&w, &["run", &file])));
    let execution = wait_for("the run to wait", || execution_in(&w, "WAITING_APPROVAL"));

    let list = w.run(&["executions", "list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&execution))
        .unwrap();
    assert!(
        row.contains(&format!(":{}:", first.pid())),
        "the driver column names the holder (host:pid:token): {row}"
    );

    let second = w.run(&["run", "--resume", &execution]);
    second.expect_code(1);
    assert!(
        second
            .stderr
            .contains(&format!("execution {execution} is driven by "))
            && second.stderr.contains(" until "),
        "{second:?}"
    );
    assert!(
        !second.stdout.contains("status "),
        "a refused resume prints no summary: {second:?}"
    );

    // The first driver is unaffected and finishes once approved.
    let approval = wait_for("the approval", || {
        w.run(&["approvals", "list"])
            .stdout
            .lines()
            .find(|l| l.contains("Ship it?"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
    });
    w.run(&["approvals", "approve", &approval, "--as", "alice"])
        .expect_code(0);
    let out = output(first.take());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("status COMPLETED"), "{out:?}");
    let show = w.run(&["executions", "show", &execution]);
    assert!(show.stdout.contains("driver    -"), "{}", show.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_driver_is_shown_without_driver_and_its_reservation_released_after_the_lease() {
    let server = slow_provider().await;
    let w = World::new()
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
        .env("WFLO_LEASE_TTL_SECS", "3");
    let file = w.file("paid.yaml", PAID);
    let mut run = Guard(Some(common::spawn(&w, &["run", &file])));
    let w2 = &w;
    let execution = tokio::task::block_in_place(|| {
        wait_for("the LLM call to be in flight", || {
            futures_executor_received(&server).then_some(())?;
            execution_in(w2, "RUNNING")
        })
    });
    assert!(
        reserved(&w, &execution).await > Decimal::ZERO,
        "the call holds a reservation"
    );

    // SIGKILL: no clean-up of any kind.
    let mut child = run.take();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    // The reservation is held while the dead driver's lease may still be live…
    assert!(reserved(&w, &execution).await > Decimal::ZERO);
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(killed.elapsed())).await;

    // …and given back once it expired; the run is listed as RUNNING with no driver.
    let list = tokio::task::block_in_place(|| w.run(&["executions", "list"]));
    list.expect_code(0);
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&execution))
        .unwrap();
    assert!(
        row.contains("RUNNING") && row.contains("no driver since"),
        "{row}"
    );
    assert_eq!(reserved(&w, &execution).await, Decimal::ZERO);

    // Another process takes the run over once the provider answers again.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_completion(
            "print(1)\n",
            20,
            10,
        )))
        .mount(&server)
        .await;
    let resumed = tokio::task::block_in_place(|| w.run(&["run", "--resume", &execution]));
    resumed.expect_code(0);
    assert!(resumed.stdout.contains("status COMPLETED"), "{resumed:?}");
}

/// Whether the fake provider got its request yet (blocking, from a sync closure).
fn futures_executor_received(server: &MockServer) -> bool {
    let handle = tokio::runtime::Handle::current();
    handle
        .block_on(server.received_requests())
        .is_some_and(|r| !r.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_releases_the_reservation_and_prints_the_resume_command() {
    let server = slow_provider().await;
    let w = World::new()
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()));
    let file = w.file("paid.yaml", PAID);
    let mut run = Guard(Some(common::spawn(&w, &["run", &file])));
    let w2 = &w;
    let execution = tokio::task::block_in_place(|| {
        wait_for("the LLM call to be in flight", || {
            futures_executor_received(&server).then_some(())?;
            execution_in(w2, "RUNNING")
        })
    });
    assert!(reserved(&w, &execution).await > Decimal::ZERO);
    let status = std::process::Command::new("kill")
        .args(["-INT", &run.pid()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::block_in_place(|| output(run.take()));
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        out.stderr.contains("1 budget reservation(s) released"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains(&format!("continue it with `wflo run --resume {execution}`")),
        "{out:?}"
    );
    // Released at once, not at the reservation's expiry; the run is resumable at once.
    assert_eq!(reserved(&w, &execution).await, Decimal::ZERO);
    let list = tokio::task::block_in_place(|| w.run(&["executions", "list"]));
    let row = list
        .stdout
        .lines()
        .find(|l| l.contains(&execution))
        .unwrap();
    assert!(row.contains("no driver since"), "{row}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_whose_lease_was_taken_over_stops_before_its_next_step() {
    use wflo_core::db::{Executor, Lease};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("wflo.db").display());
    let config = wflo_core::Config::builder()
        .database_url(url)
        .lease_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let thief_db = wflo_core::Wflo::connect(config.clone()).await.unwrap();
    let thief = thief_db.db().clone();
    let wflo = wflo_core::Wflo::connect_with(config, move |b| {
        b.tool(
            "steal",
            wflo_core::FnTool::new(move |input| {
                let db = thief.clone();
                async move {
                    // Another process takes the execution over: it ends this driver's lease
                    // (as an expiry would) and takes its own.
                    let id: uuid::Uuid = input["execution"].as_str().unwrap().parse().unwrap();
                    let exec = db.executions().get(id).await.map_err(|e| e.to_string())?;
                    let theirs = Lease {
                        holder: exec.lease_holder.clone().unwrap(),
                        expires_at: exec.lease_expires_at.unwrap(),
                        fence: exec.lease_fence,
                    };
                    db.executions()
                        .release_lease(id, &theirs)
                        .await
                        .map_err(|e| e.to_string())?;
                    db.executions()
                        .acquire_lease(id, "thief:1:x", Duration::from_secs(60))
                        .await
                        .map_err(|e| e.to_string())?;
                    // Long enough for the victim's renewal to find out.
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    Ok(serde_json::json!({"stolen": true}))
                }
            }),
        )
    })
    .await
    .unwrap();
    let id = wflo_core::types::ExecutionId::new();
    let def = wflo_core::WorkflowDef::from_yaml(&format!(
        "name: stolen\nsteps:\n  - id: steal\n    kind: tool\n    tool: steal\n    input: {{execution: \"{id}\"}}\n  - id: next\n    kind: checkpoint\n    depends_on: [steal]\n"
    ))
    .unwrap();
    let err = wflo
        .engine()
        .run(
            &def,
            wflo_core::RunOptions {
                execution_id: Some(id),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            wflo_core::RuntimeError::Db(wflo_core::db::Error::LeaseLost { .. })
        ),
        "{err}"
    );
    // The next step never ran, and the old driver wrote no FAILED over the new driver's run.
    let steps = wflo.db().steps().list(id).await.unwrap();
    assert!(steps.iter().all(|s| s.step_key != "next"), "{steps:?}");
    let exec = wflo.db().executions().get(id).await.unwrap();
    assert_eq!(exec.status, wflo_core::db::ExecutionStatus::Running);
    assert_eq!(exec.lease_holder.as_deref(), Some("thief:1:x"));
    assert_eq!(exec.lease_fence, 2);
}
