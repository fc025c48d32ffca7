//! OpenAI-compatible and Anthropic providers against a real HTTP server on loopback.

mod common;

use common::{KEY, anthropic_body, config, openai_body, sse};
use futures::StreamExt;
use serde_json::{Value, json};
use wflo_llm::{
    AnthropicProvider, AuthScheme, ChatRequest, Error, FinishReason, LlmProvider, Message,
    OpenAiProvider, ResponseFormat, StreamEvent, Tool, ToolCall, ToolChoice, Usage,
};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn sent_body(server: &MockServer) -> Value {
    let reqs = server.received_requests().await.expect("recording on");
    assert_eq!(reqs.len(), 1, "exactly one request");
    serde_json::from_slice(&reqs[0].body).expect("json body")
}

#[tokio::test]
async fn openai_success_parses_usage_with_cached_and_reasoning_tokens() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-request-id", "req_7f9a")
                .set_body_json(openai_body("gpt-4o-2024-08-06", "Paris.")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let weather = Tool::function(
        "weather",
        "Current weather",
        json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    );
    let req = ChatRequest::builder("gpt-4o")
        .system("Be terse.")
        .user("Capital of France?")
        .assistant("Which country?")
        .user("France.")
        .temperature(0.2)
        .top_p(0.9)
        .max_tokens(64)
        .stop("END")
        .seed(42)
        .tool(weather)
        .tool_choice(ToolChoice::Auto)
        .response_format(ResponseFormat::Text)
        .build()
        .unwrap();
    let resp = p.complete(&req).await.unwrap();
    assert_eq!(resp.text, "Paris.");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert_eq!(resp.model, "gpt-4o-2024-08-06");
    assert_eq!(
        resp.usage,
        Usage {
            prompt_tokens: 1200,
            completion_tokens: 300,
            cached_prompt_tokens: 1024,
            cache_write_tokens: 0,
            reasoning_tokens: 256,
        }
    );
    assert_eq!(resp.request_id.as_deref(), Some("req_7f9a"));
    assert!(!resp.latency.is_zero());

    let b = sent_body(&server).await;
    assert_eq!(b["model"], "gpt-4o");
    let roles: Vec<&str> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(b["temperature"], 0.2);
    assert_eq!(b["top_p"], 0.9);
    assert_eq!(b["max_tokens"], 64);
    assert!(b.get("max_completion_tokens").is_none());
    assert_eq!(b["stop"], json!(["END"]));
    assert_eq!(b["seed"], 42);
    assert_eq!(b["tools"][0]["type"], "function");
    assert_eq!(b["tools"][0]["function"]["name"], "weather");
    assert_eq!(b["tool_choice"], "auto");
    assert_eq!(b["response_format"], json!({"type": "text"}));
    assert!(b.get("stream").is_none());
}

#[tokio::test]
async fn openai_reasoning_models_get_max_completion_tokens() {
    for (model, field, other) in [
        ("o3-mini", "max_completion_tokens", "max_tokens"),
        ("gpt-5-mini", "max_completion_tokens", "max_tokens"),
        ("gpt-4.1", "max_completion_tokens", "max_tokens"),
        ("gpt-4o-mini", "max_tokens", "max_completion_tokens"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(openai_body(model, "ok")))
            .mount(&server)
            .await;
        let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
        let req = ChatRequest::builder(model)
            .user("hi")
            .max_tokens(100)
            .build()
            .unwrap();
        p.complete(&req).await.unwrap();
        let b = sent_body(&server).await;
        assert_eq!(b[field], 100, "{model}");
        assert!(b.get(other).is_none(), "{model} must not send {other}");
    }
}

#[tokio::test]
async fn openai_tool_calls_round_trip() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-t",
            "model": "gpt-4o",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}
                    }]
                },
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10}
        })))
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let tool = Tool::function("weather", "w", json!({"type": "object"}));
    let req = ChatRequest::builder("gpt-4o")
        .user("weather in Oslo?")
        .tool(tool.clone())
        .tool_choice(ToolChoice::Tool("weather".into()))
        .build()
        .unwrap();
    let resp = p.complete(&req).await.unwrap();
    assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
    assert_eq!(resp.text, "");
    assert_eq!(
        resp.tool_calls,
        [ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into()
        }]
    );
    // Usage without the detail objects: the parts are 0, not an error.
    assert_eq!(resp.usage.cached_prompt_tokens, 0);
    assert_eq!(resp.usage.prompt_tokens, 50);
    let b = sent_body(&server).await;
    assert_eq!(
        b["tool_choice"],
        json!({"type": "function", "function": {"name": "weather"}})
    );

    // The follow-up turn carries the call and its result.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "Cold.")))
        .mount(&server)
        .await;
    let follow = ChatRequest::builder("gpt-4o")
        .user("weather in Oslo?")
        .message(Message::assistant_tool_calls("", resp.tool_calls.clone()))
        .message(Message::tool("call_1", "-3C"))
        .tool(tool)
        .build()
        .unwrap();
    assert_eq!(p.complete(&follow).await.unwrap().text, "Cold.");
    let b = sent_body(&server).await;
    assert_eq!(b["messages"][1]["content"], Value::Null);
    assert_eq!(b["messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        b["messages"][1]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Oslo"}"#
    );
    assert_eq!(
        b["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "-3C"})
    );
}

