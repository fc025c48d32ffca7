//! Chat responses and token usage.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned call id (send it back in [`crate::Message::tool`]).
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as a JSON text, exactly as the model produced it.
    pub arguments: String,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// The max-tokens limit was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Content was filtered or refused.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

/// Token usage as the provider reported it.
///
/// `prompt_tokens` counts every input token, including those read from or written to a prompt
/// cache; `cached_prompt_tokens` and `cache_write_tokens` are parts of it. `reasoning_tokens`
/// is the part of `completion_tokens` spent on hidden reasoning. Counts a provider does not
/// report are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All input tokens.
    pub prompt_tokens: u64,
    /// All output tokens (reasoning included).
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_prompt_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Output tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Text of the answer (empty when the model only called tools).
    pub text: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
    /// The model that answered, as the provider reports it.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
    /// The provider's request id (header, or the response id when no header was sent).
    pub request_id: Option<String>,
    /// Wall time of the successful attempt, from sending to the last byte.
    pub latency: Duration,
}
