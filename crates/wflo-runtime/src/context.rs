//! The step logic both engines share: memoized steps (LLM with budget reservation, code in the
//! sandbox, approvals, checkpoints, tools), each persisted with its event in one transaction.

use crate::definition::{RetryPolicy, StepDef, StepKind, WorkflowDef};
use crate::engine::Engine;
use crate::tools::Observer;
use crate::{Error, Result, events, template};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;
use wflo_cost::{ChatMessage, ReserveRequest, Scope, TokenUsage};
use wflo_db::{
    Approval, ApprovalDecision, ApprovalStatus, Db, ExecutionStatus, Executor, NewApproval,
    NewStep, Outcome, RiskLevel, StepStatus, TimeoutPolicy,
};
use wflo_llm::{ChatRequest, ChatResponse};
use wflo_types::RunLabels;

pub(crate) struct RunState {
    pub(crate) inputs: Value,
    pub(crate) outputs: Map<String, Value>,
    pub(crate) vars: Map<String, Value>,
}

/// The handle a workflow body uses to run durable steps. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) engine: Engine,
    pub(crate) execution: Uuid,
    /// The run's workflow name, trace and correlation ids, carried by every event it writes.
    pub(crate) labels: Arc<RunLabels>,
    pub(crate) budget: Option<Decimal>,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) state: Arc<Mutex<RunState>>,
    /// The execution's step rows by key, loaded once when the run starts and updated by each
    /// change this run makes: memoization needs no query per step.
    pub(crate) steps: Arc<Mutex<HashMap<String, wflo_db::Step>>>,
    /// The driver's lease when the in-process engine drives the run (checked before each step;
    /// an engine that keeps the control flow itself, Temporal, holds none).
    pub(crate) lease: Arc<std::sync::OnceLock<Arc<crate::lease::Held>>>,
    /// Events a step's body produced, by step key, written with the step's COMPLETED or
    /// FAILED update (one transaction: the result and its event commit together).
    pub(crate) pending_events: Arc<Mutex<HashMap<String, Vec<wflo_db::NewOutboxEvent>>>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("execution", &self.execution)
            .field("workflow", &self.labels.workflow)
            .finish()
    }
}

/// An LLM call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Model id (resolved in the price catalogue).
    pub model: String,
    /// System prompt.
    pub system: Option<String>,
    /// User prompt.
    pub prompt: String,
    /// Output cap; bounds the budget reservation.
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0 or absent: cacheable).
    pub temperature: Option<f64>,
}

impl LlmCall {
    /// A call of `model` with `prompt`.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        LlmCall {
            model: model.into(),
            system: None,
            prompt: prompt.into(),
            max_tokens: None,
            temperature: None,
        }
    }
    /// Sets the output cap.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sets the system prompt.
    pub fn system(mut self, s: impl Into<String>) -> Self {
        self.system = Some(s.into());
        self
    }
}

/// A code run in the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeCall {
    /// `python` or `bash`.
    pub language: String,
    /// The program.
    pub code: String,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
    /// Allow network access (bridge); off by default.
    pub network: bool,
}

impl CodeCall {
    /// Python code.
    pub fn python(code: impl Into<String>) -> Self {
        CodeCall {
            language: "python".into(),
            code: code.into(),
            timeout: None,
            network: false,
        }
    }
}

/// A request for a human decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalCall {
    /// What the approver is asked.
    pub message: String,
    /// The exact action approved; its fingerprint ties the approval to it.
    pub action: Value,
    /// Risk.
    pub risk: RiskLevel,
    /// Time to decide.
    pub timeout: Option<Duration>,
    /// What happens at the timeout.
    pub on_timeout: TimeoutPolicy,
    /// Escalation group.
    pub escalate_to: Option<String>,
    /// Approver group.
    pub approver_group: Option<String>,
    /// Approve automatically at or below this risk (by rule, recorded as `rule:auto-approve`).
    pub auto_approve_max_risk: Option<RiskLevel>,
}

impl ApprovalCall {
    /// A request with `message` for `action`: medium risk, 24 h, rejected at the timeout.
    pub fn new(message: impl Into<String>, action: Value) -> Self {
        ApprovalCall {
            message: message.into(),
            action,
            risk: RiskLevel::Medium,
            timeout: Some(Duration::from_secs(24 * 3600)),
            on_timeout: TimeoutPolicy::Reject,
            escalate_to: None,
            approver_group: None,
            auto_approve_max_risk: None,
        }
    }
}

/// The fingerprint of an action: sha256 of the canonical JSON of the step id and the action.
pub fn action_fingerprint(step: &str, action: &Value) -> String {
    let text = wflo_types::canonical_json(&json!({"step": step, "action": action}));
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// A cached LLM answer (the value type of the response cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAnswer {
    text: String,
    model: String,
    cost_usd: Decimal,
}

