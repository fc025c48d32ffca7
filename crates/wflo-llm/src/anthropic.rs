//! Anthropic Messages API.

use crate::breaker::CircuitState;
use crate::config::{AuthScheme, ProviderConfig};
use crate::error::{Error, Result, truncate};
use crate::http::{BODY_LIMIT, BaseUrlConvention, HttpCore, RawResponse};
use crate::provider::LlmProvider;
use crate::request::{ChatRequest, ResponseFormat, Role, ToolChoice};
use crate::response::{ChatResponse, FinishReason, ToolCall, Usage};
use crate::stream::{self, Assembler, ChatStream, Step, StreamEvent};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use tokio::time::Instant;

/// Default base URL: the server root, as Anthropic's SDKs take it (`/v1/messages` is appended;
/// a base URL ending in `/v1` gets `/messages` only).
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The environment variable the facade reads the Anthropic key from.
pub const ANTHROPIC_API_KEY_VAR: &str = "ANTHROPIC_API_KEY";

/// An Anthropic Messages provider. System messages become the top-level `system` field; tool
/// results become `tool_result` blocks of a user turn. Anthropic has no sampling seed: a
/// request's seed is not sent. JSON response formats are refused before sending (describe the
/// format in the prompt or ask for a tool call instead).
#[derive(Debug)]
pub struct AnthropicProvider {
    core: HttpCore,
    default_max_tokens: u32,
}

impl AnthropicProvider {
    /// Builds the provider; without an API key this fails with [`Error::MissingApiKey`] naming
    /// `ANTHROPIC_API_KEY`.
    pub fn new(config: &ProviderConfig) -> Result<Self> {
        if config.api_key.is_none() && !config.allow_missing_api_key {
            return Err(Error::MissingApiKey {
                provider: "anthropic".into(),
                env_var: ANTHROPIC_API_KEY_VAR,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-version",
            HeaderValue::from_str(&config.anthropic_version).map_err(|_| {
                Error::InvalidConfig("anthropic_version is not a valid header value".into())
            })?,
        );
        let core = HttpCore::new(
            "anthropic",
            config,
            ANTHROPIC_BASE_URL,
            "messages",
            BaseUrlConvention::ServerRoot,
            AuthScheme::Header("x-api-key".into()),
            headers,
            "request-id",
        )?;
        Ok(Self {
            core,
            default_max_tokens: config.default_max_tokens,
        })
    }

    /// State of the circuit breaker for `model`.
    pub fn circuit_state(&self, model: &str) -> CircuitState {
        self.core.circuit_state(model)
    }

    /// The JSON body sent for `req`; refuses what Anthropic cannot express.
    pub fn request_body(&self, req: &ChatRequest, stream: bool) -> Result<Value> {
        if matches!(
            req.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        ) {
            return Err(Error::InvalidRequest(
                "the anthropic provider has no json response format; describe the format in the prompt or ask for a tool call".into(),
            ));
        }
        let mut b = Map::new();
        b.insert("model".into(), json!(req.model));
        b.insert(
            "max_tokens".into(),
            json!(req.max_tokens.unwrap_or(self.default_max_tokens)),
        );
        let system: Vec<&str> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        if !system.is_empty() {
            b.insert("system".into(), json!(system.join("\n\n")));
        }
        let mut messages: Vec<Value> = Vec::new();
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            match m.role {
                Role::User => {
                    messages.push(
                        json!({"role": "user", "content": [{"type": "text", "text": m.content}]}),
                    );
                }
                Role::Assistant => {
                    let mut blocks = Vec::new();
                    if !m.content.is_empty() {
                        blocks.push(json!({"type": "text", "text": m.content}));
                    }
                    for c in &m.tool_calls {
                        let input: Value = if c.arguments.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(&c.arguments).map_err(|e| {
                                Error::InvalidRequest(format!(
                                    "arguments of tool call {} are not JSON ({e}); pass the arguments the model returned",
                                    c.id
                                ))
                            })?
                        };
                        blocks.push(
                            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                        );
                    }
                    messages.push(json!({"role": "assistant", "content": blocks}));
                }
                Role::Tool => {
                    let block = json!({
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id,
                        "content": m.content,
                    });
                    // Consecutive tool results go into one user turn.
                    let last_is_results = messages.last().is_some_and(|l| {
                        l["role"] == "user"
                            && l["content"]
                                .as_array()
                                .and_then(|a| a.first())
                                .is_some_and(|f| f["type"] == "tool_result")
                    });
                    match messages.last_mut() {
                        Some(last) if last_is_results => {
                            if let Some(a) = last["content"].as_array_mut() {
                                a.push(block);
                            }
                        }
                        _ => messages.push(json!({"role": "user", "content": [block]})),
                    }
                }
                Role::System => {}
            }
        }
        if messages.is_empty() {
            return Err(Error::InvalidRequest(
                "the request has only system messages; add a user message".into(),
            ));
        }
        b.insert("messages".into(), Value::Array(messages));
        if let Some(t) = req.temperature {
            if t > 1.0 {
                return Err(Error::InvalidRequest(format!(
                    "temperature {t} is above anthropic's maximum of 1.0; lower it"
                )));
            }
            b.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            b.insert("top_p".into(), json!(p));
        }
        if !req.stop.is_empty() {
            b.insert("stop_sequences".into(), json!(req.stop));
        }
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    let mut o = Map::new();
                    o.insert("name".into(), json!(t.name));
                    if let Some(d) = &t.description {
                        o.insert("description".into(), json!(d));
                    }
                    o.insert("input_schema".into(), t.parameters.clone());
                    Value::Object(o)
                })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = &req.tool_choice {
            let v = match c {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
            };
            b.insert("tool_choice".into(), v);
        }
        if stream {
            b.insert("stream".into(), json!(true));
        }
        Ok(Value::Object(b))
    }

    fn parse(&self, raw: RawResponse) -> Result<ChatResponse> {
        let malformed = |reason: String| Error::MalformedResponse {
            provider: "anthropic".into(),
            status: raw.status,
            reason,
            body: truncate(&String::from_utf8_lossy(&raw.body), BODY_LIMIT),
        };
        let r: AnMessage = serde_json::from_slice(&raw.body)
            .map_err(|e| malformed(format!("not a messages response: {e}")))?;
        let usage = r.usage.ok_or_else(|| {
            malformed("no usage in the response; the server must report token usage".into())
        })?;
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in r.content {
            match block {
                AnBlock::Text { text: t } => text.push_str(&t),
                AnBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                }),
                AnBlock::Other => {}
            }
        }
        Ok(ChatResponse {
            text,
            tool_calls,
            finish_reason: stop_reason(r.stop_reason.as_deref()),
            model: r.model.unwrap_or_default(),
            usage: usage.into(),
            request_id: raw.request_id.or(r.id),
            latency: raw.latency,
        })
    }
}

