//! Base URLs in the form each provider's own SDKs take them (`OPENAI_BASE_URL=http://HOST/v1`,
//! `ANTHROPIC_BASE_URL=http://HOST`), the other form too, and a 404 that names the URL.

mod common;

use common::{KEY, anthropic_body, fast_retry, openai_body, sse};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;
use wflo_llm::{
    AnthropicProvider, ChatRequest, Error, LlmProvider, OpenAiProvider, ProviderConfig, StreamEvent,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(base: &str) -> ProviderConfig {
    ProviderConfig::builder()
        .api_key(KEY)
        .base_url(base)
        .expect("base url")
        .timeout(Duration::from_secs(5))
        .retry(fast_retry(1))
        .build()
        .expect("config")
}

fn anthropic_sse(text: &str) -> String {
    sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_b", "type": "message",
                   "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
                   "stop_reason": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

async fn streamed_text(p: &dyn LlmProvider, req: &ChatRequest) -> (String, u64) {
    let mut s = p.stream(req).await.expect("the stream opens");
    while let Some(ev) = s.next().await {
        if let StreamEvent::Done(resp) = ev.expect("a stream event") {
            return (resp.text, resp.usage.completion_tokens);
        }
    }
    panic!("the stream ended without its response");
}

#[tokio::test]
async fn anthropic_takes_the_server_root_as_its_sdks_do_and_the_v1_form_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_body("Paris.")))
        .expect(2)
        .mount(&server)
        .await;
    let req = ChatRequest::builder("claude-sonnet-4-5")
        .user("Capital of France?")
        .max_tokens(16)
        .build()
        .unwrap();
    for base in [server.uri(), format!("{}/", server.uri())] {
        let p = AnthropicProvider::new(&config(&base)).unwrap();
        assert_eq!(p.complete(&req).await.unwrap().text, "Paris.", "{base}");
    }
    // The older form (`/v1` included) reaches the same endpoint.
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(anthropic_sse("Paris.")),
        )
        .expect(2)
        .mount(&server)
        .await;
    for base in [server.uri(), format!("{}/v1", server.uri())] {
        let p = AnthropicProvider::new(&config(&base)).unwrap();
        assert_eq!(
            streamed_text(&p, &req).await,
            ("Paris.".into(), 3),
            "{base}"
        );
    }
}

#[tokio::test]
async fn openai_takes_the_base_with_v1_as_its_sdks_do_and_a_bare_host_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o-mini", "Paris.")),
        )
        .expect(2)
        .mount(&server)
        .await;
    let req = ChatRequest::builder("gpt-4o-mini")
        .user("Capital of France?")
        .build()
        .unwrap();
    for base in [format!("{}/v1", server.uri()), server.uri()] {
        let p = OpenAiProvider::new(&config(&base)).unwrap();
        assert_eq!(p.complete(&req).await.unwrap().text, "Paris.", "{base}");
    }
}

#[tokio::test]
async fn a_404_names_the_url_that_answered_and_what_to_check() {
    // Nothing is mounted: every path answers 404, as a server does at a wrong base path.
    let server = MockServer::start().await;
    let req = ChatRequest::builder("gpt-4o-mini")
        .user("hi")
        .max_tokens(8)
        .build()
        .unwrap();
    let base = format!("{}/api?api-version=1", server.uri());
    let err = OpenAiProvider::new(&config(&base))
        .unwrap()
        .complete(&req)
        .await
        .unwrap_err();
    let Error::Status { status, url, .. } = &err else {
        panic!("expected an http status error, got {err:?}");
    };
    assert_eq!(*status, 404);
    assert_eq!(url, &format!("{}/api/chat/completions", server.uri()));
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "http 404 from {}/api/chat/completions",
            server.uri()
        )),
        "{msg}"
    );
    assert!(msg.contains("check the base url"), "{msg}");
    assert!(
        !msg.contains("api-version"),
        "the query is not shown: {msg}"
    );

    let err = AnthropicProvider::new(&config(&format!("{}/anthropic", server.uri())))
        .unwrap()
        .stream(
            &ChatRequest::builder("claude-sonnet-4-5")
                .user("hi")
                .build()
                .unwrap(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "http 404 from {}/anthropic/v1/messages",
            server.uri()
        )),
        "{msg}"
    );
    assert!(!err.is_retryable(), "a 404 is not retried: {msg}");
}
