//! OpenAI-compatible Chat Completions (OpenAI, Azure-style deployments, vLLM, Ollama, gateways).

use crate::breaker::CircuitState;
use crate::config::{AuthScheme, MaxTokensField, ProviderConfig};
use crate::error::{Error, Result, truncate};
use crate::http::{BODY_LIMIT, BaseUrlConvention, HttpCore, RawResponse};
use crate::provider::LlmProvider;
use crate::request::{ChatRequest, ResponseFormat, Role, ToolChoice};
use crate::response::{ChatResponse, FinishReason, ToolCall, Usage};
use crate::stream::{self, Assembler, ChatStream, Step, StreamEvent};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use tokio::time::Instant;

/// Default base URL: up to the API version, as OpenAI's SDKs take it (`/chat/completions` is
/// appended; a bare host gets `/v1/chat/completions`).
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The environment variable the facade reads the OpenAI key from.
pub const OPENAI_API_KEY_VAR: &str = "OPENAI_API_KEY";

/// An OpenAI-compatible Chat Completions provider.
#[derive(Debug)]
pub struct OpenAiProvider {
    core: HttpCore,
    max_tokens_field: MaxTokensField,
}

impl OpenAiProvider {
    /// Builds the provider; without an API key this fails with [`Error::MissingApiKey`] naming
    /// `OPENAI_API_KEY`, unless the config allows a missing key (local servers).
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        if config.api_key.is_none() && !config.allow_missing_api_key {
            return Err(Error::MissingApiKey {
                provider: "openai".into(),
                env_var: OPENAI_API_KEY_VAR,
            });
        }
        let core = HttpCore::new(
            "openai",
            config,
            OPENAI_BASE_URL,
            "chat/completions",
            BaseUrlConvention::IncludesVersion,
            AuthScheme::Bearer,
            HeaderMap::new(),
            "x-request-id",
        )?;
        Ok(Self {
            core,
            max_tokens_field: config.max_tokens_field,
        })
    }

    /// State of the circuit breaker for `model`.
    pub fn circuit_state(&self, model: &str) -> CircuitState {
        self.core.circuit_state(model)
    }

    /// The JSON body sent for `req`.
    pub fn request_body(&self, req: &ChatRequest, stream: bool) -> Value {
        let mut b = Map::new();
        b.insert("model".into(), json!(req.model));
        b.insert(
            "messages".into(),
            Value::Array(req.messages.iter().map(message_json).collect()),
        );
        if let Some(t) = req.temperature {
            b.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            b.insert("top_p".into(), json!(p));
        }
        if let Some(n) = req.max_tokens {
            let field = if uses_max_completion_tokens(self.max_tokens_field, &req.model) {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            b.insert(field.into(), json!(n));
        }
        if !req.stop.is_empty() {
            b.insert("stop".into(), json!(req.stop));
        }
        if let Some(s) = req.seed {
            b.insert("seed".into(), json!(s));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    let mut f = Map::new();
                    f.insert("name".into(), json!(t.name));
                    if let Some(d) = &t.description {
                        f.insert("description".into(), json!(d));
                    }
                    f.insert("parameters".into(), t.parameters.clone());
                    json!({"type": "function", "function": f})
                })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = &req.tool_choice {
            let v = match c {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
            };
            b.insert("tool_choice".into(), v);
        }
        if let Some(f) = &req.response_format {
            let v = match f {
                ResponseFormat::Text => json!({"type": "text"}),
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => {
                    json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}})
                }
            };
            b.insert("response_format".into(), v);
        }
        if stream {
            b.insert("stream".into(), json!(true));
            b.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(b)
    }

    fn parse(&self, raw: RawResponse) -> Result<ChatResponse> {
        let malformed = |reason: String| Error::MalformedResponse {
            provider: "openai".into(),
            status: raw.status,
            reason,
            body: truncate(&String::from_utf8_lossy(&raw.body), BODY_LIMIT),
        };
        let r: OaResponse = serde_json::from_slice(&raw.body)
            .map_err(|e| malformed(format!("not a chat completion: {e}")))?;
        let usage = r.usage.ok_or_else(|| {
            malformed("no usage in the response; the server must report token usage".into())
        })?;
        let choice = r
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| malformed("no choices in the response".into()))?;
        let text = choice
            .message
            .content
            .or(choice.message.refusal)
            .unwrap_or_default();
        let tool_calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect();
        Ok(ChatResponse {
            text,
            tool_calls,
            finish_reason: finish_reason(choice.finish_reason.as_deref()),
            model: r.model.unwrap_or_default(),
            usage: usage.into(),
            request_id: raw.request_id.or(r.id),
            latency: raw.latency,
        })
    }
}

/// True for the model families that refuse `max_tokens` and want `max_completion_tokens`.
pub(crate) fn uses_max_completion_tokens(field: MaxTokensField, model: &str) -> bool {
    match field {
        MaxTokensField::MaxTokens => false,
        MaxTokensField::MaxCompletionTokens => true,
        MaxTokensField::Auto => {
            // Gateways prefix the vendor: "openai/gpt-5-mini".
            let m = model
                .rsplit('/')
                .next()
                .unwrap_or(model)
                .to_ascii_lowercase();
            let o_series = m.len() >= 2 && m.starts_with('o') && m.as_bytes()[1].is_ascii_digit();
            o_series || m.starts_with("gpt-5") || m.starts_with("gpt-4.1")
        }
    }
}

