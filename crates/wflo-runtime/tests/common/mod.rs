//! What the hermetic engine suite needs: a database of the test's own (SQLite in memory), a
//! fake LLM provider in the process that counts its calls, an engine on both, and the events a
//! run wrote, typed. Each test binary uses a part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wflo_db::{Db, DbConfig, Executor};
use wflo_llm::{ChatRequest, ChatResponse, ChatStream, FinishReason, LlmProvider, Usage};
use wflo_runtime::{Engine, EngineBuilder, EngineConfig};
use wflo_types::{EventEnvelope, EventPayload, ExecutionId};

/// Prompt and completion tokens of every answer of [`FakeLlm`]: 40 in, 25 out.
pub(crate) const USAGE: (u64, u64) = (40, 25);

/// A chat model in the process: answers every request with one text and [`USAGE`], after
/// failing the first `failures` requests with a transient error (HTTP 503). Counts the requests
/// it receives and keeps their user prompts.
#[derive(Debug)]
pub(crate) struct FakeLlm {
    text: String,
    failures: AtomicUsize,
    calls: AtomicUsize,
    prompts: Mutex<Vec<String>>,
}

impl FakeLlm {
    /// Answers every request with `text`.
    pub(crate) fn answering(text: &str) -> Arc<FakeLlm> {
        FakeLlm::failing_first(0, text)
    }

    /// Fails the first `failures` requests with an HTTP 503, then answers with `text`.
    pub(crate) fn failing_first(failures: usize, text: &str) -> Arc<FakeLlm> {
        Arc::new(FakeLlm {
            text: text.to_string(),
            failures: AtomicUsize::new(failures),
            calls: AtomicUsize::new(0),
            prompts: Mutex::new(Vec::new()),
        })
    }

    /// Requests received (failed ones included).
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The last user message of each request, in order.
    pub(crate) fn prompts(&self) -> Vec<String> {
        self.prompts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl LlmProvider for FakeLlm {
    fn name(&self) -> &str {
        "fake"
    }

    async fn complete(&self, req: &ChatRequest) -> wflo_llm::Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let prompt = req
            .messages()
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        self.prompts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(prompt);
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            return Err(wflo_llm::Error::Status {
                provider: "fake".into(),
                status: 503,
                url: "http://fake.invalid/v1/chat/completions".into(),
                body: "overloaded, try again".into(),
                attempts: 1,
                request_id: None,
            });
        }
        Ok(ChatResponse {
            text: self.text.clone(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            model: "gpt-4o-mini-2024-07-18".into(),
            usage: Usage {
                prompt_tokens: USAGE.0,
                completion_tokens: USAGE.1,
                ..Usage::default()
            },
            request_id: Some(format!("fake-{n}")),
            latency: Duration::from_millis(1),
        })
    }

    async fn stream(&self, _req: &ChatRequest) -> wflo_llm::Result<ChatStream> {
        Err(wflo_llm::Error::InvalidRequest(
            "the fake provider does not stream".into(),
        ))
    }
}

/// A fresh, migrated SQLite database in memory, owned by the calling test.
pub(crate) async fn memory_db() -> Db {
    Db::connect(
        &DbConfig::builder("sqlite::memory:")
            .build()
            .expect("config"),
    )
    .await
    .expect("open a SQLite database in memory")
}

/// An engine on a database of its own, with `llm` as its provider (none: no provider) and
/// approvals polled every 10 ms; `setup` registers tools.
pub(crate) async fn engine(
    llm: Option<&Arc<FakeLlm>>,
    setup: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> Engine {
    let mut builder = Engine::builder(memory_db().await).config(
        EngineConfig::builder()
            .approval_poll(Duration::from_millis(10))
            .driver_name("hermetic-test")
            .build()
            .expect("engine config"),
    );
    if let Some(llm) = llm {
        builder = builder.llm(llm.clone());
    }
    setup(builder).build().expect("engine")
}

/// The events written for `execution`, in order, typed.
pub(crate) async fn events(db: &Db, execution: ExecutionId) -> Vec<EventPayload> {
    let key = execution.to_string();
    db.outbox()
        .unpublished(10_000)
        .await
        .expect("read the outbox")
        .into_iter()
        .filter(|e| e.key.as_deref() == Some(key.as_str()))
        .map(|e| {
            serde_json::from_value::<EventEnvelope>(e.payload)
                .expect("an event envelope")
                .typed()
                .expect("a known event")
        })
        .collect()
}

/// The statuses the `step.status` events of `step` announced, in order.
pub(crate) fn step_statuses(events: &[EventPayload], step: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            EventPayload::StepStatus(p) if p.step_id == step => Some(p.status.clone()),
            _ => None,
        })
        .collect()
}

/// The statuses the `workflow.status` events announced, in order.
pub(crate) fn workflow_statuses(events: &[EventPayload]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            EventPayload::WorkflowStatus(p) => Some(p.status.clone()),
            _ => None,
        })
        .collect()
}
