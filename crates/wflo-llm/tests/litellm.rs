//! Both providers against a real OpenAI- and Anthropic-compatible server: LiteLLM's proxy with
//! mock models (the optional `litellm` service). Base URLs are given as each provider's SDKs take
//! them (`OPENAI_BASE_URL=http://HOST/v1`, `ANTHROPIC_BASE_URL=http://HOST`), and in the other
//! form. Run with `cargo xtask itest wflo-llm` (starts the proxy, exports
//! `WFLO_TEST_LITELLM_URL` and `WFLO_TEST_LITELLM_KEY`).
#![cfg(feature = "integration")]

use futures::StreamExt;
use std::time::Duration;
use wflo_llm::{
    AnthropicProvider, ChatRequest, ChatResponse, Error, LlmProvider, OpenAiProvider,
    ProviderConfig, RetryConfig, StreamEvent,
};

/// The answer of the proxy's mock OpenAI model (see xtask/src/litellm.rs).
const ANSWER: &str = "Paris is the capital of France.";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this suite with `cargo xtask itest wflo-llm` (it starts LiteLLM's proxy)")
    })
}

fn host() -> String {
    var("WFLO_TEST_LITELLM_URL")
}

fn config(base: &str) -> ProviderConfig {
    ProviderConfig::builder()
        .api_key(var("WFLO_TEST_LITELLM_KEY"))
        .base_url(base)
        .expect("base url")
        .timeout(Duration::from_secs(30))
        .retry(
            RetryConfig::builder()
                .max_attempts(1)
                .build()
                .expect("retry"),
        )
        .build()
        .expect("config")
}

fn req(model: &str) -> ChatRequest {
    ChatRequest::builder(model)
        .system("Answer in one sentence.")
        .user("What is the capital of France?")
        .max_tokens(64)
        .build()
        .expect("request")
}

async fn streamed(p: &dyn LlmProvider, req: &ChatRequest) -> (String, ChatResponse) {
    let mut stream = p.stream(req).await.expect("the stream opens");
    let mut deltas = String::new();
    while let Some(ev) = stream.next().await {
        match ev.expect("a stream event") {
            StreamEvent::TextDelta(t) => deltas.push_str(&t),
            StreamEvent::Done(resp) => return (deltas, resp),
            _ => {}
        }
    }
    panic!("the stream ended without its response");
}

fn assert_usage(resp: &ChatResponse, what: &str) {
    assert!(
        resp.usage.prompt_tokens > 0 && resp.usage.completion_tokens > 0,
        "{what}: no usage in {resp:?}"
    );
}

#[tokio::test]
async fn openai_with_the_sdk_base_url_plain_and_streamed() {
    let p = OpenAiProvider::new(&config(&format!("{}/v1", host()))).unwrap();
    let resp = p.complete(&req("gpt-4o-mini")).await.unwrap();
    assert_eq!(resp.text, ANSWER);
    assert_usage(&resp, "openai plain");

    let (deltas, resp) = streamed(&p, &req("gpt-4o-mini")).await;
    assert_eq!(deltas, ANSWER, "the deltas add up to the answer");
    assert_eq!(resp.text, ANSWER);
    assert_usage(&resp, "openai streamed");

    // The bare host works too.
    let p = OpenAiProvider::new(&config(&host())).unwrap();
    assert_eq!(p.complete(&req("gpt-4o-mini")).await.unwrap().text, ANSWER);
}

#[tokio::test]
async fn anthropic_with_the_sdk_base_url_plain_and_streamed() {
    // ANTHROPIC_BASE_URL as Anthropic's SDKs take it: the server root, no `/v1`.
    let p = AnthropicProvider::new(&config(&host())).unwrap();
    // LiteLLM's own Anthropic mock.
    let resp = p.complete(&req("claude-sonnet-4-5")).await.unwrap();
    assert_eq!(resp.text, "Paris.");
    assert_usage(&resp, "anthropic mock");
    // A model the proxy translates to the OpenAI mock: plain and streamed Messages events.
    let resp = p.complete(&req("claude-haiku-4-5")).await.unwrap();
    assert_eq!(resp.text, ANSWER);
    assert_usage(&resp, "anthropic plain");
    let (deltas, resp) = streamed(&p, &req("claude-haiku-4-5")).await;
    assert_eq!(deltas, ANSWER, "the deltas add up to the answer");
    assert_eq!(resp.text, ANSWER);
    assert_usage(&resp, "anthropic streamed");

    // The form with `/v1` still works.
    let p = AnthropicProvider::new(&config(&format!("{}/v1", host()))).unwrap();
    assert_eq!(
        p.complete(&req("claude-sonnet-4-5")).await.unwrap().text,
        "Paris."
    );
}

#[tokio::test]
async fn a_wrong_base_path_is_a_404_naming_the_url() {
    let base = format!("{}/nothing-here", host());
    let err = AnthropicProvider::new(&config(&base))
        .unwrap()
        .complete(&req("claude-sonnet-4-5"))
        .await
        .unwrap_err();
    match &err {
        Error::Status { status, url, .. } => {
            assert_eq!(*status, 404, "{err}");
            assert_eq!(url, &format!("{base}/v1/messages"));
        }
        other => panic!("expected http 404, got {other:?}"),
    }
    assert!(err.to_string().contains("check the base url"), "{err}");
}