impl wflo_cache::CacheValue for CachedAnswer {
    const KIND: &'static str = "wflo-llm-step";
    const SCHEMA_VERSION: u32 = 1;
    fn cost_usd(&self) -> Decimal {
        self.cost_usd
    }
}

/// The first fenced code block of a reply (```python ... ```), or the whole reply.
pub fn extract_code(text: &str) -> String {
    if let Some(start) = text.find("```") {
        let after = &text[start + 3..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
        let body = &after[body_start..];
        if let Some(end) = body.find("```") {
            return body[..end].trim_end().to_string() + "\n";
        }
    }
    text.to_string()
}

impl Ctx {
    /// The execution's id.
    pub fn execution_id(&self) -> Uuid {
        self.execution
    }

    /// The run's inputs.
    pub fn inputs(&self) -> Value {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .inputs
            .clone()
    }

    /// A variable (restored by checkpoints and rollbacks).
    pub fn var(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .vars
            .get(name)
            .cloned()
    }

    /// Sets a variable; the next checkpoint saves it.
    pub fn set_var(&self, name: &str, value: Value) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .vars
            .insert(name.to_string(), value);
    }

    pub(crate) fn outputs(&self) -> Map<String, Value> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .outputs
            .clone()
    }

    fn template_context(&self) -> Value {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let steps: Map<String, Value> = st
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "output": v })))
            .collect();
        json!({"inputs": st.inputs, "steps": steps, "vars": st.vars})
    }

    pub(crate) async fn set_execution_status(
        &self,
        to: ExecutionStatus,
        outcome: Outcome,
    ) -> Result<wflo_db::Execution> {
        let db = &self.engine.inner.db;
        let tx = db.begin().await?;
        let before = tx.executions().get(self.execution).await?.status;
        let error = outcome.error.clone();
        let exec = tx
            .executions()
            .transition(self.execution, to, outcome)
            .await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::workflow_status(
                    to.as_str(),
                    Some(before.as_str()),
                    error,
                    Some(exec.cost_usd),
                ),
                self.execution,
                &self.labels,
            ))
            .await?;
        tx.commit().await?;
        Ok(exec)
    }

    /// Moves a step to `to` with its `step.status` event, atomically (one statement on
    /// PostgreSQL), and remembers the row.
    async fn set_step_status(
        &self,
        step: &wflo_db::Step,
        to: StepStatus,
        outputs: Option<Value>,
        error: Option<String>,
    ) -> Result<wflo_db::Step> {
        let event = events::outbox(
            events::step_status(&step.step_key, &step.step_type, to.as_str(), error.clone()),
            self.execution,
            &self.labels,
        );
        let mut events = vec![event];
        if matches!(to, StepStatus::Completed | StepStatus::Failed) {
            events.extend(self.take_pending(&step.step_key));
        }
        let s = self
            .engine
            .inner
            .db
            .steps()
            .transition_with_events(step.id, to, outputs, error, events)
            .await?;
        self.remember(&s);
        Ok(s)
    }

    /// Records a new step in RUNNING with its `step.status` event, atomically. `None` when a
    /// row with this key exists already (recorded after this run loaded its steps).
    async fn start_step(
        &self,
        key: &str,
        kind: &str,
        inputs: &Value,
    ) -> Result<Option<wflo_db::Step>> {
        let event = events::outbox(
            events::step_status(key, kind, StepStatus::Running.as_str(), None),
            self.execution,
            &self.labels,
        );
        match self
            .engine
            .inner
            .db
            .steps()
            .start_with_events(
                NewStep {
                    execution_id: self.execution,
                    step_key: key.to_string(),
                    step_type: kind.to_string(),
                    inputs: Some(inputs.clone()),
                },
                vec![event],
            )
            .await
        {
            Ok(s) => {
                self.remember(&s);
                Ok(Some(s))
            }
            Err(wflo_db::Error::AlreadyExists {
                entity: "step execution",
                ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The step rows of this execution, as this run last saw them.
    fn remember(&self, step: &wflo_db::Step) {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(step.step_key.clone(), step.clone());
    }

    /// The recorded step with this key: from the rows loaded when the run started (and kept up
    /// to date by it), without a query.
    fn known_step(&self, key: &str) -> Option<wflo_db::Step> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Runs one durable step: a completed step returns its stored output without running
    /// again; otherwise each attempt is RUNNING then COMPLETED or FAILED, with its event.
    ///
    /// The run loads its execution's steps once when it starts; a key it does not know is
    /// inserted directly (RUNNING, with its event, in one statement on PostgreSQL), and a key
    /// recorded meanwhile by someone else is read back and treated as known.
    async fn memo<F, Fut>(
        &self,
        key: &str,
        kind: &str,
        inputs: Value,
        retry: RetryPolicy,
        timeout: Option<Duration>,
        mut body: F,
    ) -> Result<Value>
    where
        F: FnMut(wflo_db::Step) -> Fut,
        Fut: std::future::Future<Output = Result<Value>>,
    {
        let db = &self.engine.inner.db;
        self.check_lease()?;
        let mut step = self.known_step(key);
        let mut reread = false;
        let mut attempt = 0u32;
        loop {
            if let Some(s) = step.as_ref().filter(|s| s.status == StepStatus::Completed) {
                let out = s.outputs.clone().unwrap_or(Value::Null);
                self.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .outputs
                    .insert(key.to_string(), out.clone());
                if let Some(o) = &self.observer {
                    o.step_reused(key);
                }
                return Ok(out);
            }
            let running = match step.take() {
                Some(s) => match self
                    .set_step_status(&s, StepStatus::Running, None, None)
                    .await
                {
                    Ok(r) => r,
                    // The row moved on since this run loaded it (another process completed
                    // it, say): read it again, once, and decide on what it is now.
                    Err(Error::Db(wflo_db::Error::InvalidTransition { .. })) if !reread => {
                        reread = true;
                        step = db.steps().find_by_key(self.execution, key).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                // A new step starts RUNNING with its event, committed before the body runs.
                None => match self.start_step(key, kind, &inputs).await? {
                    Some(s) => s,
                    None => {
                        reread = true;
                        step = db.steps().find_by_key(self.execution, key).await?;
                        if step.is_none() {
                            return Err(Error::InvalidState(format!(
                                "step `{key}` was recorded and then removed while starting"
                            )));
                        }
                        continue;
                    }
                },
            };
            attempt += 1;
            let step_now = running;
            // An earlier attempt's events whose update was never written are not this one's.
            self.take_pending(key);
            if let Some(o) = &self.observer {
                o.step_started(key, kind, step_now.attempt);
            }
            let fut = body(step_now.clone());
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        what: format!("step `{key}`"),
                        after: t,
                    })
                }),
                None => fut.await,
            };
            match result {
                Ok(out) => {
                    let done = self
                        .set_step_status(&step_now, StepStatus::Completed, Some(out.clone()), None)
                        .await?;
                    self.state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .outputs
                        .insert(key.to_string(), out.clone());
                    if let Some(o) = &self.observer {
                        o.step_finished(key, "COMPLETED", done.cost_usd);
                        // The execution's total changes only with a step that cost something.
                        if !done.cost_usd.is_zero()
                            && let Ok(e) = db.executions().get(self.execution).await
                        {
                            o.spend(e.cost_usd, self.budget);
                        }
                    }
                    return Ok(out);
                }
                Err(e) => {
                    let failed = self
                        .set_step_status(&step_now, StepStatus::Failed, None, Some(e.to_string()))
                        .await?;
                    if let Some(o) = &self.observer {
                        o.step_finished(key, "FAILED", failed.cost_usd);
                    }
                    step = Some(failed);
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    if attempt >= retry.max_attempts {
                        return Err(match e {
                            Error::Timeout { .. } if retry.max_attempts == 1 => e,
                            other => Error::StepFailed {
                                step: key.to_string(),
                                attempts: attempt,
                                message: other.to_string(),
                            },
                        });
                    }
                    let wait = retry.backoff * 2u32.saturating_pow(attempt - 1);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// An LLM call held to the budget: the worst-case cost is reserved before the call (a call
    /// that does not fit is never made), the provider's usage is settled after it, and a
    /// response already paid for is never requested again on resume.
    pub async fn llm(&self, key: &str, call: LlmCall) -> Result<Value> {
        self.llm_with(key, call, RetryPolicy::default(), None).await
    }

    async fn llm_with(
        &self,
        key: &str,
        call: LlmCall,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let inputs = serde_json::to_value(&call).unwrap_or(Value::Null);
        let this = self.clone();
        self.memo(key, "llm", inputs, retry, timeout, move |step| {
            let this = this.clone();
            let call = call.clone();
            let key = key.to_string();
            async move { this.llm_attempt(&key, &call, step).await }
        })
        .await
    }

    async fn llm_attempt(&self, key: &str, call: &LlmCall, step: wflo_db::Step) -> Result<Value> {
        let inner = &self.engine.inner;
        let max_tokens = call.max_tokens.unwrap_or(inner.config.default_max_tokens);
        let mut messages = Vec::new();
        if let Some(s) = &call.system {
            messages.push(ChatMessage::new("system", s.clone()));
        }
        messages.push(ChatMessage::new("user", call.prompt.clone()));
        let estimate =
            inner
                .costs
                .catalog()
                .estimate(&call.model, &messages, u64::from(max_tokens))?;
        // One reservation per attempt: a retry, or a resume after the reservations of an
        // abandoned run were released, must not find the earlier attempt's closed one.
        let request_id = format!("{}:{key}:{}", self.execution, step.attempt);
        let reservation = inner
            .costs
            .reserve(&ReserveRequest {
                request_id,
                scopes: self.scopes.clone(),
                amount_usd: estimate.cost_usd,
                execution_id: Some(self.execution),
                labels: Some(RunLabels::clone(&self.labels)),
            })
            .await
            .map_err(|e| match e {
                wflo_cost::Error::BudgetExceeded {
                    scope,
                    limit,
                    spent,
                    reserved,
                    requested,
                } => Error::BudgetExceeded {
                    step: key.to_string(),
                    scope,
                    limit,
                    spent,
                    reserved,
                    requested,
                },
                other => Error::Cost(other),
            })?;

        // A response recorded by an attempt that crashed before finishing: already paid.
        let recorded: Option<(String, String, TokenUsage)> = step
            .outputs
            .as_ref()
            .and_then(|o| o.get("response"))
            .and_then(|r| {
                Some((
                    r.get("text")?.as_str()?.to_string(),
                    r.get("model")?.as_str()?.to_string(),
                    serde_json::from_value::<UsageRecord>(r.get("usage")?.clone())
                        .ok()?
                        .into_usage(&call.model),
                ))
            });

        let cache_key = match &inner.cache {
            Some(_) if call.temperature.unwrap_or(0.0) <= 0.0 => {
                let mut b = wflo_cache::LlmCacheKey::builder(
                    inner.config.cache_namespace.clone(),
                    call.model.clone(),
                )
                .messages(json!([{"role": "user", "content": call.prompt}]))
                .max_tokens(max_tokens)
                .temperature(call.temperature.unwrap_or(0.0));
                if let Some(s) = &call.system {
                    b = b.system(s.clone());
                }
                Some(b.build()?)
            }
            _ => None,
        };
        if recorded.is_none()
            && let (Some(cache), Some(ck)) = (&inner.cache, &cache_key)
            && let Some(hit) = cache.get::<CachedAnswer>(ck).await?
        {
            inner.costs.release(&reservation).await.or_else(closed_ok)?;
            return Ok(json!({
                "text": hit.text,
                "code": extract_code(&hit.text),
                "model": hit.model,
                "cached": true,
                "cost_usd": Decimal::ZERO,
                "saved_usd": hit.cost_usd,
            }));
        }

        let (text, model, usage, finish) = match recorded {
            Some((text, model, usage)) => (text, model, usage, Value::Null),
            None => {
                let provider = inner.llm.clone().ok_or_else(|| {
                    Error::NotConfigured(format!(
                        "step `{key}` calls an LLM but no provider is configured; set OPENAI_API_KEY \
                         or ANTHROPIC_API_KEY, or WFLO_LLM_CASSETTE for a replay cassette"
                    ))
                })?;
                let mut req = ChatRequest::builder(call.model.clone()).max_tokens(max_tokens);
                if let Some(s) = &call.system {
                    req = req.system(s.clone());
                }
                if let Some(t) = call.temperature {
                    req = req.temperature(t);
                }
                let req = req.user(call.prompt.clone()).build()?;
                let resp: ChatResponse = match provider.complete(&req).await {
                    Ok(r) => r,
                    Err(e) => {
                        inner.costs.release(&reservation).await.or_else(closed_ok)?;
                        return Err(e.into());
                    }
                };
                let usage = TokenUsage::new(
                    call.model.clone(),
                    resp.usage.prompt_tokens,
                    resp.usage.completion_tokens,
                )
                .cached_prompt(resp.usage.cached_prompt_tokens)
                .cache_write(resp.usage.cache_write_tokens)
                .reasoning(resp.usage.reasoning_tokens);
                // Paid: record it before settling, so a crash here never repeats the call.
                inner
                    .db
                    .steps()
                    .record_output(
                        step.id,
                        json!({"response": {
                            "text": resp.text,
                            "model": resp.model,
                            "usage": UsageRecord::from(&usage),
                        }}),
                    )
                    .await?;
                let finish = serde_json::to_value(&resp.finish_reason).unwrap_or(Value::Null);
                (resp.text, resp.model, usage, finish)
            }
        };
        let cost = match inner
            .costs
            .settle(&reservation, Some(step.id), &usage)
            .await
        {
            Ok(s) => s.charged_usd,
            // The reservation was freed meanwhile (it expired during a long call, or the run
            // was interrupted): the call was paid all the same, so it is charged without one.
            Err(wflo_cost::Error::ReservationClosed { .. }) => {
                inner
                    .costs
                    .track(self.execution, Some(step.id), &usage)
                    .await?
                    .charged_usd
            }
            Err(e) => return Err(e.into()),
        };
        if let (Some(cache), Some(ck)) = (&inner.cache, &cache_key) {
            cache
                .set(
                    ck,
                    &CachedAnswer {
                        text: text.clone(),
                        model: model.clone(),
                        cost_usd: cost,
                    },
                )
                .await?;
        }
        // Its `cost.recorded` event was written in the settle's transaction.
        Ok(json!({
            "text": text,
            "code": extract_code(&text),
            "model": model,
            "finish_reason": finish,
            "usage": UsageRecord::from(&usage),
            "cost_usd": cost,
            "cached": false,
        }))
    }

    /// Runs code in the sandbox; a non-zero exit, a timeout or an OOM kill fails the step
    /// (stdout and stderr are kept apart in the output and the error).
    pub async fn code(&self, key: &str, call: CodeCall) -> Result<Value> {
        self.code_with(key, call, RetryPolicy::default(), None)
            .await
    }

    async fn code_with(
        &self,
        key: &str,
        call: CodeCall,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let inputs = json!({"language": call.language, "code": call.code, "network": call.network});
        let this = self.clone();
        let key_s = key.to_string();
        self.memo(key, "code", inputs, retry, timeout, move |_step| {
            let this = this.clone();
            let call = call.clone();
            let key = key_s.clone();
            async move {
                let sandbox = this.engine.sandbox().await?;
                let mut req =
                    wflo_sandbox::ExecRequest::builder(call.code.clone()).language(&call.language);
                if let Some(t) = call.timeout {
                    req = req.timeout(t);
                }
                if call.network {
                    req = req.network(wflo_sandbox::NetworkPolicy::Bridge);
                }
                let result = sandbox.execute(req.build()?).await?;
                // Written with the step's COMPLETED or FAILED update, in its transaction.
                this.emit_with_step(
                    &key,
                    events::outbox(events::sandbox(&result), this.execution, &this.labels),
                );
                let out = json!({
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                    "exit_code": result.exit_code,
                    "status": result.status.as_str(),
                    "timed_out": result.timed_out,
                    "oom_killed": result.oom_killed,
                    "duration_ms": result.duration.as_millis() as u64,
                    "stdout_truncated": result.stdout_truncated,
                });
                if !result.success() {
                    let tail: String = result
                        .stderr
                        .chars()
                        .rev()
                        .take(500)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    return Err(Error::StepFailed {
                        step: key,
                        attempts: 1,
                        message: format!(
                            "code {} (exit {}{}{}): {}",
                            result.status.as_str(),
                            result.exit_code,
                            if result.timed_out { ", timed out" } else { "" },
                            if result.oom_killed {
                                ", out of memory"
                            } else {
                                ""
                            },
                            tail.trim()
                        ),
                    });
                }
                Ok(out)
            }
        })
        .await
    }

    /// Saves the execution's state (completed outputs and variables) as the next snapshot;
    /// returns its version.
    pub async fn checkpoint(&self, key: &str) -> Result<i32> {
        let this = self.clone();
        let out = self
            .memo(
                key,
                "checkpoint",
                json!({}),
                RetryPolicy::default(),
                None,
                move |_| {
                    let this = this.clone();
                    let key = key.to_string();
                    async move {
                        let state = {
                            let st = this
                                .state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            json!({"outputs": st.outputs, "vars": st.vars, "inputs": st.inputs})
                        };
                        let snap = this
                            .engine
                            .inner
                            .db
                            .snapshots()
                            .create(this.execution, Some(&key), state)
                            .await?;
                        Ok(json!({"snapshot_version": snap.version, "snapshot_id": snap.id}))
                    }
                },
            )
            .await?;
        Ok(out
            .get("snapshot_version")
            .and_then(Value::as_i64)
            .unwrap_or_default() as i32)
    }

    /// Calls a registered tool.
    pub async fn tool(&self, key: &str, name: &str, input: Value) -> Result<Value> {
        self.tool_with(key, name, input, RetryPolicy::default(), None)
            .await
    }

    async fn tool_with(
        &self,
        key: &str,
        name: &str,
        input: Value,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let tool = self.engine.inner.tools.get(name).cloned().ok_or_else(|| {
            Error::NotConfigured(format!(
                "step `{key}` calls tool `{name}`, which is not registered; registered tools: {}",
                {
                    let mut names: Vec<_> = self.engine.inner.tools.keys().cloned().collect();
                    names.sort();
                    names.join(", ")
                }
            ))
        })?;
        let name_s = name.to_string();
        self.memo(
            key,
            "tool",
            json!({"tool": name, "input": input}),
            retry,
            timeout,
            move |_| {
                let tool = tool.clone();
                let input = input.clone();
                let name = name_s.clone();
                async move {
                    tool.call(input).await.map_err(|message| Error::Tool {
                        tool: name,
                        message,
                    })
                }
            },
        )
        .await
    }

    /// Asks for a human decision and waits for it. The request is durable (a crashed run finds
    /// it again), decided once, tied to the action's fingerprint (an approval given for another
    /// action is refused), and its timeout policy applies when nobody decides in time.
    pub async fn approval(&self, key: &str, call: ApprovalCall) -> Result<Value> {
        let this = self.clone();
        let fingerprint = action_fingerprint(key, &call.action);
        let inputs =
            json!({"message": call.message, "action": call.action, "fingerprint": fingerprint});
        self.memo(
            key,
            "approval",
            inputs,
            RetryPolicy::default(),
            None,
            move |_| {
                let this = this.clone();
                let call = call.clone();
                let key = key.to_string();
                let fingerprint = fingerprint.clone();
                async move { this.approval_attempt(&key, &call, &fingerprint).await }
            },
        )
        .await
    }

    /// The newest approval request of step `key` (a previous attempt's), or a new one with its
    /// event; auto-approval rules apply to a pending one.
    pub(crate) async fn open_approval_row(
        &self,
        key: &str,
        call: &ApprovalCall,
        fingerprint: &str,
    ) -> Result<Approval> {
        let db = &self.engine.inner.db;
        // The newest request of this step, if a previous run made one.
        let existing = db
            .approvals()
            .list(self.execution)
            .await?
            .into_iter()
            .rfind(|a| a.step_key.as_deref() == Some(key));
        let mut approval = match existing {
            Some(a) => a,
            None => {
                let timeout_at = call.timeout.map(|t| {
                    chrono::Utc::now()
                        + chrono::Duration::from_std(t).unwrap_or(chrono::Duration::MAX)
                });
                let tx = db.begin().await?;
                let a = tx
                    .approvals()
                    .create(NewApproval {
                        execution_id: self.execution,
                        step_key: Some(key.to_string()),
                        message: call.message.clone(),
                        context: json!({"action": call.action}),
                        risk_level: call.risk,
                        action_fingerprint: fingerprint.to_string(),
                        approver_group: call.approver_group.clone(),
                        timeout_at,
                        timeout_policy: call.on_timeout,
                        escalate_to: call.escalate_to.clone(),
                    })
                    .await?;
                tx.outbox()
                    .enqueue(events::outbox(
                        events::approval(&a, false),
                        self.execution,
                        &self.labels,
                    ))
                    .await?;
                tx.commit().await?;
                a
            }
        };
        if approval.status == ApprovalStatus::Pending
            && Engine::auto_approves(call.auto_approve_max_risk, call.risk)
        {
            approval = self
                .engine
                .decide(
                    approval.id,
                    true,
                    "rule:auto-approve",
                    Some(format!("risk {} within the auto-approve rule", call.risk)),
                )
                .await?;
        }
        Ok(approval)
    }

    async fn approval_attempt(
        &self,
        key: &str,
        call: &ApprovalCall,
        fingerprint: &str,
    ) -> Result<Value> {
        let db = &self.engine.inner.db;
        let mut approval = self.open_approval_row(key, call, fingerprint).await?;
        if approval.status == ApprovalStatus::Pending {
            self.set_execution_status(ExecutionStatus::WaitingApproval, Outcome::default())
                .await?;
            if let Some(o) = &self.observer {
                o.waiting_for_approval(approval.id, &approval.message);
            }
            let poll = self.engine.inner.config.approval_poll;
            loop {
                approval = db.approvals().get(approval.id).await?;
                if approval.status != ApprovalStatus::Pending {
                    break;
                }
                if approval.timeout_at.is_some_and(|t| t <= chrono::Utc::now()) {
                    approval = apply_timeout_policy(db, &approval).await?;
                    if approval.status == ApprovalStatus::Pending {
                        // Escalated: a new request waits for the other group.
                        if let Some(o) = &self.observer {
                            o.waiting_for_approval(approval.id, &approval.message);
                        }
                        continue;
                    }
                    break;
                }
                self.check_lease()?;
                tokio::time::sleep(poll).await;
            }
            self.set_execution_status(ExecutionStatus::Running, Outcome::default())
                .await?;
        }
        if approval.action_fingerprint != fingerprint {
            return Err(Error::StaleApproval {
                step: key.to_string(),
                approval: approval.id,
                approved: approval.action_fingerprint.clone(),
                current: fingerprint.to_string(),
            });
        }
        match approval.status {
            ApprovalStatus::Approved => Ok(json!({
                "approval_id": approval.id,
                "decision": "APPROVED",
                "approved_by": approval.decided_by,
                "reason": approval.decision_reason,
            })),
            _ => Err(Error::Rejected {
                step: key.to_string(),
                by: approval
                    .decided_by
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
                reason: approval.decision_reason.clone(),
            }),
        }
    }

    /// Queues an event of step `key` to be written with its next COMPLETED or FAILED update.
    fn emit_with_step(&self, key: &str, event: wflo_db::NewOutboxEvent) {
        self.pending_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .push(event);
    }

    fn take_pending(&self, key: &str) -> Vec<wflo_db::NewOutboxEvent> {
        self.pending_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key)
            .unwrap_or_default()
    }

    /// Refuses to go on when this run's driver lost its lease (another process drives now).
    fn check_lease(&self) -> Result<()> {
        match self.lease.get() {
            Some(held) => held.check(),
            None => Ok(()),
        }
    }

    /// Runs one step of a definition: renders its templates, then dispatches on its kind.
    pub(crate) async fn run_definition_step(
        &self,
        def: &WorkflowDef,
        step: &StepDef,
    ) -> Result<Value> {
        let p = self.render_step_params(step)?;
        let s = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_string);
        let num = |name: &str| {
            p.get(name)
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        match step.kind {
            StepKind::Llm => {
                let call = LlmCall {
                    model: s("model").unwrap_or_default(),
                    system: s("system"),
                    prompt: s("prompt").unwrap_or_default(),
                    max_tokens: num("max_tokens").map(|n| n as u32),
                    temperature: num("temperature"),
                };
                self.llm_with(&step.id, call, step.retry, step.timeout)
                    .await
            }
            StepKind::Code => {
                let call = CodeCall {
                    language: s("language").unwrap_or_else(|| "python".into()),
                    code: s("code").unwrap_or_default(),
                    timeout: num("sandbox_timeout_secs")
                        .map(Duration::from_secs_f64)
                        .or(step.timeout),
                    network: p.get("network").and_then(Value::as_bool).unwrap_or(false),
                };
                self.code_with(&step.id, call, step.retry, None).await
            }
            StepKind::Checkpoint => {
                let v = self.checkpoint(&step.id).await?;
                Ok(json!({"snapshot_version": v}))
            }
            StepKind::Tool => {
                let name = s("tool").unwrap_or_default();
                let input = p.get("input").cloned().unwrap_or(Value::Null);
                self.tool_with(&step.id, &name, input, step.retry, step.timeout)
                    .await
            }
            StepKind::Approval => {
                let call = approval_call_from(def, step, &p)?;
                self.approval(&step.id, call).await
            }
            other => Err(Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: format!("this build cannot run a `{other}` step; upgrade wflo"),
            }),
        }
    }

    /// The approval request an approval step of `def` makes, its templates rendered on this
    /// run's state.
    pub(crate) fn approval_call(&self, def: &WorkflowDef, step: &StepDef) -> Result<ApprovalCall> {
        approval_call_from(def, step, &self.render_step_params(step)?)
    }

    /// A step's parameters with their templates rendered on this run's state.
    fn render_step_params(&self, step: &StepDef) -> Result<Map<String, Value>> {
        template::render_params(&step.params, &self.template_context()).map_err(|message| {
            Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: format!("template failed: {message}"),
            }
        })
    }

    /// Puts the outputs of the completed steps this context knows into its state (a context
    /// that runs one step of an execution, not the whole run, needs them for its templates).
    pub(crate) fn load_completed_outputs(&self) {
        let steps = self
            .steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, step) in steps.iter() {
            if step.status == StepStatus::Completed {
                st.outputs
                    .insert(key.clone(), step.outputs.clone().unwrap_or(Value::Null));
            }
        }
    }

    /// The step `key` if it has completed.
    pub(crate) fn known_completed(&self, key: &str) -> Option<wflo_db::Step> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|s| s.status == StepStatus::Completed)
            .cloned()
    }
}