#[tokio::test]
async fn azure_style_deployment_with_header_key_and_api_version() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/deployments/prod-4o/chat/completions"))
        .and(query_param("api-version", "2024-10-21"))
        .and(header("api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "hi")))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = config(&server)
        .base_url(&format!("{}/openai/deployments/prod-4o", server.uri()))
        .unwrap()
        .auth(AuthScheme::Header("api-key".into()))
        .query("api-version", "2024-10-21")
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();
    let req = ChatRequest::builder("gpt-4o").user("hi").build().unwrap();
    assert_eq!(p.complete(&req).await.unwrap().text, "hi");
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn anthropic_success_parses_usage_with_cache_reads_and_writes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_partial_json(
            json!({"system": "Be terse.", "max_tokens": 256}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
                .set_body_json(anthropic_body("Paris.")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("claude-sonnet-4-5")
        .system("Be terse.")
        .user("Capital of France?")
        .temperature(0.5)
        .top_p(0.9)
        .stop("END")
        .max_tokens(256)
        .build()
        .unwrap();
    let resp = p.complete(&req).await.unwrap();
    assert_eq!(resp.text, "Paris.");
    assert_eq!(resp.finish_reason, FinishReason::Stop);
    assert_eq!(resp.model, "claude-sonnet-4-5-20250929");
    assert_eq!(
        resp.usage,
        Usage {
            prompt_tokens: 2600,
            completion_tokens: 50,
            cached_prompt_tokens: 2000,
            cache_write_tokens: 500,
            reasoning_tokens: 0,
        }
    );
    assert_eq!(
        resp.request_id.as_deref(),
        Some("req_011CSHoEeqs5C35K2UUqR7Fy")
    );
    let b = sent_body(&server).await;
    assert_eq!(
        b["messages"].as_array().unwrap().len(),
        1,
        "system is not a message"
    );
    assert_eq!(b["messages"][0]["role"], "user");
    assert_eq!(b["stop_sequences"], json!(["END"]));
    assert_eq!(b["temperature"], 0.5);
    assert!(b.get("seed").is_none());
}

#[tokio::test]
async fn anthropic_tool_use_is_a_tool_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 30, "output_tokens": 20}
        })))
        .mount(&server)
        .await;
    let p = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("claude-haiku-4-5")
        .user("weather?")
        .tool(Tool::function("weather", "w", json!({"type": "object"})))
        .tool_choice(ToolChoice::Required)
        .build()
        .unwrap();
    let resp = p.complete(&req).await.unwrap();
    assert_eq!(resp.text, "Checking.");
    assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
    assert_eq!(resp.tool_calls[0].id, "toolu_1");
    assert_eq!(
        serde_json::from_str::<Value>(&resp.tool_calls[0].arguments).unwrap(),
        json!({"city": "Oslo"})
    );
    assert_eq!(resp.usage.prompt_tokens, 30);
    assert_eq!(
        resp.request_id.as_deref(),
        Some("msg_1"),
        "falls back to the message id"
    );
    let b = sent_body(&server).await;
    assert_eq!(b["tool_choice"], json!({"type": "any"}));
    assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
}

#[tokio::test]
async fn openai_stream_is_assembled_with_usage() {
    let server = MockServer::start().await;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "gpt-4o-2024-08-06",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
    };
    let mut body = sse(&[
        (
            "",
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        ),
        ("", chunk(json!({"content": "Hel"}), Value::Null)),
        ("", chunk(json!({"content": "lo"}), Value::Null)),
        (
            "",
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                        "function": {"name": "lookup", "arguments": "{\"q\":"}}]}),
                Value::Null,
            ),
        ),
        (
            "",
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"x\"}"}}]}),
                Value::Null,
            ),
        ),
        ("", chunk(json!({}), json!("tool_calls"))),
        (
            "",
            json!({"id": "chatcmpl-s", "model": "gpt-4o-2024-08-06", "choices": [],
                   "usage": {"prompt_tokens": 40, "completion_tokens": 12,
                             "prompt_tokens_details": {"cached_tokens": 32},
                             "completion_tokens_details": {"reasoning_tokens": 4}}}),
        ),
    ]);
    body.push_str("data: [DONE]\n\n");
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-request-id", "req_stream")
                .set_body_raw(body, "text/event-stream"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("gpt-4o").user("hi").build().unwrap();
    let events: Vec<StreamEvent> = p
        .stream(&req)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallDelta { .. }))
            .count(),
        2
    );
    let StreamEvent::Done(resp) = events.last().unwrap() else {
        panic!("last event must be Done: {events:?}");
    };
    assert_eq!(resp.text, "Hello");
    assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
    assert_eq!(resp.tool_calls[0].id, "call_9");
    assert_eq!(resp.tool_calls[0].name, "lookup");
    assert_eq!(resp.tool_calls[0].arguments, r#"{"q":"x"}"#);
    assert_eq!(resp.model, "gpt-4o-2024-08-06");
    assert_eq!(resp.request_id.as_deref(), Some("req_stream"));
    assert_eq!(
        resp.usage,
        Usage {
            prompt_tokens: 40,
            completion_tokens: 12,
            cached_prompt_tokens: 32,
            cache_write_tokens: 0,
            reasoning_tokens: 4
        }
    );
}

