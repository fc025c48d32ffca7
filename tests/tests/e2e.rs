//! End-to-end: the user journey through `wflo_core`, on SQLite and PostgreSQL, with a fake
//! OpenAI-compatible provider on loopback that counts the calls it receives.
//!
//! Run with `cargo xtask itest wflo-e2e` (PostgreSQL, Docker and the sandbox image).
#![cfg(feature = "integration")]

use rstest::rstest;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wflo_core::db::{
    ApprovalStatus, Backend, ExecutionStatus, Executor, RiskLevel, StepStatus, TimeoutPolicy,
};
use wflo_core::types::{ApprovalId, ExecutionId};
use wflo_core::{
    ApprovalCall, Config, FnTool, LlmCall, LlmSettings, RunOptions, RuntimeError, Wflo, WorkflowDef,
};
use wflo_db::testing::TestDb;
use wflo_llm::testing::openai_chat_completion;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A fake OpenAI-compatible server answering every chat completion with `text`.
async fn fake_llm(text: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_chat_completion(
                "gpt-4o-mini-2024-07-18",
                text,
                40,
                25,
            )),
        )
        .mount(&server)
        .await;
    server
}

async fn calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

fn config(db_url: &str, llm: Option<&MockServer>) -> Config {
    // A short driver's lease, so a killed process's run can be taken over within seconds.
    let mut b = Config::builder()
        .database_url(db_url)
        .lease_ttl(Duration::from_secs(2));
    if let Some(server) = llm {
        b = b.llm(LlmSettings {
            provider: Some("openai".into()),
            openai_api_key: Some("sk-e2e-test".into()),
            openai_base_url: Some(format!("{}/v1", server.uri())),
            ..Default::default()
        });
    }
    b.build().unwrap()
}

async fn wflo(t: &TestDb, llm: Option<&MockServer>) -> Wflo {
    Wflo::connect(config(&t.url(), llm)).await.unwrap()
}

const AGENT: &str = r#"
name: agent
inputs:
  question: {default: "What is six times seven?"}
policies:
  budget_usd: "0.05"
  approval: {auto_approve_max_risk: low}
steps:
  - id: plan
    kind: llm
    model: gpt-4o-mini
    prompt: "Write a Python program that prints the answer to: {{ inputs.question }}"
    max_tokens: 200
  - id: run
    kind: code
    depends_on: [plan]
    code: "{{ steps.plan.output.code }}"
    timeout_secs: 20
  - id: save
    kind: checkpoint
    depends_on: [run]
  - id: gate
    kind: approval
    depends_on: [save]
    message: "Publish the answer?"
    risk: low
    action: "{{ steps.run.output.stdout }}"
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_plans_runs_its_code_checkpoints_and_passes_the_gate(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let llm = fake_llm("Here you go:\n```python\nprint(6 * 7)\n```\n").await;
    let w = wflo(&t, Some(&llm)).await;
    let def = WorkflowDef::from_yaml(AGENT).unwrap();
    let out = w.engine().run(&def, RunOptions::default()).await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    assert_eq!(out.outputs["run"]["stdout"], json!("42\n"));
    assert_eq!(out.outputs["gate"]["decision"], json!("APPROVED"));
    assert_eq!(
        out.outputs["gate"]["approved_by"],
        json!("rule:auto-approve")
    );
    assert_eq!(calls(&llm).await, 1);
    // gpt-4o-mini at $0.15/$0.60 per 1M: 40 in + 25 out = $0.000021, exactly.
    assert_eq!(out.cost_usd, dec!(0.000021));
    let exec = t.executions().get(out.execution_id).await.unwrap();
    assert_eq!(exec.tokens.prompt, 40);
    let steps = t.steps().list(out.execution_id).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.step_key.as_str(), s.status))
            .collect::<Vec<_>>(),
        vec![
            ("plan", StepStatus::Completed),
            ("run", StepStatus::Completed),
            ("save", StepStatus::Completed),
            ("gate", StepStatus::Completed)
        ]
    );
    assert_eq!(steps[0].cost_usd, dec!(0.000021));
    assert_eq!(t.snapshots().list(out.execution_id).await.unwrap().len(), 1);
    // Every state change left its event in the outbox.
    let events = t.outbox().unpublished(1000).await.unwrap();
    let types: Vec<String> = events
        .iter()
        .map(|e| e.payload["event_type"].as_str().unwrap_or("").to_string())
        .collect();
    for ty in [
        "workflow.status",
        "step.status",
        "cost.recorded",
        "sandbox.execution",
        "approval.requested",
        "approval.decided",
        "audit.action",
    ] {
        assert!(types.iter().any(|t| t == ty), "no {ty} event in {types:?}");
    }
    assert!(
        events
            .iter()
            .all(|e| e.key.as_deref() == Some(&*out.execution_id.to_string()))
    );
    w.shutdown().await;
}