fn stop_reason(r: Option<&str>) -> FinishReason {
    match r {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.into()),
        None => FinishReason::Other("unknown".into()),
    }
}

#[derive(Deserialize)]
struct AnMessage {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<AnBlock>,
    stop_reason: Option<String>,
    usage: Option<AnUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct AnUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl From<AnUsage> for Usage {
    fn from(u: AnUsage) -> Self {
        let read = u.cache_read_input_tokens.unwrap_or(0);
        let write = u.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            // Anthropic's input_tokens excludes cached reads and writes; ours counts all input.
            prompt_tokens: u.input_tokens.unwrap_or(0) + read + write,
            completion_tokens: u.output_tokens.unwrap_or(0),
            cached_prompt_tokens: read,
            cache_write_tokens: write,
            reasoning_tokens: 0,
        }
    }
}

/// Applies the fields present in `u` over the usage so far (message_delta repeats some).
fn merge_usage(asm: &mut Assembler, u: AnUsage) {
    let mut cur = asm.usage.unwrap_or_default();
    let read = u
        .cache_read_input_tokens
        .unwrap_or(cur.cached_prompt_tokens);
    let write = u
        .cache_creation_input_tokens
        .unwrap_or(cur.cache_write_tokens);
    let uncached = cur
        .prompt_tokens
        .saturating_sub(cur.cached_prompt_tokens + cur.cache_write_tokens);
    let input = u.input_tokens.unwrap_or(uncached);
    cur.prompt_tokens = input + read + write;
    cur.cached_prompt_tokens = read;
    cur.cache_write_tokens = write;
    if let Some(o) = u.output_tokens {
        cur.completion_tokens = o;
    }
    asm.usage = Some(cur);
}

