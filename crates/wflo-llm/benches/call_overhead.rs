//! Overhead of a call through a provider (request building, retry and breaker wrappers,
//! typed parsing) against a raw reqwest POST of the same body to the same loopback server,
//! measured in the same run. Figure: `llm_call_overhead`.

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use wflo_llm::{ChatRequest, LlmProvider, OpenAiProvider, ProviderConfig};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn body() -> Value {
    json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris is the capital of France."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

fn bench(c: &mut Criterion) {
    // The wiremock server runs on its own thread; the client side gets one thread too, so the
    // two paths see the same scheduling.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(async {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body()))
            .mount(&server)
            .await;
        server
    });
    let base = format!("{}/v1", server.uri());
    let provider = OpenAiProvider::new(
        &ProviderConfig::builder()
            .api_key("sk-bench")
            .base_url(&base)
            .expect("url")
            .build()
            .expect("config"),
    )
    .expect("provider");
    let req = ChatRequest::builder("gpt-4o-mini")
        .system("You are terse.")
        .user("What is the capital of France?")
        .temperature(0.0)
        .max_tokens(16)
        .build()
        .expect("request");
    let raw = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("{base}/chat/completions");
    // Sanity: both paths reach the server and read the same answer.
    rt.block_on(async {
        let ours = provider.complete(&req).await.expect("provider call");
        assert_eq!(ours.usage.prompt_tokens, 24);
    });

    let mut g = c.benchmark_group("llm_call_overhead");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("ours", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(provider.complete(&req).await.expect("call")) });
    });
    g.bench_function("baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(raw_call(&raw, &url).await) });
    });
    g.finish();

    // Criterion measures the two one after the other; on a shared machine the load can change
    // in between. Also measure them interleaved (alternating order) and append the medians as
    // a row of its own.
    if std::env::args().any(|a| a == "--bench") {
        let (ours, baseline) = rt.block_on(async {
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for i in 0..4000 {
                let mut time_ours = async || {
                    let t = Instant::now();
                    black_box(provider.complete(&req).await.expect("call"));
                    ours.push(t.elapsed());
                };
                if i % 2 == 0 {
                    time_ours().await;
                    let t = Instant::now();
                    black_box(raw_call(&raw, &url).await);
                    base.push(t.elapsed());
                } else {
                    let t = Instant::now();
                    black_box(raw_call(&raw, &url).await);
                    base.push(t.elapsed());
                    time_ours().await;
                }
            }
            (median_us(ours), median_us(base))
        });
        println!(
            "llm_call_overhead_interleaved: ours {ours:.1} us, baseline {baseline:.1} us, ratio {:.3}",
            ours / baseline
        );
        let row = json!({"figure": "llm_call_overhead_interleaved_median", "ours": ours,
                         "baseline": baseline, "unit": "us", "better": "lower"});
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wflo-bench/rows.jsonl");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("rows file");
        writeln!(f, "{row}").expect("write row");
    }
}

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

/// The baseline: build the same JSON body, POST it with reqwest, read and parse the answer.
async fn raw_call(raw: &reqwest::Client, url: &str) -> Value {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        "temperature": 0.0,
        "max_tokens": 16
    });
    let resp = raw
        .post(url)
        .bearer_auth("sk-bench")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success());
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("parse")
}

criterion_group!(benches, bench);
criterion_main!(benches);
