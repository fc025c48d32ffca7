//! # wflo-llm — LLM providers for Wflo
//!
//! *Inner crate of Wflo: its API may change in any release. Use it through `wflo-core`, the one
//! public, semver'd facade.*
//!
//! Calls chat models and reports exactly what they used, so cost tracking is fed real numbers.
//!
//! * [`LlmProvider`]: `complete` and `stream` a validated [`ChatRequest`] into a
//!   [`ChatResponse`] with text, tool calls, finish reason, model, [`Usage`] (cached prompt and
//!   reasoning tokens included), the provider's request id and the latency.
//! * [`OpenAiProvider`] (any OpenAI-compatible Chat Completions server, base URL configurable)
//!   and [`AnthropicProvider`] (Messages API), over reqwest with rustls.
//! * Calls survive a bad day: connect and total timeouts; retries with exponential backoff and
//!   jitter on 429, 5xx, timeouts and connection errors, honouring `Retry-After`; no retry on
//!   other 4xx; a circuit breaker per provider and model ([`CircuitState`]).
//! * Streams (server-sent events) yield deltas and end with the assembled response and usage.
//! * [`ReplayProvider`] records responses to a cassette and replays them deterministically; a
//!   request not in the cassette is [`Error::CassetteMiss`] naming its hash.
//! * API keys come from configuration only ([`ProviderConfig`]); this crate never reads the
//!   environment, never logs a key, and prints `[redacted]` for it.
//!
//! ```no_run
//! # async fn demo() -> wflo_llm::Result<()> {
//! use wflo_llm::{ChatRequest, ProviderConfig, create_provider};
//! let config = ProviderConfig::builder().maybe_api_key(Some("sk-...".into())).build()?;
//! let llm = create_provider("openai", &config)?;
//! let req = ChatRequest::builder("gpt-4o-mini").user("Say hi").max_tokens(20).build()?;
//! let resp = llm.complete(&req).await?;
//! println!("{} ({} prompt tokens)", resp.text, resp.usage.prompt_tokens);
//! # Ok(()) }
//! ```
//!
//! No reqwest, secrecy or backon type appears in this crate's public API.

mod anthropic;
mod breaker;
mod config;
mod error;
mod http;
mod openai;
mod provider;
mod registry;
mod replay;
mod request;
mod response;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;

pub use anthropic::{ANTHROPIC_API_KEY_VAR, ANTHROPIC_BASE_URL, AnthropicProvider};
pub use breaker::CircuitState;
pub use config::{
    ApiKey, AuthScheme, BreakerConfig, BreakerConfigBuilder, MaxTokensField, ProviderConfig,
    ProviderConfigBuilder, RetryConfig, RetryConfigBuilder,
};
pub use error::{Error, Result};
pub use openai::{OPENAI_API_KEY_VAR, OPENAI_BASE_URL, OpenAiProvider};
pub use provider::LlmProvider;
pub use registry::{ProviderFactory, ProviderRegistry, create_provider};
pub use replay::{ReplayProvider, request_hash};
pub use request::{
    ChatRequest, ChatRequestBuilder, Message, ResponseFormat, Role, Tool, ToolChoice,
};
pub use response::{ChatResponse, FinishReason, ToolCall, Usage};
pub use stream::{ChatStream, StreamEvent};