/// The approval request of an approval step from its rendered parameters `p`.
fn approval_call_from(
    def: &WorkflowDef,
    step: &StepDef,
    p: &Map<String, Value>,
) -> Result<ApprovalCall> {
    let s = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_string);
    let policy = &def.policies.approval;
    let parse_risk = |r: Option<String>| -> Result<RiskLevel> {
        r.map(|r| {
            r.parse().map_err(|e: wflo_types::Error| Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: e.to_string(),
            })
        })
        .transpose()
        .map(|r| r.unwrap_or(RiskLevel::Medium))
    };
    let on_timeout = match s("on_timeout") {
        Some(t) => t
            .parse()
            .map_err(|e: wflo_types::Error| Error::Definition {
                step: Some(step.id.clone()),
                line: None,
                message: e.to_string(),
            })?,
        None => policy.on_timeout,
    };
    let call = ApprovalCall {
        message: s("message").unwrap_or_default(),
        action: p.get("action").cloned().unwrap_or(Value::Null),
        risk: parse_risk(s("risk"))?,
        timeout: step.timeout.or(policy.timeout),
        on_timeout,
        escalate_to: s("escalate_to").or_else(|| policy.escalate_to.clone()),
        approver_group: s("approver_group"),
        auto_approve_max_risk: policy.auto_approve_max_risk,
    };
    Ok(call)
}

