//! What the wflo-server suites share: a real server on loopback over a per-test database,
//! one token per role, and the workflows the suites run.
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use wflo_core::db::{Backend, Executor};
use wflo_core::types::Role;
use wflo_core::{Config, Wflo};
use wflo_db::testing::TestDb;
use wflo_server::{Server, ServerConfig};

pub(crate) struct Harness {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) wflo: Wflo,
    pub(crate) tokens: std::collections::HashMap<Role, String>,
    pub(crate) db: TestDb,
    /// What stops each server serving this harness's database (the first is `base`'s).
    pub(crate) stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}

pub(crate) async fn harness(backend: Backend) -> Harness {
    harness_with(backend, |b| b).await
}

/// The facade over `url`, as a server instance connects to it.
pub(crate) async fn connect(url: &str) -> Wflo {
    let config = Config::builder()
        .database_url(url)
        .lease_ttl(Duration::from_secs(5))
        .driver_name(wflo_server::driver_name())
        .build()
        .unwrap();
    Wflo::connect(config).await.unwrap()
}

/// Serves `wflo` on a loopback port (events polled every 20 ms, then `tune`); returns its
/// base URL and what stops it.
pub(crate) async fn serve(
    wflo: Wflo,
    tune: impl FnOnce(wflo_server::ServerConfigBuilder) -> wflo_server::ServerConfigBuilder,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = tune(ServerConfig::builder(addr).event_poll(Duration::from_millis(20)))
        .build()
        .unwrap();
    let server = Server::new(wflo, cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_on(listener, async move {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

/// A server over a new database of `backend`, with one token per role.
pub(crate) async fn harness_with(
    backend: Backend,
    tune: impl FnOnce(wflo_server::ServerConfigBuilder) -> wflo_server::ServerConfigBuilder,
) -> Harness {
    let db = TestDb::new(backend).await;
    let wflo = connect(&db.url()).await;
    let mut tokens = std::collections::HashMap::new();
    for role in Role::ALL {
        let secret = wflo_server::new_token();
        wflo.db()
            .api_tokens()
            .create(role.label(), *role, &wflo_server::hash_token(&secret))
            .await
            .unwrap();
        tokens.insert(*role, secret);
    }
    let (base, stop) = serve(wflo.clone(), tune).await;
    Harness {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        wflo,
        tokens,
        db,
        stops: vec![stop],
    }
}

/// Checks that `r` is the API's error answer with `status` and `kind`, and that its message
/// says something; returns the body.
pub(crate) async fn expect_error(
    r: reqwest::Response,
    status: StatusCode,
    kind: &str,
    what: &str,
) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: the error body is not JSON ({e}): {text}"));
    assert_eq!(got, status, "{what}: {body}");
    assert_eq!(body["error"]["kind"], json!(kind), "{what}: {body}");
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no message: {body}"));
    assert!(
        !message.trim().is_empty() && !message.ends_with('.'),
        "{what}: {message:?} (error text is a lower-case phrase without a trailing period)"
    );
    assert!(
        !message.contains("sqlx") && !message.contains("panicked"),
        "{what}: internals leak into {message:?}"
    );
    body
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    pub(crate) fn get(&self, role: Role, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.tokens[&role])
    }
    pub(crate) fn post(&self, role: Role, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.tokens[&role])
            .json(&body)
    }
    pub(crate) async fn json(&self, role: Role, path: &str) -> Value {
        let r = self.get(role, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }
    /// Sends a request as `role` with an optional JSON body; the status and the body (JSON,
    /// or the text as a JSON string).
    pub(crate) async fn call(
        &self,
        role: Role,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.tokens[&role]);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    /// Starts `yaml` with no inputs; its execution id.
    pub(crate) async fn start(&self, yaml: &str) -> String {
        self.start_with(yaml, json!({})).await
    }
    /// Starts `yaml` with `inputs`; its execution id.
    pub(crate) async fn start_with(&self, yaml: &str, inputs: Value) -> String {
        let (status, body) = self
            .call(
                Role::Operator,
                reqwest::Method::POST,
                "/api/v1/executions",
                Some(json!({"yaml": yaml, "inputs": inputs})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }
    /// The pending approval of execution `id`.
    pub(crate) async fn approval_of(&self, id: &str) -> String {
        let pending = self.json(Role::Viewer, "/api/v1/approvals").await;
        pending
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["execution_id"] == json!(id))
            .unwrap_or_else(|| panic!("execution {id} waits for an approval: {pending:#}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    /// Polls the execution until `pred` holds (or fails after 20 s).
    pub(crate) async fn wait_for(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .json(Role::Viewer, &format!("/api/v1/executions/{id}"))
                .await;
            if pred(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {id} never became {what}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    pub(crate) async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_for(id, status, |v| v["execution"]["status"] == json!(status))
            .await
    }
    pub(crate) async fn executions_count(&self) -> usize {
        self.json(Role::Viewer, "/api/v1/executions?limit=200")
            .await["items"]
            .as_array()
            .unwrap()
            .len()
    }
}

pub(crate) const GATE: &str = r#"
name: release
inputs:
  target: {default: staging}
steps:
  - id: prepare
    kind: checkpoint
  - id: gate
    kind: approval
    depends_on: [prepare]
    message: "Ship to {{ inputs.target }}?"
    risk: high
    action: {ship: "{{ inputs.target }}"}
  - id: shipped
    kind: checkpoint
    depends_on: [gate]
"#;

pub(crate) const QUICK: &str = "name: quick\nsteps:\n  - id: a\n    kind: checkpoint\n  - id: b\n    kind: checkpoint\n    depends_on: [a]\n";
