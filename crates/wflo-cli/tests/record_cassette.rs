//! Regenerates `examples/quickstart.cassette.json` by running the quickstart through the CLI in
//! record mode (`wflo run --record-cassette`) against a fake OpenAI server on loopback, so the
//! recorded request is exactly the one the runtime sends for the `plan` step.
//!
//! Ignored by default (it rewrites a file in the repository); run it with
//! `examples/record-quickstart-cassette.sh`. Needs Docker and the sandbox image (the quickstart
//! runs the recorded program).
#![cfg(feature = "integration")]

mod common;

use common::{QUICKSTART_PROGRAM, World, chat_completion, example};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "rewrites examples/quickstart.cassette.json; run examples/record-quickstart-cassette.sh"]
async fn record_the_quickstart_cassette() {
    let image = std::env::var("WFLO_TEST_SANDBOX_IMAGE")
        .expect("WFLO_TEST_SANDBOX_IMAGE is not set; run `cargo xtask itest wflo-cli`");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-request-id", "req_7f3c2a9e1b6d4c08a5e2f19b3d7c6a41")
                .set_body_json(chat_completion(QUICKSTART_PROGRAM, 71, 27)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let world = World::new()
        .env("WFLO_SANDBOX_IMAGE", image)
        .env("OPENAI_API_KEY", "sk-fake-key-for-recording")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.uri()));
    let fresh = world.dir.path().join("quickstart.cassette.json");
    let quickstart = example("quickstart.yaml");
    let cmd = world.command(&[
        "run",
        quickstart.to_str().unwrap(),
        "--record-cassette",
        fresh.to_str().unwrap(),
    ]);
    // The fake server runs on this runtime: wait for the process on a blocking thread.
    let run = common::run_blocking(cmd).await;
    run.expect_code(0);
    assert!(run.stdout.contains("385"), "{}", run.stdout);

    // The fake server saw the runtime's request: the model, the cap, and the question.
    let requests = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body.to_string().contains("sum of the squares"), "{body}");

    // The recording replays offline.
    let replay = World::new()
        .env(
            "WFLO_SANDBOX_IMAGE",
            std::env::var("WFLO_TEST_SANDBOX_IMAGE").unwrap(),
        )
        .env("WFLO_LLM_CASSETTE", fresh.display().to_string());
    let q = example("quickstart.yaml");
    replay.run(&["run", q.to_str().unwrap()]).expect_code(0);
    std::fs::copy(&fresh, example("quickstart.cassette.json")).unwrap();
}