#[tokio::test]
async fn anthropic_stream_is_assembled_with_usage() {
    let server = MockServer::start().await;
    let body = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                   "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
                   "usage": {"input_tokens": 20, "cache_read_input_tokens": 1000,
                             "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\": "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"x\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                   "usage": {"output_tokens": 35}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .expect(1)
        .mount(&server)
        .await;
    let p = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("claude-sonnet-4-5")
        .user("hi")
        .build()
        .unwrap();
    let resp = p.stream(&req).await.unwrap().into_response().await.unwrap();
    assert_eq!(resp.text, "Let me check.");
    assert_eq!(resp.finish_reason, FinishReason::ToolCalls);
    assert_eq!(resp.tool_calls.len(), 1);
    assert_eq!(resp.tool_calls[0].id, "toolu_9");
    assert_eq!(resp.tool_calls[0].arguments, r#"{"q": "x"}"#);
    assert_eq!(resp.request_id.as_deref(), Some("msg_s"));
    assert_eq!(
        resp.usage,
        Usage {
            prompt_tokens: 1020,
            completion_tokens: 35,
            cached_prompt_tokens: 1000,
            cache_write_tokens: 0,
            reasoning_tokens: 0
        }
    );
}

#[tokio::test]
async fn a_stream_without_usage_or_with_an_error_event_is_a_typed_error() {
    let server = MockServer::start().await;
    let body = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("m").user("hi").build().unwrap();
    match p.stream(&req).await.unwrap().into_response().await {
        Err(Error::Stream { message, .. }) => {
            assert!(message.contains("without usage"), "{message}")
        }
        other => panic!("want a stream error, got {other:?}"),
    }

    let server = MockServer::start().await;
    let body = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1, "output_tokens": 0}}}),
        ),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let p = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    match p.stream(&req).await.unwrap().into_response().await {
        Err(Error::Stream { provider, message }) => {
            assert_eq!(provider, "anthropic");
            assert!(message.contains("overloaded_error"), "{message}");
        }
        other => panic!("want a stream error, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_is_a_typed_error_with_status_and_truncated_body() {
    let server = MockServer::start().await;
    let garbage = format!("<html>{}</html>", "gateway says no ".repeat(400));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(garbage.clone(), "text/html"))
        .expect(1) // a malformed answer is not retried
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let req = ChatRequest::builder("gpt-4o").user("hi").build().unwrap();
    match p.complete(&req).await.unwrap_err() {
        Error::MalformedResponse {
            status,
            body,
            reason,
            ..
        } => {
            assert_eq!(status, 200);
            assert!(body.starts_with("<html>gateway says no"), "{body}");
            assert!(
                body.len() < 700,
                "body must be truncated, is {} bytes",
                body.len()
            );
            assert!(
                body.contains(&format!("{} bytes total", garbage.len())),
                "{body}"
            );
            assert!(reason.contains("not a chat completion"), "{reason}");
        }
        e => panic!("want MalformedResponse, got {e:?}"),
    }

    // Valid JSON without usage is refused too: a response we cannot bill is not a success.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg", "type": "message", "model": "c",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn"
        })))
        .mount(&server)
        .await;
    let p = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    match p.complete(&req).await.unwrap_err() {
        Error::MalformedResponse { status, reason, .. } => {
            assert_eq!(status, 200);
            assert!(reason.contains("no usage"), "{reason}");
        }
        e => panic!("want MalformedResponse, got {e:?}"),
    }
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("m", "x")))
        .expect(0)
        .mount(&server)
        .await;
    let anthropic = AnthropicProvider::new(&config(&server).build().unwrap()).unwrap();
    assert!(matches!(
        ChatRequest::builder("m").build(),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        ChatRequest::builder("m").user("x").max_tokens(0).build(),
        Err(Error::InvalidRequest(_))
    ));
    let json_req = ChatRequest::builder("c")
        .user("x")
        .response_format(ResponseFormat::JsonObject)
        .build()
        .unwrap();
    assert!(matches!(
        anthropic.complete(&json_req).await,
        Err(Error::InvalidRequest(_))
    ));
    let hot = ChatRequest::builder("c")
        .user("x")
        .temperature(1.5)
        .build()
        .unwrap();
    assert!(matches!(
        anthropic.stream(&hot).await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(server.received_requests().await.unwrap().is_empty());
}
