//! Shared helpers of the wiremock suites.
#![allow(dead_code, unreachable_pub)]

use serde_json::{Value, json};
use std::time::Duration;
use wflo_llm::{BreakerConfig, ProviderConfig, ProviderConfigBuilder, RetryConfig};
use wiremock::MockServer;

pub const KEY: &str = "sk-test-8f3a9c2e71d04b6aa5e9";

/// A config for `server` with fast retries and a breaker that stays out of the way.
pub fn config(server: &MockServer) -> ProviderConfigBuilder {
    ProviderConfig::builder()
        .api_key(KEY)
        .base_url(&format!("{}/v1", server.uri()))
        .expect("base url")
        .timeout(Duration::from_secs(5))
        .retry(fast_retry(4))
        .breaker(
            BreakerConfig::builder()
                .failure_threshold(1000)
                .build()
                .expect("breaker"),
        )
}

pub fn fast_retry(attempts: u32) -> RetryConfig {
    RetryConfig::builder()
        .max_attempts(attempts)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .build()
        .expect("retry")
}

pub fn openai_body(model: &str, text: &str) -> Value {
    json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0}
        }
    })
}

pub fn anthropic_body(text: &str) -> Value {
    json!({
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 100,
            "cache_creation_input_tokens": 500,
            "cache_read_input_tokens": 2000,
            "output_tokens": 50
        }
    })
}

/// An SSE body from (event name, JSON data) pairs.
pub fn sse(events: &[(&str, Value)]) -> String {
    let mut s = String::new();
    for (name, data) in events {
        if !name.is_empty() {
            s.push_str(&format!("event: {name}\n"));
        }
        s.push_str(&format!("data: {data}\n\n"));
    }
    s
}