fn closed_ok(e: wflo_cost::Error) -> std::result::Result<(), wflo_cost::Error> {
    match e {
        wflo_cost::Error::ReservationClosed { .. } => Ok(()),
        other => Err(other),
    }
}

/// Applies an expired approval's timeout policy, once (conditional update): reject → EXPIRED,
/// approve → APPROVED by `system:timeout`, escalate → ESCALATED plus a new request for the
/// escalation group (returned, PENDING) whose own timeout rejects.
pub(crate) async fn apply_timeout_policy(db: &Db, a: &Approval) -> Result<Approval> {
    let (status, reason) = match a.timeout_policy {
        TimeoutPolicy::Approve => (ApprovalStatus::Approved, "approved by the timeout policy"),
        TimeoutPolicy::Escalate => (ApprovalStatus::Escalated, "escalated by the timeout policy"),
        _ => (ApprovalStatus::Expired, "rejected by the timeout policy"),
    };
    let tx = db.begin().await?;
    let decided = match tx
        .approvals()
        .decide(
            a.id,
            ApprovalDecision {
                status,
                decided_by: "system:timeout".into(),
                reason: Some(reason.into()),
            },
        )
        .await
    {
        Ok(d) => d,
        // Someone decided first: their decision stands.
        Err(wflo_db::Error::InvalidTransition { .. }) => {
            drop(tx);
            return Ok(db.approvals().get(a.id).await?);
        }
        Err(e) => return Err(e.into()),
    };
    let exec = tx.executions().get(a.execution_id).await?;
    let labels = events::labels_of(&exec);
    tx.outbox()
        .enqueue(events::outbox(
            events::approval(&decided, true),
            exec.id,
            &labels,
        ))
        .await?;
    let result = if status == ApprovalStatus::Escalated {
        let window = a
            .timeout_at
            .map(|t| t - a.created_at)
            .unwrap_or_else(|| chrono::Duration::hours(24));
        let next = tx
            .approvals()
            .create(NewApproval {
                execution_id: a.execution_id,
                step_key: a.step_key.clone(),
                message: a.message.clone(),
                context: a.context.clone(),
                risk_level: a.risk_level,
                action_fingerprint: a.action_fingerprint.clone(),
                approver_group: a.escalate_to.clone(),
                timeout_at: Some(chrono::Utc::now() + window),
                timeout_policy: TimeoutPolicy::Reject,
                escalate_to: None,
            })
            .await?;
        tx.outbox()
            .enqueue(events::outbox(
                events::approval(&next, false),
                exec.id,
                &labels,
            ))
            .await?;
        next
    } else {
        decided
    };
    tx.commit().await?;
    Ok(result)
}