fn on_event(
    _event: &str,
    data: &str,
    asm: &mut Assembler,
    out: &mut VecDeque<StreamEvent>,
) -> Result<Step, String> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("event is not JSON ({e}): {}", truncate(data, BODY_LIMIT)))?;
    let shape =
        |e: serde_json::Error| format!("unexpected event ({e}): {}", truncate(data, BODY_LIMIT));
    match v["type"].as_str().unwrap_or_default() {
        "message_start" => {
            let m = &v["message"];
            if let Some(model) = m["model"].as_str() {
                asm.model = model.to_string();
            }
            if asm.request_id.is_none() {
                asm.request_id = m["id"].as_str().map(str::to_string);
            }
            let u: AnUsage = serde_json::from_value(m["usage"].clone()).map_err(shape)?;
            merge_usage(asm, u);
        }
        "content_block_start" => {
            let index = v["index"].as_u64().unwrap_or(0) as usize;
            let block = &v["content_block"];
            match block["type"].as_str() {
                Some("text") => {
                    asm.text_delta(block["text"].as_str().unwrap_or_default().to_string(), out);
                }
                Some("tool_use") => {
                    let tool_index = asm.block_to_tool.len();
                    asm.block_to_tool.insert(index, tool_index);
                    asm.tool_delta(
                        tool_index,
                        block["id"].as_str().map(str::to_string),
                        block["name"].as_str().map(str::to_string),
                        String::new(),
                        out,
                    );
                }
                _ => {}
            }
        }
        "content_block_delta" => {
            let index = v["index"].as_u64().unwrap_or(0) as usize;
            let d = &v["delta"];
            match d["type"].as_str() {
                Some("text_delta") => {
                    asm.text_delta(d["text"].as_str().unwrap_or_default().to_string(), out);
                }
                Some("input_json_delta") => {
                    let tool_index = *asm.block_to_tool.get(&index).ok_or_else(|| {
                        format!("input delta for block {index} that is no tool call")
                    })?;
                    let part = d["partial_json"].as_str().unwrap_or_default().to_string();
                    asm.tool_delta(tool_index, None, None, part, out);
                }
                _ => {}
            }
        }
        "message_delta" => {
            if let Some(r) = v["delta"]["stop_reason"].as_str() {
                asm.finish_reason = Some(stop_reason(Some(r)));
            }
            if v.get("usage").is_some_and(Value::is_object) {
                let u: AnUsage = serde_json::from_value(v["usage"].clone()).map_err(shape)?;
                merge_usage(asm, u);
            }
        }
        "message_stop" => return Ok(Step::End),
        "error" => {
            return Err(format!(
                "error event: {}",
                truncate(&v["error"].to_string(), BODY_LIMIT)
            ));
        }
        _ => {} // ping, content_block_stop, future events
    }
    Ok(Step::Continue)
}

#[async_trait::async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse> {
        req.validate()?;
        let body = serde_json::to_vec(&self.request_body(req, false)?)
            .map_err(|e| Error::InvalidRequest(format!("request does not serialize: {e}")))?;
        self.core
            .call(&req.model, body.into(), |raw| self.parse(raw))
            .await
    }

    async fn stream(&self, req: &ChatRequest) -> Result<ChatStream> {
        req.validate()?;
        let body = serde_json::to_vec(&self.request_body(req, true)?)
            .map_err(|e| Error::InvalidRequest(format!("request does not serialize: {e}")))?;
        let start = Instant::now();
        let (resp, permit) = self.core.open_stream(&req.model, body.into()).await?;
        let asm = Assembler {
            request_id: self.core.request_id(resp.headers()),
            ..Assembler::default()
        };
        Ok(stream::sse(
            "anthropic",
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
    use crate::request::Message;
    use crate::response::ToolCall;

    fn provider() -> AnthropicProvider {
        AnthropicProvider::new(&ProviderConfig::builder().api_key("k").build().unwrap()).unwrap()
    }

    #[test]
    fn missing_key_names_the_variable() {
        let err = AnthropicProvider::new(&ProviderConfig::builder().build().unwrap()).unwrap_err();
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
    }

    #[test]
    fn system_is_top_level_and_tool_results_merge() {
        let req = ChatRequest::builder("claude-sonnet-4-5")
            .system("be brief")
            .user("weather?")
            .message(Message::assistant_tool_calls(
                "",
                vec![
                    ToolCall {
                        id: "a".into(),
                        name: "w".into(),
                        arguments: r#"{"city":"Oslo"}"#.into(),
                    },
                    ToolCall {
                        id: "b".into(),
                        name: "w".into(),
                        arguments: r#"{"city":"Rome"}"#.into(),
                    },
                ],
            ))
            .message(Message::tool("a", "cold"))
            .message(Message::tool("b", "warm"))
            .build()
            .unwrap();
        let b = provider().request_body(&req, false).unwrap();
        assert_eq!(b["system"], "be brief");
        assert_eq!(b["max_tokens"], 4096);
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][0]["input"]["city"], "Oslo");
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(msgs[2]["content"][1]["tool_use_id"], "b");
    }

    #[test]
    fn what_anthropic_cannot_express_is_refused() {
        let req = ChatRequest::builder("c")
            .user("x")
            .response_format(ResponseFormat::JsonObject)
            .build()
            .unwrap();
        assert!(provider().request_body(&req, false).is_err());
        let only_system = ChatRequest::builder("c").system("x").build().unwrap();
        assert!(provider().request_body(&only_system, false).is_err());
    }
}