fn message_json(m: &crate::request::Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut o = Map::new();
    o.insert("role".into(), json!(role));
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        o.insert(
            "content".into(),
            if m.content.is_empty() {
                Value::Null
            } else {
                json!(m.content)
            },
        );
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        o.insert("tool_calls".into(), Value::Array(calls));
    } else {
        o.insert("content".into(), json!(m.content));
    }
    if let Some(id) = &m.tool_call_id {
        o.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(o)
}

fn finish_reason(r: Option<&str>) -> FinishReason {
    match r {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.into()),
        None => FinishReason::Other("unknown".into()),
    }
}

#[derive(Deserialize)]
struct OaResponse {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<OaChoice>,
    usage: Option<OaUsage>,
}

#[derive(Deserialize)]
struct OaChoice {
    message: OaMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct OaMessage {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<OaToolCall>>,
}

#[derive(Deserialize)]
struct OaToolCall {
    id: String,
    function: OaFunction,
}

#[derive(Deserialize)]
struct OaFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct OaUsage {
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<OaPromptDetails>,
    completion_tokens_details: Option<OaCompletionDetails>,
}

#[derive(Deserialize)]
struct OaPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OaCompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl From<OaUsage> for Usage {
    fn from(u: OaUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_prompt_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct OaChunk {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<OaChunkChoice>,
    usage: Option<OaUsage>,
}

#[derive(Deserialize)]
struct OaChunkChoice {
    #[serde(default)]
    delta: OaDelta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct OaDelta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<OaToolDelta>>,
}

#[derive(Deserialize)]
struct OaToolDelta {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<OaFunctionDelta>,
}

#[derive(Deserialize)]
struct OaFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

fn on_event(
    _event: &str,
    data: &str,
    asm: &mut Assembler,
    out: &mut VecDeque<StreamEvent>,
) -> Result<Step, String> {
    if data.trim() == "[DONE]" {
        return Ok(Step::End);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("chunk is not JSON ({e}): {}", truncate(data, BODY_LIMIT)))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "error event: {}",
            truncate(&err.to_string(), BODY_LIMIT)
        ));
    }
    let chunk: OaChunk = serde_json::from_value(v).map_err(|e| {
        format!(
            "chunk has an unexpected shape ({e}): {}",
            truncate(data, BODY_LIMIT)
        )
    })?;
    if asm.model.is_empty()
        && let Some(m) = chunk.model
    {
        asm.model = m;
    }
    if asm.request_id.is_none() {
        asm.request_id = chunk.id;
    }
    if let Some(u) = chunk.usage {
        asm.usage = Some(u.into());
    }
    for c in chunk.choices {
        if let Some(t) = c.delta.content.or(c.delta.refusal) {
            asm.text_delta(t, out);
        }
        for tc in c.delta.tool_calls.unwrap_or_default() {
            let (name, args) = tc
                .function
                .map(|f| (f.name, f.arguments.unwrap_or_default()))
                .unwrap_or_default();
            asm.tool_delta(tc.index, tc.id, name, args, out);
        }
        if let Some(r) = c.finish_reason {
            asm.finish_reason = Some(finish_reason(Some(&r)));
        }
    }
    Ok(Step::Continue)
}

#[async_trait::async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse> {
        req.validate()?;
        let body = serde_json::to_vec(&self.request_body(req, false))
            .map_err(|e| Error::InvalidRequest(format!("request does not serialize: {e}")))?;
        self.core
            .call(&req.model, body.into(), |raw| self.parse(raw))
            .await
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        req.validate()?;
        let body = serde_json::to_vec(&self.request_body(req, true))
            .map_err(|e| Error::InvalidRequest(format!("request does not serialize: {e}")))?;
        let start = Instant::now();
        let (resp, permit) = self.core.open_stream(&req.model, body.into()).await?;
        let asm = Assembler {
            request_id: self.core.request_id(resp.headers()),
            ..Assembler::default()
        };
        Ok(stream::sse(
            "openai",
            resp,
            permit,
            asm,
            on_event,
            self.core.timeout(),
            start,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_completion_tokens_for_the_models_that_need_it() {
        for m in [
            "o1",
            "o3-mini",
            "o4-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-4.1-nano",
            "openai/o3",
        ] {
            assert!(uses_max_completion_tokens(MaxTokensField::Auto, m), "{m}");
        }
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-3.5-turbo",
            "llama3",
            "ollama",
            "gpt-4",
        ] {
            assert!(!uses_max_completion_tokens(MaxTokensField::Auto, m), "{m}");
        }
        assert!(!uses_max_completion_tokens(MaxTokensField::MaxTokens, "o3"));
        assert!(uses_max_completion_tokens(
            MaxTokensField::MaxCompletionTokens,
            "gpt-4o"
        ));
    }

    #[test]
    fn missing_key_names_the_variable() {
        let err = OpenAiProvider::new(&ProviderConfig::builder().build().unwrap()).unwrap_err();
        assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
        let keyless = ProviderConfig::builder()
            .allow_missing_api_key()
            .build()
            .unwrap();
        assert!(OpenAiProvider::new(&keyless).is_ok());
    }
}
