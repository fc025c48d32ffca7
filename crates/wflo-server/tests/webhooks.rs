//! The webhook suite, on PostgreSQL and SQLite: real servers on loopback sending real runs'
//! events to a receiver on loopback that checks every signature and timestamp with its own
//! HMAC-SHA256 (not the server's), records every request and dedupes on `Idempotency-Key`, as
//! a careful receiver would. `cargo xtask itest wflo-server`.
#![cfg(feature = "integration")]

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
use hmac::{Hmac, Mac};
use reqwest::Method;
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wflo_core::db::{Backend, Executor, NewOutboxEvent};
use wflo_core::types::{CostPayload, EventEnvelope, EventPayload, ExecutionId, Role, RunLabels};
use wflo_server::ServerConfigBuilder;

use common::{GATE, Harness, QUICK, connect, harness_with, serve};

// ---- the receiver --------------------------------------------------------------------------

/// Signatures older (or newer) than this are refused as replays.
const TOLERANCE_SECS: i64 = 300;

/// The receiver's own check of a `Wflo-Signature` header: `t=<unix>,v1=<hex>`, the HMAC-SHA256
/// of `<t>.<body>` keyed with the secret, at a time within the tolerance of `now`.
fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), String> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    let t = t.ok_or("no timestamp")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(format!(
            "timestamp {t} is too far from now ({now}): a replay?"
        ));
    }
    for sig in sigs {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    key: String,
    event: String,
    signature: String,
    body: Vec<u8>,
    at: Instant,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct Inbox {
    /// The secret each path checks signatures with.
    secrets: HashMap<String, String>,
    /// Paths answering this status to their next n requests.
    failing: HashMap<String, (u32, u16)>,
    /// How long each answer takes.
    delay: Duration,
    /// Every request, in arrival order.
    hits: Vec<Hit>,
    /// The first verified request per (path, idempotency key).
    accepted: Vec<Hit>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AxStatus {
    let delay = inbox.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut hit = Hit {
        path: uri.path().to_string(),
        key: header("idempotency-key"),
        event: header("wflo-event"),
        signature: header("wflo-signature"),
        body: body.to_vec(),
        at: Instant::now(),
        answered: 200,
    };
    let mut inbox = inbox.lock().unwrap();
    let failing = inbox.failing.get_mut(&hit.path).and_then(|(n, status)| {
        (*n > 0).then(|| {
            *n -= 1;
            *status
        })
    });
    let secret = inbox.secrets.get(&hit.path).cloned().unwrap_or_default();
    hit.answered = match failing {
        Some(status) => status,
        None if verify(&secret, &hit.signature, &hit.body, unix_now()).is_err() => 401,
        None if hit.key.is_empty() => 400,
        None => {
            if !inbox
                .accepted
                .iter()
                .any(|a| a.path == hit.path && a.key == hit.key)
            {
                inbox.accepted.push(hit.clone());
            }
            200
        }
    };
    inbox.hits.push(hit.clone());
    AxStatus::from_u16(hit.answered).unwrap()
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inbox.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Receiver {
            addr,
            inbox,
            _stop: Arc::new(stop),
        }
    }

    fn url(&self, path: &str) -> String {
        url_at(self.addr, path)
    }
    fn expect_secret(&self, path: &str, secret: &str) {
        let mut i = self.inbox.lock().unwrap();
        i.secrets.insert(path.into(), secret.into());
    }
    fn fail_next(&self, path: &str, n: u32, status: u16) {
        let mut i = self.inbox.lock().unwrap();
        i.failing.insert(path.into(), (n, status));
    }
    fn hits(&self, path: &str) -> Vec<Hit> {
        let i = self.inbox.lock().unwrap();
        i.hits.iter().filter(|h| h.path == path).cloned().collect()
    }
    fn accepted(&self, path: &str) -> Vec<Hit> {
        let i = self.inbox.lock().unwrap();
        i.accepted
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }
    /// Waits until `path` accepted `n` events (or fails after 20 s).
    async fn wait_accepted(&self, path: &str, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.accepted(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} accepted {} of {n} events; every request: {:#?}",
                got.len(),
                self.hits(path)
                    .iter()
                    .map(|h| (h.event.clone(), h.answered))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn url_at(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// An address on which nothing listens (yet).
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---- the servers ---------------------------------------------------------------------------

const PUBLIC: &str = "https://wflo.example";

/// Short intervals, so retries happen within a test.
fn quick(b: ServerConfigBuilder) -> ServerConfigBuilder {
    b.public_url(PUBLIC)
        .webhook_poll(Some(Duration::from_millis(20)))
        .webhook_timeout(Duration::from_secs(2))
        .webhook_backoff(Duration::from_millis(200), Duration::from_secs(5))
        .webhook_max_attempts(10)
}

/// The webhook API, through a harness's admin token.
trait Hooks {
    /// `POST /api/v1/webhooks` as an admin: the status and the body.
    async fn create_webhook(&self, body: Value) -> (StatusCode, Value);
    /// Creates a webhook through the API; returns its secret.
    async fn add_webhook(&self, body: Value) -> String;
    async fn deliveries(&self, name: &str) -> Vec<Value>;
    /// Waits until the deliveries of `name` satisfy `pred` (or fails after 20 s).
    async fn wait_deliveries(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value>;
}

impl Hooks for Harness {
    async fn create_webhook(&self, body: Value) -> (StatusCode, Value) {
        self.call(Role::Admin, Method::POST, "/api/v1/webhooks", Some(body))
            .await
    }
    async fn add_webhook(&self, body: Value) -> String {
        let (status, created) = self.create_webhook(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["secret"].as_str().unwrap().to_string()
    }
    async fn deliveries(&self, name: &str) -> Vec<Value> {
        self.json(Role::Admin, &format!("/api/v1/webhooks/{name}/deliveries"))
            .await
            .as_array()
            .unwrap()
            .clone()
    }
    async fn wait_deliveries(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = self.deliveries(name).await;
            if pred(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "the deliveries of {name} never became {what}: {d:#?}"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// Lets the dispatchers run a while (for asserting that nothing more arrives).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

// ---- the cases -----------------------------------------------------------------------------

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_the_end_of_a_run_reach_the_webhooks_that_subscribe_to_them_signed(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, quick).await;
    let rx = Receiver::start().await;
    let secret_a = h
        .add_webhook(json!({
            "name": "approvers",
            "url": rx.url("/approvers"),
            "events": ["approval.requested", "approval.decided"],
        }))
        .await;
    assert!(secret_a.starts_with(wflo_server::WEBHOOK_SECRET_PREFIX));
    rx.expect_secret("/approvers", &secret_a);
    let secret_b = "a-secret-the-receiver-chose-0001";
    let given = h
        .add_webhook(json!({
            "name": "ends",
            "url": rx.url("/ends"),
            "events": ["execution.finished"],
            "secret": secret_b,
        }))
        .await;
    assert_eq!(given, secret_b, "a given secret is used as it is");
    rx.expect_secret("/ends", secret_b);

    let id = h.start_with(GATE, json!({"target": "production"})).await;
    h.wait_status(&id, "WAITING_APPROVAL").await;
    let requested = rx.wait_accepted("/approvers", 1).await;
    let hit = &requested[0];
    let body = hit.json();
    assert_eq!(hit.event, "approval.requested");
    assert_eq!(body["type"], json!("approval.requested"));
    assert_eq!(
        body["summary"],
        json!("approval requested for release: Ship to production? (risk HIGH)")
    );
    assert_eq!(body["link"], json!(format!("{PUBLIC}/ui/approvals")));
    assert_eq!(body["approval"]["message"], json!("Ship to production?"));
    assert_eq!(body["event"]["execution_id"], json!(id));
    assert_eq!(
        hit.key,
        body["event_id"].as_str().unwrap(),
        "the idempotency key is the event's id"
    );
    assert!(
        verify(&secret_a, &hit.signature, &hit.body, unix_now()).is_ok(),
        "signed with the webhook's secret"
    );
    assert!(
        rx.accepted("/ends").is_empty(),
        "nothing has finished yet: {:?}",
        rx.hits("/ends")
            .iter()
            .map(|h| h.json())
            .collect::<Vec<_>>()
    );

    let aid = h.approval_of(&id).await;
    let (status, decided) = h
        .call(
            Role::Approver,
            Method::POST,
            &format!("/api/v1/approvals/{aid}/decision"),
            Some(json!({"decision": "approve", "reason": "checked the diff"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    h.wait_status(&id, "COMPLETED").await;
    let approvers = rx.wait_accepted("/approvers", 2).await;
    let decided = approvers[1].json();
    assert_eq!(approvers[1].event, "approval.decided");
    assert_eq!(decided["event"]["payload"]["decision"], json!("APPROVED"));
    assert_eq!(decided["event"]["payload"]["approver"], json!("approver"));
    assert_eq!(
        decided["summary"],
        json!(
            "approval for release approved by approver: Ship to production? (reason: checked the diff)"
        )
    );
    assert_eq!(decided["link"], json!(format!("{PUBLIC}/ui/runs/{id}")));
    let ends = rx.wait_accepted("/ends", 1).await;
    let finished = ends[0].json();
    assert_eq!(ends[0].event, "execution.finished");
    assert_eq!(finished["type"], json!("execution.finished"));
    assert_eq!(finished["event"]["event_type"], json!("workflow.status"));
    assert_eq!(finished["event"]["payload"]["status"], json!("COMPLETED"));
    assert!(verify(secret_b, &ends[0].signature, &ends[0].body, unix_now()).is_ok());

    // Only the subscribed kinds arrive, each once (the run also wrote step and status events).
    settle().await;
    let kinds =
        |path: &str| -> Vec<String> { rx.hits(path).iter().map(|h| h.event.clone()).collect() };
    assert_eq!(
        kinds("/approvers"),
        ["approval.requested", "approval.decided"]
    );
    assert_eq!(kinds("/ends"), ["execution.finished"]);
    let d = h.deliveries("approvers").await;
    assert_eq!(d.len(), 2);
    for x in &d {
        assert_eq!(x["status"], json!("DELIVERED"), "{x}");
        assert_eq!(x["attempts"], json!(1));
        assert_eq!(x["last_status"], json!(200));
        assert_eq!(x["next_attempt_at"], Value::Null);
    }
    // The list never shows a secret.
    let list = h.json(Role::Admin, "/api/v1/webhooks").await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(secret_b), "{list}");
    assert!(!list.to_string().contains(&secret_a), "{list}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_the_event_once_it_is_back_with_one_idempotency_key(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, quick).await;
    let addr = closed_port().await;
    let secret = h
        .add_webhook(json!({
            "name": "flaky",
            "url": url_at(addr, "/flaky"),
            "events": ["execution.finished"],
        }))
        .await;
    let id = h.start(QUICK).await;
    h.wait_status(&id, "COMPLETED").await;

    // Nothing listens: connection refused, retried.
    let refused = h
        .wait_deliveries("flaky", "retried after refused connections", |d| {
            d.len() == 1 && d[0]["attempts"].as_u64().unwrap() >= 2
        })
        .await;
    let d = &refused[0];
    assert_eq!(d["status"], json!("PENDING"));
    assert_eq!(d["last_status"], Value::Null, "no answer");
    assert!(
        d["last_error"].as_str().unwrap().contains("cannot connect"),
        "{d}"
    );
    assert!(d["next_attempt_at"].is_string());

    // Back, but unavailable for two more requests; then it takes the event.
    let rx = Receiver::start_on(addr).await;
    rx.expect_secret("/flaky", &secret);
    rx.fail_next("/flaky", 2, 503);
    let accepted = rx.wait_accepted("/flaky", 1).await;
    let done = h
        .wait_deliveries("flaky", "delivered", |d| {
            d[0]["status"] == json!("DELIVERED")
        })
        .await;
    settle().await;

    let hits = rx.hits("/flaky");
    assert_eq!(
        hits.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [503, 503, 200],
        "retried until accepted, then never again"
    );
    assert_eq!(rx.accepted("/flaky").len(), 1, "exactly once after dedupe");
    let event_id = done[0]["event_id"].as_str().unwrap();
    for hit in &hits {
        assert_eq!(
            hit.key, event_id,
            "the same idempotency key on every attempt"
        );
        assert!(verify(&secret, &hit.signature, &hit.body, unix_now()).is_ok());
    }
    assert_eq!(accepted[0].json()["event"]["execution_id"], json!(id));
    let attempts = done[0]["attempts"].as_u64().unwrap() as u32;
    assert!(
        attempts >= 5,
        "at least 2 refused and 3 answered: {}",
        done[0]
    );
    assert_eq!(done[0]["last_status"], json!(200));
    assert_eq!(done[0]["last_error"], Value::Null);

    // The answered attempts were (attempts - 2) and on: each waited at least the backoff for
    // the failures before it (200 ms doubling), so the waits grow.
    let first = attempts - 2;
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let failed = first + i as u32;
        let min = Duration::from_millis(200) * 2u32.pow(failed - 1);
        let min = min.min(Duration::from_secs(5));
        assert!(
            *gap + Duration::from_millis(30) >= min,
            "the wait after failure {failed} was {gap:?}, less than the backoff {min:?}"
        );
    }
    assert!(gaps[1] > gaps[0], "the backoff grows: {gaps:?}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_given_up_with_its_last_error(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, |b| {
        quick(b)
            .webhook_backoff(Duration::from_millis(50), Duration::from_millis(100))
            .webhook_max_attempts(3)
    })
    .await;
    let rx = Receiver::start().await;
    let secret = h
        .add_webhook(
            json!({"name": "broken", "url": rx.url("/broken"), "events": ["execution.finished"]}),
        )
        .await;
    rx.expect_secret("/broken", &secret);
    rx.fail_next("/broken", 1000, 500);
    let id = h.start(QUICK).await;
    h.wait_status(&id, "COMPLETED").await;
    let d = h
        .wait_deliveries("broken", "failed", |d| {
            d.len() == 1 && d[0]["status"] == json!("FAILED")
        })
        .await;
    settle().await;
    assert_eq!(d[0]["attempts"], json!(3));
    assert_eq!(d[0]["last_status"], json!(500));
    let error = d[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("500") && error.contains("given up"),
        "{error}"
    );
    assert_eq!(rx.hits("/broken").len(), 3, "no attempt after the last");
    assert!(rx.accepted("/broken").is_empty());
    let failed = h
        .json(
            Role::Admin,
            "/api/v1/webhooks/broken/deliveries?status=failed",
        )
        .await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let pending = h
        .json(
            Role::Admin,
            "/api/v1/webhooks/broken/deliveries?status=pending",
        )
        .await;
    assert!(pending.as_array().unwrap().is_empty());
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_body_another_secret_or_an_old_timestamp_fails_the_receivers_check(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, quick).await;
    let rx = Receiver::start().await;
    let secret = h
        .add_webhook(
            json!({"name": "good", "url": rx.url("/good"), "events": ["execution.finished"]}),
        )
        .await;
    rx.expect_secret("/good", &secret);
    // This receiver was given another secret than the webhook's: it refuses every request.
    h.add_webhook(
        json!({"name": "mismatch", "url": rx.url("/mismatch"), "events": ["execution.finished"]}),
    )
    .await;
    rx.expect_secret("/mismatch", &wflo_server::new_webhook_secret());

    let id = h.start(QUICK).await;
    h.wait_status(&id, "COMPLETED").await;
    let good = rx.wait_accepted("/good", 1).await;
    let hit = &good[0];
    let now = unix_now();
    verify(&secret, &hit.signature, &hit.body, now).expect("the genuine body checks out");
    let t: i64 = hit.signature[2..hit.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    assert!((now - t).abs() < 60, "signed when sent: {t} vs {now}");

    let mut tampered: Value = hit.json();
    tampered["event"]["payload"]["status"] = json!("FAILED");
    let tampered = serde_json::to_vec(&tampered).unwrap();
    assert!(
        verify(&secret, &hit.signature, &tampered, now).is_err(),
        "a changed body"
    );
    let mut flipped = hit.body.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(
        verify(&secret, &hit.signature, &flipped, now).is_err(),
        "one bit changed"
    );
    assert!(
        verify(
            &wflo_server::new_webhook_secret(),
            &hit.signature,
            &hit.body,
            now
        )
        .is_err(),
        "another secret"
    );
    assert!(
        verify(
            &secret,
            &hit.signature,
            &hit.body,
            now + TOLERANCE_SECS + 60
        )
        .is_err(),
        "replayed after the tolerance"
    );
    let resigned = hit
        .signature
        .replacen(&format!("t={t}"), &format!("t={}", t + 7), 1);
    assert!(
        verify(&secret, &resigned, &hit.body, now).is_err(),
        "a new timestamp on an old signature"
    );

    // The mismatched receiver refused it (401): the delivery is not taken as delivered.
    let refused = h
        .wait_deliveries("mismatch", "refused twice", |d| {
            d.len() == 1 && d[0]["attempts"].as_u64().unwrap() >= 2
        })
        .await;
    assert_eq!(refused[0]["status"], json!("PENDING"));
    assert_eq!(refused[0]["last_status"], json!(401));
    assert!(rx.accepted("/mismatch").is_empty());
    assert!(rx.hits("/mismatch").iter().all(|h| h.answered == 401));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_webhook_gets_a_message_a_person_can_read(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, quick).await;
    let rx = Receiver::start().await;
    let secret = h
        .add_webhook(json!({
            "name": "slack",
            "url": rx.url("/slack"),
            "events": ["approval.requested", "cost.budget_alert"],
            "format": "slack",
        }))
        .await;
    rx.expect_secret("/slack", &secret);
    let list = h.json(Role::Admin, "/api/v1/webhooks").await;
    assert_eq!(list[0]["format"], json!("SLACK"));

    let id = h.start_with(GATE, json!({"target": "production"})).await;
    h.wait_status(&id, "WAITING_APPROVAL").await;
    let got = rx.wait_accepted("/slack", 1).await;
    assert_eq!(
        got[0].json(),
        json!({"text": format!("approval requested for release: Ship to production? (risk HIGH) <{PUBLIC}/ui/approvals>")})
    );
    assert_eq!(got[0].event, "approval.requested");

    // A budget threshold crossed (written as wflo-cost writes it).
    let alert = EventEnvelope::new(
        "wflo-cost",
        EventPayload::BudgetAlert(CostPayload {
            scope: Some("workflow:release".into()),
            percentage: Some(rust_decimal::Decimal::new(90, 0)),
            total_cost_usd: rust_decimal::Decimal::new(45, 2),
            budget_limit_usd: Some(rust_decimal::Decimal::new(5, 1)),
            ..Default::default()
        }),
    )
    .with_execution(ExecutionId::new())
    .with_labels(&RunLabels::workflow("release"));
    h.wflo
        .db()
        .outbox()
        .enqueue(NewOutboxEvent::from_envelope(&alert))
        .await
        .unwrap();
    let got = rx.wait_accepted("/slack", 2).await;
    assert_eq!(got[1].event, "cost.budget_alert");
    assert_eq!(
        got[1].json(),
        json!({"text": format!("budget alert: workflow:release at 90% ($0.45 spent of $0.5) <{PUBLIC}/ui/budgets>")})
    );
    assert_eq!(got[1].key, alert.event_id.to_string());
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_deliver_each_event_once(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let mut h = harness_with(backend, quick).await;
    let other = connect(&h.db.url()).await;
    let (other_base, stop) = serve(other, quick).await;
    h.stops.push(stop);
    let rx = Receiver::start().await;
    // A slow receiver: both dispatchers are busy at once, many times over.
    rx.inbox.lock().unwrap().delay = Duration::from_millis(100);
    let secret = h
        .add_webhook(
            json!({"name": "ends", "url": rx.url("/ends"), "events": ["execution.finished"]}),
        )
        .await;
    rx.expect_secret("/ends", &secret);

    let mut ids = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 {
            h.base.clone()
        } else {
            other_base.clone()
        };
        let r = h
            .http
            .post(format!("{base}/api/v1/executions"))
            .bearer_auth(&h.tokens[&Role::Operator])
            .json(&json!({"yaml": QUICK}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    for id in &ids {
        h.wait_status(id, "COMPLETED").await;
    }
    rx.wait_accepted("/ends", ids.len()).await;
    settle().await;
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for hit in rx.hits("/ends") {
        *per_key.entry(hit.key).or_default() += 1;
    }
    assert_eq!(per_key.len(), ids.len(), "one event per run");
    assert!(
        per_key.values().all(|n| *n == 1),
        "each event sent once: {per_key:?}"
    );
    let runs: std::collections::BTreeSet<String> = rx
        .accepted("/ends")
        .iter()
        .map(|h| h.json()["execution_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs, ids.iter().cloned().collect());
    let d = h.deliveries("ends").await;
    assert_eq!(d.len(), ids.len());
    assert!(
        d.iter()
            .all(|x| x["status"] == json!("DELIVERED") && x["attempts"] == json!(1)),
        "{d:#?}"
    );
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_api_is_for_admins_and_refuses_what_it_cannot_send(
    #[values(Backend::Postgres, Backend::Sqlite)] backend: Backend,
) {
    let h = harness_with(backend, quick).await;
    let good = json!({"name": "ok", "url": "https://hooks.example.com/x", "events": ["approval.requested"]});
    // Admins only.
    for (method, path, body) in [
        (Method::GET, "/api/v1/webhooks", None),
        (Method::POST, "/api/v1/webhooks", Some(good.clone())),
        (Method::DELETE, "/api/v1/webhooks/ok", None),
        (Method::GET, "/api/v1/webhooks/ok/deliveries", None),
    ] {
        let r = h
            .http
            .request(method.clone(), h.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        for role in [Role::Viewer, Role::Approver, Role::Operator] {
            let (status, _) = h.call(role, method.clone(), path, body.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}");
        }
    }
    assert!(
        h.json(Role::Admin, "/api/v1/webhooks")
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );

    for (body, status, says) in [
        (
            json!({"name": "a", "url": "ftp://example.com/x", "events": ["approval.requested"]}),
            StatusCode::BAD_REQUEST,
            "http",
        ),
        (
            json!({"name": "a", "url": "not a url", "events": ["approval.requested"]}),
            StatusCode::BAD_REQUEST,
            "url",
        ),
        (
            json!({"name": "a", "url": "https://e.com", "events": ["workflow.status"]}),
            StatusCode::BAD_REQUEST,
            "execution.finished",
        ),
        (
            json!({"name": "a", "url": "https://e.com", "events": []}),
            StatusCode::BAD_REQUEST,
            "at least one",
        ),
        (
            json!({"name": "a", "url": "https://e.com", "events": ["approval.decided"], "format": "xml"}),
            StatusCode::BAD_REQUEST,
            "json or slack",
        ),
        (
            json!({"name": "a", "url": "https://e.com", "events": ["approval.decided"], "secret": "short"}),
            StatusCode::BAD_REQUEST,
            "secret",
        ),
        (
            json!({"name": "a b", "url": "https://e.com", "events": ["approval.decided"]}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            json!({"name": "a", "url": "https://e.com", "events": ["approval.decided"], "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
    ] {
        let (got, resp) = h.create_webhook(body.clone()).await;
        assert_eq!(got, status, "{body} -> {resp}");
        let message = resp["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{body}: `{message}` should say {says}"
        );
    }
    assert!(
        h.json(Role::Admin, "/api/v1/webhooks")
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );

    let (status, created) = h.create_webhook(good.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], json!("ok"));
    assert_eq!(created["format"], json!("JSON"));
    assert_eq!(created["enabled"], json!(true));
    assert_eq!(created["events"], json!(["approval.requested"]));
    let (status, again) = h.create_webhook(good.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(h.deliveries("ok").await.is_empty());
    let (status, _) = h
        .call(
            Role::Admin,
            Method::GET,
            "/api/v1/webhooks/ok/deliveries?status=lost",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, removed) = h
        .call(Role::Admin, Method::DELETE, "/api/v1/webhooks/ok", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["name"], json!("ok"));
    for (method, path) in [
        (Method::DELETE, "/api/v1/webhooks/ok"),
        (Method::GET, "/api/v1/webhooks/ok/deliveries"),
    ] {
        let (status, body) = h.call(Role::Admin, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    let doc = h.json(Role::Admin, "/api/v1/openapi.json").await;
    for path in [
        "/api/v1/webhooks",
        "/api/v1/webhooks/{name}",
        "/api/v1/webhooks/{name}/deliveries",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}
