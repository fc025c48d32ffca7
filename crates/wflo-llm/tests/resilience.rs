//! Retries, Retry-After, timeouts, connection errors and the circuit breaker, against a real
//! HTTP server on loopback.

mod common;

use common::{config, fast_retry, openai_body};
use std::time::{Duration, Instant};
use wflo_llm::{
    BreakerConfig, ChatRequest, CircuitState, Error, LlmProvider, OpenAiProvider, ProviderConfig,
    ProviderConfigBuilder, RetryConfig,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn req(model: &str) -> ChatRequest {
    ChatRequest::builder(model).user("hi").build().unwrap()
}

/// A provider for whatever listens (or does not) on a loopback `port`.
fn loopback_config(port: u16) -> ProviderConfigBuilder {
    ProviderConfig::builder()
        .api_key("k")
        .base_url(&format!("http://127.0.0.1:{port}/v1"))
        .unwrap()
}

async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string(r#"{"error":{"message":"rate limited"}}"#),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "ok")))
        .mount(&server)
        .await;
    // Backoff is 5-20 ms: only Retry-After can make the client wait a second.
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let start = Instant::now();
    let resp = p.complete(&req("gpt-4o")).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(resp.text, "ok");
    assert_eq!(hits(&server).await, 2);
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn retry_after_ms_is_honoured_and_an_excessive_retry_after_ends_the_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after-ms", "300"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "ok")))
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).build().unwrap()).unwrap();
    let start = Instant::now();
    p.complete(&req("gpt-4o")).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );

    // Retry-After beyond what the caller accepts: give up at once with the 429.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .mount(&server)
        .await;
    let retry = RetryConfig::builder()
        .max_attempts(5)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .max_retry_after(Duration::from_secs(10))
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&config(&server).retry(retry).build().unwrap()).unwrap();
    let start = Instant::now();
    match p.complete(&req("gpt-4o")).await.unwrap_err() {
        Error::Status {
            status, attempts, ..
        } => {
            assert_eq!(status, 429);
            assert_eq!(attempts, 1);
        }
        e => panic!("{e:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(hits(&server).await, 1);
}

#[tokio::test]
async fn server_errors_until_retries_run_out_give_a_typed_error_with_the_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("x-request-id", "req_503")
                .set_body_string("upstream overloaded"),
        )
        .mount(&server)
        .await;
    let p = OpenAiProvider::new(&config(&server).retry(fast_retry(3)).build().unwrap()).unwrap();
    let err = p.complete(&req("gpt-4o")).await.unwrap_err();
    match &err {
        Error::Status {
            status,
            attempts,
            body,
            request_id,
            provider,
            url,
        } => {
            assert_eq!(*status, 503);
            assert_eq!(url, &format!("{}/v1/chat/completions", server.uri()));
            assert_eq!(*attempts, 3);
            assert_eq!(body, "upstream overloaded");
            assert_eq!(request_id.as_deref(), Some("req_503"));
            assert_eq!(provider, "openai");
        }
        e => panic!("{e:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(err.attempts(), Some(3));
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
    assert_eq!(hits(&server).await, 3);
}

#[tokio::test]
async fn a_400_is_not_retried_and_does_not_trip_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_string(r#"{"error":{"message":"Unsupported parameter: 'max_tokens'"}}"#),
        )
        .mount(&server)
        .await;
    let breaker = BreakerConfig::builder()
        .failure_threshold(2)
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&config(&server).breaker(breaker).build().unwrap()).unwrap();
    for _ in 0..3 {
        match p.complete(&req("gpt-4o")).await.unwrap_err() {
            Error::Status {
                status,
                attempts,
                body,
                ..
            } => {
                assert_eq!(status, 400);
                assert_eq!(attempts, 1);
                assert!(body.contains("Unsupported parameter"), "{body}");
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(hits(&server).await, 3, "one request per call: no retries");
    assert_eq!(p.circuit_state("gpt-4o"), CircuitState::Closed);
}

#[tokio::test]
async fn a_slow_server_times_out_each_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(openai_body("gpt-4o", "late"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let cfg = config(&server)
        .timeout(Duration::from_millis(200))
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();
    let start = Instant::now();
    match p.complete(&req("gpt-4o")).await.unwrap_err() {
        Error::Timeout {
            attempts, timeout, ..
        } => {
            assert_eq!(attempts, 2);
            assert_eq!(timeout, Duration::from_millis(200));
        }
        e => panic!("{e:?}"),
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(hits(&server).await, 2);

    // A stream that never sends its headers times out the same way.
    let start = Instant::now();
    assert!(matches!(
        p.stream(&req("gpt-4o")).await.unwrap_err(),
        Error::Timeout { attempts: 2, .. }
    ));
    assert!(start.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connection_error_after_retries() {
    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = loopback_config(port).retry(fast_retry(3)).build().unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();
    match p.complete(&req("gpt-4o")).await.unwrap_err() {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(attempts, 3);
            assert!(!message.is_empty());
        }
        e => panic!("{e:?}"),
    }
}

/// A listener whose accept queue is full drops new SYNs, so a connect to it hangs: the
/// loopback stand-in for a blackholed address.
async fn blackholed_port() -> (u16, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("probe connect failed: {e}"),
            Err(_) => return (addr.port(), held, listener),
        }
    }
    panic!("the accept queue never filled: connects kept succeeding");
}

#[tokio::test]
async fn a_connect_that_hangs_ends_at_the_connect_timeout_of_each_attempt() {
    let (port, _held, _listener) = blackholed_port().await;
    let cfg = loopback_config(port)
        .connect_timeout(Duration::from_millis(250))
        .timeout(Duration::from_secs(30))
        .retry(fast_retry(2))
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();
    let start = Instant::now();
    match p.complete(&req("gpt-4o")).await.unwrap_err() {
        Error::Connection {
            attempts, message, ..
        } => {
            assert_eq!(attempts, 2);
            assert!(message.contains("connect timeout"), "{message}");
            assert!(message.contains("250ms"), "{message}");
        }
        e => panic!("expected a connection error, got {e:?}"),
    }
    let took = start.elapsed();
    // Two attempts of 250 ms each, not the 30 s total timeout.
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn the_breaker_opens_refuses_half_opens_and_closes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_body("gpt-4o", "ok")))
        .mount(&server)
        .await;
    let breaker = BreakerConfig::builder()
        .failure_threshold(3)
        .recovery_timeout(Duration::from_millis(400))
        .success_threshold(2)
        .build()
        .unwrap();
    let cfg = config(&server)
        .retry(RetryConfig::none())
        .breaker(breaker)
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();

    for i in 0..3 {
        assert_eq!(
            p.circuit_state("gpt-4o"),
            CircuitState::Closed,
            "before failure {i}"
        );
        assert!(matches!(
            p.complete(&req("gpt-4o")).await,
            Err(Error::Status { status: 500, .. })
        ));
    }
    assert_eq!(p.circuit_state("gpt-4o"), CircuitState::Open);
    assert_eq!(hits(&server).await, 3);

    // Open: refused without a request, for this model only.
    match p.complete(&req("gpt-4o")).await.unwrap_err() {
        Error::CircuitOpen {
            model, retry_in, ..
        } => {
            assert_eq!(model, "gpt-4o");
            assert!(retry_in <= Duration::from_millis(400) && !retry_in.is_zero());
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        p.stream(&req("gpt-4o")).await.unwrap_err(),
        Error::CircuitOpen { .. }
    ));
    assert_eq!(hits(&server).await, 3, "an open breaker sends nothing");
    assert_eq!(p.complete(&req("gpt-4o-mini")).await.unwrap().text, "ok");
    assert_eq!(hits(&server).await, 4);

    // After the recovery timeout: half-open, two successes close it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(p.circuit_state("gpt-4o"), CircuitState::HalfOpen);
    p.complete(&req("gpt-4o")).await.unwrap();
    assert_eq!(p.circuit_state("gpt-4o"), CircuitState::HalfOpen);
    p.complete(&req("gpt-4o")).await.unwrap();
    assert_eq!(p.circuit_state("gpt-4o"), CircuitState::Closed);
    assert_eq!(hits(&server).await, 6);
}

#[tokio::test]
async fn a_failed_trial_call_opens_the_breaker_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let breaker = BreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_millis(200))
        .success_threshold(1)
        .build()
        .unwrap();
    let cfg = config(&server)
        .retry(RetryConfig::none())
        .breaker(breaker)
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&cfg).unwrap();
    assert!(p.complete(&req("m")).await.is_err());
    assert_eq!(p.circuit_state("m"), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(p.circuit_state("m"), CircuitState::HalfOpen);
    assert!(matches!(
        p.complete(&req("m")).await,
        Err(Error::Status { status: 502, .. })
    ));
    assert_eq!(p.circuit_state("m"), CircuitState::Open);
    assert!(matches!(
        p.complete(&req("m")).await,
        Err(Error::CircuitOpen { .. })
    ));
    assert_eq!(hits(&server).await, 2);
}

#[tokio::test]
async fn opening_a_stream_is_retried_and_a_stream_failure_counts_for_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    let body = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "text/event-stream"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    // Then a stream that carries an error event.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "data: {\"error\":{\"message\":\"upstream died\"}}\n\n",
            "text/event-stream",
        ))
        .with_priority(3)
        .mount(&server)
        .await;
    let breaker = BreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let p = OpenAiProvider::new(&config(&server).breaker(breaker).build().unwrap()).unwrap();
    let resp = p
        .stream(&req("m"))
        .await
        .unwrap()
        .into_response()
        .await
        .unwrap();
    assert_eq!(resp.text, "ok");
    assert_eq!(resp.usage.prompt_tokens, 3);
    assert_eq!(hits(&server).await, 3, "two 503s, then the stream");
    assert_eq!(p.circuit_state("m"), CircuitState::Closed);

    match p.stream(&req("m")).await.unwrap().into_response().await {
        Err(Error::Stream { message, .. }) => {
            assert!(message.contains("upstream died"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.circuit_state("m"), CircuitState::Open);
}
