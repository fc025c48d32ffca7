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
    _db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) async fn harness(backend: Backend) -> Harness {
    harness_with(backend, |b| b).await
}

pub(crate) async fn harness_with(
    backend: Backend,
    tune: impl FnOnce(wflo_server::ServerConfigBuilder) -> wflo_server::ServerConfigBuilder,
) -> Harness {
    let t = TestDb::new(backend).await;
    let config = Config::builder()
        .database_url(t.url())
        .lease_ttl(Duration::from_secs(5))
        .driver_name(wflo_server::driver_name())
        .build()
        .unwrap();
    let wflo = Wflo::connect(config).await.unwrap();
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = tune(ServerConfig::builder(addr).event_poll(Duration::from_millis(20)))
        .build()
        .unwrap();
    let server = Server::new(wflo.clone(), cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_on(listener, async move {
        let _ = stopped.await;
    }));
    Harness {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        wflo,
        tokens,
        _db: t,
        stop: Some(stop),
    }
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
    pub(crate) async fn start(&self, yaml: &str) -> String {
        let r = self
            .post(Role::Operator, "/api/v1/executions", json!({"yaml": yaml}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_string()
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
