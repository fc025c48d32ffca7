//! Test tooling for suites that stand up a fake OpenAI-compatible server (feature `testing`).

use serde_json::{Value, json};

/// The body of a successful OpenAI Chat Completions answer: `text` from `model`, with the given
/// token usage — what a fake provider on loopback returns so cost tracking sees real usage.
pub fn openai_chat_completion(
    model: &str,
    text: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> Value {
    json!({
        "id": "chatcmpl-wflo-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatRequest, LlmProvider, OpenAiProvider, ProviderConfig};

    #[tokio::test]
    async fn the_fake_answer_parses_with_its_usage() {
        // Parsed by the real provider, so a change in what it requires breaks this first.
        let body = openai_chat_completion("gpt-4o-mini-2024-07-18", "hi", 40, 25);
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
        let config = ProviderConfig::builder()
            .api_key("k")
            .base_url(&format!("{}/v1", server.uri()))
            .unwrap()
            .build()
            .unwrap();
        let resp = OpenAiProvider::new(&config)
            .unwrap()
            .complete(
                &ChatRequest::builder("gpt-4o-mini")
                    .user("hi")
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.text, "hi");
        assert_eq!(
            (resp.usage.prompt_tokens, resp.usage.completion_tokens),
            (40, 25)
        );
    }
}