/// Token usage as stored in a step's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UsageRecord {
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_prompt_tokens: u64,
    cache_write_tokens: u64,
    reasoning_tokens: u64,
}

impl From<&TokenUsage> for UsageRecord {
    fn from(u: &TokenUsage) -> Self {
        UsageRecord {
            prompt_tokens: u.prompt,
            completion_tokens: u.completion,
            cached_prompt_tokens: u.cached_prompt,
            cache_write_tokens: u.cache_write,
            reasoning_tokens: u.reasoning,
        }
    }
}

impl UsageRecord {
    fn into_usage(self, model: &str) -> TokenUsage {
        TokenUsage::new(
            model.to_string(),
            self.prompt_tokens,
            self.completion_tokens,
        )
        .cached_prompt(self.cached_prompt_tokens)
        .cache_write(self.cache_write_tokens)
        .reasoning(self.reasoning_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_first_code_block() {
        assert_eq!(
            extract_code("Here:\n```python\nprint(1)\n```\nDone"),
            "print(1)\n"
        );
        assert_eq!(extract_code("print(2)"), "print(2)");
    }

    #[test]
    fn fingerprints_change_with_the_action_only() {
        let a = action_fingerprint("deploy", &json!({"b": 1, "a": [1, 2]}));
        let b = action_fingerprint("deploy", &json!({"a": [1, 2], "b": 1}));
        let c = action_fingerprint("deploy", &json!({"a": [1, 2], "b": 2}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("sha256:"));
    }

    #[test]
    fn a_fingerprint_stored_before_stays_the_same() {
        // Computed outside Rust: sha256 of the sorted, compact JSON of step and action.
        assert_eq!(
            action_fingerprint(
                "deploy",
                &json!({"b": 1, "a": [1, 2], "msg": "h\u{e9}llo \"x\"\n"})
            ),
            "sha256:832802c33feb486e10f2d1e7239f8a0b99f861580234a170301b3e104360ba99"
        );
    }
}
