//! The facade an embedder lives in: everything below names Wflo through `wflo_core` alone (no
//! inner crate), on a SQLite file, with no service — part of plain `cargo test`.
//!
//! Behind the `integration` feature (`cargo xtask itest wflo-e2e`): who retries a provider's
//! answer, counted on a fake provider.

use rust_decimal::Decimal;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use wflo_core::cache::{
    CacheValue, DistributedLock, LlmCache, LlmCacheConfig, LlmCacheKey, LockOptions,
};
use wflo_core::cost::{
    BudgetReservation, CostTracker, Period, ReserveRequest, RunLabels, Scope, Settled, TokenUsage,
};
use wflo_core::db::{
    ApprovalStatus, Executor as _, NewApproval, NewDefinition, NewExecution, NewStep, RiskLevel,
    StepStatus, TimeoutPolicy,
};
use wflo_core::{Config, Error, ErrorKind, FnTool, RunOptions, RuntimeError, Wflo, WorkflowDef};

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("wflo-facade-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wflo on a SQLite file in `dir`, with a prices file (for a private model) and a `double`
/// tool, configured through the facade's builder only.
async fn connect(dir: &TempDir) -> Wflo {
    let prices = dir.0.join("prices.toml");
    std::fs::write(
        &prices,
        "[[model]]\nid = \"in-house-7b\"\nprovider = \"self\"\ninput = \"1\"\noutput = \"2\"\n\
         tokenizer = \"cl100k_base\"\n",
    )
    .unwrap();
    let config = Config::builder()
        .database_url(format!(
            "sqlite://{}?mode=rwc",
            dir.0.join("wflo.db").display()
        ))
        .prices_file(&prices)
        .docker_socket("unix:///nonexistent/docker.sock")
        .build()
        .expect("a valid configuration");
    assert_eq!(config.prices_file(), Some(prices.as_path()));
    assert_eq!(config.docker_socket(), "unix:///nonexistent/docker.sock");
    Wflo::connect_with(config, |b| {
        b.tool(
            "double",
            FnTool::new(|input: serde_json::Value| async move {
                let n = input["n"].as_i64().ok_or("no n")?;
                Ok(json!({ "n": n * 2 }))
            }),
        )
    })
    .await
    .expect("connect to the SQLite file")
}

#[tokio::test]
async fn an_embedder_runs_a_tool_workflow_and_reads_its_steps() {
    let dir = TempDir::new();
    let wflo = connect(&dir).await;
    let def = WorkflowDef::from_yaml(
        "name: doubler\nsteps:\n  - id: double\n    kind: tool\n    tool: double\n    input:\n      n: 21\n",
    )
    .unwrap();
    let options = RunOptions {
        correlation_id: Some("order-7".into()),
        ..RunOptions::default()
    };
    let outcome = wflo.engine().run(&def, options).await.unwrap();
    assert_eq!(outcome.status.as_str(), "COMPLETED");
    assert!(
        outcome.outputs.to_string().contains("42"),
        "{}",
        outcome.outputs
    );

    let steps = wflo.db().steps().list(outcome.execution_id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Completed);
    let exec = wflo
        .db()
        .executions()
        .get(outcome.execution_id)
        .await
        .unwrap();
    assert_eq!(exec.correlation_id.as_deref(), Some("order-7"));
    wflo.shutdown().await;
}

#[tokio::test]
async fn an_embedder_writes_rows_and_a_second_decision_is_a_conflict() {
    let dir = TempDir::new();
    let wflo = connect(&dir).await;
    let db = wflo.db();
    let def = db
        .definitions()
        .create(NewDefinition::new("by-hand", json!({"steps": []})))
        .await
        .unwrap();
    let exec = db
        .executions()
        .create(NewExecution::new(def.id, json!({})))
        .await
        .unwrap();
    let step = db
        .steps()
        .create(NewStep {
            execution_id: exec.id,
            step_key: "gate".into(),
            step_type: "approval".into(),
            inputs: None,
        })
        .await
        .unwrap();
    assert_eq!(step.status, StepStatus::Pending);
    let approval = db
        .approvals()
        .create(NewApproval {
            execution_id: exec.id,
            step_key: Some("gate".into()),
            message: "ship it?".into(),
            context: json!({}),
            risk_level: RiskLevel::Low,
            action_fingerprint: "fp".into(),
            approver_group: None,
            timeout_at: None,
            timeout_policy: TimeoutPolicy::Reject,
            escalate_to: None,
        })
        .await
        .unwrap();

    let first = wflo
        .decide_approval(approval.id, true, "alice", None)
        .await
        .unwrap();
    assert_eq!(first.approval.status, ApprovalStatus::Approved);
    let second: Error = wflo
        .decide_approval(approval.id, false, "bob", None)
        .await
        .expect_err("a decision is taken once");
    assert!(
        matches!(&second, Error::Runtime(RuntimeError::AlreadyDecided { .. })),
        "{second:?}"
    );
    assert_eq!(second.kind(), ErrorKind::Conflict);
    assert!(!second.is_retryable());
    assert!(std::error::Error::source(&second).is_some());

    let missing: Error = wflo
        .decide_approval(uuid::Uuid::new_v4(), true, "alice", None)
        .await
        .expect_err("no such approval");
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing:?}");
}

