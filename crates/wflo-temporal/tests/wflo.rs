#![cfg(feature = "integration")]
//! `WfloWorkflow` and `CodeExecutionWorkflow` against the Temporal dev server, PostgreSQL and
//! (for code runs) Docker with the sandbox image (`cargo xtask itest wflo-temporal`): a
//! definition's steps, its approvals and a code run all go through wflo-runtime, with a fake
//! OpenAI-compatible provider on loopback that counts the calls it receives. Each test has its
//! own task queue, database and provider.

mod common;

use common::config;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wflo_db::testing::TestDb;
use wflo_db::{ApprovalStatus, Backend, ExecutionStatus, Executor, StepStatus};
use wflo_llm::testing::openai_chat_completion;
use wflo_runtime::{Engine, FnTool, WorkflowDef};
use wflo_temporal::{
    ApprovalSignal, CODE_STEP, CodeExecutionRequest, Error, RunStatus, TemporalClient,
    TemporalConfig, TemporalWorker, WorkerHandle, wflo_workflow_id,
};
use wflo_types::{ApprovalId, ExecutionId};
use wflo_types::{EventEnvelope, EventPayload, SandboxPayload};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A fake OpenAI-compatible server: every chat completion answers `text` after `delay`, with
/// 40 prompt and 25 completion tokens.
async fn fake_llm(text: &str, delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay).set_body_json(
            openai_chat_completion("gpt-4o-mini-2024-07-18", text, 40, 25),
        ))
        .mount(&server)
        .await;
    server
}

async fn llm_calls(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

/// One test's world: its database, provider, engine (with an `echo` tool that counts its calls
/// and a `sleep` tool), worker and client.
struct World {
    t: TestDb,
    llm: MockServer,
    engine: Engine,
    tool_calls: Arc<AtomicUsize>,
    cfg: TemporalConfig,
    client: TemporalClient,
}

fn sandbox_image() -> String {
    std::env::var("WFLO_TEST_SANDBOX_IMAGE").expect(
        "WFLO_TEST_SANDBOX_IMAGE is not set; run `cargo xtask itest wflo-temporal` \
         (it starts docker, builds the sandbox image and exports the variable)",
    )
}

/// The sandbox of a test's engine: no warm pool, containers removed before a run returns.
fn sandbox() -> wflo_sandbox::SandboxConfig {
    wflo_sandbox::SandboxConfig::builder()
        .image(sandbox_image())
        .scope(common::unique("sbx"))
        .pool_size(0)
        .remove_in_background(false)
        .build()
        .expect("sandbox config")
}

async fn world(tag: &str, llm_delay: Duration) -> World {
    world_with(tag, llm_delay, None).await
}

/// A world whose engine runs code steps in `sandbox`.
async fn code_world(tag: &str, sandbox: Option<wflo_sandbox::SandboxConfig>) -> World {
    world_with(tag, Duration::ZERO, sandbox).await
}

async fn world_with(
    tag: &str,
    llm_delay: Duration,
    sandbox: Option<wflo_sandbox::SandboxConfig>,
) -> World {
    let t = TestDb::new(Backend::Postgres).await;
    let llm = fake_llm("The answer is 42.", llm_delay).await;
    let provider = wflo_llm::create_provider(
        "openai",
        &wflo_llm::ProviderConfig::builder()
            .api_key("sk-temporal-test")
            .base_url(&format!("{}/v1", llm.uri()))
            .unwrap()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .unwrap();
    let costs = wflo_cost::CostTracker::new(
        t.db().clone(),
        wflo_cost::PriceCatalog::embedded().clone(),
        wflo_cost::CostConfig::builder().build().unwrap(),
    );
    let tool_calls = Arc::new(AtomicUsize::new(0));
    let counter = tool_calls.clone();
    let mut engine = Engine::builder(t.db().clone());
    if let Some(sandbox) = sandbox {
        engine = engine.sandbox(sandbox);
    }
    let engine = engine
        .costs(costs)
        .llm(provider)
        .tool(
            "echo",
            FnTool::new(move |v| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({"echo": v}))
                }
            }),
        )
        .tool(
            "sleep",
            FnTool::new(|v: Value| async move {
                let secs = v.get("secs").and_then(Value::as_f64).unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(json!({"slept": secs}))
            }),
        )
        .build()
        .unwrap();
    let cfg = config(tag);
    let client = TemporalClient::connect(cfg.clone())
        .await
        .expect("the temporal dev server is needed; run `cargo xtask itest wflo-temporal`");
    World {
        t,
        llm,
        engine,
        tool_calls,
        cfg,
        client,
    }
}