#[rstest]
#[tokio::test]
async fn a_budget_too_small_stops_the_run_before_the_call(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let llm = fake_llm("never sent").await;
    let w = wflo(&t, Some(&llm)).await;
    let def = WorkflowDef::from_yaml(AGENT).unwrap();
    let err = w
        .engine()
        .run(
            &def,
            RunOptions {
                budget_usd: Some(dec!(0.00001)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    match &err {
        RuntimeError::BudgetExceeded {
            step, requested, ..
        } => {
            assert_eq!(step, "plan");
            assert!(*requested > dec!(0.00001), "{requested}");
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    assert_eq!(
        calls(&llm).await,
        0,
        "the provider must never receive the call"
    );
    let failed = t
        .executions()
        .list_by_status(ExecutionStatus::Failed)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let reason = failed[0].error.clone().unwrap_or_default();
    assert!(
        reason.contains("budget") && reason.contains("plan"),
        "{reason}"
    );
    assert_eq!(failed[0].cost_usd, Decimal::ZERO);
}

// ------------------------------------------------------------------ crash and resume

const CRASHY: &str = r#"
name: crashy
steps:
  - id: one
    kind: llm
    model: gpt-4o-mini
    prompt: "first question"
    max_tokens: 50
  - id: two
    kind: llm
    depends_on: [one]
    model: gpt-4o-mini
    prompt: "second question, after {{ steps.one.output.text }}"
    max_tokens: 50
  - id: three
    kind: tool
    depends_on: [two]
    tool: finish
"#;

/// Spawns this test binary as another process running `child_entry` in `role`.
fn spawn_child(role: &str, vars: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("WFLO_E2E_ROLE", role)
    .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the child process")
}

/// The other process of the multi-process tests (run only by them, with WFLO_E2E_ROLE set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started as a child process by the multi-process tests"]
async fn child_entry() {
    let role = std::env::var("WFLO_E2E_ROLE").expect("run by the e2e suite with WFLO_E2E_ROLE");
    let db = std::env::var("WFLO_E2E_DB").unwrap();
    match role.as_str() {
        "crash-run" => {
            let server_uri = std::env::var("WFLO_E2E_LLM").unwrap();
            let cfg = Config::builder()
                .database_url(db)
                .lease_ttl(Duration::from_secs(2))
                .llm(LlmSettings {
                    provider: Some("openai".into()),
                    openai_api_key: Some("sk-e2e-test".into()),
                    openai_base_url: Some(format!("{server_uri}/v1")),
                    ..Default::default()
                })
                .build()
                .unwrap();
            // Step three blocks: this process is killed while it runs.
            let w = Wflo::connect_with(cfg, |b| {
                b.tool(
                    "finish",
                    FnTool::new(|_| async {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        Ok(json!("too late"))
                    }),
                )
            })
            .await
            .unwrap();
            let id: ExecutionId = std::env::var("WFLO_E2E_EXEC").unwrap().parse().unwrap();
            let _ = w.engine().resume(id, RunOptions::default()).await;
        }
        "approve" => {
            let w = Wflo::connect(Config::builder().database_url(db).build().unwrap())
                .await
                .unwrap();
            let id: ApprovalId = std::env::var("WFLO_E2E_APPROVAL").unwrap().parse().unwrap();
            w.engine()
                .decide(id, true, "alice", Some("checked by hand".into()))
                .await
                .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_step_two_resumes_at_step_three(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let llm = fake_llm("an answer").await;
    let def = WorkflowDef::from_yaml(CRASHY).unwrap();
    let parent = Wflo::connect_with(config(&t.url(), Some(&llm)), |b| {
        b.tool("finish", FnTool::new(|_| async { Ok(json!("finished")) }))
    })
    .await
    .unwrap();
    let id = parent
        .engine()
        .create_execution(&def, &RunOptions::default())
        .await
        .unwrap();

    let mut child = spawn_child(
        "crash-run",
        &[
            ("WFLO_E2E_DB", t.url()),
            ("WFLO_E2E_LLM", llm.uri()),
            ("WFLO_E2E_EXEC", id.to_string()),
        ],
    );
    // Wait until step three runs in the child, then kill it (SIGKILL: no cleanup at all).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let three = t.steps().find_by_key(id, "three").await.unwrap();
        if three.is_some_and(|s| s.status == StepStatus::Running) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never reached step three"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child exited early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(calls(&llm).await, 2, "the child made both LLM calls");
    assert_eq!(
        t.executions().get(id).await.unwrap().status,
        ExecutionStatus::Running
    );
    // The dead child's lease still holds the run until it expires: one driver at a time.
    match parent.engine().resume(id, RunOptions::default()).await {
        Err(RuntimeError::Db(wflo_core::db::Error::Leased { .. })) => {}
        other => panic!("a resume while the lease holds is refused: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let out = parent
        .engine()
        .resume(id, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    assert_eq!(out.outputs["three"], json!("finished"));
    assert_eq!(calls(&llm).await, 2, "no paid call was repeated");
    let steps = t.steps().list(id).await.unwrap();
    let attempts: Vec<(&str, i32)> = steps
        .iter()
        .map(|s| (s.step_key.as_str(), s.attempt))
        .collect();
    assert_eq!(attempts, vec![("one", 1), ("two", 1), ("three", 2)]);
    // Each call was charged once: 2 × (40 in + 25 out) at gpt-4o-mini prices.
    assert_eq!(out.cost_usd, dec!(0.000042));
}

// ------------------------------------------------------------------ approvals

async fn wait_for_pending(t: &TestDb, execution: ExecutionId) -> wflo_core::db::Approval {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = t
            .approvals()
            .list(execution)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.status == ApprovalStatus::Pending)
        {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no approval request appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_given_from_another_process_unblocks_the_run(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let w = wflo(&t, None).await;
    let id = ExecutionId::new();
    let engine = w.engine().clone();
    let run = tokio::spawn(async move {
        engine
            .run_fn(
                "deploy",
                RunOptions {
                    execution_id: Some(id),
                    ..Default::default()
                },
                |ctx| async move {
                    let mut call =
                        ApprovalCall::new("deploy v2 to production?", json!({"release": "v2"}));
                    call.risk = RiskLevel::High;
                    call.timeout = Some(Duration::from_secs(120));
                    ctx.approval("gate", call).await
                },
            )
            .await
    });
    let pending = wait_for_pending(&t, id).await;
    // The run shows that it waits (set right after the request is written).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.executions().get(id).await.unwrap().status != ExecutionStatus::WaitingApproval {
        assert!(
            std::time::Instant::now() < deadline,
            "the execution never showed WAITING_APPROVAL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut child = spawn_child(
        "approve",
        &[
            ("WFLO_E2E_DB", t.url()),
            ("WFLO_E2E_APPROVAL", pending.id.to_string()),
        ],
    );
    assert!(
        child.wait().unwrap().success(),
        "the approving process failed"
    );
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run was unblocked")
        .unwrap()
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    assert_eq!(out.outputs["approved_by"], json!("alice"));
    let stored = t.approvals().get(pending.id).await.unwrap();
    assert_eq!(stored.status, ApprovalStatus::Approved);
    assert_eq!(stored.decision_reason.as_deref(), Some("checked by hand"));
    // A second decision is refused: the decision was taken once.
    assert!(
        w.engine()
            .decide(pending.id, false, "mallory", None)
            .await
            .is_err()
    );
}

async fn run_with_timeout_policy(
    t: &TestDb,
    policy: TimeoutPolicy,
) -> (ExecutionId, Result<wflo_core::RunOutcome, RuntimeError>) {
    let w = wflo(t, None).await;
    let id = ExecutionId::new();
    let result = w
        .engine()
        .run_fn(
            "timeouts",
            RunOptions {
                execution_id: Some(id),
                ..Default::default()
            },
            |ctx| async move {
                let mut call = ApprovalCall::new("proceed?", json!({"op": "delete old logs"}));
                call.timeout = Some(Duration::from_millis(700));
                call.on_timeout = policy;
                call.escalate_to = Some("leads".into());
                ctx.approval("gate", call).await
            },
        )
        .await;
    (id, result)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_timeouts_apply_their_policy(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;

    let (id, result) = run_with_timeout_policy(&t, TimeoutPolicy::Reject).await;
    match result.unwrap_err() {
        RuntimeError::Rejected { by, .. } => assert_eq!(by, "system:timeout"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    let a = t.approvals().list(id).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].status, ApprovalStatus::Expired);
    assert_eq!(
        t.executions().get(id).await.unwrap().status,
        ExecutionStatus::Failed
    );

    let (id, result) = run_with_timeout_policy(&t, TimeoutPolicy::Approve).await;
    let out = result.unwrap();
    assert_eq!(out.outputs["approved_by"], json!("system:timeout"));
    assert_eq!(
        t.approvals().list(id).await.unwrap()[0].status,
        ApprovalStatus::Approved
    );

    let (id, result) = run_with_timeout_policy(&t, TimeoutPolicy::Escalate).await;
    assert!(matches!(result.unwrap_err(), RuntimeError::Rejected { .. }));
    let a = t.approvals().list(id).await.unwrap();
    assert_eq!(a.len(), 2, "escalation makes a second request");
    assert_eq!(a[0].status, ApprovalStatus::Escalated);
    assert_eq!(a[1].approver_group.as_deref(), Some("leads"));
    assert_eq!(a[1].status, ApprovalStatus::Expired);
    assert_eq!(a[1].action_fingerprint, a[0].action_fingerprint);
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_approval_is_refused(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let w = wflo(&t, None).await;
    let id = ExecutionId::new();
    let run = |action: Value| {
        let engine = w.engine().clone();
        async move {
            engine
                .run_fn(
                    "stale",
                    RunOptions {
                        execution_id: Some(id),
                        ..Default::default()
                    },
                    |ctx| async move {
                        ctx.approval("gate", ApprovalCall::new("run this?", action))
                            .await
                    },
                )
                .await
        }
    };
    // The first run asks to approve `rm -rf build/` and stops (its process went away).
    let first = tokio::spawn(run(json!({"cmd": "rm -rf build/"})));
    let pending = wait_for_pending(&t, id).await;
    first.abort();
    let _ = first.await;
    // As Ctrl-C does: the abandoned run gives its lease (and reservations) up.
    w.engine().interrupt(id).await.unwrap();
    w.engine()
        .decide(pending.id, true, "bob", None)
        .await
        .unwrap();
    // The run comes back with a different action: the approval does not cover it.
    let err = run(json!({"cmd": "rm -rf /"})).await.unwrap_err();
    match err {
        RuntimeError::StaleApproval { approval, .. } => assert_eq!(approval, pending.id),
        other => panic!("expected StaleApproval, got {other:?}"),
    }
    assert_eq!(
        t.executions().get(id).await.unwrap().status,
        ExecutionStatus::Failed
    );
    // The same action it was given for is still accepted.
    let out = run(json!({"cmd": "rm -rf build/"})).await.unwrap();
    assert_eq!(out.outputs["approved_by"], json!("bob"));
}

// ------------------------------------------------------------------ rollback

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_variables_and_compensates_in_reverse(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let fail_t3 = Arc::new(Mutex::new(true));
    let tool = |name: &'static str, log: Arc<Mutex<Vec<String>>>| {
        let l2 = log.clone();
        FnTool::new(move |_| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("do {name}"));
                Ok(json!(name))
            }
        })
        .with_compensation(move |_, out| {
            let log = l2.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push(format!("undo {}", out.as_str().unwrap_or("?")));
                Ok(())
            }
        })
    };
    let (l, f) = (log.clone(), fail_t3.clone());
    let w = Wflo::connect_with(config(&t.url(), None), move |b| {
        b.tool("t1", tool("t1", l.clone()))
            .tool("t2", tool("t2", l.clone()))
            .tool(
                "t3",
                FnTool::new(move |_| {
                    let f = f.clone();
                    async move {
                        if *f.lock().unwrap() {
                            Err("the deploy broke".into())
                        } else {
                            Ok(json!("t3"))
                        }
                    }
                }),
            )
    })
    .await
    .unwrap();
    let id = ExecutionId::new();
    let seen = Arc::new(Mutex::new(Vec::<Option<Value>>::new()));
    let run = || {
        let engine = w.engine().clone();
        let seen = seen.clone();
        async move {
            engine
                .run_fn(
                    "rollback",
                    RunOptions {
                        execution_id: Some(id),
                        ..Default::default()
                    },
                    |ctx| async move {
                        seen.lock().unwrap().push(ctx.var("x"));
                        if ctx.var("x").is_none() {
                            ctx.set_var("x", json!(1));
                        }
                        ctx.checkpoint("cp1").await?;
                        ctx.tool("s1", "t1", json!({})).await?;
                        ctx.set_var("x", json!(2));
                        ctx.tool("s2", "t2", json!({})).await?;
                        ctx.checkpoint("cp2").await?;
                        ctx.tool("s3", "t3", json!({})).await
                    },
                )
                .await
        }
    };
    assert!(run().await.is_err(), "t3 fails the first run");
    assert_eq!(
        t.executions().get(id).await.unwrap().status,
        ExecutionStatus::Failed
    );

    let rb = w
        .engine()
        .rollback(id, 1, "the deploy broke", "oncall")
        .await
        .unwrap();
    assert_eq!(rb.snapshot_version, 1);
    assert_eq!(rb.undone_steps, vec!["cp2", "s2", "s1"]);
    assert_eq!(rb.compensations, vec!["s2:t2", "s1:t1"]);
    assert_eq!(rb.superseded, 1);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["do t1", "do t2", "undo t2", "undo t1"],
        "compensations run newest first"
    );
    let record = t.rollbacks().get(rb.rollback_id).await.unwrap();
    assert_eq!(record.status, wflo_core::db::RollbackStatus::Completed);
    assert_eq!(record.initiated_by, "oncall");
    assert_eq!(record.details["compensations"], json!(["s2:t2", "s1:t1"]));
    let snaps = t.snapshots().list(id).await.unwrap();
    assert!(snaps[0].superseded_at.is_none() && snaps[1].superseded_at.is_some());
    assert_eq!(
        t.steps()
            .find_by_key(id, "s1")
            .await
            .unwrap()
            .unwrap()
            .status,
        StepStatus::RolledBack
    );

    // Continue from the snapshot: x is back to 1, s1 and s2 run again, cp1 is reused.
    *fail_t3.lock().unwrap() = false;
    let out = run().await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    assert_eq!(*seen.lock().unwrap(), vec![None, Some(json!(1))]);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["do t1", "do t2", "undo t2", "undo t1", "do t1", "do t2"]
    );
    assert_eq!(
        t.snapshots().list(id).await.unwrap().len(),
        3,
        "cp2 taken again as v3"
    );

    // A COMPLETED execution rolled back is reopened (FAILED, the rollback as its reason) and
    // continues from the snapshot like any other.
    let rb = w
        .engine()
        .rollback(id, 1, "the finished run was wrong", "oncall")
        .await
        .unwrap();
    assert_eq!(rb.undone_steps, vec!["s3", "cp2", "s2", "s1"]);
    let reopened = t.executions().get(id).await.unwrap();
    assert_eq!(reopened.status, ExecutionStatus::Failed);
    assert!(
        reopened
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("rolled back to snapshot 1 by oncall: the finished run was wrong"),
        "{:?}",
        reopened.error
    );
    let out = run().await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(Some(json!(1))),
        "variables restored from snapshot 1 again"
    );
    assert_eq!(
        log.lock().unwrap()[6..].to_vec(),
        vec!["undo t2", "undo t1", "do t1", "do t2"]
    );
}

// ------------------------------------------------------------------ malformed definitions

#[rstest]
#[case::cycle("cycle.yaml", "a", "dependency cycle")]
#[case::unknown_dependency("unknown_dependency.yaml", "deploy", "unknown step `build`")]
#[case::unknown_kind("unknown_kind.yaml", "think", "unknown kind `telepathy`")]
#[case::bad_template("bad_template.yaml", "run", "bad template")]
#[case::undeclared_step("undeclared_step.yaml", "run", "not among its dependencies")]
#[tokio::test]
async fn malformed_workflow_files_name_the_step(
    #[case] file: &str,
    #[case] step: &str,
    #[case] message: &str,
) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file);
    let err = WorkflowDef::from_file(&path).unwrap_err();
    let text = err.to_string();
    match &err {
        RuntimeError::Definition { step: s, line, .. } => {
            assert_eq!(s.as_deref(), Some(step), "{text}");
            assert!(line.is_some(), "no line in {text}");
        }
        other => panic!("expected a definition error, got {other:?}"),
    }
    assert!(text.contains(message), "{text}");
    assert!(text.contains(&format!("step `{step}`")), "{text}");
}

#[tokio::test]
async fn an_invalid_definition_is_refused_before_anything_is_stored() {
    let t = TestDb::new(Backend::Sqlite).await;
    let w = wflo(&t, None).await;
    let mut def =
        WorkflowDef::from_yaml("name: ok\nsteps:\n  - id: a\n    kind: checkpoint\n").unwrap();
    def.steps[0].depends_on = vec!["a".into()];
    assert!(w.engine().run(&def, RunOptions::default()).await.is_err());
    assert!(t.definitions().list().await.unwrap().is_empty());
    assert!(t.executions().recent(10).await.unwrap().is_empty());
}

// ------------------------------------------------------------------ the closure API

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closure_api_memoizes_llm_calls(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let llm = fake_llm("```python\nprint('hi')\n```").await;
    let w = wflo(&t, Some(&llm)).await;
    let id = ExecutionId::new();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut results = Vec::new();
    for _ in 0..2 {
        let fail = fail.clone();
        results.push(
            w.engine()
                .run_fn(
                    "closure",
                    RunOptions {
                        execution_id: Some(id),
                        budget_usd: Some(dec!(1)),
                        ..Default::default()
                    },
                    |ctx| async move {
                        let plan = ctx
                            .llm("plan", LlmCall::new("gpt-4o-mini", "say hi").max_tokens(20))
                            .await?;
                        // The first run fails after its paid call; the rerun must not pay again.
                        if fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            return Err(RuntimeError::InvalidState(
                                "crashed after the call".into(),
                            ));
                        }
                        Ok(json!({"code": plan["code"]}))
                    },
                )
                .await,
        );
    }
    assert!(results[0].is_err());
    let out = results[1].as_ref().unwrap();
    assert_eq!(out.outputs["code"], json!("print('hi')\n"));
    assert_eq!(calls(&llm).await, 1, "the paid call was not repeated");
    assert_eq!(out.cost_usd, dec!(0.000021));
}

// ------------------------------------------------------------------ labels of a run

const LABELLED: &str = r#"
name: labelled
steps:
  - id: plan
    kind: llm
    model: gpt-4o-mini
    prompt: "say hi"
    max_tokens: 20
  - id: save
    kind: checkpoint
    depends_on: [plan]
  - id: gate
    kind: approval
    depends_on: [save]
    message: "go?"
    risk: low
    action: "say hi"
policies:
  approval: {auto_approve_max_risk: low}
"#;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_trace_and_correlation_ids_label_the_run_and_every_event(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let t = TestDb::new(backend).await;
    let llm = fake_llm("hi").await;
    let w = wflo(&t, Some(&llm)).await;
    let def = WorkflowDef::from_yaml(LABELLED).unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let out = w
        .engine()
        .run(
            &def,
            RunOptions {
                budget_usd: Some(dec!(0.10)),
                trace_id: Some(trace.into()),
                correlation_id: Some("ticket-1234".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.status, ExecutionStatus::Completed);
    let exec = t.executions().get(out.execution_id).await.unwrap();
    assert_eq!(exec.workflow_name, "labelled");
    assert_eq!(exec.budget_usd, Some(dec!(0.10)));
    assert_eq!(exec.trace_id.as_deref(), Some(trace));
    assert_eq!(exec.correlation_id.as_deref(), Some("ticket-1234"));
    assert_eq!(exec.inputs, json!({}), "inputs hold the inputs alone");

    let events = t.outbox().unpublished(1000).await.unwrap();
    let mut types = std::collections::BTreeSet::new();
    for e in &events {
        let ty = e.payload["event_type"].as_str().unwrap_or("").to_string();
        assert_eq!(e.payload["trace_id"], json!(trace), "{ty}: {}", e.payload);
        assert_eq!(e.payload["correlation_id"], json!("ticket-1234"), "{ty}");
        assert_eq!(e.payload["workflow_id"], json!("labelled"), "{ty}");
        types.insert(ty);
    }
    for ty in [
        "workflow.status",
        "step.status",
        "cost.recorded",
        "approval.requested",
        "approval.decided",
    ] {
        assert!(types.contains(ty), "no {ty} event in {types:?}");
    }
    // The ledger row is labelled with the run's workflow.
    let ledger = t
        .costs()
        .list_for_execution(out.execution_id)
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].workflow_name.as_deref(), Some("labelled"));
    assert_eq!(ledger[0].cost_usd, dec!(0.000021));

    // A label the schema cannot hold is refused before anything is stored.
    let before = t.executions().recent(100).await.unwrap().len();
    let err = w
        .engine()
        .run(
            &def,
            RunOptions {
                correlation_id: Some(String::new()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("correlation id"), "{err}");
    assert_eq!(t.executions().recent(100).await.unwrap().len(), before);
    w.shutdown().await;
}

// ------------------------------------------------------------------ who retries

/// A fake provider answering every chat completion with HTTP `status`.
async fn failing_llm(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": "no", "type": "server_error"}})),
        )
        .mount(&server)
        .await;
    server
}

/// A step allowed three attempts, on an HTTP provider that retries by itself.
const RETRIED_CALL: &str = r#"
name: retried-call
steps:
  - id: ask
    kind: llm
    model: gpt-4o-mini
    prompt: "say hi"
    max_tokens: 20
    retry: {max_attempts: 3, backoff_ms: 10}
"#;

/// One layer retries each failure: a 401 is asked once (no layer retries it), and a 503
/// storm is retried by the provider alone (its attempts), not again by the step's policy.
#[rstest]
#[case::unauthorized(401, 1)]
#[case::unavailable(503, 4)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_retried_by_one_layer(#[case] status: u16, #[case] expected: usize) {
    let t = TestDb::new(Backend::Sqlite).await;
    let llm = failing_llm(status).await;
    let w = wflo(&t, Some(&llm)).await;
    let def = WorkflowDef::from_yaml(RETRIED_CALL).unwrap();
    let err = w
        .engine()
        .run(
            &def,
            RunOptions {
                budget_usd: Some(dec!(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("http {status}")), "{err}");
    assert_eq!(
        calls(&llm).await,
        expected,
        "http {status}: the provider's default is 4 attempts and the step allows 3"
    );
    let exec = t.executions().recent(1).await.unwrap().remove(0);
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(
        exec.cost_usd,
        Decimal::ZERO,
        "nothing answered, nothing charged"
    );
    w.shutdown().await;
}
