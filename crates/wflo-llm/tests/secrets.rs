//! The API key reaches the server and nothing else: not Debug output, not errors, not logs.

mod common;

use common::{KEY, config, openai_body};
use std::io::Write;
use std::sync::{Arc, Mutex};
use wflo_llm::{AnthropicProvider, ChatRequest, LlmProvider, OpenAiProvider};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_key_is_never_in_debug_output_errors_or_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Thread-local default: this test's current-thread runtime runs every task (ours, reqwest's,
    // hyper's) on this thread, so all their events land in `capture`.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "ok")))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string("invalid api key"))
        .with_priority(3)
        .mount(&server)
        .await;

    let cfg = config(&server).build().unwrap();
    let openai = OpenAiProvider::new(&cfg).unwrap();
    let anthropic = AnthropicProvider::new(&cfg).unwrap();
    let req = ChatRequest::builder("gpt-4o").user("hi").build().unwrap();
    openai.complete(&req).await.unwrap(); // a retry, then success
    let err = openai.complete(&req).await.unwrap_err(); // 401
    let err2 = anthropic.complete(&req).await.unwrap_err();

    // The key did reach the server, in the header each provider uses.
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {KEY}")
    );
    assert_eq!(
        reqs[3].headers.get("x-api-key").unwrap().to_str().unwrap(),
        KEY
    );

    let debug = format!("{cfg:?}\n{openai:?}\n{anthropic:?}\n{err:?}\n{err}\n{err2:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(
        !debug.contains(KEY),
        "key leaked into debug/error output:\n{debug}"
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("llm call failed; retrying"),
        "the retry was logged:\n{logs}"
    );
    assert!(
        logs.contains("llm request"),
        "requests were logged:\n{logs}"
    );
    assert!(!logs.contains(KEY), "key leaked into logs:\n{logs}");
}