impl World {
    async fn worker(&self) -> WorkerHandle {
        TemporalWorker::builder(self.cfg.clone())
            .engine(self.engine.clone())
            .spawn()
            .await
            .expect("worker starts")
    }

    async fn start(
        &self,
        yaml: &str,
        budget: Option<rust_decimal::Decimal>,
    ) -> (ExecutionId, String) {
        let def = WorkflowDef::from_yaml(yaml).unwrap();
        let execution = ExecutionId::new();
        self.client
            .start_wflo(execution, &def, serde_json::Map::new(), budget)
            .await
            .unwrap();
        (execution, wflo_workflow_id(execution))
    }

    async fn execution(&self, id: ExecutionId) -> wflo_db::Execution {
        self.t.executions().get(id).await.unwrap()
    }

    /// The `sandbox.execution` events the execution wrote to the outbox.
    async fn sandbox_events(&self, execution: ExecutionId) -> Vec<SandboxPayload> {
        self.t
            .outbox()
            .unpublished(10_000)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| serde_json::from_value::<EventEnvelope>(e.payload).ok())
            .filter(|e| e.execution_id == Some(execution))
            .filter_map(|e| match e.typed() {
                Ok(EventPayload::Sandbox(p)) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Waits until the run reports a pending approval and returns its id.
    async fn pending_approval(&self, workflow_id: &str) -> ApprovalId {
        for _ in 0..300 {
            if let Some(p) = self
                .client
                .wflo_pending_approval(workflow_id)
                .await
                .unwrap()
            {
                return p.approval_id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("workflow {workflow_id} never waited for an approval");
    }
}

const AGENT: &str = r#"
name: temporal-agent
steps:
  - id: ask
    kind: llm
    model: gpt-4o-mini
    prompt: "What is six times seven?"
    max_tokens: 100
  - id: note
    kind: tool
    depends_on: [ask]
    tool: echo
    input: {said: "{{ steps.ask.output.text }}"}
  - id: save
    kind: checkpoint
    depends_on: [note]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_runs_durably_within_budget_and_the_queries_report_it() {
    let w = world("within", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(AGENT, Some(dec!(0.50))).await;
    let out = w.client.wflo_result(&wf).await.unwrap();
    assert_eq!(out.execution_id, execution);
    assert_eq!(out.status, "COMPLETED");
    assert_eq!(
        out.outputs["note"]["echo"]["said"],
        json!("The answer is 42.")
    );
    // gpt-4o-mini at $0.15/$0.60 per 1M: 40 in + 25 out = $0.000021, exactly.
    assert_eq!(out.cost_usd, dec!(0.000021));
    assert_eq!(llm_calls(&w.llm).await, 1);
    assert_eq!(w.tool_calls.load(Ordering::SeqCst), 1);

    // The queries answer after the end too.
    let status = w.client.wflo_status(&wf).await.unwrap();
    assert_eq!(status.status, "COMPLETED");
    assert_eq!(status.completed_steps, vec!["ask", "note", "save"]);
    assert_eq!(status.execution_id, Some(execution));
    assert_eq!(w.client.wflo_cost(&wf).await.unwrap(), dec!(0.000021));
    assert_eq!(w.client.wflo_current_step(&wf).await.unwrap(), None);
    assert_eq!(w.client.wflo_pending_approval(&wf).await.unwrap(), None);

    // The database holds the execution (the save-execution activity), each step once.
    let exec = w.execution(execution).await;
    assert_eq!(exec.status, ExecutionStatus::Completed);
    assert_eq!(exec.cost_usd, dec!(0.000021));
    let steps = w.t.steps().list(execution).await.unwrap();
    let keys: Vec<&str> = steps.iter().map(|s| s.step_key.as_str()).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(steps.iter().all(|s| s.status == StepStatus::Completed));
    assert_eq!(w.t.budgets().count_pending().await.unwrap(), 0);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_fails_the_workflow_and_the_execution_before_the_call() {
    let w = world("overbudget", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(AGENT, Some(dec!(0.000001))).await;
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    match &err {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("budget"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other:?}"),
    }
    assert_eq!(llm_calls(&w.llm).await, 0, "the call was never made");
    let exec = w.execution(execution).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert!(
        exec.error.as_deref().unwrap_or_default().contains("budget"),
        "{:?}",
        exec.error
    );
    assert_eq!(w.client.wflo_status(&wf).await.unwrap().status, "FAILED");
    worker.shutdown().await.unwrap();
}

const GATED: &str = r#"
name: temporal-gated
steps:
  - id: gate
    kind: approval
    message: "Ship it?"
    risk: high
    action: {deploy: "v2"}
    timeout_secs: 120
  - id: after
    kind: tool
    depends_on: [gate]
    tool: echo
    input: {shipped: true}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approve_signal_approves_and_a_signal_for_another_approval_changes_nothing() {
    let w = world("approve", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(GATED, None).await;
    let approval = w.pending_approval(&wf).await;
    assert_eq!(
        w.client.wflo_current_step(&wf).await.unwrap().as_deref(),
        Some("gate")
    );
    let status = w.client.wflo_status(&wf).await.unwrap();
    assert_eq!(status.status, "WAITING_APPROVAL");
    let pending = status
        .pending_approval
        .expect("the status names the approval");
    assert_eq!(
        (pending.step.as_str(), pending.message.as_str()),
        ("gate", "Ship it?")
    );
    // Bad input is refused before anything is sent; an unknown run is not found.
    assert!(matches!(
        w.client
            .approve(&wf, ApprovalSignal::new(approval, " "))
            .await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        w.client
            .approve(
                &wflo_workflow_id(ExecutionId::new()),
                ApprovalSignal::new(approval, "alice")
            )
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        w.execution(execution).await.status,
        ExecutionStatus::WaitingApproval
    );
    // A signal needs no worker, so the client no longer asks the run first: a signal for an
    // approval the run does not wait for is delivered and changes nothing.
    w.client
        .approve(&wf, ApprovalSignal::new(ApprovalId::new(), "mallory"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.client
            .wflo_pending_approval(&wf)
            .await
            .unwrap()
            .map(|p| p.approval_id),
        Some(approval),
        "the run still waits for its own approval"
    );
    assert_eq!(
        w.t.approvals().get(approval).await.unwrap().status,
        ApprovalStatus::Pending
    );
    w.client
        .approve(
            &wf,
            ApprovalSignal::new(approval, "alice").reason("looks good"),
        )
        .await
        .unwrap();
    let out = w.client.wflo_result(&wf).await.unwrap();
    assert_eq!(out.outputs["gate"]["decision"], json!("APPROVED"));
    assert_eq!(out.outputs["gate"]["approved_by"], json!("alice"));
    assert_eq!(out.outputs["after"]["echo"]["shipped"], json!(true));
    let row = w.t.approvals().get(approval).await.unwrap();
    assert_eq!(row.status, ApprovalStatus::Approved);
    assert_eq!(row.decided_by.as_deref(), Some("alice"));
    assert_eq!(row.decision_reason.as_deref(), Some("looks good"));
    assert_eq!(
        w.execution(execution).await.status,
        ExecutionStatus::Completed
    );
    // Decided and closed: a late decision is refused, and the first one stands.
    assert!(
        w.client
            .reject(&wf, ApprovalSignal::new(approval, "mallory"))
            .await
            .is_err()
    );
    let row = w.t.approvals().get(approval).await.unwrap();
    assert_eq!(row.status, ApprovalStatus::Approved);
    assert_eq!(row.decided_by.as_deref(), Some("alice"));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reject_signal_rejects_and_fails_the_execution() {
    let w = world("reject", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(GATED, None).await;
    let approval = w.pending_approval(&wf).await;
    w.client
        .reject(
            &wf,
            ApprovalSignal::new(approval, "bob").reason("not today"),
        )
        .await
        .unwrap();
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(
        matches!(&err, Error::WorkflowFailed { message, .. } if message.contains("rejected")),
        "{err}"
    );
    assert_eq!(
        w.tool_calls.load(Ordering::SeqCst),
        0,
        "the gated step never ran"
    );
    let row = w.t.approvals().get(approval).await.unwrap();
    assert_eq!(row.status, ApprovalStatus::Rejected);
    assert_eq!(row.decided_by.as_deref(), Some("bob"));
    assert_eq!(w.execution(execution).await.status, ExecutionStatus::Failed);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_timeout_applies_its_policy_on_a_durable_timer() {
    let w = world("timeout", Duration::ZERO).await;
    let worker = w.worker().await;
    let approve_on_timeout = GATED
        .replace(
            "timeout_secs: 120",
            "timeout_secs: 1\n    on_timeout: approve",
        )
        .replace("temporal-gated", "temporal-gated-approve");
    let t0 = Instant::now();
    let (_, wf) = w.start(&approve_on_timeout, None).await;
    let out = w.client.wflo_result(&wf).await.unwrap();
    assert_eq!(out.outputs["gate"]["approved_by"], json!("system:timeout"));
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    let reject_on_timeout = GATED
        .replace(
            "timeout_secs: 120",
            "timeout_secs: 1\n    on_timeout: reject",
        )
        .replace("temporal-gated", "temporal-gated-reject");
    let (execution, wf) = w.start(&reject_on_timeout, None).await;
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(matches!(err, Error::WorkflowFailed { .. }), "{err}");
    let approvals = w.t.approvals().list(execution).await.unwrap();
    assert_eq!(approvals[0].status, ApprovalStatus::Expired);
    assert_eq!(approvals[0].decided_by.as_deref(), Some("system:timeout"));
    assert_eq!(w.execution(execution).await.status, ExecutionStatus::Failed);
    assert_eq!(
        w.tool_calls.load(Ordering::SeqCst),
        1,
        "only the approved run's tool ran"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_cancels_the_execution() {
    let w = world("cancelreq", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(GATED, None).await;
    w.pending_approval(&wf).await;
    w.client
        .wflo_cancel_request(&wf, "changed my mind")
        .await
        .unwrap();
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    let exec = w.execution(execution).await;
    assert_eq!(exec.status, ExecutionStatus::Cancelled);
    assert!(
        exec.error
            .as_deref()
            .unwrap_or_default()
            .contains("changed my mind"),
        "{:?}",
        exec.error
    );
    assert_eq!(w.client.wflo_status(&wf).await.unwrap().status, "CANCELLED");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_an_approval_is_cancelled_through_temporal() {
    let w = world("cancelwait", Duration::ZERO).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(GATED, None).await;
    let approval = w.pending_approval(&wf).await;
    w.client.cancel(&wf, "withdrawn").await.unwrap();
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    assert_eq!(
        w.client.describe(&wf).await.unwrap().status,
        RunStatus::Cancelled
    );
    assert_eq!(
        w.execution(execution).await.status,
        ExecutionStatus::Cancelled
    );
    assert_eq!(
        w.t.approvals().get(approval).await.unwrap().status,
        ApprovalStatus::Pending,
        "nobody decided"
    );
    assert_eq!(
        w.tool_calls.load(Ordering::SeqCst),
        0,
        "the gated step never ran"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflow_releases_the_reservation_of_the_call_in_flight() {
    // The provider answers after 30 s: the cancellation arrives while the call (and its budget
    // reservation) is open.
    let w = world("cancel", Duration::from_secs(30)).await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(AGENT, Some(dec!(0.50))).await;
    for _ in 0..300 {
        if llm_calls(&w.llm).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(llm_calls(&w.llm).await, 1, "the call is in flight");
    assert_eq!(w.t.budgets().count_pending().await.unwrap(), 1);
    w.client.cancel(&wf, "stop spending").await.unwrap();
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
    let exec = w.execution(execution).await;
    assert_eq!(exec.status, ExecutionStatus::Cancelled);
    assert_eq!(exec.cost_usd, dec!(0), "nothing was charged");
    assert_eq!(
        w.t.budgets().count_pending().await.unwrap(),
        0,
        "the reservation was released"
    );
    let budget =
        w.t.budgets()
            .find(&wflo_db::BudgetKey::new(
                format!("execution:{execution}"),
                "",
            ))
            .await
            .unwrap()
            .expect("the execution's budget");
    assert_eq!(budget.reserved_usd, dec!(0));
    assert_eq!(budget.spent_usd, dec!(0));
    worker.shutdown().await.unwrap();
}

const LONG: &str = r#"
name: temporal-long
steps:
  - id: ask
    kind: llm
    model: gpt-4o-mini
    prompt: "What is six times seven?"
    max_tokens: 100
  - id: wait
    kind: tool
    depends_on: [ask]
    tool: sleep
    input: {secs: 3}
  - id: note
    kind: tool
    depends_on: [wait]
    tool: echo
    input: {said: "{{ steps.ask.output.text }}"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_replaced_and_every_step_runs_once() {
    let w = world("kill", Duration::ZERO).await;
    let first = w.worker().await;
    let (execution, wf) = w.start(LONG, Some(dec!(0.50))).await;
    for _ in 0..300 {
        if w.client.wflo_current_step(&wf).await.unwrap().as_deref() == Some("wait") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        w.client.wflo_current_step(&wf).await.unwrap().as_deref(),
        Some("wait")
    );
    first.kill().await.unwrap();
    let second = w.worker().await;
    let out = tokio::time::timeout(Duration::from_secs(90), w.client.wflo_result(&wf))
        .await
        .expect("the run completes on the new worker")
        .unwrap();
    assert_eq!(out.status, "COMPLETED");
    assert_eq!(
        out.outputs["note"]["echo"]["said"],
        json!("The answer is 42.")
    );
    assert_eq!(llm_calls(&w.llm).await, 1, "the paid call was not repeated");
    assert_eq!(w.tool_calls.load(Ordering::SeqCst), 1);
    let steps = w.t.steps().list(execution).await.unwrap();
    let mut keys: Vec<&str> = steps.iter().map(|s| s.step_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["ask", "note", "wait"], "each step once");
    assert!(steps.iter().all(|s| s.status == StepStatus::Completed));
    let ledger = w.t.costs().list_for_execution(execution).await.unwrap();
    assert_eq!(ledger.len(), 1, "charged once");
    assert_eq!(w.execution(execution).await.cost_usd, dec!(0.000021));
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_that_fails_validation_is_refused_before_a_start() {
    let w = world("invalid", Duration::ZERO).await;
    let mut def = WorkflowDef::from_yaml(AGENT).unwrap();
    def.steps[1].depends_on = vec!["nowhere".into()];
    let execution = ExecutionId::new();
    let err = w
        .client
        .start_wflo(execution, &def, serde_json::Map::new(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest(m) if m.contains("nowhere")),
        "{err}"
    );
    let nothing = w.client.describe(&wflo_workflow_id(execution)).await;
    assert!(
        matches!(nothing, Err(Error::NotFound { .. })),
        "{nothing:?}"
    );
}

/// The `code` step row of a code run's execution.
async fn code_step(w: &World, execution: ExecutionId) -> wflo_db::Step {
    let steps = w.t.steps().list(execution).await.unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].step_key, CODE_STEP);
    steps[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_execution_runs_as_a_code_step_with_its_row_and_sandbox_event() {
    let w = code_world("code-ok", Some(sandbox())).await;
    let worker = w.worker().await;
    let id = common::unique("code-ok");
    w.client
        .start_code_execution(
            &id,
            CodeExecutionRequest::python(
                "import sys\nprint('out', sum(range(10)))\nprint('err', file=sys.stderr)",
            )
            .timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    let out = w.client.code_execution_result(&id).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.status, "succeeded");
    assert_eq!(out.stdout, "out 45\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.exit_code, 0);
    assert!(!out.timed_out && !out.oom_killed);
    assert_eq!(
        w.client.describe(&id).await.unwrap().workflow_type,
        "CodeExecutionWorkflow"
    );

    // The run is an execution of the code definition: one COMPLETED `code` step holding the
    // output, its sandbox event in the outbox, the execution COMPLETED.
    let exec = w.execution(out.execution_id).await;
    assert_eq!(exec.status, ExecutionStatus::Completed);
    assert_eq!(exec.workflow_name, wflo_temporal::CODE_WORKFLOW);
    let step = code_step(&w, out.execution_id).await;
    assert_eq!(step.status, StepStatus::Completed);
    let stored = step.outputs.expect("the step's output");
    assert_eq!(stored["stdout"], json!("out 45\n"));
    let events = w.sandbox_events(out.execution_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].exit_code, Some(0));
    assert_eq!(events[0].language, "python");

    // Bash too; a second run is a second execution of the same stored definition.
    let id2 = common::unique("code-ok2");
    w.client
        .start_code_execution(
            &id2,
            CodeExecutionRequest::bash("echo -n hi; echo oops >&2"),
        )
        .await
        .unwrap();
    let out2 = w.client.code_execution_result(&id2).await.unwrap();
    assert!(out2.success(), "{out2:?}");
    assert_eq!(
        (out2.stdout.as_str(), out2.stderr.as_str()),
        ("hi", "oops\n")
    );
    assert_ne!(out2.execution_id, out.execution_id);
    assert_eq!(
        w.execution(out2.execution_id).await.workflow_id,
        exec.workflow_id,
        "the definition is stored once"
    );
    assert_eq!(
        w.sandbox_events(out2.execution_id).await[0].language,
        "bash"
    );
    worker.shutdown().await.unwrap();
}

/// The execution a code run recorded under, found by its one definition's name.
async fn only_code_execution(w: &World) -> wflo_db::Execution {
    let all = w.t.executions().recent(100).await.unwrap();
    let mut code: Vec<_> = all
        .into_iter()
        .filter(|e| e.workflow_name == wflo_temporal::CODE_WORKFLOW)
        .collect();
    assert_eq!(code.len(), 1, "{code:?}");
    code.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_program_fails_the_code_run_once_with_its_exit_and_stderr() {
    let w = code_world("code-err", Some(sandbox())).await;
    let worker = w.worker().await;
    let id = common::unique("code-err");
    w.client
        .start_code_execution(
            &id,
            CodeExecutionRequest::python(
                "import sys\nprint('out')\nprint('boom', file=sys.stderr)\nsys.exit(3)",
            ),
        )
        .await
        .unwrap();
    let err = w.client.code_execution_result(&id).await.unwrap_err();
    match &err {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("code failed (exit 3"), "{message}");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    assert_eq!(
        w.client.describe(&id).await.unwrap().status,
        RunStatus::Failed
    );
    let exec = only_code_execution(&w).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert!(
        exec.error.as_deref().unwrap_or_default().contains("exit 3"),
        "{:?}",
        exec.error
    );
    let step = code_step(&w, exec.id).await;
    assert_eq!(step.status, StepStatus::Failed);
    assert!(
        step.error.as_deref().unwrap_or_default().contains("boom"),
        "{:?}",
        step.error
    );
    // Ran once: a failed program is the program's verdict, not retried by Temporal.
    let events = w.sandbox_events(exec.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].exit_code, Some(3));
    assert_eq!(events[0].status, "failed");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_run_times_out_and_the_program_is_killed() {
    let w = code_world("code-timeout", Some(sandbox())).await;
    let worker = w.worker().await;
    let id = common::unique("code-timeout");
    let t0 = Instant::now();
    w.client
        .start_code_execution(
            &id,
            CodeExecutionRequest::python(
                "import time\nprint('started', flush=True)\ntime.sleep(60)",
            )
            .timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let err = w.client.code_execution_result(&id).await.unwrap_err();
    match &err {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    let exec = only_code_execution(&w).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(code_step(&w, exec.id).await.status, StepStatus::Failed);
    let events = w.sandbox_events(exec.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].timed_out, "{events:?}");
    assert_eq!(events[0].exit_code, Some(137));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_run_on_an_engine_without_a_sandbox_fails_at_once_saying_so() {
    let w = code_world("code-nosbx", None).await;
    let worker = w.worker().await;
    let id = common::unique("code-nosbx");
    let t0 = Instant::now();
    w.client
        .start_code_execution(&id, CodeExecutionRequest::python("print(1)"))
        .await
        .unwrap();
    let err = w.client.code_execution_result(&id).await.unwrap_err();
    match &err {
        Error::WorkflowFailed { message, .. } => {
            assert!(message.contains("need the sandbox"), "{message}")
        }
        other => panic!("expected a failed workflow, got {other}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(
        only_code_execution(&w).await.status,
        ExecutionStatus::Failed
    );
    worker.shutdown().await.unwrap();
}

/// A step allowed three attempts, on an HTTP provider that retries by itself (4 attempts).
const RETRIED_CALL: &str = r#"
name: temporal-retried-call
steps:
  - id: ask
    kind: llm
    model: gpt-4o-mini
    prompt: "say hi"
    max_tokens: 20
    retry: {max_attempts: 3, backoff_ms: 10}
"#;

/// One layer retries each failure on Temporal too: a 401 is asked once (neither the step nor
/// the activity retries it), and a 503 storm gets the provider's own 4 attempts, not again
/// the step's 3 or the activity's 5.
async fn failing_call_is_retried_by_one_layer(status: u16, expected: usize) {
    let w = world(&format!("layers{status}"), Duration::ZERO).await;
    w.llm.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(status)
                .set_body_json(json!({"error": {"message": "no", "type": "server_error"}})),
        )
        .mount(&w.llm)
        .await;
    let worker = w.worker().await;
    let (execution, wf) = w.start(RETRIED_CALL, Some(dec!(1))).await;
    let err = w.client.wflo_result(&wf).await.unwrap_err();
    assert!(err.to_string().contains(&format!("http {status}")), "{err}");
    assert_eq!(llm_calls(&w.llm).await, expected, "http {status}");
    let exec = w.execution(execution).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(exec.cost_usd, dec!(0));
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_call_is_asked_once() {
    failing_call_is_retried_by_one_layer(401, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_provider_is_retried_by_the_provider_alone() {
    failing_call_is_retried_by_one_layer(503, 4).await;
}
