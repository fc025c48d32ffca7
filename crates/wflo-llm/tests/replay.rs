//! The replay provider: a shipped cassette, misses, and recording from a real HTTP provider.

mod common;

use common::{config, openai_body};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use wflo_llm::{
    ChatRequest, Error, FinishReason, LlmProvider, OpenAiProvider, ProviderConfig, ReplayProvider,
    StreamEvent, Tool, ToolChoice, create_provider, request_hash,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example.jsonl")
}

fn capital_request() -> ChatRequest {
    ChatRequest::builder("gpt-4o-mini")
        .system("You are terse.")
        .user("What is the capital of France?")
        .temperature(0.0)
        .max_tokens(16)
        .seed(7)
        .build()
        .unwrap()
}

fn weather_request() -> ChatRequest {
    ChatRequest::builder("claude-haiku-4-5")
        .user("Weather in Oslo?")
        .tool(Tool::function(
            "weather",
            "Current weather for a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ))
        .tool_choice(ToolChoice::Required)
        .build()
        .unwrap()
}

#[test]
fn request_hashes_match_the_shipped_cassette() {
    // The fixture's hashes were computed by an independent implementation (Python's
    // json.dumps(sort_keys=True, separators=(',', ':')) + sha256): the hash is canonical, not
    // an accident of this crate's field order.
    assert_eq!(
        request_hash(&capital_request()),
        "28761f17ab65159d41e6b73ba1b26456c5b62367cbd72acd2f53e62e7e02813e"
    );
    assert_eq!(
        request_hash(&weather_request()),
        "c76b93232eb9e9757d3cad68816e2e412b5925bb08062b4d63bdfcd1caa4e442"
    );
}

#[tokio::test]
async fn the_shipped_cassette_replays_deterministically() {
    let p = ReplayProvider::replay(fixture()).unwrap();
    assert_eq!(p.len(), 2);
    let a = p.complete(&capital_request()).await.unwrap();
    let b = p.complete(&capital_request()).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.text, "Paris.");
    assert_eq!(a.usage.prompt_tokens, 24);
    assert_eq!(a.request_id.as_deref(), Some("req_fixture_1"));

    let w = p.complete(&weather_request()).await.unwrap();
    assert_eq!(w.finish_reason, FinishReason::ToolCalls);
    assert_eq!(w.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);

    // A stream replays as deltas, then the same response.
    let events: Vec<StreamEvent> =
        futures::StreamExt::collect::<Vec<_>>(p.stream(&capital_request()).await.unwrap())
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(events[0], StreamEvent::TextDelta("Paris.".into()));
    assert_eq!(events.last(), Some(&StreamEvent::Done(a)));

    // Through the registry by name.
    let cfg = ProviderConfig::builder()
        .cassette(fixture())
        .build()
        .unwrap();
    let by_name = create_provider("replay", &cfg).unwrap();
    assert_eq!(
        by_name.complete(&capital_request()).await.unwrap().text,
        "Paris."
    );
}

#[tokio::test]
async fn a_request_missing_from_the_cassette_is_a_typed_error_naming_its_hash() {
    let p = ReplayProvider::replay(fixture()).unwrap();
    let other = ChatRequest::builder("gpt-4o-mini")
        .system("You are terse.")
        .user("What is the capital of Italy?")
        .temperature(0.0)
        .max_tokens(16)
        .seed(7)
        .build()
        .unwrap();
    match p.complete(&other).await.unwrap_err() {
        Error::CassetteMiss { hash, cassette } => {
            assert_eq!(hash, request_hash(&other));
            assert!(cassette.ends_with("example.jsonl"));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        p.stream(&other).await.unwrap_err(),
        Error::CassetteMiss { .. }
    ));
    // A missing cassette file is its own error.
    assert!(matches!(
        ReplayProvider::replay("/nonexistent/cassette.jsonl").unwrap_err(),
        Error::Cassette { .. }
    ));
}

#[tokio::test]
async fn record_mode_calls_the_real_provider_once_and_replays_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "Recorded.")))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("run.jsonl");
    let real: Arc<dyn LlmProvider> =
        Arc::new(OpenAiProvider::new(&config(&server).build().unwrap()).unwrap());
    let recorder = ReplayProvider::record(real, &cassette).unwrap();
    let req = ChatRequest::builder("gpt-4o")
        .user("record me")
        .build()
        .unwrap();
    let first = recorder.complete(&req).await.unwrap();
    assert_eq!(first.text, "Recorded.");
    let again = recorder.complete(&req).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // A streamed request is recorded as its assembled response.
    let sreq = ChatRequest::builder("gpt-4o")
        .user("stream me")
        .build()
        .unwrap();
    let body = "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Streamed.\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .mount(&server)
        .await;
    let streamed = recorder
        .stream(&sreq)
        .await
        .unwrap()
        .into_response()
        .await
        .unwrap();
    assert_eq!(streamed.text, "Streamed.");

    // The file holds both, one JSON line each, and answers offline.
    let lines = std::fs::read_to_string(&cassette).unwrap();
    assert_eq!(lines.lines().count(), 2);
    let offline = ReplayProvider::replay(&cassette).unwrap();
    assert_eq!(offline.complete(&req).await.unwrap(), first);
    assert_eq!(offline.complete(&sreq).await.unwrap(), streamed);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
