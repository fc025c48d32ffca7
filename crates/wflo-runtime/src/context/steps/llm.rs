//! LLM steps: reserve the worst case, replay a paid answer or call the provider, settle the
//! actual cost with its event.

use crate::context::Ctx;
use crate::definition::RetryPolicy;
use crate::{Error, Result};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use wflo_cost::{BudgetReservation, ChatMessage, ReserveRequest, TokenUsage};
use wflo_db::Executor;
use wflo_llm::{ChatRequest, ChatResponse};
use wflo_types::{LlmOutput, RunLabels, StepKind, StepOutput};

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
    /// An LLM call held to the budget: the worst-case cost is reserved before the call (a call
    /// that does not fit is never made), the provider's usage is settled after it, and a
    /// response already paid for is never requested again on resume.
    pub async fn llm(&self, key: &str, call: LlmCall) -> Result<Value> {
        self.llm_with(key, call, RetryPolicy::default(), None).await
    }

    pub(crate) async fn llm_with(
        &self,
        key: &str,
        call: LlmCall,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let inputs = serde_json::to_value(&call).unwrap_or(Value::Null);
        let this = self.clone();
        self.memo(key, StepKind::Llm, inputs, retry, timeout, move |step| {
            let this = this.clone();
            let call = call.clone();
            let key = key.to_string();
            async move { this.llm_attempt(&key, &call, step).await }
        })
        .await
    }

    /// One attempt: reserve the worst case, then replay the answer an earlier attempt paid
    /// for, take the response cache's, or call the provider; then settle what it cost (its
    /// `cost.recorded` event commits with the charge). Whatever fails before a paid answer
    /// exists frees the reservation.
    async fn llm_attempt(&self, key: &str, call: &LlmCall, step: wflo_db::Step) -> Result<Value> {
        let reservation = self.reserve_llm(key, call, &step).await?;
        // The cache key is built once: read before the call, written after it.
        let answered = async {
            let cache_key = self.llm_cache_key(call)?;
            let answer = self
                .replay_or_call(key, call, &step, cache_key.as_ref())
                .await?;
            Ok::<_, Error>((cache_key, answer))
        }
        .await;
        let (cache_key, answer) = match answered {
            Ok(answered) => answered,
            Err(e) => {
                self.release_llm(&reservation).await?;
                return Err(e);
            }
        };
        let output = match answer {
            Answer::Cached(hit) => {
                self.release_llm(&reservation).await?;
                LlmOutput {
                    code: Some(extract_code(&hit.text)),
                    text: hit.text,
                    model: hit.model,
                    cached: true,
                    saved_usd: Some(hit.cost_usd),
                    ..Default::default()
                }
            }
            Answer::Paid { response, finish } => {
                let cost = self
                    .settle_llm(&reservation, &step, &response.usage)
                    .await?;
                self.cache_llm(cache_key.as_ref(), &response, cost).await?;
                LlmOutput {
                    code: Some(extract_code(&response.text)),
                    text: response.text,
                    model: response.model,
                    finish_reason: finish,
                    usage: Some(response.usage),
                    cost_usd: cost,
                    cached: false,
                    saved_usd: None,
                }
            }
        };
        Ok(StepOutput::Llm(output).to_value())
    }

    /// Reserves the call's worst-case cost in every budget of the run; a call that does not
    /// fit is refused here, before the provider is asked.
    async fn reserve_llm(
        &self,
        key: &str,
        call: &LlmCall,
        step: &wflo_db::Step,
    ) -> Result<BudgetReservation> {
        let inner = &self.engine.inner;
        let mut messages = Vec::new();
        if let Some(s) = &call.system {
            messages.push(ChatMessage::new("system", s.clone()));
        }
        messages.push(ChatMessage::new("user", call.prompt.clone()));
        let estimate = inner.costs.catalog().estimate(
            &call.model,
            &messages,
            u64::from(self.max_tokens(call)),
        )?;
        // One reservation per attempt: a retry, or a resume after the reservations of an
        // abandoned run were released, must not find the earlier attempt's closed one.
        let request_id = format!("{}:{key}:{}", self.execution, step.attempt);
        inner
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
            })
    }

    /// The answer: one an earlier attempt paid for and recorded (a crash after the call never
    /// pays twice), the response cache's, or a new call whose response is recorded on the
    /// step before anything else happens.
    async fn replay_or_call(
        &self,
        key: &str,
        call: &LlmCall,
        step: &wflo_db::Step,
        cache_key: Option<&wflo_cache::LlmCacheKey>,
    ) -> Result<Answer> {
        let inner = &self.engine.inner;
        if let Some(recorded) = step
            .outputs
            .as_ref()
            .and_then(|o| o.get("response"))
            .and_then(|r| serde_json::from_value::<PaidResponse>(r.clone()).ok())
        {
            return Ok(Answer::Paid {
                response: recorded.priced_as(&call.model),
                finish: Value::Null,
            });
        }
        if let (Some(cache), Some(ck)) = (&inner.cache, cache_key)
            && let Some(hit) = cache.get::<CachedAnswer>(ck).await?
        {
            return Ok(Answer::Cached(hit));
        }
        let provider = inner.llm.clone().ok_or_else(|| {
            Error::NotConfigured(format!(
                "step `{key}` calls an LLM but no provider is configured; set OPENAI_API_KEY \
                 or ANTHROPIC_API_KEY, or WFLO_LLM_CASSETTE for a replay cassette"
            ))
        })?;
        let mut req = ChatRequest::builder(call.model.clone()).max_tokens(self.max_tokens(call));
        if let Some(s) = &call.system {
            req = req.system(s.clone());
        }
        if let Some(t) = call.temperature {
            req = req.temperature(t);
        }
        let req = req.user(call.prompt.clone()).build()?;
        let resp: ChatResponse = provider.complete(&req).await?;
        let response = PaidResponse {
            text: resp.text,
            model: resp.model,
            // Priced by the model the step asked for (the catalogue's name), not the dated
            // name the provider answers with.
            usage: TokenUsage::new(
                call.model.clone(),
                resp.usage.prompt_tokens,
                resp.usage.completion_tokens,
            )
            .cached_prompt(resp.usage.cached_prompt_tokens)
            .cache_write(resp.usage.cache_write_tokens)
            .reasoning(resp.usage.reasoning_tokens),
        };
        // Paid: record it before settling, so a crash here never repeats the call.
        inner
            .db
            .steps()
            .record_output(step.id, json!({ "response": response }))
            .await?;
        let finish = serde_json::to_value(&resp.finish_reason).unwrap_or(Value::Null);
        Ok(Answer::Paid { response, finish })
    }

    /// Charges what the answer cost and frees the rest of the reservation, with the charge's
    /// event, in one transaction; returns the amount charged.
    async fn settle_llm(
        &self,
        reservation: &BudgetReservation,
        step: &wflo_db::Step,
        usage: &TokenUsage,
    ) -> Result<Decimal> {
        let costs = &self.engine.inner.costs;
        match costs.settle(reservation, Some(step.id), usage).await {
            Ok(s) => Ok(s.charged_usd),
            // The reservation was freed meanwhile (it expired during a long call, or the run
            // was interrupted): the call was paid all the same, so it is charged without one.
            Err(wflo_cost::Error::ReservationClosed { .. }) => Ok(costs
                .track(self.execution, Some(step.id), usage)
                .await?
                .charged_usd),
            Err(e) => Err(e.into()),
        }
    }

    /// Frees a reservation no paid answer will settle (one already closed is fine).
    async fn release_llm(&self, reservation: &BudgetReservation) -> Result<()> {
        match self.engine.inner.costs.release(reservation).await {
            Ok(()) | Err(wflo_cost::Error::ReservationClosed { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a paid answer in the response cache, when there is one and the call is
    /// deterministic enough to reuse.
    async fn cache_llm(
        &self,
        cache_key: Option<&wflo_cache::LlmCacheKey>,
        response: &PaidResponse,
        cost: Decimal,
    ) -> Result<()> {
        if let (Some(cache), Some(ck)) = (&self.engine.inner.cache, cache_key) {
            let answer = CachedAnswer {
                text: response.text.clone(),
                model: response.model.clone(),
                cost_usd: cost,
            };
            cache.set(ck, &answer).await?;
        }
        Ok(())
    }

    /// The response cache's key for `call`: none without a cache or above temperature 0.
    fn llm_cache_key(&self, call: &LlmCall) -> Result<Option<wflo_cache::LlmCacheKey>> {
        let inner = &self.engine.inner;
        if inner.cache.is_none() || call.temperature.unwrap_or(0.0) > 0.0 {
            return Ok(None);
        }
        let mut b = wflo_cache::LlmCacheKey::builder(
            inner.config.cache_namespace.clone(),
            call.model.clone(),
        )
        .messages(json!([{"role": "user", "content": call.prompt}]))
        .max_tokens(self.max_tokens(call))
        .temperature(call.temperature.unwrap_or(0.0));
        if let Some(s) = &call.system {
            b = b.system(s.clone());
        }
        Ok(Some(b.build()?))
    }

    fn max_tokens(&self, call: &LlmCall) -> u32 {
        call.max_tokens
            .unwrap_or(self.engine.inner.config.default_max_tokens)
    }
}

/// What answered an attempt.
enum Answer {
    /// The response cache (nothing paid now).
    Cached(CachedAnswer),
    /// The provider, now or in an earlier attempt that recorded it.
    Paid {
        response: PaidResponse,
        /// Why the model stopped (null for a replayed answer).
        finish: Value,
    },
}

/// A paid response as recorded on its step (`outputs.response`) before it is settled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaidResponse {
    text: String,
    model: String,
    usage: TokenUsage,
}

impl PaidResponse {
    /// With its usage priced as `model` (rows recorded before usage carried its model).
    fn priced_as(mut self, model: &str) -> PaidResponse {
        if self.usage.model.is_empty() {
            self.usage.model = model.to_string();
        }
        self
    }
}