#[tokio::test]
async fn an_embedder_reserves_and_settles_a_call() {
    let dir = TempDir::new();
    let wflo = connect(&dir).await;
    let costs: &CostTracker = wflo.engine().costs();
    let def = wflo
        .db()
        .definitions()
        .create(NewDefinition::new("priced", json!({"steps": []})))
        .await
        .unwrap();
    let exec = wflo
        .db()
        .executions()
        .create(NewExecution::new(def.id, json!({})))
        .await
        .unwrap();
    let scope = Scope::Execution(exec.id);
    costs
        .set_budget(&scope, Period::Total, chrono::Utc::now(), Decimal::ONE)
        .await
        .unwrap();

    let request = ReserveRequest {
        request_id: "call-1".into(),
        scopes: vec![scope.clone()],
        amount_usd: Decimal::new(5, 1),
        execution_id: Some(exec.id),
        labels: Some(RunLabels::workflow("priced")),
    };
    let reservation: BudgetReservation = costs.reserve(&request).await.unwrap();
    // The price of the model comes from the prices file given to the builder.
    let usage = TokenUsage::new("in-house-7b", 1_000_000, 500_000);
    let settled: Settled = costs.settle(&reservation, None, &usage).await.unwrap();
    assert_eq!(settled.charged_usd, Decimal::new(2, 0));

    // The rest of the budget cannot hold a second worst case of 0.5 USD... nor can it be
    // settled twice.
    let again: Error = costs
        .settle(&reservation, None, &usage)
        .await
        .expect_err("settled once")
        .into();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again:?}");
    let over: Error = costs
        .reserve(&ReserveRequest {
            request_id: "call-2".into(),
            ..request
        })
        .await
        .expect_err("the budget is spent")
        .into();
    assert_eq!(over.kind(), ErrorKind::BudgetExceeded, "{over:?}");
    assert!(!over.is_retryable());
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Answer(String);

impl CacheValue for Answer {
    const KIND: &'static str = "answer";
    const SCHEMA_VERSION: u32 = 1;
}

#[tokio::test]
async fn an_embedder_caches_answers_and_takes_fenced_locks() {
    let cache = LlmCache::in_process(100, LlmCacheConfig::builder().build().unwrap());
    let key = LlmCacheKey::builder("app", "gpt-4o-mini")
        .messages(json!([{"role": "user", "content": "hi"}]))
        .temperature(0.0)
        .build()
        .unwrap();
    assert!(cache.get::<Answer>(&key).await.unwrap().is_none());
    cache.set(&key, &Answer("hello".into())).await.unwrap();
    let hit: Option<Answer> = cache.get(&key).await.unwrap();
    assert_eq!(hit.map(|a| a.0).as_deref(), Some("hello"));

    let locks = DistributedLock::in_process();
    let opts = LockOptions::builder(Duration::from_secs(5))
        .no_renewal()
        .build()
        .unwrap();
    let first = locks.try_acquire("nightly", &opts).await.unwrap().unwrap();
    assert!(locks.try_acquire("nightly", &opts).await.unwrap().is_none());
    let token = first.fencing_token();
    first.release().await.unwrap();
    let second = locks.try_acquire("nightly", &opts).await.unwrap().unwrap();
    assert!(second.fencing_token() > token);
}

/// Who retries a provider's answer, counted on a fake OpenAI-compatible provider on loopback
/// (see ARCHITECTURE.md, "Who retries").
#[cfg(feature = "integration")]
mod who_retries {
    use super::*;
    use wflo_core::llm::{ProviderConfig, RetryConfig, create_provider};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const ASK: &str = "name: ask\nsteps:\n  - id: ask\n    kind: llm\n    model: gpt-4o-mini\n    \
                       prompt: hello\n    max_tokens: 20\n";

    /// Runs a one-LLM-step workflow in-process against a provider answering `status` to every
    /// call, with `attempts` HTTP attempts in the provider; returns the run's error (or its
    /// failed status) and the calls the provider received.
    async fn run_against(status: u16, attempts: u32) -> (String, usize) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(ResponseTemplate::new(status).set_body_string("{\"error\": {}}"))
            .mount(&server)
            .await;
        let provider = create_provider(
            "openai",
            &ProviderConfig::builder()
                .api_key("sk-facade-test")
                .base_url(&format!("{}/v1", server.uri()))
                .unwrap()
                .retry(
                    RetryConfig::builder()
                        .max_attempts(attempts)
                        .initial_backoff(Duration::from_millis(5))
                        .jitter(false)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .unwrap();
        let dir = TempDir::new();
        let config = Config::builder()
            .database_url(format!(
                "sqlite://{}?mode=rwc",
                dir.0.join("wflo.db").display()
            ))
            .build()
            .unwrap();
        let wflo = Wflo::connect_with(config, |b| b.llm(provider))
            .await
            .unwrap();
        let def = WorkflowDef::from_yaml(ASK).unwrap();
        let result = match wflo.engine().run(&def, RunOptions::default()).await {
            Ok(outcome) => {
                assert_eq!(outcome.status.as_str(), "FAILED", "{outcome:?}");
                format!("run {}", outcome.status.as_str())
            }
            Err(e) => {
                let e = Error::from(e);
                format!("{:?} {e}", e.kind())
            }
        };
        let calls = server.received_requests().await.map_or(0, |r| r.len());
        (result, calls)
    }

    #[tokio::test]
    async fn a_refused_key_is_sent_once_per_run_in_process() {
        let (result, calls) = run_against(401, 4).await;
        assert_eq!(calls, 1, "a 401 is retried by no layer ({result})");
    }

    #[tokio::test]
    async fn a_503_storm_is_retried_by_the_provider_alone_in_process() {
        let (result, calls) = run_against(503, 3).await;
        assert_eq!(
            calls, 3,
            "the provider's attempts and no step retry on top ({result})"
        );
    }
}
